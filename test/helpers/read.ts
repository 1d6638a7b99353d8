/** Reading whole (small) test images. */
import type { BlockDevice } from '../../src/device/block-device.js';
import { open } from '../../src/formats/registry.js';

/** Every byte of `dev`'s guest content. */
export async function readAll(dev: BlockDevice): Promise<Buffer> {
  const b = Buffer.alloc(dev.size);
  await dev.read(b, 0);
  return b;
}

/** Every byte of the guest content of the image file at `path` (opened read-only, closed after). */
export async function readImageFile(path: string): Promise<Buffer> {
  const img = await open(path, { readOnly: true });
  try {
    return await readAll(img);
  } finally {
    await img.close();
  }
}
