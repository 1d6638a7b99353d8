/**
 * OVF packages: create an OVA (descriptor, manifest, streamOptimized disks in one
 * ustar), and, on a package opened by `formats/ovf` (.ova, a plain .ovf with its
 * folder, or either inside a zip), describe it, verify its manifest, or extract its disks.
 */
import { mkdir, realpath, rm } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import type { DiskImage } from '../device/block-device.js';
import { copyDevice } from '../device/copy.js';
import { VdiskError, fromSystemError } from '../errors.js';
import { STREAM_OPTIMIZED_FORMAT, buildDescriptor, type ControllerKind } from '../formats/ovf/descriptor.js';
import { buildManifest, digestBytes, digestStorage, type ManifestAlgorithm, type ManifestEntry } from '../formats/ovf/manifest.js';
import { openPackage, type OvfPackage } from '../formats/ovf/package.js';
import { findDriver, open, openLocation } from '../formats/registry.js';
import type { ArchiveOptions } from '../storage/containers/archive.js';
import { safeMemberName } from '../storage/containers/names.js';
import { TarWriter } from '../storage/containers/tar.js';
import { copyBytes } from '../storage/copy.js';
import { FileStorage } from '../storage/file.js';
import { stageNewFile } from '../storage/staging.js';
import { confine } from '../storage/realpath.js';
import { create } from './create.js';
import { defaultDiskWriter, type DiskWriter } from './ova-disk-writer.js';

/** Progress callback: bytes done of bytes total, with the phase. */
export type PackageProgress = (done: number, total: number, phase: string) => void;

/** Options for {@link createOva}. */
export interface CreateOvaOptions {
  /** Virtual machine name (also names the .ovf/.mf and disks). */
  name: string;
  cpus?: number;
  memoryMiB?: number;
  /** CIM OsType id (default 1, "Other"). */
  osId?: number;
  /** Networks, one NIC each (default one, "VM Network"). */
  networks?: string[];
  controller?: ControllerKind;
  ovfVersion?: '1.0' | '2.0';
  /** Manifest digest: SHA256 (default) or SHA1 for old importers. */
  algorithm?: ManifestAlgorithm;
  force?: boolean;
  /** Writes each disk as streamOptimized VMDK (default: the vmdk driver's writer). */
  diskWriter?: DiskWriter;
  onProgress?: PackageProgress;
}

/** What {@link createOva} made. */
export interface CreateOvaResult {
  path: string;
  /** Tar members in order. */
  members: Array<{ name: string; size: number }>;
}

function fileStem(name: string): string {
  const s = name.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[.]+/, '');
  return s || 'vm';
}

async function populated(dev: DiskImage): Promise<number> {
  let n = 0;
  for await (const e of dev.extents()) if (e.kind === 'data') n += e.length;
  return n;
}

/**
 * Package the disks `sources` as the OVA `out`: each disk (an address of any format
 * vdisk opens, opened read-only and closed again, or an open device, left open)
 * becomes a streamOptimized VMDK; the tar holds the .ovf, then the .mf, then the
 * disks in References order.
 *
 * @example
 * ```ts
 * import { create, createOva } from 'vdisk';
 *
 * await (await create('disk.vhd', { format: 'vhd', size: '4M' })).close();
 * const ova = await createOva('web.ova', ['disk.vhd'], { name: 'web', cpus: 2, memoryMiB: 512 });
 * console.log(ova.members.map((m) => m.name).join(' ')); // web.ovf web.mf web-disk1.vmdk
 * ```
 */
export async function createOva(out: string, sources: ReadonlyArray<string | DiskImage>, opts: CreateOvaOptions): Promise<CreateOvaResult> {
  if (sources.length === 0) throw new VdiskError('E_USAGE', `${out}: no disks given`);
  // XML 1.0 cannot carry control characters at all
  const CONTROL = /[\u0000-\u001f\u007f]/;
  if (!opts.name || CONTROL.test(opts.name)) throw new VdiskError('E_USAGE', '--name must be non-empty text without control characters');
  for (const n of opts.networks ?? []) if (!n || CONTROL.test(n)) throw new VdiskError('E_USAGE', `--network "${n}" must be non-empty text without control characters`);
  const cpus = opts.cpus ?? 1;
  const memoryMiB = opts.memoryMiB ?? 1024;
  const osId = opts.osId ?? 1;
  for (const [k, v, max] of [['--cpus', cpus, 4096], ['--memory', memoryMiB, 2 ** 32], ['--os', osId, 65535]] as const) {
    if (!Number.isSafeInteger(v) || v < (k === '--os' ? 0 : 1) || v > max) throw new VdiskError('E_USAGE', `${k} must be a whole number from ${k === '--os' ? 0 : 1} to ${max}, not ${v}`);
  }
  const networks = opts.networks?.length ? opts.networks : ['VM Network'];
  const algorithm = opts.algorithm ?? 'SHA256';
  const writer = opts.diskWriter ?? defaultDiskWriter;
  const controller = opts.controller ?? 'scsi';
  const stem = fileStem(opts.name);
  // Built beside `out` and renamed into place at the end (replacing an old OVA, with --force, in one step).
  const stage = await stageNewFile(out, { force: opts.force });
  const work = dirname(stage.location.name);
  const progress = opts.onProgress;
  try {
    const disks: Array<{ href: string; path: string; fileSize: number; capacity: number; populatedSize: number; digest: string }> = [];
    for (const [i, source] of sources.entries()) {
      const href = `${stem}-disk${i + 1}.vmdk`;
      const path = join(work, href);
      const src = typeof source === 'string' ? source : source.filename;
      const dev = typeof source === 'string' ? await open(source, { readOnly: true }) : source;
      try {
        if (dev.size % 512 !== 0) throw new VdiskError('E_UNSUPPORTED', `${src}: size ${dev.size} is not a multiple of 512 bytes`);
        const target = await FileStorage.open(path, { create: 'new', noLock: true });
        let res;
        try {
          res = await writer(dev, target, { controller, onProgress: (d, t) => progress?.(d, t, `converting ${src}`) });
          await target.flush();
        } finally {
          await target.close();
        }
        const pop = res.populatedSize ?? (await populated(dev));
        disks.push({ href, path, fileSize: 0, capacity: dev.size, populatedSize: pop, digest: '' });
      } finally {
        if (dev !== source) await dev.close();
      }
    }
    for (const d of disks) {
      const s = await FileStorage.open(d.path, { readOnly: true });
      try {
        d.fileSize = s.size;
        let done = 0;
        d.digest = await digestStorage(s, algorithm, (n) => progress?.((done += n), s.size, `hashing ${d.href}`));
      } finally {
        await s.close();
      }
    }
    const descriptor = Buffer.from(
      buildDescriptor({ name: opts.name, version: opts.ovfVersion ?? '1.0', cpus, memoryMiB, osId, networks, controller, disks }),
      'utf8',
    );
    const ovfName = `${stem}.ovf`;
    const entries: ManifestEntry[] = [{ algorithm, name: ovfName, digest: digestBytes(descriptor, algorithm) }, ...disks.map((d) => ({ algorithm, name: d.href, digest: d.digest }))];
    const manifest = Buffer.from(buildManifest(entries), 'utf8');

    const tarOut = await stage.location.create(stage.location.name);
    const members = [
      { name: ovfName, size: descriptor.length },
      { name: `${stem}.mf`, size: manifest.length },
    ];
    try {
      const tar = new TarWriter(tarOut);
      await tar.addBuffer(ovfName, descriptor);
      await tar.addBuffer(`${stem}.mf`, manifest);
      const total = disks.reduce((s, d) => s + d.fileSize, 0);
      let done = 0;
      for (const d of disks) {
        const s = await FileStorage.open(d.path, { readOnly: true });
        try {
          await tar.addStorage(d.href, s, (n) => progress?.((done += n), total, 'writing OVA'));
        } finally {
          await s.close();
        }
        members.push({ name: d.href, size: d.fileSize });
      }
      await tar.finish();
      await tarOut.flush();
    } finally {
      await tarOut.close();
    }
    // The disks are in the tar now: only the OVA itself goes into place.
    for (const d of disks) await stage.location.remove(d.path);
    await stage.commit();
    return { path: out, members };
  } catch (err) {
    throw stage.rename(err);
  } finally {
    await stage.close();
  }
}

// ---------------------------------------------------------------- info and verify

/** What `ova info` prints. */
export interface PackageInfo {
  package: string;
  container: 'tar' | 'zip' | 'folder';
  descriptor: string;
  'ovf-version': string;
  members: Array<{ name: string; size: number }>;
  'virtual-systems': Array<{ id: string; name?: string; cpus?: number; 'memory-bytes'?: number; 'os-id'?: number; os?: string }>;
  disks: Array<{ id: string; href?: string; 'file-size'?: number; capacity: number; 'populated-size'?: number; format?: string; 'stream-optimized': boolean }>;
  networks: Array<{ name: string; description?: string }>;
  manifest: { name?: string; status: 'absent' | 'present'; algorithms: string[]; entries: number; unlisted: string[] };
}

/** Describe an opened package (no hashing; see {@link verifyPackage}). */
export function describePackage(pkg: OvfPackage): PackageInfo {
  const env = pkg.envelope;
  const listed = new Set(pkg.manifest?.map((e) => e.name) ?? []);
  const covered = [pkg.descriptorName, ...env.files.map((f) => f.href)];
  return {
    package: pkg.path,
    container: pkg.archive.kind,
    descriptor: pkg.descriptorName,
    'ovf-version': env.version,
    members: pkg.archive.kind === 'folder' ? [] : pkg.archive.members.map((m) => ({ name: m.name, size: m.size })),
    'virtual-systems': env.virtualSystems.map((vs) => {
      const o: PackageInfo['virtual-systems'][number] = { id: vs.id };
      if (vs.name !== undefined) o.name = vs.name;
      if (vs.cpus !== undefined) o.cpus = vs.cpus;
      if (vs.memoryBytes !== undefined) o['memory-bytes'] = vs.memoryBytes;
      if (vs.osId !== undefined) o['os-id'] = vs.osId;
      if (vs.osDescription !== undefined) o.os = vs.osDescription;
      return o;
    }),
    disks: env.disks.map((d) => {
      const f = env.files.find((x) => x.id === d.fileRef);
      const o: PackageInfo['disks'][number] = { id: d.diskId, capacity: d.capacity, 'stream-optimized': d.format === STREAM_OPTIMIZED_FORMAT };
      if (f) {
        o.href = f.href;
        o['file-size'] = pkg.archive.members.find((m) => m.name === f.href)?.size ?? f.size ?? 0;
      }
      if (d.populatedSize !== undefined) o['populated-size'] = d.populatedSize;
      if (d.format !== undefined) o.format = d.format;
      return o;
    }),
    networks: env.networks,
    manifest: pkg.manifest
      ? { name: pkg.manifestName, status: 'present', algorithms: [...new Set(pkg.manifest.map((e) => e.algorithm))], entries: pkg.manifest.length, unlisted: covered.filter((n) => !listed.has(n)) }
      : { status: 'absent', algorithms: [], entries: 0, unlisted: covered },
  };
}

/** One checked manifest line. */
export interface VerifyLine {
  name: string;
  algorithm: ManifestAlgorithm;
  expected: string;
  actual?: string;
  status: 'ok' | 'mismatch' | 'missing';
}

/** What {@link verifyPackage} found. */
export interface VerifyResult {
  ok: boolean;
  manifest?: string;
  lines: VerifyLine[];
  /** Package files the manifest does not cover. */
  unlisted: string[];
  problems: string[];
}

/** Hash every file the manifest names and compare; also reports package files it leaves out. */
export async function verifyPackage(pkg: OvfPackage, onProgress?: PackageProgress): Promise<VerifyResult> {
  const res: VerifyResult = { ok: true, lines: [], unlisted: [], problems: [] };
  if (!pkg.manifest) {
    res.ok = false;
    res.problems.push(`${pkg.archive.name}: the package has no manifest; nothing to verify`);
    return res;
  }
  res.manifest = pkg.manifestName;
  for (const e of pkg.manifest) {
    const member = pkg.archive.members.find((m) => m.name === e.name);
    if (!member && !(pkg.archive.kind === 'folder' && e.name === pkg.descriptorName)) {
      res.lines.push({ name: e.name, algorithm: e.algorithm, expected: e.digest, status: 'missing' });
      res.problems.push(`${e.name}: named in the manifest but not in the package`);
      continue;
    }
    const s = await pkg.archive.openMember(e.name);
    let actual: string;
    try {
      let done = 0;
      actual = await digestStorage(s, e.algorithm, (n) => onProgress?.((done += n), s.size, `verifying ${e.name}`));
    } finally {
      await s.close();
    }
    const ok = actual === e.digest;
    res.lines.push({ name: e.name, algorithm: e.algorithm, expected: e.digest, actual, status: ok ? 'ok' : 'mismatch' });
    if (!ok) res.problems.push(`${e.name}: ${e.algorithm} is ${actual}, the manifest says ${e.digest}`);
  }
  const listed = new Set(pkg.manifest.map((e) => e.name));
  res.unlisted = [pkg.descriptorName, ...pkg.envelope.files.map((f) => f.href)].filter((n) => !listed.has(n));
  for (const n of res.unlisted) res.problems.push(`${n}: not covered by the manifest`);
  res.ok = res.problems.length === 0;
  return res;
}

/** Options for {@link extractPackage}. */
export interface ExtractOptions extends ArchiveOptions {
  /** Convert the disks to this format instead of copying the package files. */
  format?: string;
  /** Skip the manifest check (which otherwise must pass before anything is written). */
  noVerify?: boolean;
  force?: boolean;
  onProgress?: PackageProgress;
}

/**
 * Extract the package at `path` (an OVA, a plain .ovf or a zip holding either) into
 * `dir`: its descriptor, manifest and disk files, or with `format` the disks
 * converted. A manifest, when there is one, is verified first (unless `noVerify`);
 * nothing is written outside `dir`, and on failure what was written is removed.
 * Returns the files written.
 *
 * @example
 * ```ts
 * import { create, createOva, extractPackage } from 'vdisk';
 *
 * await (await create('disk.raw', { format: 'raw', size: '4M' })).close();
 * await createOva('app.ova', ['disk.raw'], { name: 'app' });
 * const files = await extractPackage('app.ova', 'out', { format: 'vdi' });
 * console.log(files.length > 0); // true
 * ```
 */
export async function extractPackage(path: string, dir: string, opts: ExtractOptions = {}): Promise<string[]> {
  if (opts.format) findDriver(opts.format);
  const pkg = await openPackage(path, opts);
  const written: string[] = [];
  try {
    // A package without a manifest has nothing to check (manifests are optional, DSP0243 §5.1).
    if (!opts.noVerify && pkg.manifest) {
      const v = await verifyPackage(pkg, opts.onProgress);
      if (!v.ok) throw new VdiskError('E_CORRUPT', `${path}: manifest check failed (use --no-verify to extract anyway): ${v.problems.join('; ')}`);
    }
    await mkdir(dir, { recursive: true }).catch((err: unknown) => {
      throw fromSystemError(err, dir);
    });
    const root = await realpath(dir);
    const target = async (name: string): Promise<string> => {
      const p = join(root, safeMemberName(path, name, 'file'));
      await mkdir(dirname(p), { recursive: true }).catch((err: unknown) => {
        throw fromSystemError(err, dirname(p));
      });
      // The one confinement rule: a symlinked folder (or file) inside DIR must not lead out of it.
      confine(path, name, p, [root], 'file');
      if (opts.force) await rm(p, { force: true });
      return p;
    };
    const total = opts.format
      ? pkg.envelope.disks.reduce((s, d) => s + d.capacity, 0)
      : [pkg.descriptorName, pkg.manifestName, ...pkg.envelope.files.map((f) => f.href)].reduce((s, n) => s + (pkg.archive.members.find((m) => m.name === n)?.size ?? 0), 0);
    let done = 0;
    if (!opts.format) {
      const stem = pkg.descriptorName.slice(0, -extname(pkg.descriptorName).length);
      const cert = pkg.archive.members.find((m) => m.name === `${stem}.cert`)?.name;
      const names = [pkg.descriptorName, ...(pkg.manifestName ? [pkg.manifestName] : []), ...(cert ? [cert] : []), ...pkg.envelope.files.map((f) => f.href)];
      for (const name of [...new Set(names)]) {
        const src = await pkg.archive.openMember(name);
        try {
          const p = await target(name);
          const out = await FileStorage.open(p, { create: 'new' });
          written.push(p);
          try {
            await copyBytes(src, 0, out, 0, src.size, (n) => opts.onProgress?.((done += n), total, `extracting ${name}`));
            await out.flush();
          } finally {
            await out.close();
          }
        } finally {
          await src.close();
        }
      }
      return written;
    }
    const fmt = findDriver(opts.format).name;
    for (const f of pkg.envelope.files) {
      if (f.compression) throw new VdiskError('E_UNSUPPORTED', `${path}: File ${f.id} is ${f.compression}-compressed; extract it without -O`);
    }
    for (const d of pkg.envelope.disks) {
      const f = pkg.envelope.files.find((x) => x.id === d.fileRef);
      if (!f) continue;
      const base = basename(f.href, extname(f.href));
      const p = await target(`${base}.${fmt}`);
      const src = await openLocation(pkg.locationOf(f.href), { readOnly: true });
      try {
        const dst = await create(p, { format: fmt, size: src.size });
        written.push(p);
        try {
          const before = done;
          await copyDevice(src, dst, { onProgress: (n) => opts.onProgress?.(before + n, total, `converting ${f.href}`) });
          await dst.flush();
        } finally {
          await dst.close();
        }
        done += src.size;
      } finally {
        await src.close();
      }
    }
    return written;
  } catch (err) {
    for (const p of written) await rm(p, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    await pkg.close();
  }
}
