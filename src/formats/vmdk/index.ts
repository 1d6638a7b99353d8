/**
 * vmdk: VMware's virtual disk format. A descriptor names the extents (sparse, flat,
 * zero), either in its own text file or embedded in a sparse extent; delta links
 * name a parent. See layout.ts (binary layouts), descriptor.ts (text), sparse.ts
 * (grain directory/tables), stream.ts (stream-optimized output), image.ts (the disk),
 * create.ts and check.ts.
 */
import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../../device/check.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { imageOf, type DriverCreateOptions, type DriverOpenOptions, type FormatDriver } from '../driver.js';
import { checkVmdk } from './check.js';
import { createVmdk } from './create.js';
import { looksLikeDescriptor } from './descriptor.js';
import { COWD_MAGIC, SPARSE_MAGIC } from './layout.js';
import { VmdkImage, openVmdk } from './image.js';

export { VmdkImage, openVmdk } from './image.js';
export { createVmdk } from './create.js';
export { SPLIT_EXTENT_SECTORS } from './layout.js';
export { writeStreamOptimized, StreamOptimizedWriter, type StreamOptimizedOptions, type WriteStreamOptimizedOptions } from './stream.js';
export { parseDescriptor, formatDescriptor, type Descriptor, type ExtentLine } from './descriptor.js';
export { checkVmdk } from './check.js';

/** The vmdk format driver. */
export const vmdkDriver: FormatDriver = {
  name: 'vmdk',
  createOptions: {
    subformat: 'monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat or streamOptimized',
    adapter_type: 'ide (default), lsilogic, buslogic or legacyESX',
    hwversion: 'ddb.virtualHWVersion (default 4)',
  },
  async probe(storage: Storage): Promise<boolean> {
    const n = Math.min(storage.size, 1024);
    if (n < 4) return false;
    const head = Buffer.alloc(n);
    await storage.read(head, 0);
    const magic = head.readUInt32LE(0);
    if (magic === SPARSE_MAGIC || magic === COWD_MAGIC) return true;
    return looksLikeDescriptor(head.toString('latin1'));
  },
  open(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage> {
    return openVmdk(storage, location, opts);
  },
  create(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
    return createVmdk(location, opts);
  },
  check(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkVmdk(storage, location, opts);
  },
  differencing: true,
  async resize(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void> {
    await imageOf(image, VmdkImage, 'vmdk').resize(newSize, opts);
  },
  compact(image: DiskImage, opts: CompactOptions): Promise<CompactResult> {
    return imageOf(image, VmdkImage, 'vmdk').compact(opts);
  },
  async relink(image: DiskImage, parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    await imageOf(image, VmdkImage, 'vmdk').setBacking(parent, ref);
  },
  async prepareCommit(image: DiskImage, parent: DiskImage): Promise<void> {
    await imageOf(image, VmdkImage, 'vmdk').prepareCommit(parent);
  },
};
