import type { DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { driverOf, open } from '../formats/registry.js';
import { minimumDiskSize, moveBackupGptToEnd, readPartitions } from '../partitions/index.js';
import { formatSize, parseSize } from '../util/size.js';

/** Options for {@link resize}. */
export interface ResizeOptions {
  /** Allow the new size to be smaller than the old one. */
  shrink?: boolean;
  /** Format name (detected when absent). */
  format?: string;
  /** Folders references inside the image may lead into. */
  allowPaths?: readonly string[];
  /** Called with bytes of work done and the total (blocks moved, bytes zeroed or written); the last call has done = total. */
  onProgress?: (done: number, total: number) => void;
}

/** Parse `SIZE`, `+SIZE` or `-SIZE` against the current size. */
export function resolveNewSize(spec: string | number, current: number): number {
  if (typeof spec === 'number') return spec;
  const t = spec.trim();
  if (t.startsWith('+')) return current + parseSize(t.slice(1));
  if (t.startsWith('-')) return current - parseSize(t.slice(1));
  return parseSize(t);
}

/** End of the last range of `image` that holds data anywhere in its chain (0 if none). */
export async function usedSize(image: DiskImage): Promise<number> {
  let end = 0;
  for await (const e of image.extents()) if (e.kind === 'data') end = e.offset + e.length;
  return end;
}

/** Change an open image's virtual size in place; returns the old and new sizes. */
async function resizeOpen(image: DiskImage, spec: string | number, opts: ResizeOptions = {}): Promise<{ oldSize: number; newSize: number }> {
  const oldSize = image.size;
  const newSize = resolveNewSize(spec, oldSize);
  if (!Number.isSafeInteger(newSize) || newSize <= 0) throw new VdiskError('E_USAGE', `${image.filename}: new size ${newSize} is not a positive number of bytes`);
  if (newSize % 512 !== 0) throw new VdiskError('E_USAGE', `${image.filename}: new size ${newSize} is not a multiple of 512 bytes`);
  if (newSize === oldSize) return { oldSize, newSize };
  if (newSize < oldSize) {
    if (image.backing && newSize < image.backing.size) {
      throw new VdiskError('E_USAGE', `${image.filename}: cannot shrink a differencing image below its parent's size (${image.backing.size} bytes)`);
    }
    if (!opts.shrink) {
      const used = await usedSize(image);
      throw new VdiskError(
        'E_USAGE',
        `${image.filename}: ${formatSize(newSize)} is smaller than the current ${formatSize(oldSize)} (data reaches ${used} bytes); pass --shrink to cut the end off`,
      );
    }
  }
  const driver = driverOf(image);
  if (!driver?.resize) throw new VdiskError('E_UNSUPPORTED', `${image.filename}: ${image.format} images cannot be resized`);
  const table = await readPartitions(image);
  if (newSize < oldSize && table.scheme !== 'none') {
    const needed = minimumDiskSize(table);
    if (newSize < needed) {
      throw new VdiskError('E_USAGE', `${image.filename}: ${formatSize(newSize)} would cut into the ${table.scheme.toUpperCase()} partitions, which need ${needed} bytes`);
    }
  }
  let last: [number, number] | undefined;
  await driver.resize(image, newSize, {
    onProgress: (done, total) => {
      last = [done, total];
      opts.onProgress?.(done, total);
    },
  });
  // A format that reports nothing (or stops short) still ends at 100%.
  if (!last || last[0] < last[1]) opts.onProgress?.(last?.[1] ?? 0, last?.[1] ?? 0);
  // A GPT keeps its backup copy in the last sectors: move it to the new end.
  if (table.scheme === 'gpt') await moveBackupGptToEnd(image);
  return { oldSize, newSize };
}

/**
 * Change the virtual size of `image` in place to `size` (bytes, or `SIZE`, `+SIZE`,
 * `-SIZE` as the CLI takes them); returns the old and new sizes. An address is opened
 * for writing and closed again; an open image (writable) is left open. A GPT's backup
 * copy moves to the new end.
 *
 * @example
 * ```ts
 * import { create, resize } from 'vdisk';
 *
 * await (await create('disk.vhd', { format: 'vhd', size: '4M' })).close();
 * const { oldSize, newSize } = await resize('disk.vhd', '+4M');
 * console.log(oldSize, newSize); // 4194304 8388608
 * ```
 */
export async function resize(image: string | DiskImage, size: string | number, opts: ResizeOptions = {}): Promise<{ oldSize: number; newSize: number }> {
  if (typeof image !== 'string') return resizeOpen(image, size, opts);
  const opened = await open(image, { format: opts.format, allowPaths: opts.allowPaths });
  try {
    return await resizeOpen(opened, size, opts);
  } finally {
    await opened.close();
  }
}
