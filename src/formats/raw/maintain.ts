/** In-place maintenance of a raw image: its size is its container's size, so a resize is a truncate (which keeps holes sparse). */
import { ProgressMeter } from '../../device/progress.js';
import type { Storage } from '../../storage/storage.js';

/** Make `storage` `newSize` bytes long, durably: new bytes read as zeros (a hole), cut bytes are gone. */
export async function resizeRaw(storage: Storage, newSize: number, onProgress?: (done: number, total: number) => void): Promise<void> {
  await storage.truncate(newSize);
  await storage.flush();
  new ProgressMeter(0, onProgress).finish();
}
