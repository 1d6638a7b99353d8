import type { CompactResult } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { driverOf, open } from '../formats/registry.js';

/** Options for {@link compact}. */
export interface CompactOpsOptions {
  format?: string;
  allowPaths?: readonly string[];
  onProgress?: (done: number, total: number) => void;
}

/**
 * Give back space in place: blocks that hold only zeros or that nothing maps are
 * released and the file shortened; guest content is unchanged. Taking the write lock
 * refuses an image open for writing elsewhere (E_LOCKED).
 */
export async function compact(path: string, opts: CompactOpsOptions = {}): Promise<CompactResult> {
  const image = await open(path, { format: opts.format, allowPaths: opts.allowPaths });
  try {
    const driver = driverOf(image);
    if (!driver?.compact) throw new VdiskError('E_UNSUPPORTED', `${path}: ${image.format} images have no blocks to release`);
    return await driver.compact(image, { onProgress: opts.onProgress });
  } finally {
    await image.close();
  }
}
