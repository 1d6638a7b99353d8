/**
 * Storage: the bytes of one container (a file, memory, an NBD export, a window into
 * a tar entry). Modelled on nbdkit's plugin calls. A format driver reads and writes
 * its container only through this interface, never through `fs`.
 */
export interface Storage {
  /** Name for messages: a path, or a description such as `memory`. */
  readonly name: string;
  /** Current size in bytes. */
  readonly size: number;
  /** True when writes are refused. */
  readonly readOnly: boolean;
  /** Fill `buf` from `offset`; throws E_BOUNDS if the container ends first. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  /** Write all of `buf` at `offset`, growing the container if it ends before. */
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** Set the size; new bytes read as zeros. */
  truncate(size: number): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** Release the container; later calls fail with E_CLOSED. */
  close(): Promise<void>;
  /** Bytes the container occupies on its medium (a sparse file's allocated blocks), if known. */
  allocatedSize?(): Promise<number>;
  /**
   * Where the container holds data, zeros or nothing, covering the range exactly, when
   * it can tell without reading (nbdkit's `extents`; an NBD export's BLOCK_STATUS).
   */
  extents?(offset: number, length: number): AsyncIterable<StorageExtent>;
  /** Make a range read as zeros without sending them, when the container can (nbdkit's `zero`). */
  writeZeroes?(offset: number, length: number): Promise<void>;
}

/** One run of a container's bytes by what it holds (see {@link Storage.extents}). */
export interface StorageExtent {
  offset: number;
  length: number;
  kind: 'data' | 'zero' | 'hole';
}

/** Options for opening a storage. */
export interface StorageOpenOptions {
  /** Refuse writes (and take no lock). */
  readOnly?: boolean;
}

/** Chunk size for large sequential I/O on a container (DESIGN.md: >= 1 MiB). */
export const IO_CHUNK = 1024 * 1024;
