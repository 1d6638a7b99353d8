/** Creating a raw image: a truncate, so the new disk is one hole and costs nothing. */
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { DriverCreateOptions } from '../driver.js';
import { RawImage } from './image.js';

/** Create an empty raw image of `opts.size` bytes at `location` and open it writable. */
export async function createRaw(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
  if (opts.parent) throw new VdiskError('E_UNSUPPORTED', `${location.name}: raw images cannot have a backing file`);
  const storage = await location.create(location.name);
  try {
    await storage.truncate(opts.size);
  } catch (err) {
    await storage.close();
    throw err;
  }
  return new RawImage(storage, false, true);
}
