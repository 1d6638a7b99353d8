/**
 * VDI (VirtualBox Disk Image) driver: normal (dynamic), fixed, undo and differencing
 * images, version 1.1, with either header size (qemu's 384 bytes, VirtualBox's 400).
 * A differencing image names its parent only by uuid (uuidLinkage = the parent's
 * uuidCreate), so the parent is the one given explicitly or the VDI in the same
 * folder whose uuid matches. On-disk structures (header, block map) and their
 * validation in layout.ts, the device and opening it in image.ts, create.ts and
 * check.ts; this file is the driver table.
 */
import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../../device/check.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { imageOf, type DriverOpenOptions, type FormatDriver } from '../driver.js';
import { NULL_UUID, VDI_PREHEADER_SIZE, VDI_SIGNATURE, VdiField } from './layout.js';
import { VdiImage, openVdi } from './image.js';
import { checkVdi } from './check.js';
import { createVdi } from './create.js';

export { VdiImage, type VdiImageParts } from './image.js';
export { decodeHeader as decodeVdiHeader, encodeHeader as encodeVdiHeader, type VdiGeometry, type VdiHeader } from './layout.js';
export { checkVdi } from './check.js';

/** The VDI format driver. */
export const vdiDriver: FormatDriver = {
  name: 'vdi',
  createOptions: {
    subformat: 'dynamic (default: blocks allocated as written) or fixed (preallocated)',
    static: 'on = subformat=fixed (qemu-img\'s spelling)',
  },

  async probe(storage: Storage): Promise<boolean> {
    if (storage.size < VDI_PREHEADER_SIZE) return false;
    const b = Buffer.alloc(4);
    await storage.read(b, VdiField.u32Signature);
    return b.readUInt32LE(0) === VDI_SIGNATURE;
  },

  open(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage> {
    return openVdi(storage, location, opts);
  },

  create: createVdi,

  async check(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkVdi(storage, location, opts);
  },

  differencing: true,

  async resize(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void> {
    await imageOf(image, VdiImage, 'vdi').resize(newSize, opts);
  },

  compact(image: DiskImage, opts: CompactOptions): Promise<CompactResult> {
    return imageOf(image, VdiImage, 'vdi').compact(opts);
  },

  async relink(image: DiskImage, parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    await imageOf(image, VdiImage, 'vdi').setBacking(parent, ref);
  },
};

/** Re-exported for tests and tools: the uuid that means "no parent". */
export const VDI_NULL_UUID = NULL_UUID;
