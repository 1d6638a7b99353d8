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
}

/** Options for opening a storage. */
export interface StorageOpenOptions {
  /** Refuse writes (and take no lock). */
  readOnly?: boolean;
}
