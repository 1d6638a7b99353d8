/**
 * qcow2 driver (qemu's copy-on-write format, versions 2 and 3, from
 * docs/interop/qcow2.txt): header and extensions validated at open, L1/L2 lookups,
 * zero and compressed clusters, and a backing file opened with its recorded
 * backing_fmt (probed by magic only when the image records none). Writes keep
 * refcounts exact (no lazy refcounts, no dirty bit); new images are compat 1.1 with
 * 16-bit refcounts.
 */
import type { DiskImage } from '../../device/block-device.js';
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverCreateOptions, DriverOpenOptions, FormatDriver } from '../driver.js';
import { QCOW2_MAGIC, QCOW2_MAX_CLUSTER_BITS, QCOW2_MAX_L1_BYTES, QCOW2_MIN_CLUSTER_BITS, Extension, Incompatible, encodeHeader, loadHeader, readSnapshots, type Qcow2Header } from './header.js';
import { QEMU_FORMAT_NAMES, Qcow2Image } from './image.js';
import { Refcounts } from './refcount.js';
import { QCOW_OFLAG_COPIED_HI, QCOW_OFLAG_ZERO, decodeL2, entryHalves, entryOffset, setRefcount, writeEntry } from './tables.js';
import { parseSize } from '../../util/size.js';

export { Qcow2Image, type Qcow2ImageParts } from './image.js';
export { decodeHeader as decodeQcow2Header, type FeatureName, type Qcow2Header, type Qcow2Snapshot } from './header.js';
export type { Refcounts } from './refcount.js';
export { loadHeader } from './header.js';

/** Formats a backing_fmt may name (qemu's names; `vpc` is VHD). */
const BACKING_FORMATS: Record<string, string> = { qcow2: 'qcow2', raw: 'raw', vpc: 'vhd', vhd: 'vhd', vdi: 'vdi', vmdk: 'vmdk' };

/** Open the backing file the header names, confined to the image's folder, with its recorded format. */
async function openBacking(storage: Storage, location: ImageLocation, h: Qcow2Header, opts: DriverOpenOptions, warnings: string[]): Promise<DiskImage> {
  const ref = h.backingFile!;
  // qemu reads "json:{...}", "nbd:..." and other protocol strings here; an image never chooses where we read.
  if (/^[a-z][a-z0-9+.-]*:/i.test(ref)) {
    throw new VdiskError('E_PATH', `${storage.name}: backing file "${ref}" is a protocol or pseudo-protocol reference, not a file (vdisk follows only file names)`);
  }
  let format: string | undefined;
  if (h.backingFormat !== undefined) {
    format = BACKING_FORMATS[h.backingFormat];
    if (!format) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: backing_fmt "${h.backingFormat}" is not a format vdisk reads`);
  } else {
    warnings.push(`no backing_fmt recorded: the format of ${ref} was detected by its magic`);
  }
  const name = location.resolve(ref);
  return opts.openParent(name, format);
}

/** Make `header` describe internal snapshot `which` (id first, then name): its L1 table and size. */
async function pointAtSnapshot(storage: Storage, header: Qcow2Header, which: string): Promise<void> {
  const read = async (len: number, at: number): Promise<Buffer> => {
    const b = Buffer.alloc(len);
    await storage.read(b, at);
    return b;
  };
  const snaps = await readSnapshots(read, header.snapshotsOffset, header.nbSnapshots, storage.size, storage.name);
  const s = snaps.find((x) => x.id === which) ?? snaps.find((x) => x.name === which);
  if (!s) throw new VdiskError('E_NOENT', `${storage.name}: no internal snapshot with id or name "${which}" (vdisk info lists them)`);
  const cs = 2 ** header.clusterBits;
  const bytes = s['l1-size'] * 8;
  if (s['l1-offset'] % cs !== 0 || bytes > QCOW2_MAX_L1_BYTES || s['l1-offset'] + bytes > storage.size) {
    throw new VdiskError('E_CORRUPT', `${storage.name}: snapshot ${s.id}'s L1 table (${s['l1-size']} entries at ${s['l1-offset']}) is misaligned, too large or past the file`);
  }
  const size = s['disk-size'] ?? header.size;
  if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0) throw new VdiskError('E_CORRUPT', `${storage.name}: snapshot ${s.id} has a bad disk size ${size}`);
  header.l1TableOffset = s['l1-offset'];
  header.l1Size = s['l1-size'];
  header.size = size;
}

/** Open a validated qcow2 image on `storage`, following its backing file. */
async function openQcow2(storage: Storage, location: ImageLocation, opts: DriverOpenOptions, ownsGivenParent = false): Promise<Qcow2Image> {
  const header = await loadHeader(storage);
  if (opts.snapshot !== undefined) await pointAtSnapshot(storage, header, opts.snapshot);
  const l1 = Buffer.alloc(header.l1Size * 8);
  if (l1.length > 0) await storage.read(l1, header.l1TableOffset);
  const warnings: string[] = [];
  let parent: DiskImage | undefined;
  let ownsParent = false;
  if (opts.parent) {
    parent = opts.parent;
    ownsParent = ownsGivenParent;
  } else if (header.backingFile !== undefined && !opts.noBacking) {
    parent = await openBacking(storage, location, header, opts, warnings);
    ownsParent = true;
  }
  const readOnly = opts.readOnly || storage.readOnly;
  let refcounts: Refcounts | undefined;
  try {
    if (!readOnly) {
      refuseWriting(header, storage.name);
      const table = Buffer.alloc(header.refcountTableClusters * 2 ** header.clusterBits);
      await storage.read(table, header.refcountTableOffset);
      refcounts = new Refcounts(storage, { clusterBits: header.clusterBits, refcountOrder: header.refcountOrder, table, tableOffset: header.refcountTableOffset });
    }
    return new Qcow2Image({ storage, header, l1, readOnly, parent, ownsParent, warnings, refcounts });
  } catch (err) {
    if (ownsParent) await parent?.close().catch(() => undefined);
    throw err;
  }
}

/** Refuse a writable open of an image whose refcounts or sharing this writer cannot keep right. */
function refuseWriting(h: Qcow2Header, name: string): void {
  if (h.incompatibleFeatures & BigInt(Incompatible.CORRUPT)) throw new VdiskError('E_CORRUPT', `${name}: the qcow2 corrupt bit is set; open it read-only or repair it (qemu-img check -r all)`);
  if (h.incompatibleFeatures & BigInt(Incompatible.DIRTY)) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: the qcow2 dirty bit is set (lazy refcounts not written back); vdisk does not rebuild refcounts yet: run qemu-img check -r all, or open read-only`);
  }
  if (h.incompatibleFeatures & BigInt(Incompatible.EXTENDED_L2)) throw new VdiskError('E_UNSUPPORTED', `${name}: writing qcow2 images with extended L2 entries (subclusters) is not supported; open it read-only`);
  if (h.nbSnapshots > 0) throw new VdiskError('E_UNSUPPORTED', `${name}: writing a qcow2 image with internal snapshots (${h.nbSnapshots}) is not supported; open it read-only`);
}


/**
 * Write a new, empty compat 1.1 image: header (with backing name and format), the
 * refcount table, refcount blocks counting every metadata cluster, and a zeroed L1
 * table, laid out in that order from cluster 0 (as qemu-img lays them out).
 */
async function writeNewImage(storage: Storage, size: number, clusterBits: number, backing?: { name: string; format: string }): Promise<void> {
  const cs = 2 ** clusterBits;
  const refcountOrder = 4;
  const perBlock = (cs * 8) / 16;
  const l1Size = Math.ceil(size / (cs * (cs / 8)));
  if (l1Size * 8 > QCOW2_MAX_L1_BYTES) throw new VdiskError('E_USAGE', `${storage.name}: ${size} bytes needs an L1 table larger than ${QCOW2_MAX_L1_BYTES} bytes (use a larger cluster_size)`);
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters;
    const b = Math.ceil(total / perBlock);
    const t = Math.ceil((b * 8) / cs);
    if (b === blocks && t === tableClusters) break;
    blocks = b;
    tableClusters = t;
  }
  const total = 1 + tableClusters + blocks + l1Clusters;
  const header = encodeHeader({
    clusterBits,
    size,
    l1Size,
    l1TableOffset: (1 + tableClusters + blocks) * cs,
    refcountTableOffset: cs,
    refcountTableClusters: tableClusters,
    refcountOrder,
    compatibleFeatures: 0n,
    backingFile: backing?.name,
    backingFormat: backing?.format,
  });
  await storage.truncate(total * cs);
  const table = Buffer.alloc(tableClusters * cs);
  for (let k = 0; k < blocks; k++) {
    const at = (1 + tableClusters + k) * cs;
    writeEntry(table, k * 8, at, 0);
    const b = Buffer.alloc(cs);
    for (let c = k * perBlock; c < Math.min(total, (k + 1) * perBlock); c++) setRefcount(b, c % perBlock, 16, 1);
    await storage.write(b, at);
  }
  await storage.write(table, cs);
  // The header last: until it is there the file is no qcow2 image at all.
  await storage.flush();
  await storage.write(header, 0);
  await storage.flush();
}

/** The qcow2 format driver. */
export const qcow2Driver: FormatDriver = {
  name: 'qcow2',
  createOptions: {
    cluster_size: 'cluster size in bytes, a power of two from 512 to 2M (default 64K)',
    compat: '1.1 (the only version vdisk writes)',
  },

  async probe(storage: Storage): Promise<boolean> {
    if (storage.size < 8) return false;
    const b = Buffer.alloc(4);
    await storage.read(b, 0);
    return b.readUInt32BE(0) === QCOW2_MAGIC;
  },

  open(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage> {
    return openQcow2(storage, location, opts);
  },

  async create(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
    const compat = opts.options.compat ?? '1.1';
    if (compat !== '1.1' && compat !== 'v3') throw new VdiskError('E_USAGE', `qcow2: compat=${compat}: vdisk writes only compat 1.1`);
    const csText = opts.options.cluster_size ?? '65536';
    const cs = parseSize(csText);
    const clusterBits = Math.log2(cs);
    if (!Number.isInteger(clusterBits) || clusterBits < QCOW2_MIN_CLUSTER_BITS || clusterBits > QCOW2_MAX_CLUSTER_BITS) {
      throw new VdiskError('E_USAGE', `qcow2: cluster_size=${csText}: expected a power of two from 512 to 2M`);
    }
    if (opts.size % 512 !== 0) throw new VdiskError('E_USAGE', `${location.name}: a qcow2 size must be a multiple of 512 (${opts.size})`);
    let backing: { name: string; format: string } | undefined;
    if (opts.parent) {
      const ref = opts.parentRef ?? opts.parent.filename;
      if (/^[a-z][a-z0-9+.-]*:/i.test(ref)) throw new VdiskError('E_USAGE', `${location.name}: backing file "${ref}" looks like a protocol; give a file name`);
      backing = { name: ref, format: QEMU_FORMAT_NAMES[opts.parent.format] ?? opts.parent.format };
    }
    const storage = await location.create(location.name);
    try {
      await writeNewImage(storage, opts.size, clusterBits, backing);
      return await openQcow2(storage, location, { readOnly: false, openParent: () => Promise.reject(new VdiskError('E_CHAIN', 'unused')), parent: opts.parent }, true);
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  },

  check(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkQcow2(storage, location, opts);
  },
};

/** Most host clusters check counts references for (a Uint32Array of this many entries is 512 MiB). */
const CHECK_MAX_CLUSTERS = 2 ** 27;

/**
 * Check a qcow2 image as `qemu-img check` does: count every reference to each host
 * cluster (header, refcount table and blocks, L1 and L2 tables of the active image
 * and every snapshot, data and compressed clusters, the snapshot table) and compare
 * with the stored refcounts: a refcount below its references is corruption (a
 * writer would reuse a cluster in use), above it a leak; references past the end of
 * the file and COPIED flags that disagree with the refcount are corruption. `repair`
 * lowers leaked refcounts to their references when nothing is corrupt (rebuilding
 * refcounts after corruption, qemu's `-r all`, is not implemented).
 */
export async function checkQcow2(storage: Storage, _location: ImageLocation, opts: DriverCheckOptions & Partial<DriverOpenOptions>): Promise<CheckResult> {
  const h = await loadHeader(storage);
  const cs = 2 ** h.clusterBits;
  const clusters = Math.ceil(storage.size / cs);
  if (clusters > CHECK_MAX_CLUSTERS) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: ${clusters} host clusters are more than check counts (${CHECK_MAX_CLUSTERS})`);
  const refs = new Uint32Array(clusters);
  const problems: CheckProblem[] = [];
  const corrupt = (message: string, offset?: number): void => void problems.push({ severity: 'corrupt', message: `${storage.name}: ${message}`, offset });
  const extended = (h.incompatibleFeatures & BigInt(Incompatible.EXTENDED_L2)) !== 0n;
  const stride = extended ? 16 : 8;
  /** Count a reference to the host bytes [offset, offset + length); false when they lie past the file. */
  const inc = (offset: number, length: number, what: string): boolean => {
    const last = Math.floor((offset + length - 1) / cs);
    if (last >= clusters) {
      corrupt(`${what} at ${offset} lies past the end of the ${storage.size}-byte file`, offset);
      return false;
    }
    for (let c = Math.floor(offset / cs); c <= last; c++) refs[c]!++;
    return true;
  };
  const read = async (len: number, at: number): Promise<Buffer> => {
    const b = Buffer.alloc(len);
    await storage.read(b, at);
    return b;
  };
  inc(0, cs, 'header');
  inc(h.refcountTableOffset, h.refcountTableClusters * cs, 'refcount table');
  const table = await read(h.refcountTableClusters * cs, h.refcountTableOffset);
  for (let t = 0; t < table.length / 8; t++) {
    const [hi, lo] = entryHalves(table, t * 8);
    const off = entryOffset(hi, lo);
    if (off === 0) continue;
    if (off % cs !== 0) corrupt(`refcount table entry ${t} (${off}) is not cluster-aligned`, h.refcountTableOffset + t * 8);
    else inc(off, cs, `refcount block ${t}`);
  }
  /** Active-image entries whose COPIED flag is checked against the refcount afterwards. */
  const copied: Array<{ at: number; host: number; flag: boolean; what: string }> = [];
  let allocated = 0;
  const walkL1 = async (l1Offset: number, l1Size: number, active: boolean, label: string): Promise<void> => {
    if (l1Size === 0) return;
    if (l1Size * 8 > QCOW2_MAX_L1_BYTES) return corrupt(`${label} L1 table of ${l1Size} entries is larger than ${QCOW2_MAX_L1_BYTES} bytes`);
    if (l1Offset % cs !== 0) return corrupt(`${label} L1 table offset ${l1Offset} is not cluster-aligned`);
    if (!inc(l1Offset, l1Size * 8, `${label} L1 table`)) return;
    const l1 = await read(l1Size * 8, l1Offset);
    for (let i = 0; i < l1Size; i++) {
      const [hi, lo] = entryHalves(l1, i * 8);
      const l2 = entryOffset(hi, lo);
      if (l2 === 0) continue;
      if (l2 % cs !== 0) {
        corrupt(`${label} L1 entry ${i} names an L2 table at ${l2}, not cluster-aligned`, l1Offset + i * 8);
        continue;
      }
      if (!inc(l2, cs, `${label} L2 table ${i}`)) continue;
      if (active) copied.push({ at: l1Offset + i * 8, host: l2, flag: (hi & QCOW_OFLAG_COPIED_HI) !== 0, what: `L1 entry ${i}` });
      const t = await read(cs, l2);
      for (let j = 0; j < cs / stride; j++) {
        const [ehi, elo] = entryHalves(t, j * stride);
        const m = decodeL2(ehi, extended ? elo & ~QCOW_OFLAG_ZERO : elo, h.clusterBits, h.version);
        const guest = i * (cs / stride) + j;
        if (m.kind === 'unallocated' || (m.kind === 'zero' && m.offset === 0)) continue;
        if (m.kind === 'compressed') {
          if (inc(m.offset, m.length, `compressed guest cluster ${guest}`) && active) allocated++;
          continue;
        }
        if (m.offset % cs !== 0) {
          corrupt(`${label} guest cluster ${guest} names host offset ${m.offset}, not cluster-aligned`, l2 + j * stride);
          continue;
        }
        if (!inc(m.offset, cs, `${label} guest cluster ${guest}`)) continue;
        if (active) {
          allocated++;
          copied.push({ at: l2 + j * stride, host: m.offset, flag: (ehi & QCOW_OFLAG_COPIED_HI) !== 0, what: `L2 entry of guest cluster ${guest}` });
        }
      }
    }
  };
  await walkL1(h.l1TableOffset, h.l1Size, true, 'active');
  if (h.nbSnapshots > 0) {
    const snaps = await readSnapshots(read, h.snapshotsOffset, h.nbSnapshots, storage.size, storage.name);
    let end = h.snapshotsOffset;
    // The table's length: walk the same entries again for their sizes.
    for (let n = 0; n < h.nbSnapshots; n++) {
      const e = await read(40, end);
      end += Math.ceil((40 + e.readUInt32BE(36) + e.readUInt16BE(12) + e.readUInt16BE(14)) / 8) * 8;
    }
    inc(h.snapshotsOffset, end - h.snapshotsOffset, 'snapshot table');
    for (const s of snaps) await walkL1(s['l1-offset'], s['l1-size'], false, `snapshot ${s.id}`);
  }
  const warnings: CheckProblem[] = [];
  if (h.otherExtensions.includes(Extension.BITMAPS)) {
    warnings.push({ severity: 'warning', message: `${storage.name}: persistent bitmaps are not counted; their clusters show as leaks` });
  }
  const rc = new Refcounts(storage, { clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, table, tableOffset: h.refcountTableOffset });
  const stored = new Uint32Array(clusters);
  const leaked: number[] = [];
  for (let c = 0; c < clusters; c++) {
    let actual: number;
    try {
      actual = await rc.get(c);
    } catch (err) {
      if (!isVdiskError(err)) throw err;
      corrupt(`cannot read the refcount of host cluster ${c}: ${err.message}`);
      break;
    }
    stored[c] = actual;
    const want = refs[c]!;
    if (actual < want) corrupt(`host cluster ${c} has refcount ${actual} but ${want} references`, c * cs);
    else if (actual > want) {
      leaked.push(c);
      problems.push({ severity: 'leak', message: `${storage.name}: host cluster ${c} has refcount ${actual} but ${want} references (leaked)`, offset: c * cs });
    }
  }
  for (const x of copied) {
    const c = Math.floor(x.host / cs);
    if (c < clusters && x.flag !== (stored[c] === 1)) corrupt(`${x.what}: OFLAG_COPIED is ${x.flag ? 'set' : 'clear'} but the refcount is ${stored[c]}`, x.at);
  }
  if (opts.repair && leaked.length > 0) {
    if (problems.some((p) => p.severity === 'corrupt')) {
      warnings.push({ severity: 'warning', message: `${storage.name}: leaks not repaired: the image is corrupt, and rebuilding refcounts (qemu-img check -r all) is not implemented in vdisk` });
    } else {
      if (storage.readOnly) throw new VdiskError('E_READONLY', `${storage.name}: opened read-only; cannot repair`);
      // Lowering a refcount to its references never frees a cluster in use.
      for (const c of leaked) await rc.put(c, refs[c]!);
      await storage.flush();
      for (const p of problems) if (p.severity === 'leak') p.repaired = true;
    }
  }
  problems.push(...warnings);
  return { problems, allocatedClusters: allocated, totalClusters: Math.ceil(h.size / cs) };
}
