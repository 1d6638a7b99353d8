/**
 * A storage pool: an LVM2 volume group whose physical volumes are the guest-visible
 * disks of vdisk images of any format. The pool is found as LVM2 finds a VG (scan a
 * folder for PV labels, take the highest seqno whose text checksum holds), changed by
 * LVM2-style commits on every member, and its logical volumes are BlockDevices.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import type { DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { minimumDiskSize, readPartitions } from '../partitions/index.js';
import { formatSize } from '../util/size.js';
import {
  DEFAULT_PE_START,
  formatId,
  LABEL_SECTOR,
  MDA_OFFSET,
  type MdaHeader,
  newId,
  PV_EXT_USED,
  PV_EXT_VERSION,
  type PvLabel,
  SECTOR,
} from './layout.js';
import { fileFolder, type PoolFolder } from './folder.js';
import { LogicalVolume } from './lv.js';
import { findLabel, type MdaState, nextLocn, readMda, writeLabel, writeMdaHeader, writeText } from './member.js';
import { checkName, extentBytes, type LvMeta, lvExtents, type PvMeta, type SegmentMeta, type VgMeta, formatVg } from './metadata.js';

/** Default extent size: 4 MiB, as vgcreate uses. */
export const DEFAULT_EXTENT_SIZE = 4 << 20;
/** Default stripe size: 64 KiB, as lvcreate uses. */
export const DEFAULT_STRIPE_SIZE = 64 << 10;
const VERSION = 'vdisk';

/** A member image of the pool. */
export interface PoolMember {
  /** The PV's key in the VG text (`pv0`, ...). */
  key: string;
  uuid: string;
  /** Absolute path of the image, or the hint when the member is missing. */
  path: string;
  /** The opened image; undefined when the member is missing. */
  dev?: DiskImage;
  label?: PvLabel;
  mda?: MdaHeader;
  /** Seqno of the text committed on this member when the pool was opened. */
  seqno?: number;
}

/** Options for {@link Pool.open}. */
export interface PoolOpenOptions {
  /** Folder to scan for members; the current one when absent. */
  dir?: string;
  /** The folder as an abstraction (tests: a memory folder); wins over `dir`. */
  folder?: PoolFolder;
  readOnly?: boolean;
}

/** Options for {@link Pool.create} and {@link Pool.add}. */
export interface PoolMemberOptions {
  dir?: string;
  folder?: PoolFolder;
  /** Extent size in bytes (create only). */
  extentSize?: number;
  /** Use a member that holds a partition table, a filesystem signature or an unused PV. */
  force?: boolean;
  /**
   * Create members that do not exist yet: the first missing member gets the first
   * entry, the next the next; a single entry serves them all.
   */
  newImages?: ReadonlyArray<{ format: string; size: number }>;
}

interface Candidate {
  path: string;
  dev: DiskImage;
  label: PvLabel;
  mdas: MdaState[];
}

/** A PV label and metadata areas read from a device, or undefined when it holds no label. */
async function readCandidate(folder: PoolFolder, path: string): Promise<Candidate | undefined> {
  let dev: DiskImage;
  try {
    dev = await folder.open(path, true);
  } catch {
    return undefined;
  }
  try {
    const label = await findLabel(dev, path);
    if (!label) {
      await dev.close();
      return undefined;
    }
    const mdas: MdaState[] = [];
    for (const a of label.metadataAreas) mdas.push(await readMda(dev, a.offset, a.size, path));
    return { path, dev, label, mdas };
  } catch (e) {
    await dev.close().catch(() => undefined);
    if (e instanceof VdiskError && (e.code === 'E_CORRUPT' || e.code === 'E_UNSUPPORTED')) return undefined;
    throw e;
  }
}

/** The best VG text a candidate holds (highest seqno among good copies). */
function bestVg(c: Candidate): VgMeta | undefined {
  let best: VgMeta | undefined;
  for (const m of c.mdas) if (m.vg && (!best || m.vg.seqno > best.seqno)) best = m.vg;
  return best;
}

/** Free extent ranges `[start, end)` of each PV, in PV order. */
export function freeRanges(vg: VgMeta): Map<string, Array<[number, number]>> {
  const used = new Map<string, Array<[number, number]>>();
  for (const lv of vg.lvs) {
    for (const s of lv.segments) {
      const len = s.extentCount / Math.max(1, s.stripes.length);
      for (const a of s.stripes) used.set(a.pv, [...(used.get(a.pv) ?? []), [a.pe, a.pe + len]]);
    }
  }
  const out = new Map<string, Array<[number, number]>>();
  for (const pv of vg.pvs) {
    const u = (used.get(pv.key) ?? []).sort((a, b) => a[0] - b[0]);
    const free: Array<[number, number]> = [];
    let at = 0;
    for (const [a, b] of u) {
      if (a > at) free.push([at, a]);
      at = Math.max(at, b);
    }
    if (at < pv.peCount) free.push([at, pv.peCount]);
    out.set(pv.key, pv.status.includes('ALLOCATABLE') ? free : []);
  }
  return out;
}

function cloneVg(vg: VgMeta): VgMeta {
  return structuredClone(vg);
}

/** Why `dev` should not become a PV without --force, or undefined when it is blank enough. */
async function foreignContent(dev: DiskImage): Promise<string | undefined> {
  const head = Buffer.alloc(Math.min(dev.size, 68 << 10));
  await dev.read(head, 0);
  const at = (off: number, s: string): boolean => head.length >= off + s.length && head.subarray(off, off + s.length).toString('latin1') === s;
  if (at(512, 'EFI PART')) return 'a GPT partition table';
  if (head.length >= 1082 && head.readUInt16LE(1080) === 0xef53) return 'an ext2/3/4 filesystem';
  if (at(0, 'XFSB')) return 'an XFS filesystem';
  if (at(65600, '_BHRfS_M')) return 'a btrfs filesystem';
  if (at(4086, 'SWAPSPACE2') || at(4086, 'SWAP-SPACE')) return 'a swap area';
  if (at(0, 'LUKS\xba\xbe')) return 'a LUKS volume';
  if (at(3, 'NTFS    ')) return 'an NTFS filesystem';
  if (at(54, 'FAT1') || at(82, 'FAT32')) return 'a FAT filesystem';
  if (head.length >= 512 && head.readUInt16LE(510) === 0xaa55) {
    const table = await readPartitions(dev).catch(() => undefined);
    return table && table.scheme !== 'none' ? 'an MBR partition table' : 'a boot sector';
  }
  const label = await findLabel(dev, 'member').catch(() => undefined);
  if (label) return 'an LVM2 physical volume label';
  return undefined;
}

/** How to create the `i`-th missing member, or E_NOENT when `--new` does not say. */
function newImageFor(opts: PoolMemberOptions, i: number, name: string): { format: string; size: number } {
  const list = opts.newImages ?? [];
  const n = list.length === 1 ? list[0] : list[i];
  if (!n) throw new VdiskError('E_NOENT', `${name}: no such image (use --new FMT:SIZE to create members; one per missing member, or one for all)`);
  return n;
}

/** Extents of LVs that sit on PV `key`. */
function usedExtents(vg: VgMeta, key: string): number {
  let n = 0;
  for (const lv of vg.lvs) for (const s of lv.segments) for (const a of s.stripes) if (a.pv === key) n += s.extentCount / s.stripes.length;
  return n;
}

/** One migration chunk: `count` extents of a stripe area moved from one PV to another, and the VG that says so. */
interface MoveStep {
  from: { pv: string; pe: number };
  to: { pv: string; pe: number };
  count: number;
  next: VgMeta;
}

/**
 * The next chunk to move off PV `key`: the first stripe area on it, up to `chunk`
 * extents, to free space on another allocatable PV that the segment does not
 * already stripe over. Undefined when nothing is left on `key`; E_NOSPC when
 * nowhere can take it.
 */
export function planMove(vg: VgMeta, key: string, chunk: number): MoveStep | undefined {
  for (const lv of vg.lvs) {
    for (const [si, seg] of lv.segments.entries()) {
      const j = seg.stripes.findIndex((a) => a.pv === key);
      if (j < 0) continue;
      const k = seg.stripes.length;
      const area = seg.extentCount / k;
      const free = freeRanges(vg);
      const others = vg.pvs.filter((p) => p.key !== key && !seg.stripes.some((a) => a.pv === p.key));
      const ranges = others.flatMap((p) => (free.get(p.key) ?? []).map(([a, b]) => ({ pv: p.key, pe: a, len: b - a })));
      const want = Math.min(chunk, area);
      const fit = ranges.find((r) => r.len >= want) ?? ranges.sort((x, y) => y.len - x.len)[0];
      if (!fit) {
        throw new VdiskError('E_NOSPC', `VG ${vg.name}: no free extents outside ${key}${k > 1 ? ' and the other stripes' : ''} to take ${lv.name}'s ${usedExtents(vg, key)} extents on it`);
      }
      const count = Math.min(want, fit.len);
      const next = structuredClone(vg);
      const nlv = next.lvs.find((l) => l.name === lv.name)!;
      const nseg = nlv.segments[si]!;
      const from = { pv: key, pe: seg.stripes[j]!.pe };
      const parts: SegmentMeta[] = [];
      const head: SegmentMeta = { ...nseg, extentCount: count * k, stripes: nseg.stripes.map((a) => ({ ...a })) };
      head.stripes[j] = { pv: fit.pv, pe: fit.pe };
      parts.push(head);
      if (count < area) {
        parts.push({ ...nseg, startExtent: nseg.startExtent + count * k, extentCount: (area - count) * k, stripes: nseg.stripes.map((a) => ({ pv: a.pv, pe: a.pe + count })) });
      }
      nlv.segments.splice(si, 1, ...parts);
      nlv.segments = mergeSegments(nlv.segments);
      return { from, to: { pv: fit.pv, pe: fit.pe }, count, next };
    }
  }
  return undefined;
}

/** Join neighbouring segments that continue each other on the same PVs (as LVM2 merges them). */
function mergeSegments(segs: SegmentMeta[]): SegmentMeta[] {
  const out: SegmentMeta[] = [];
  for (const s of segs) {
    const prev = out.at(-1);
    const k = s.stripes.length;
    if (
      prev &&
      prev.type === s.type &&
      prev.stripes.length === k &&
      prev.stripeSize === s.stripeSize &&
      prev.stripes.every((a, i) => a.pv === s.stripes[i]!.pv && a.pe + prev.extentCount / k === s.stripes[i]!.pe)
    ) {
      prev.extentCount += s.extentCount;
    } else out.push({ ...s, stripes: s.stripes.map((a) => ({ ...a })) });
  }
  return out;
}

/** An LVM2 volume group over vdisk images. */
export class Pool {
  /** Things the user should hear: bad metadata copies that were skipped, members brought up to date. */
  readonly warnings: string[] = [];
  private pending: Promise<unknown> = Promise.resolve();
  /** LV requests in flight, and the migration step that holds them off while it moves a chunk. */
  private ioActive = 0;
  private ioDrained?: () => void;
  private moving?: Promise<void>;
  private readonly volumes = new Set<LogicalVolume>();
  private closed = false;

  private constructor(
    readonly folder: PoolFolder,
    private current: VgMeta,
    readonly members: PoolMember[],
    readonly readOnly: boolean,
  ) {}

  /** The pool folder. */
  get dir(): string {
    return this.folder.dir;
  }

  /** The committed VG. */
  get vg(): VgMeta {
    return this.current;
  }

  get name(): string {
    return this.current.name;
  }

  /** Members listed in the VG but not found. */
  get missing(): PoolMember[] {
    return this.members.filter((m) => !m.dev);
  }

  /** Find and open the VG named `name` among the images in `opts.dir`. */
  static async open(name: string, opts: PoolOpenOptions = {}): Promise<Pool> {
    const folder = opts.folder ?? fileFolder(opts.dir);
    const cands: Candidate[] = [];
    const release = async (): Promise<void> => {
      await Promise.all(cands.map((c) => c.dev.close().catch(() => undefined)));
    };
    try {
      for (const path of await folder.list()) {
        const c = await readCandidate(folder, path);
        if (c) cands.push(c);
      }
      return await Pool.assemble(name, folder, cands, opts.readOnly ?? false);
    } finally {
      await release();
    }
  }

  private static async assemble(name: string, folder: PoolFolder, cands: Candidate[], readOnly: boolean): Promise<Pool> {
    const dir = folder.dir;
    const ours = cands.filter((c) => c.mdas.some((m) => m.vg?.name === name) || c.mdas.some((m) => m.problem && m.text?.includes(`${name} {`)));
    const good = ours.filter((c) => bestVg(c)?.name === name);
    if (good.length === 0) {
      // A damaged text cannot say which VG it was: name every damaged copy in the folder.
      const bad = cands.flatMap((c) => c.mdas.filter((m) => m.problem).map((m) => m.problem));
      if (bad.length > 0) throw new VdiskError('E_CORRUPT', `VG ${name}: every metadata copy is damaged: ${bad.join('; ')}`);
      throw new VdiskError('E_NOENT', `VG ${name}: no member image in ${dir} holds it`);
    }
    const ids = new Set(good.map((c) => bestVg(c)!.id));
    if (ids.size > 1) throw new VdiskError('E_CORRUPT', `${dir} holds ${ids.size} different VGs named ${name}: ${good.map((c) => basename(c.path)).join(', ')}`);
    const best = good.map((c) => bestVg(c)!).reduce((a, b) => (b.seqno > a.seqno ? b : a));
    const warnings: string[] = [];
    for (const c of cands) {
      if (!best.pvs.some((p) => p.id === c.label.uuid)) continue;
      for (const m of c.mdas) if (m.problem) warnings.push(`${c.path}: ${m.problem}; using the copy with seqno ${best.seqno}`);
    }

    // Which file holds which PV: by label uuid; a copied file is refused, a container's own extent file is not a copy.
    const byUuid = new Map<string, Candidate>();
    for (const c of cands) {
      const other = byUuid.get(c.label.uuid);
      if (!other) {
        byUuid.set(c.label.uuid, c);
        continue;
      }
      if (other.dev.format === 'raw' && c.dev.format !== 'raw') byUuid.set(c.label.uuid, c);
      else if (c.dev.format === 'raw' && other.dev.format !== 'raw') continue;
      else if (best.pvs.some((p) => p.id === c.label.uuid)) {
        throw new VdiskError('E_CORRUPT', `PV ${formatId(c.label.uuid)} is in both ${other.path} and ${c.path} (a copied image?): remove one`);
      }
    }
    const members: PoolMember[] = [];
    for (const pv of best.pvs) {
      let c = byUuid.get(pv.id);
      if (!c && pv.device) {
        // A member outside the folder, named by its relative hint.
        const hinted = folder.name(pv.device);
        if (hinted && !cands.some((x) => x.path === hinted) && (await folder.exists(hinted))) {
          const h = await readCandidate(folder, hinted);
          if (h && h.label.uuid === pv.id) {
            cands.push(h);
            c = h;
          } else if (h) await h.dev.close();
        }
      }
      members.push({ key: pv.key, uuid: pv.id, path: c?.path ?? (folder.name(pv.device) || pv.device || pv.key), seqno: c ? bestVg(c)?.seqno : undefined });
    }
    const partial = members.some((m) => !byUuid.get(m.uuid) && !cands.some((c) => c.label.uuid === m.uuid));
    const ro = readOnly || partial || best.readOnlyReason !== undefined;
    if (partial) {
      for (const m of members.filter((x) => !cands.some((c) => c.label.uuid === x.uuid))) {
        warnings.push(`PV ${formatId(m.uuid)} (last seen as ${best.pvs.find((p) => p.key === m.key)?.device || '?'}) is missing: the pool is open read-only and partial`);
      }
    }
    if (best.readOnlyReason && !readOnly) warnings.push(`${best.readOnlyReason}: the pool is open read-only`);

    // Open the members for real (writable unless read-only), checking nothing changed since the scan.
    const pool = new Pool(folder, best, members, ro);
    pool.warnings.push(...warnings);
    try {
      for (const m of members) {
        const c = cands.find((x) => x.label.uuid === m.uuid && x.path === m.path) ?? cands.find((x) => x.label.uuid === m.uuid);
        if (!c) continue;
        m.path = c.path;
        const dev = await folder.open(c.path, ro);
        m.dev = dev;
        const label = await findLabel(dev, c.path);
        if (!label || label.uuid !== m.uuid) throw new VdiskError('E_CORRUPT', `${c.path}: its PV label changed while the pool was opened`);
        m.label = label;
        const area = label.metadataAreas[0];
        if (!area) throw new VdiskError('E_UNSUPPORTED', `${c.path}: PV without a metadata area (vdisk keeps one on every member)`);
        const st = await readMda(dev, area.offset, area.size, c.path);
        m.mda = st.header;
        m.seqno = st.vg?.seqno;
        if (m.seqno !== undefined && m.seqno < best.seqno) pool.warnings.push(`${c.path}: holds seqno ${m.seqno}, older than ${best.seqno}; brought up to date on the next change`);
      }
    } catch (e) {
      await pool.close().catch(() => undefined);
      throw e;
    }
    return pool;
  }

  /**
   * Create VG `name` over the images at `paths` (relative to `opts.dir`). Members that
   * do not exist are created when `opts.newImage` says how; a member holding a
   * partition table, a filesystem or a PV is refused unless `opts.force`.
   */
  static async create(name: string, paths: readonly string[], opts: PoolMemberOptions = {}): Promise<Pool> {
    checkName(name, 'VG');
    if (paths.length === 0) throw new VdiskError('E_USAGE', 'a pool needs at least one member');
    const folder = opts.folder ?? fileFolder(opts.dir);
    const dir = folder.dir;
    const existing = await Pool.open(name, { folder, readOnly: true }).then(
      async (p) => {
        await p.close();
        return true;
      },
      (e: unknown) => {
        if (e instanceof VdiskError && e.code === 'E_NOENT') return false;
        throw e;
      },
    );
    if (existing) throw new VdiskError('E_EXISTS', `VG ${name} already exists in ${dir}`);
    const extentSize = opts.extentSize ?? DEFAULT_EXTENT_SIZE;
    if (!Number.isSafeInteger(extentSize) || extentSize < 1024 || (extentSize & (extentSize - 1)) !== 0) {
      throw new VdiskError('E_USAGE', `extent size ${extentSize} must be a power of two of at least 1 KiB`);
    }
    const vg: VgMeta = {
      name,
      id: newId(randomBytes),
      seqno: 0,
      format: 'lvm2',
      status: ['RESIZEABLE', 'READ', 'WRITE'],
      flags: [],
      extentSize: extentSize / SECTOR,
      maxLv: 0,
      maxPv: 0,
      metadataCopies: 0,
      pvs: [],
      lvs: [],
      extra: [],
    };
    const pool = new Pool(folder, vg, [], false);
    try {
      const seen = new Set<string>();
      let fresh = 0;
      for (const p of paths) {
        const abs = folder.name(p);
        if (!abs) throw new VdiskError('E_USAGE', `${p} cannot be a member in ${dir}`);
        if (seen.has(abs)) throw new VdiskError('E_USAGE', `${p} is named twice`);
        seen.add(abs);
        const exists = await folder.exists(abs);
        await pool.prepareMember(abs, opts, exists ? undefined : newImageFor(opts, fresh++, p));
      }
      await pool.commit(pool.withPvs(vg), `vdisk pool create ${name}`);
      await pool.markUsed(pool.members);
    } catch (e) {
      await pool.close().catch(() => undefined);
      throw e;
    }
    return pool;
  }

  /** The VG with a PV entry for every member that lacks one. */
  private withPvs(vg: VgMeta): VgMeta {
    const next = cloneVg(vg);
    for (const m of this.members) {
      if (next.pvs.some((p) => p.id === m.uuid)) continue;
      let i = 0;
      while (next.pvs.some((p) => p.key === `pv${i}`)) i++;
      m.key = `pv${i}`;
      const devSize = Math.floor(m.dev!.size / SECTOR);
      const peStart = DEFAULT_PE_START / SECTOR;
      next.pvs.push({
        key: m.key,
        id: m.uuid,
        device: this.folder.hint(m.path),
        status: ['ALLOCATABLE'],
        flags: [],
        devSize,
        peStart,
        peCount: Math.floor((devSize - peStart) / next.extentSize),
        extra: [],
      });
    }
    return next;
  }

  /** Open (or create) `abs`, check it may become a PV, and write an unused PV label and empty metadata area. */
  private async prepareMember(abs: string, opts: PoolMemberOptions, fresh?: { format: string; size: number }): Promise<void> {
    let dev: DiskImage;
    const exists = await this.folder.exists(abs);
    if (!exists && fresh) dev = await this.folder.create(abs, fresh.format, fresh.size);
    else if (!exists) throw new VdiskError('E_NOENT', `${abs}: no such image (use --new FMT:SIZE to create members)`);
    else dev = await this.folder.open(abs, false);
    const m: PoolMember = { key: '', uuid: newId(randomBytes), path: abs, dev };
    this.members.push(m);
    const minimum = DEFAULT_PE_START + this.current.extentSize * SECTOR;
    if (dev.size < minimum) throw new VdiskError('E_USAGE', `${abs}: ${formatSize(dev.size)} is too small for a PV (at least ${formatSize(minimum)})`);
    if (exists) {
      const label = await findLabel(dev, abs).catch(() => undefined);
      let leftBehind = false;
      if (label) {
        const st = await readMda(dev, label.metadataAreas[0]?.offset ?? MDA_OFFSET, label.metadataAreas[0]?.size ?? 0, abs).catch(() => undefined);
        // A PV this VG let go of (remove commits the VG without it, then wipes its label:
        // a crash between the two leaves an older text of this VG that no longer lists
        // it) is free to join again; any other VG's member is not.
        leftBehind = st?.vg !== undefined && st.vg.id === this.current.id && st.vg.seqno < this.current.seqno && !this.current.pvs.some((p) => p.id === label.uuid);
        if (st?.vg && !leftBehind) throw new VdiskError('E_EXISTS', `${abs}: already a member of VG ${st.vg.name}`);
      }
      const what = leftBehind ? undefined : await foreignContent(dev);
      if (what && !opts.force) throw new VdiskError('E_EXISTS', `${abs}: holds ${what}; use --force to overwrite it`);
    }
    await dev.writeZeroes(0, DEFAULT_PE_START);
    const mdaSize = DEFAULT_PE_START - MDA_OFFSET;
    const label: PvLabel = {
      sector: LABEL_SECTOR,
      uuid: m.uuid,
      deviceSize: dev.size,
      dataAreas: [{ offset: DEFAULT_PE_START, size: 0 }],
      metadataAreas: [{ offset: MDA_OFFSET, size: mdaSize }],
      extVersion: PV_EXT_VERSION,
      extFlags: 0,
      bootloaderAreas: [],
    };
    const header: MdaHeader = { start: MDA_OFFSET, size: mdaSize, locns: [] };
    await writeMdaHeader(dev, header);
    await writeLabel(dev, label);
    await dev.flush();
    m.label = label;
    m.mda = header;
  }

  /** Set the "in a VG" flag of the members' labels, as vgcreate and vgextend do once the VG is committed. */
  private async markUsed(members: readonly PoolMember[]): Promise<void> {
    for (const m of members) {
      if (!m.dev || !m.label || m.label.extFlags & PV_EXT_USED) continue;
      m.label = { ...m.label, extFlags: m.label.extFlags | PV_EXT_USED };
      await writeLabel(m.dev, m.label);
      await m.dev.flush();
    }
  }

  /**
   * Run one LV request: it waits while a migration step moves a chunk, and computes
   * its mapping only once the step has committed, so no write lands on an extent that
   * is being copied away.
   */
  io<T>(fn: () => Promise<T>): Promise<T> {
    // No migration step running (the usual case): start at once, without the extra
    // turns an async wrapper takes on every LV request.
    if (!this.moving) return this.ioRun(fn);
    return (async () => {
      while (this.moving) await this.moving;
      return this.ioRun(fn);
    })();
  }

  private ioRun<T>(fn: () => Promise<T>): Promise<T> {
    this.ioActive++;
    const done = (): void => {
      this.ioActive--;
      if (this.ioActive === 0 && this.ioDrained) this.ioDrained();
    };
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      done();
      return Promise.reject(e);
    }
    return p.then(
      (v) => {
        done();
        return v;
      },
      (e: unknown) => {
        done();
        throw e;
      },
    );
  }

  /** Run `fn` with every LV request held off (after those in flight have finished). */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.moving) await this.moving;
    let release!: () => void;
    this.moving = new Promise<void>((r) => (release = r));
    try {
      if (this.ioActive > 0) await new Promise<void>((r) => (this.ioDrained = r));
      this.ioDrained = undefined;
      return await fn();
    } finally {
      this.moving = undefined;
      release();
    }
  }

  /** Run `fn` after every earlier change has finished (changes never interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.pending.then(fn, fn);
    this.pending = run.catch(() => undefined);
    return run;
  }

  private writable(): void {
    if (this.closed) throw new VdiskError('E_CLOSED', `VG ${this.name}: pool is closed`);
    if (this.readOnly) throw new VdiskError('E_READONLY', `VG ${this.name}: opened read-only${this.missing.length ? ' (members are missing)' : ''}`);
  }

  /**
   * Commit `next` as LVM2 does: the text after the old one on every member, then the
   * precommit slot on every member, then the commit slot. A crash leaves every member
   * at the old or the new seqno, and the open takes the highest good one.
   */
  private async commit(next: VgMeta, description: string): Promise<void> {
    next.seqno = this.current.seqno + 1;
    const footer = { description, host: hostname(), time: Math.floor(Date.now() / 1000), version: VERSION };
    const text = Buffer.from(`${formatVg(next, footer)}\0`, 'utf8');
    const live = this.members.filter((m) => m.dev && m.mda && next.pvs.some((p) => p.id === m.uuid));
    const locns = live.map((m) => nextLocn(m.mda!, text, m.path));
    for (const [i, m] of live.entries()) {
      await writeText(m.dev!, m.mda!, locns[i]!, text);
      await m.dev!.flush();
    }
    for (const [i, m] of live.entries()) {
      const old = m.mda!.locns[0] ?? { offset: 0, size: 0, checksum: 0, flags: 0 };
      await writeMdaHeader(m.dev!, { ...m.mda!, locns: [old, locns[i]!] });
      await m.dev!.flush();
    }
    for (const [i, m] of live.entries()) {
      m.mda = { ...m.mda!, locns: [locns[i]!] };
      await writeMdaHeader(m.dev!, m.mda);
      await m.dev!.flush();
      m.seqno = next.seqno;
    }
    this.current = next;
  }

  /** Add the image at `path` to the pool (any format; created with `opts.newImage` when missing). */
  add(path: string, opts: PoolMemberOptions = {}): Promise<void> {
    return this.serial(async () => {
      this.writable();
      const abs = this.folder.name(path);
      if (!abs) throw new VdiskError('E_USAGE', `${path} cannot be a member in ${this.dir}`);
      if (this.members.some((m) => m.path === abs)) throw new VdiskError('E_EXISTS', `${path} is already a member of VG ${this.name}`);
      const before = this.members.length;
      try {
        const exists = await this.folder.exists(abs);
        await this.prepareMember(abs, opts, exists ? undefined : newImageFor(opts, 0, path));
      } catch (e) {
        for (const m of this.members.splice(before)) await m.dev?.close().catch(() => undefined);
        throw e;
      }
      await this.commit(this.withPvs(this.current), `vdisk pool add ${this.name} ${basename(abs)}`);
      await this.markUsed(this.members.slice(before));
    });
  }

  /**
   * Take the member at `path` out of the pool, moving its extents onto the others
   * first, as `pvmove` then `vgreduce` would, without device-mapper. The member is
   * first made unallocatable (committed, so a re-run knows a removal is under way);
   * then each chunk of at most `chunkExtents` extents is copied to free space on
   * another member, flushed there, and only then does a commit point the LV at the
   * new place. A crash at any point leaves the chunk readable at the old place or
   * the new one; running remove again finishes the job. While a chunk moves, LV
   * requests wait (pool.io), so a write is never made to the copy's source after it
   * was read. Finally the VG is committed without the member and its PV label and
   * metadata area are wiped.
   */
  remove(path: string, opts: { chunkExtents?: number; progress?: (done: number, total: number) => void } = {}): Promise<{ movedExtents: number }> {
    return this.serial(async () => {
      this.writable();
      const abs = this.folder.name(path);
      const m = this.members.find((x) => x.path === abs) ?? this.members.find((x) => basename(x.path) === path);
      if (!m || !this.pvOf(m)) throw new VdiskError('E_NOENT', `${path} is not a member of VG ${this.name}`);
      if (this.current.pvs.length === 1) throw new VdiskError('E_USAGE', `${path} is the last member of VG ${this.name}; a pool cannot be left empty`);
      const E = extentBytes(this.current);
      const chunk = opts.chunkExtents ?? Math.max(1, Math.floor((16 << 20) / E));
      if (!Number.isSafeInteger(chunk) || chunk < 1) throw new VdiskError('E_USAGE', `chunk of ${chunk} extents`);
      if (this.pvOf(m)!.status.includes('ALLOCATABLE')) {
        const next = cloneVg(this.current);
        const pv = next.pvs.find((p) => p.id === m.uuid)!;
        pv.status = pv.status.filter((x) => x !== 'ALLOCATABLE');
        await this.commit(next, `vdisk pool remove ${this.name} ${basename(m.path)} (moving extents off)`);
      }
      const total = usedExtents(this.current, m.key);
      let moved = 0;
      opts.progress?.(0, total * E);
      for (;;) {
        const step = planMove(this.current, m.key, chunk);
        if (!step) break;
        await this.exclusive(async () => {
          await this.copyExtents(step);
          await this.commit(step.next, `vdisk pool remove ${this.name} ${basename(m.path)} (moved ${step.count} extents)`);
        });
        moved += step.count;
        opts.progress?.(moved * E, total * E);
      }
      const next = cloneVg(this.current);
      next.pvs = next.pvs.filter((p) => p.id !== m.uuid);
      await this.commit(next, `vdisk pool remove ${this.name} ${basename(m.path)}`);
      // The image is no longer a PV: wipe the label and the metadata area, as pvremove does.
      await m.dev!.writeZeroes(0, DEFAULT_PE_START);
      await m.dev!.flush();
      await m.dev!.close();
      this.members.splice(this.members.indexOf(m), 1);
      return { movedExtents: moved };
    });
  }

  /** Copy one migration chunk: data ranges copied, zero ranges and holes zeroed; the copy is flushed. */
  private async copyExtents(step: MoveStep): Promise<void> {
    const vg = this.current;
    const E = extentBytes(vg);
    const at = (pv: string, pe: number): { dev: DiskImage; off: number } => {
      const p = vg.pvs.find((x) => x.key === pv)!;
      const dev = this.member(pv).dev;
      if (!dev) throw new VdiskError('E_IO', `VG ${this.name}: ${pv} is missing`);
      return { dev, off: p.peStart * SECTOR + pe * E };
    };
    const src = at(step.from.pv, step.from.pe);
    const dst = at(step.to.pv, step.to.pe);
    const len = step.count * E;
    const buf = Buffer.allocUnsafe(Math.min(len, 1 << 20));
    for await (const e of src.dev.extents(src.off, len)) {
      const to = dst.off + (e.offset - src.off);
      if (e.kind !== 'data') {
        await dst.dev.writeZeroes(to, e.length);
        continue;
      }
      for (let done = 0; done < e.length; done += buf.length) {
        const n = Math.min(buf.length, e.length - done);
        await src.dev.read(buf.subarray(0, n), e.offset + done);
        await dst.dev.write(buf.subarray(0, n), to + done);
      }
    }
    await dst.dev.flush();
  }

  /**
   * Look for what LVM2's vgck and pvck would: missing members, members whose
   * metadata is older than the pool's or damaged, labels without the in-use flag, a
   * PV whose device size disagrees with its image. With `repair`, the committed VG is
   * written again to every member (a new seqno), which brings them all in step.
   */
  check(repair = false): Promise<{ problems: string[]; repaired: string[] }> {
    return this.serial(async () => {
      const problems: string[] = [];
      for (const m of this.members) {
        const pv = this.pvOf(m);
        if (!m.dev) {
          problems.push(`${m.key} ${formatId(m.uuid)}: member missing (last seen as ${pv?.device || '?'})`);
          continue;
        }
        if (m.seqno !== this.current.seqno) problems.push(`${m.path}: metadata ${m.seqno === undefined ? 'damaged or missing' : `at seqno ${m.seqno}`}, the pool is at ${this.current.seqno}`);
        if (m.label && !(m.label.extFlags & PV_EXT_USED)) problems.push(`${m.path}: PV label lacks the in-use flag`);
        if (pv && m.label && m.label.deviceSize !== m.dev.size) problems.push(`${m.path}: PV label records ${m.label.deviceSize} bytes, the disk has ${m.dev.size}`);
        if (pv && pv.peStart + pv.peCount * this.current.extentSize > Math.floor(m.dev.size / SECTOR)) problems.push(`${m.path}: ${pv.peCount} extents do not fit the ${m.dev.size}-byte disk`);
      }
      const repaired: string[] = [];
      if (repair && problems.length > 0) {
        this.writable();
        await this.commit(cloneVg(this.current), `vdisk pool check -r ${this.name}`);
        await this.markUsed(this.members);
        repaired.push(`metadata seqno ${this.current.seqno} written to every member`);
      }
      return { problems, repaired };
    });
  }

  /** Size of LV `name` in bytes. */
  lvSize(name: string): number {
    return lvExtents(this.lv(name)) * extentBytes(this.current);
  }

  /** The LV named `name`, or E_NOENT. */
  lv(name: string): LvMeta {
    const lv = this.current.lvs.find((l) => l.name === name);
    if (!lv) throw new VdiskError('E_NOENT', `VG ${this.name} has no LV ${name}`);
    return lv;
  }

  /** Extents of `n` to add after `after` (the LV's last segment) from the free space. */
  private allocate(vg: VgMeta, n: number, stripes: number, stripeSize: number, start: number, after?: SegmentMeta): SegmentMeta[] {
    const free = freeRanges(vg);
    const E = extentBytes(vg);
    const nospc = (): never => {
      const total = [...free.values()].flat().reduce((s, [a, b]) => s + b - a, 0);
      throw new VdiskError('E_NOSPC', `VG ${vg.name}: ${n} more extents (${formatSize(n * E)}) asked, ${total} free${stripes > 1 ? ` (striped over ${stripes} members needs each to have room)` : ''}`);
    };
    if (stripes > 1) {
      if (n % stripes !== 0) n += stripes - (n % stripes);
      const area = n / stripes;
      // Continue each stripe in place when all have room right after the old segment.
      if (after && after.stripes.length === stripes && after.stripeSize === stripeSize / SECTOR) {
        const len = after.extentCount / stripes;
        if (after.stripes.every((a) => (free.get(a.pv) ?? []).some(([x, y]) => x === a.pe + len && y - x >= area))) {
          return [{ ...after, extentCount: after.extentCount + n, stripes: after.stripes.map((a) => ({ ...a })) }];
        }
      }
      const picks = vg.pvs
        .map((p) => ({ pv: p.key, best: (free.get(p.key) ?? []).filter(([a, b]) => b - a >= area).sort((x, y) => x[1] - x[0] - (y[1] - y[0]))[0] }))
        .filter((p) => p.best);
      if (picks.length < stripes) nospc();
      return [{ startExtent: start, extentCount: n, type: 'striped', stripeSize: stripeSize / SECTOR, stripes: picks.slice(0, stripes).map((p) => ({ pv: p.pv, pe: p.best![0] })) }];
    }
    // Pieces: grow in place first, then one free range that holds it all, then whatever is left in member order.
    const pieces: Array<[pv: string, pe: number, len: number]> = [];
    let left = n;
    const take = (pv: string, r: [number, number], len: number): void => {
      pieces.push([pv, r[0], len]);
      r[0] += len;
      left -= len;
    };
    const tail = after && after.stripes.length === 1 ? after.stripes[0]! : undefined;
    if (after && tail) {
      const r = (free.get(tail.pv) ?? []).find(([a]) => a === tail.pe + after.extentCount);
      if (r) take(tail.pv, r, Math.min(left, r[1] - r[0]));
    }
    if (left > 0) {
      for (const p of vg.pvs) {
        const r = (free.get(p.key) ?? []).find(([a, b]) => b - a >= left);
        if (r) {
          take(p.key, r, left);
          break;
        }
      }
    }
    for (const p of vg.pvs) for (const r of free.get(p.key) ?? []) if (left > 0 && r[1] > r[0]) take(p.key, r, Math.min(left, r[1] - r[0]));
    if (left > 0) nospc();
    // Segments: a piece that continues the previous one on the same member joins it.
    const out: SegmentMeta[] = after && tail ? [{ ...after, stripes: [{ ...tail }] }] : [];
    let at = start;
    for (const [pv, pe, len] of pieces) {
      const prev = out.at(-1);
      const pt = prev?.stripes.length === 1 ? prev.stripes[0] : undefined;
      if (prev && pt && pt.pv === pv && pt.pe + prev.extentCount === pe) prev.extentCount += len;
      else out.push({ startExtent: at, extentCount: len, type: 'striped', stripes: [{ pv, pe }] });
      at += len;
    }
    if (after && tail && out[0]!.extentCount === after.extentCount) out.shift();
    return out;
  }

  /** Create LV `name` of at least `size` bytes (rounded up to whole extents, and to the stripe count). */
  lvCreate(name: string, size: number, opts: { stripes?: number; stripeSize?: number } = {}): Promise<LvMeta> {
    return this.serial(async () => {
      this.writable();
      checkName(name, 'LV');
      if (this.current.lvs.some((l) => l.name === name)) throw new VdiskError('E_EXISTS', `VG ${this.name} already has an LV ${name}`);
      const stripes = opts.stripes ?? 1;
      const stripeSize = opts.stripeSize ?? DEFAULT_STRIPE_SIZE;
      this.checkStripes(stripes, stripeSize);
      if (!Number.isSafeInteger(size) || size <= 0) throw new VdiskError('E_USAGE', `LV size must be positive`);
      const next = cloneVg(this.current);
      const n = Math.ceil(size / extentBytes(next));
      const lv: LvMeta = {
        name,
        id: newId(randomBytes),
        status: ['READ', 'WRITE', 'VISIBLE'],
        flags: [],
        creationTime: Math.floor(Date.now() / 1000),
        creationHost: hostname(),
        segments: this.allocate(next, n, stripes, stripeSize, 0),
        extra: [],
      };
      next.lvs.push(lv);
      await this.commit(next, `vdisk pool lv create ${this.name}/${name}`);
      return this.lv(name);
    });
  }

  private checkStripes(stripes: number, stripeSize: number): void {
    if (!Number.isSafeInteger(stripes) || stripes < 1 || stripes > 128) throw new VdiskError('E_USAGE', `stripe count ${stripes} must be 1 to 128`);
    if (stripes > this.current.pvs.length) throw new VdiskError('E_USAGE', `${stripes} stripes need ${stripes} members; VG ${this.name} has ${this.current.pvs.length}`);
    if (stripes > 1 && (!Number.isSafeInteger(stripeSize) || stripeSize < 4096 || (stripeSize & (stripeSize - 1)) !== 0 || stripeSize > extentBytes(this.current))) {
      throw new VdiskError('E_USAGE', `stripe size ${stripeSize} must be a power of two from 4 KiB to the extent size`);
    }
  }

  /** Grow LV `name` to at least `size` bytes; open LVs see the new size once it is committed. */
  lvExtend(name: string, size: number): Promise<void> {
    return this.serial(async () => {
      this.writable();
      const lv = this.lv(name);
      const E = extentBytes(this.current);
      const have = lvExtents(lv);
      const want = Math.ceil(size / E);
      if (want <= have) throw new VdiskError('E_USAGE', `${this.name}/${name} is already ${formatSize(have * E)}; extend asks for more`);
      const next = cloneVg(this.current);
      const nlv = next.lvs.find((l) => l.name === name)!;
      const last = nlv.segments.at(-1)!;
      const stripes = last.stripes.length;
      const added = this.allocate(next, want - have, stripes, (last.stripeSize ?? DEFAULT_STRIPE_SIZE / SECTOR) * SECTOR, have, last);
      if (added[0] && added[0].startExtent === last.startExtent) nlv.segments.splice(-1, 1, ...added);
      else nlv.segments.push(...added);
      await this.commit(next, `vdisk pool lv extend ${this.name}/${name}`);
    });
  }

  /** Shrink LV `name` to `size` bytes (whole extents); refused when it would cut a partition table's span. */
  lvReduce(name: string, size: number): Promise<void> {
    return this.serial(async () => {
      this.writable();
      const lv = this.lv(name);
      const E = extentBytes(this.current);
      const have = lvExtents(lv);
      const want = Math.ceil(size / E);
      if (want >= have) throw new VdiskError('E_USAGE', `${this.name}/${name} is ${formatSize(have * E)}; reduce asks for less`);
      if (want === 0) throw new VdiskError('E_USAGE', `${this.name}/${name}: reduce to nothing is lv remove`);
      // Read the table through a short-lived LV view (not registered as open: lv remove must not see it).
      const table = await readPartitions(new LogicalVolume(this, name, false));
      if (table.scheme !== 'none' && minimumDiskSize(table) > want * E) {
        throw new VdiskError('E_USAGE', `${this.name}/${name}: ${formatSize(want * E)} would cut into the ${table.scheme.toUpperCase()} partitions, which need ${minimumDiskSize(table)} bytes`);
      }
      const next = cloneVg(this.current);
      const nlv = next.lvs.find((l) => l.name === name)!;
      const segs: SegmentMeta[] = [];
      for (const s of nlv.segments) {
        if (s.startExtent >= want) break;
        const keep = Math.min(s.extentCount, want - s.startExtent);
        const k = s.stripes.length;
        if (keep % k !== 0) throw new VdiskError('E_USAGE', `${this.name}/${name}: ${want} extents would cut a stripe row; pick a multiple of ${k} extents`);
        segs.push({ ...s, extentCount: keep });
      }
      nlv.segments = segs;
      await this.commit(next, `vdisk pool lv reduce ${this.name}/${name}`);
    });
  }

  /** Remove LV `name` (refused while it is open here). */
  lvRemove(name: string): Promise<void> {
    return this.serial(async () => {
      this.writable();
      this.lv(name);
      if ([...this.volumes].some((v) => v.lvName === name && !v.isClosed)) throw new VdiskError('E_LOCKED', `${this.name}/${name} is open`);
      const next = cloneVg(this.current);
      next.lvs = next.lvs.filter((l) => l.name !== name);
      await this.commit(next, `vdisk pool lv remove ${this.name}/${name}`);
    });
  }

  /**
   * Rename LV `from` to `to` in one commit. With `replace`, an LV already named `to`
   * is removed in that same commit, so a reader of the metadata sees the old LV or
   * the new one under the name, never neither: how `convert -O lvm --force` puts a
   * finished copy in place (LVM2's lvrename, with an lvremove folded in).
   */
  lvRename(from: string, to: string, opts: { replace?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      this.writable();
      checkName(to, 'LV');
      this.lv(from);
      const isOpen = (n: string): boolean => [...this.volumes].some((v) => v.lvName === n && !v.isClosed);
      if (isOpen(from)) throw new VdiskError('E_LOCKED', `${this.name}/${from} is open`);
      if (from === to) return;
      const clash = this.current.lvs.some((l) => l.name === to);
      if (clash && !opts.replace) throw new VdiskError('E_EXISTS', `VG ${this.name} already has an LV ${to}`);
      if (clash && isOpen(to)) throw new VdiskError('E_LOCKED', `${this.name}/${to} is open`);
      const next = cloneVg(this.current);
      next.lvs = next.lvs.filter((l) => l.name !== to);
      next.lvs.find((l) => l.name === from)!.name = to;
      await this.commit(next, `vdisk pool lv rename ${this.name}/${from} ${to}`);
    });
  }

  /** LV `name` as a BlockDevice that follows the pool's committed metadata (it grows when the LV is extended). */
  openLv(name: string, opts: { ownsPool?: boolean } = {}): LogicalVolume {
    this.lv(name);
    const v = new LogicalVolume(this, name, opts.ownsPool ?? false);
    this.volumes.add(v);
    return v;
  }

  /** The member holding PV `key`. */
  member(key: string): PoolMember {
    const m = this.members.find((x) => x.key === key);
    if (!m) throw new VdiskError('E_CORRUPT', `VG ${this.name}: no member for ${key}`);
    return m;
  }

  /** PV entry of a member. */
  pvOf(m: PoolMember): PvMeta | undefined {
    return this.current.pvs.find((p) => p.id === m.uuid);
  }

  /** Flush every member. */
  async flush(): Promise<void> {
    for (const m of this.members) if (m.dev && !m.dev.readOnly) await m.dev.flush();
  }

  /** Wait for pending changes, then close every member. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.pending;
    this.closed = true;
    const errs: unknown[] = [];
    for (const m of this.members) await m.dev?.close().catch((e: unknown) => errs.push(e));
    if (errs.length) throw errs[0];
  }
}


