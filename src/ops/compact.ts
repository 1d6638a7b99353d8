import type { CompactResult, DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { driverOf, open } from '../formats/registry.js';

/** Options for {@link compact}. */
export interface CompactOpsOptions {
  /** Format name when `image` is an address (detected when absent). */
  format?: string;
  /** Folders besides the image's own that references inside it may lead into. */
  allowPaths?: readonly string[];
  /** Called with work done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Give back space in place: blocks that hold only zeros or that nothing maps are
 * released and the file shortened; guest content is unchanged. An address is opened
 * for writing (taking the write lock refuses an image open for writing elsewhere:
 * E_LOCKED) and closed again; an open image (writable) is left open.
 *
 * @example
 * ```ts
 * import { compact, create } from 'vdisk';
 *
 * const disk = await create('disk.vdi', { format: 'vdi', size: '4M' });
 * await disk.write(Buffer.alloc(1 << 20), 0); // a block of zeros, allocated
 * await disk.close();
 * const result = await compact('disk.vdi');
 * console.log(result.releasedBlocks); // 1
 * ```
 */
export async function compact(image: string | DiskImage, opts: CompactOpsOptions = {}): Promise<CompactResult> {
  if (typeof image !== 'string') return compactOpen(image, opts);
  const opened = await open(image, { format: opts.format, allowPaths: opts.allowPaths });
  try {
    return await compactOpen(opened, opts);
  } finally {
    await opened.close();
  }
}

async function compactOpen(image: DiskImage, opts: CompactOpsOptions): Promise<CompactResult> {
  const driver = driverOf(image);
  if (!driver?.compact) throw new VdiskError('E_UNSUPPORTED', `${image.filename}: ${image.format} images have no blocks to release`);
  return driver.compact(image, { onProgress: opts.onProgress });
}
