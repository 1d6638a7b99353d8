/**
 * qcow2 driver (qemu's copy-on-write format, versions 2 and 3, from
 * docs/interop/qcow2.txt): header and extensions validated at open, L1/L2 lookups,
 * zero and compressed clusters, and a backing file opened with its recorded
 * backing_fmt (probed by magic only when the image records none). Writes keep
 * refcounts exact (no lazy refcounts, no dirty bit); new images are compat 1.1 with
 * 16-bit refcounts. On-disk structures in layout.ts (refcount.ts, tables.ts), the
 * device and opening it in image.ts, resize/compact/relink in maintain.ts, create.ts,
 * check.ts; this file is the driver table.
 */
import type { DiskImage } from '../../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../../device/check.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions, FormatDriver } from '../driver.js';
import { QCOW2_MAGIC } from './layout.js';
import { checkQcow2 } from './check.js';
import { createQcow2 } from './create.js';
import { openQcow2 } from './image.js';

export { Qcow2Image, type Qcow2ImageParts } from './image.js';
export { decodeHeader as decodeQcow2Header, type FeatureName, type Qcow2Header, type Qcow2Snapshot } from './layout.js';
export type { Refcounts } from './refcount.js';
export { loadHeader } from './layout.js';
export { checkQcow2 } from './check.js';

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

  create: createQcow2,

  check(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkQcow2(storage, location, opts);
  },
};
