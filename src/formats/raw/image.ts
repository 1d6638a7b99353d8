/** A raw image: the disk's bytes one to one in its container; extents from the container or by reading. */
import type { DiskImage, Extent, ImageInfo, ResizeImageOptions } from '../../device/block-device.js';
import { BlockDeviceBase } from '../../device/base.js';
import { forEachZeroRun } from '../../device/zero.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import { resizeRaw } from './maintain.js';

/** Granularity at which extents() tells zeros from data (one page, as filesystems allocate). */
const ZERO_SCAN_GRANULARITY = 4096;

/** A raw image over one Storage. */
export class RawImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'raw';
  readonly filename: string;
  readonly readOnly: boolean;
  size: number;

  constructor(private readonly storage: Storage, readOnly: boolean, empty = false) {
    super();
    // A container that knows its own allocation (a local file with SEEK_HOLE, an NBD export) is asked, not read.
    this.extentsReadContent = !empty && !storage.extents;
    this.filename = storage.name;
    this.size = storage.size;
    this.readOnly = readOnly || storage.readOnly;
  }

  protected readAt(buf: Uint8Array, offset: number): Promise<void> {
    return this.storage.read(buf, offset);
  }

  protected writeAt(buf: Uint8Array, offset: number): Promise<void> {
    return this.storage.write(buf, offset);
  }

  /**
   * extents() reads the file to find zeros (see {@link BlockDevice.extentsReadContent})
   * when the container cannot say where its holes are, except in a file with no blocks
   * on disk, which is one hole without reading.
   */
  readonly extentsReadContent: boolean;

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    // A file with no blocks allocated is one hole; no need to read it or ask.
    if (this.storage.allocatedSize && (await this.storage.allocatedSize()) === 0) {
      yield { offset, length, kind: 'hole', depth: 0 };
      return;
    }
    if (this.storage.extents) {
      for await (const e of this.storage.extents(offset, length)) yield { ...e, depth: 0 };
      return;
    }
    const buf = Buffer.alloc(Math.min(IO_CHUNK, length));
    for (let pos = offset; pos < offset + length; ) {
      const n = Math.min(buf.length, offset + length - pos);
      const piece = buf.subarray(0, n);
      await this.storage.read(piece, pos);
      const runs: Extent[] = [];
      forEachZeroRun(piece, ZERO_SCAN_GRANULARITY, (s, e, zero) => runs.push({ offset: pos + s, length: e - s, kind: zero ? 'zero' : 'data', depth: 0 }));
      yield* runs;
      pos += n;
    }
  }

  /** Zeros through the container's own zeroing where it has one (NBD WRITE_ZEROES), else written. */
  protected override async writeZeroesAt(offset: number, length: number): Promise<void> {
    if (this.storage.writeZeroes) return this.storage.writeZeroes(offset, length);
    return super.writeZeroesAt(offset, length);
  }

  protected flushAll(): Promise<void> {
    return this.storage.flush();
  }

  protected closeAll(): Promise<void> {
    return this.storage.close();
  }

  async info(): Promise<ImageInfo> {
    return {};
  }

  async actualSize(): Promise<number | undefined> {
    return this.storage.allocatedSize?.();
  }

  /** A raw image's size is its file's size: truncate, which keeps holes sparse (maintain.ts). */
  async resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    this.writable();
    await resizeRaw(this.storage, newSize, opts.onProgress);
    this.size = newSize;
  }
}
