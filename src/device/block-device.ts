/**
 * BlockDevice: the one interface every disk image, differencing chain, pool volume
 * and NBD export speaks. Offsets and lengths are byte counts; reads and writes may
 * be unaligned, though sector-aligned I/O is the fast path.
 */

/** What a range of a device holds. */
export type ExtentKind =
  /** Allocated and holding data (which may happen to be zeros). */
  | 'data'
  /** Known to read as zeros without holding data (a zero block, a zeroed grain). */
  | 'zero'
  /** Not allocated anywhere in the chain; reads as zeros. */
  | 'hole';

/** One run of a device's address space with a single kind. */
export interface Extent {
  /** Byte offset in the device. */
  offset: number;
  /** Length in bytes (> 0). */
  length: number;
  kind: ExtentKind;
  /**
   * Where in a differencing chain the range is answered: 0 = this image, 1 = its
   * parent, and so on (as `qemu-img map` counts). A hole has the depth of the
   * bottom image.
   */
  depth: number;
}

/** The contract every disk speaks (see DESIGN.md). */
export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Logical sector size in bytes (512 for every format vdisk writes). */
  readonly sectorSize: number;
  /** True when writes are refused. */
  readonly readOnly: boolean;
  /** Fill `buf` with the device's bytes at `offset`; throws E_BOUNDS past the end. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  /** Write `buf` at `offset`. */
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** Make a range read as zeros, deallocating where the format can. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Hint that a range is unused; contents become unspecified (vdisk formats read zeros or the parent). */
  discard(offset: number, length: number): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** The ranges of `[offset, offset+length)` by kind, in order, covering the range exactly. */
  extents(offset?: number, length?: number): AsyncIterable<Extent>;
  /**
   * True when {@link extents} has no allocation map to consult and finds zero ranges
   * by reading the content (a raw file: Node has no SEEK_DATA). A copier that scans
   * what it reads for zeros anyway can then skip extents() and read each byte once.
   */
  readonly extentsReadContent?: boolean;
  /** Flush and release the device and everything it opened (parents, extent files). */
  close(): Promise<void>;
}

/** Facts about an opened image beyond its contents, as `vdisk info` reports them. */
export interface ImageInfo {
  /** Allocation unit in bytes (block, grain, cluster), when the format has one. */
  clusterSize?: number;
  /** True when the image says it was not closed cleanly. */
  dirty?: boolean;
  /** The parent reference as stored in the image. */
  backingFilename?: string;
  /** The parent's resolved path. */
  fullBackingFilename?: string;
  /** Format-specific facts (JSON-friendly); printed under `format-specific.data`. */
  formatSpecific?: Record<string, unknown>;
  /** Things worth telling the user (a damaged footer copy was used, ...). */
  warnings?: string[];
}

/** A BlockDevice opened from an image file by a format driver. */
export interface DiskImage extends BlockDevice {
  /** Driver name: `raw`, `vhd`, `vdi`, `vmdk`. */
  readonly format: string;
  /** Path or name the image was opened from. */
  readonly filename: string;
  /** The parent image of a differencing image. */
  readonly backing?: DiskImage;
  /** Header facts for `info`. */
  info(): Promise<ImageInfo>;
  /** Bytes this image's own files occupy on disk (all extents, not the parent). */
  actualSize(): Promise<number | undefined>;
  /**
   * Change the virtual size in place (grow, or shrink when allowed), ordered so a
   * crash leaves either the old or the new size readable. Formats that cannot resize
   * leave this out. `opts.onProgress` hears about the heavy part (blocks moved, bytes
   * zeroed or written) and is called last with done = total.
   */
  resize?(newSize: number, opts?: ResizeImageOptions): Promise<void>;
  /**
   * Give back space: release blocks that hold only zeros (when no parent shows
   * through) or that no map entry uses, and shorten the file. Guest content is unchanged.
   */
  compact?(opts?: CompactOptions): Promise<CompactResult>;
  /**
   * Point this differencing image at another parent, changing only the link (the
   * caller keeps guest content right). `ref` is how the child names the parent;
   * `undefined` for both makes the image stand alone.
   */
  setBacking?(parent: DiskImage | undefined, ref: string | undefined): Promise<void>;
  /**
   * Called by a commit before anything is written into `parent` (a writable open of
   * this image's parent): record, durably, whatever identity the parent's first write
   * will give it, so the link holds whether or not that write survives a crash
   * (VMDK: the parent's next CID). The following setBacking settles the link.
   */
  prepareCommit?(parent: DiskImage): Promise<void>;
}

/** Options for {@link DiskImage.resize}. */
export interface ResizeImageOptions {
  /** Called with bytes of work done so far and the total (non-decreasing; last call has done = total). */
  onProgress?: (done: number, total: number) => void;
}

/** Options for {@link DiskImage.compact}. */
export interface CompactOptions {
  /** Called with work done so far, for progress display. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link DiskImage.compact} did. */
export interface CompactResult {
  /** Blocks (or grains) released. */
  releasedBlocks: number;
  /** File size before and after, in bytes. */
  sizeBefore: number;
  sizeAfter: number;
}
