/**
 * raw: the disk's bytes, one to one, in a file. Created sparse (truncate), so holes
 * cost nothing. extents() asks the container where its holes are when it can tell
 * (a local file through lseek SEEK_DATA/SEEK_HOLE, see storage/native-seek.ts; an NBD
 * export through BLOCK_STATUS) and otherwise finds zero runs by reading. The device
 * is image.ts, resizing maintain.ts, creating create.ts (a truncate); raw has no
 * check (nothing in it can be inconsistent: `check` looks only at the partition
 * table). This file is the driver table.
 */
import type { DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { imageOf, type DriverOpenOptions, type FormatDriver } from '../driver.js';
import { RawImage } from './image.js';
import { createRaw } from './create.js';

export { RawImage } from './image.js';

/** The raw format driver. */
export const rawDriver: FormatDriver = {
  name: 'raw',
  createOptions: {},
  async probe(): Promise<boolean> {
    return true; // anything is a raw image; the registry asks raw last
  },
  async open(storage: Storage, _location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage> {
    return new RawImage(storage, opts.readOnly, (await storage.allocatedSize?.()) === 0);
  },
  create: createRaw,
  async resize(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void> {
    await imageOf(image, RawImage, 'raw').resize(newSize, opts);
  },
};
