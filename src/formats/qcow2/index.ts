/**
 * qcow2 driver (qemu's copy-on-write format, versions 2 and 3, from
 * docs/interop/qcow2.txt): header and extensions validated at open, L1/L2 lookups,
 * zero and compressed clusters, and a backing file opened with its recorded
 * backing_fmt (probed by magic only when the image records none). Writes keep
 * refcounts exact (no lazy refcounts, no dirty bit); new images are compat 1.1 with
 * 16-bit refcounts.
 */
import type { DiskImage } from '../../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverCreateOptions, DriverOpenOptions, FormatDriver } from '../driver.js';
import { QCOW2_MAGIC, QCOW2_MAX_CLUSTER_BITS, QCOW2_MAX_L1_BYTES, QCOW2_MIN_CLUSTER_BITS, Incompatible, encodeHeader, loadHeader, readSnapshots, type Qcow2Header } from './header.js';
import { checkQcow2 } from './check.js';
import { QEMU_FORMAT_NAMES, Qcow2Image } from './image.js';
import { Refcounts } from './refcount.js';
import { setRefcount, writeEntry } from './tables.js';
import { parseSize } from '../../util/size.js';

export { Qcow2Image, type Qcow2ImageParts } from './image.js';
export { decodeHeader as decodeQcow2Header, type FeatureName, type Qcow2Header, type Qcow2Snapshot } from './header.js';
export type { Refcounts } from './refcount.js';
export { loadHeader } from './header.js';
export { checkQcow2 } from './check.js';

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
async function openQcow2(storage: Storage, location: ImageLocation, opts: DriverOpenOptions, ownsGivenParent = false, compress = false): Promise<Qcow2Image> {
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
    return new Qcow2Image({ storage, header, l1, readOnly, parent, ownsParent, warnings, refcounts, compress });
  } catch (err) {
    if (ownsParent) await parent?.close().catch(() => undefined);
    throw err;
  }
}

/** Refuse a writable open of an image whose refcounts or sharing this writer cannot keep right. */
function refuseWriting(h: Qcow2Header, name: string): void {
  if (h.incompatibleFeatures & BigInt(Incompatible.CORRUPT)) throw new VdiskError('E_CORRUPT', `${name}: the qcow2 corrupt bit is set; open it read-only or repair it (qemu-img check -r all)`);
  if (h.incompatibleFeatures & BigInt(Incompatible.DIRTY)) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: the qcow2 dirty bit is set (lazy refcounts not written back); repair it with vdisk check -r all (or qemu-img check -r all), or open read-only`);
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
      return await openQcow2(storage, location, { readOnly: false, openParent: () => Promise.reject(new VdiskError('E_CHAIN', 'unused')), parent: opts.parent }, true, opts.compress);
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  },

  check(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkQcow2(storage, location, opts);
  },
};
