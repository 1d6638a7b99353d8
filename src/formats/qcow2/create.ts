/** Creating a qcow2 image: compat 1.1, 16-bit refcounts, laid out as qemu-img lays it out, the header written last. */
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { parseSize } from '../../util/size.js';
import type { DriverCreateOptions } from '../driver.js';
import { QEMU_FORMAT_NAMES, openQcow2 } from './image.js';
import { QCOW2_MAX_CLUSTER_BITS, QCOW2_MAX_L1_BYTES, QCOW2_MIN_CLUSTER_BITS, encodeHeader } from './layout.js';
import { setRefcount, writeEntry } from './tables.js';

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

/** Create an empty qcow2 image at `location` (backed by `opts.parent` when given) and open it writable. */
export async function createQcow2(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
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
}
