import type { DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { findDriver, open } from '../formats/registry.js';
import { FileLocation } from '../storage/location.js';
import { checkOptionKeys } from '../util/options.js';
import { parseSize } from '../util/size.js';

/** Options for {@link create}. */
export interface CreateOptions {
  /** Format name: raw, vhd (or vpc), vdi, vmdk. */
  format: string;
  /** Virtual size in bytes or as text (`64M`); for a differencing image, defaults to the parent's size. */
  size?: number | string;
  /** Format options (`-o`), e.g. `{ subformat: 'fixed' }`. */
  options?: Record<string, string>;
  /** Parent image path for a differencing image (relative paths are relative to the current folder). */
  backing?: string;
  /** Format of the parent; detected by magic when absent. */
  backingFormat?: string;
  /** Replace an existing file. */
  force?: boolean;
  /** Folders besides the image's own that references may lead into. */
  allowPaths?: readonly string[];
}

/**
 * Create a new image at `path` (a fresh disk, or with `backing` a differencing image
 * over a parent) and return it open for writing; the caller closes it.
 *
 * @example
 * ```ts
 * import { create } from 'vdisk';
 *
 * const disk = await create('disk.vdi', { format: 'vdi', size: '64M', options: { subformat: 'dynamic' } });
 * await disk.write(Buffer.alloc(4096, 0x5a), 1 << 20);
 * console.log(disk.format, disk.size); // vdi 67108864
 * await disk.close();
 * ```
 */
export async function create(path: string, opts: CreateOptions): Promise<DiskImage> {
  const driver = findDriver(opts.format);
  const options = opts.options ?? {};
  checkOptionKeys(options, driver.createOptions, `format ${driver.name}`);
  const location = new FileLocation(path, opts.allowPaths ?? []);
  if ((await location.exists(path)) && !opts.force) {
    throw new VdiskError('E_EXISTS', `${path}: already exists (use --force to replace it)`);
  }

  let parent: DiskImage | undefined;
  let parentRef: string | undefined;
  if (opts.backing !== undefined) {
    parent = await open(opts.backing, { format: opts.backingFormat, readOnly: true, allowPaths: opts.allowPaths });
    parentRef = location.relativeName(opts.backing);
  }
  try {
    let size: number;
    if (opts.size === undefined || opts.size === '') {
      if (!parent) throw new VdiskError('E_USAGE', `${path}: a size is needed (or a backing file to take it from)`);
      size = parent.size;
    } else {
      size = typeof opts.size === 'number' ? opts.size : parseSize(opts.size);
    }
    if (!Number.isSafeInteger(size) || size <= 0) throw new VdiskError('E_USAGE', `${path}: size must be a positive number of bytes, not ${size}`);
    if (size % 512 !== 0) throw new VdiskError('E_USAGE', `${path}: size ${size} is not a multiple of 512 bytes`);

    if (opts.force) await location.remove(path);
    try {
      return await driver.create(location, { size, options, parent, parentRef });
    } catch (err) {
      // Leave nothing half-made behind.
      await location.remove(path).catch(() => undefined);
      throw err;
    }
  } catch (err) {
    await parent?.close().catch(() => undefined);
    throw err;
  }
}
