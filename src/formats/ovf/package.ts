/**
 * An OVF package opened for reading: an .ova (tar), a zip holding an .ovf with its
 * disks or an .ova, or a plain .ovf next to its files. Gives the parsed descriptor and
 * manifest and where each disk opens in place; `ops/ova` builds on it.
 */
import { basename, dirname, extname, join } from 'node:path';
import { VdiskError } from '../../errors.js';
import { FolderArchive, openArchive, type Archive, type ArchiveOptions } from '../../storage/containers/archive.js';
import { ArchiveLocation } from '../../storage/containers/location.js';
import { isTar } from '../../storage/containers/tar.js';
import { isZip } from '../../storage/containers/zip.js';
import { FileStorage } from '../../storage/file.js';
import { FileLocation, type ImageLocation } from '../../storage/location.js';
import { MAX_DESCRIPTOR_BYTES, parseDescriptor, type OvfEnvelope } from './descriptor.js';
import { MAX_MANIFEST_BYTES, parseManifest, type ManifestEntry } from './manifest.js';

/** An opened package: its members, descriptor and manifest. */
export interface OvfPackage {
  /** What the user named. */
  path: string;
  archive: Archive;
  descriptorName: string;
  envelope: OvfEnvelope;
  manifestName?: string;
  manifest?: ManifestEntry[];
  /** Where member `name` opens as an image (read-only). */
  locationOf(name: string): ImageLocation;
  close(): Promise<void>;
}

async function readSmall(archive: Archive, name: string, limit: number, what: string): Promise<Buffer> {
  const m = archive.members.find((x) => x.name === name);
  if (m && m.size > limit) throw new VdiskError('E_UNSUPPORTED', `${archive.name}: ${what} "${name}" of ${m.size} bytes is over the ${limit}-byte limit`);
  const s = await archive.openMember(name);
  try {
    if (s.size > limit) throw new VdiskError('E_UNSUPPORTED', `${archive.name}: ${what} "${name}" of ${s.size} bytes is over the ${limit}-byte limit`);
    const b = Buffer.alloc(s.size);
    await s.read(b, 0);
    return b;
  } finally {
    await s.close();
  }
}

const isOvfName = (n: string): boolean => extname(n).toLowerCase() === '.ovf';

/**
 * Open the package at `path`: an .ova (tar), a zip holding an .ovf with its disks or
 * an .ova, or a plain .ovf next to its files. Checks every File href (inside the
 * package, present) and size (matching the member).
 */
export async function openPackage(path: string, opts: ArchiveOptions = {}): Promise<OvfPackage> {
  const head = await FileStorage.open(path, { readOnly: true });
  let archive: Archive;
  let chain: string[] = [];
  if ((await isTar(head)) || (await isZip(head))) {
    archive = await openArchive(head, opts);
    if (archive.kind === 'zip' && !archive.members.some((m) => isOvfName(m.name))) {
      const ovas = archive.members.filter((m) => extname(m.name).toLowerCase() === '.ova');
      if (ovas.length === 1) {
        const inner = ovas[0]!.name;
        const outer = archive;
        try {
          const member = await outer.openMember(inner);
          const nested = await openArchive(member, opts);
          chain = [inner];
          archive = {
            name: `${path}:${inner}`,
            kind: nested.kind,
            members: nested.members,
            openMember: (n) => nested.openMember(n),
            close: async () => {
              await nested.close();
              await outer.close();
            },
          };
        } catch (err) {
          await outer.close();
          throw err;
        }
      }
    }
  } else {
    await head.close();
    archive = await FolderArchive.open(path);
  }
  try {
    const descriptorName = archive.kind === 'folder' ? basename(path) : archive.members.find((m) => isOvfName(m.name))?.name;
    if (!descriptorName) throw new VdiskError('E_FORMAT', `${archive.name}: no .ovf descriptor in the package`);
    const envelope = parseDescriptor(`${archive.name}:${descriptorName}`, await readSmall(archive, descriptorName, MAX_DESCRIPTOR_BYTES, 'descriptor'));
    const pkgDir = dirname(descriptorName) === '.' ? '' : `${dirname(descriptorName)}/`;
    // hrefs are relative to the descriptor
    envelope.files = envelope.files.map((f) => ({ ...f, href: `${pkgDir}${f.href}` }));
    for (const f of envelope.files) {
      const m = archive.members.find((x) => x.name === f.href);
      if (!m) throw new VdiskError('E_CORRUPT', `${archive.name}: File ${f.id} href "${f.href}" is not in the package`);
      if (f.size !== undefined && f.size !== m.size) {
        throw new VdiskError('E_CORRUPT', `${archive.name}: File ${f.id} ovf:size ${f.size} disagrees with the size of "${f.href}" in the package (${m.size})`);
      }
    }
    const stem = descriptorName.slice(0, -extname(descriptorName).length);
    const mfs = archive.members.filter((m) => extname(m.name).toLowerCase() === '.mf');
    const manifestName = mfs.find((m) => m.name === `${stem}.mf`)?.name ?? (mfs.length === 1 ? mfs[0]!.name : undefined);
    const pkg: OvfPackage = {
      path,
      archive,
      descriptorName,
      envelope,
      locationOf: (name) => (archive.kind === 'folder' ? new FileLocation(join(dirname(path), name)) : new ArchiveLocation(path, [...chain, name], opts)),
      close: () => archive.close(),
    };
    if (manifestName) {
      pkg.manifestName = manifestName;
      pkg.manifest = parseManifest(`${archive.name}:${manifestName}`, await readSmall(archive, manifestName, MAX_MANIFEST_BYTES, 'manifest'));
    }
    return pkg;
  } catch (err) {
    await archive.close().catch(() => undefined);
    throw err;
  }
}
