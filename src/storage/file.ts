import { constants, fdatasync, fstatSync, readSync, readlinkSync, writeSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { VdiskError, fromSystemError } from '../errors.js';
import { checkInside, checkIoArgs } from './checks.js';
import { acquireWriteLock } from './lock.js';
import { realPathOf } from './realpath.js';
import { nativeSeek, type NativeSeek } from './native-seek.js';
import type { Storage, StorageExtent } from './storage.js';

/** How {@link FileStorage.open} treats the file. */
export interface FileOpenOptions {
  /** Open without write access and without a lock. */
  readOnly?: boolean;
  /** `new`: create, failing with E_EXISTS if present; `overwrite`: create or empty it. */
  create?: 'new' | 'overwrite';
  /** Skip the write lock (the caller already holds it). */
  noLock?: boolean;
  /**
   * The name was found inside an image: open its real path without following a link
   * in the last component, and pass where the opened file really is to this check
   * (which throws E_PATH when it lies outside the allowed folders), so a link swapped
   * in between the check and the open is caught.
   */
  confine?: (realPath: string) => void;
}

const fdatasyncP = promisify(fdatasync);

/** Largest single synchronous read; bigger synchronous reads are split into slices this big. */
const SLICE = 128 * 1024;

/**
 * Largest single write: 256 KiB. Smaller slices pay the kernel's per-call work
 * (page-cache lookup, block reservation) more often: 1 GiB in 128 KiB writes took
 * 332 ms, in 256 KiB 304 ms. Bigger aligned ones let the page cache take large folios
 * (1 MiB and up), which the allocator carves from its largest free blocks. On a VM that
 * hands free memory back to the host (virtio-balloon page reporting, here in 2 MiB
 * blocks) those are, as far as we can tell, the blocks the host has taken back, and
 * each page faults in on the host. 1 GiB in 1 MiB aligned writes: median 1082 ms over
 * 12 runs, some 2.5 s; the same at 256 KiB: 304 ms, none slow (qemu-img's VDI writes
 * dodge it by sitting 512 bytes off alignment). The 2 GiB VHD -> VDI convert, 15
 * shuffled rounds: 2 MiB slices 1845 ms median, 128 KiB 709 ms, 256 KiB 667 ms,
 * qemu-img 634 ms.
 */
const WRITE_SLICE = 256 * 1024;

/** Where the kernel says the open descriptor `fd` leads (Linux's /proc), or undefined where it cannot tell. */
function openedPath(fd: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/**
 * Whether lseek's SEEK_HOLE on this file can be believed. A filesystem without hole
 * support answers "all data" (SEEK_HOLE at the end of the file) whatever the file
 * holds; when the file has fewer blocks allocated than that claims, such an answer is
 * not to be trusted and the caller scans for zeros instead, as without the addon.
 */
function holesReported(addon: NativeSeek, fd: number, size: number, allocated: number): boolean {
  if (size === 0) return true;
  try {
    const hole = addon.seek(fd, 0, addon.SEEK_HOLE);
    return hole < size || allocated >= size;
  } catch {
    return false;
  }
}

/** Reads at least this big run on the thread pool (see {@link FileStorage.read}). */
const ASYNC_READ = 512 * 1024;

/**
 * Storage over a local file. Reads and writes are positional system calls made
 * synchronously (reads in 128 KiB slices, writes in 256 KiB ones): Node's threadpool
 * round trip costs 50-100 µs a call, more than a page-cache copy of the slice, and
 * 128 KiB read slices keep the copy cache-friendly (measured with bench/run.mjs read).
 * Reads of 512 KiB or more are the exception: they run on the thread pool, so a
 * reader that keeps several in flight (convert's read-ahead) has the disk working on
 * them at once when they are not in the page cache (2 GiB VHD -> VDI from a cold
 * cache: 1.3 s against 1.6 s all synchronous). Writes stay synchronous: on the
 * thread pool the same convert took twice as long. `flush` (fdatasync) stays
 * asynchronous since it may wait for the disk.
 */
export class FileStorage implements Storage {
  readonly name: string;
  readonly readOnly: boolean;
  private fh: FileHandle | undefined;
  private length: number;
  private unlock: (() => Promise<void>) | undefined;

  /**
   * Where the file holds data and where holes, from lseek(SEEK_DATA/SEEK_HOLE) without
   * reading a byte; present only for a regular file when the native addon loaded and
   * the filesystem reports holes (see `holesReported` in this file). Holes are `zero` (they
   * read as zeros; qemu-img map calls a raw file's holes present and zero alike);
   * allocated blocks are `data`, even when they hold zeros.
   */
  readonly extents?: (offset: number, length: number) => AsyncIterable<StorageExtent>;

  private constructor(path: string, fh: FileHandle, size: number, readOnly: boolean, unlock?: () => Promise<void>, seek?: NativeSeek) {
    this.name = path;
    this.fh = fh;
    this.length = size;
    this.readOnly = readOnly;
    this.unlock = unlock;
    if (seek) this.extents = (offset, length) => this.seekExtents(seek, offset, length);
  }

  /**
   * Open (or create) `path`. Writable opens take the exclusive write lock, keyed on the
   * file itself (its real path and its device and inode), so a symlink or a hard link
   * to an image that is open for writing is refused too.
   */
  static async open(path: string, opts: FileOpenOptions = {}): Promise<FileStorage> {
    const readOnly = opts.readOnly ?? false;
    if (readOnly && opts.create) throw new VdiskError('E_USAGE', `${path}: cannot create read-only`);
    const target = opts.confine ? realPathOf(path) : path;
    opts.confine?.(target);
    let unlock: (() => Promise<void>) | undefined;
    if (!readOnly && !opts.noLock) unlock = await acquireWriteLock(path);
    try {
      if (!opts.create) {
        const st = await stat(target).catch((err: unknown) => {
          throw fromSystemError(err, path);
        });
        if (st.isDirectory()) throw new VdiskError('E_USAGE', `${path}: is a folder, not an image`);
        // Opening a FIFO or socket would block (or hang a search through a folder): refuse before open.
        if (!st.isFile() && !st.isBlockDevice()) throw new VdiskError('E_USAGE', `${path}: not a regular file or block device`);
      }
      const access = readOnly ? constants.O_RDONLY : constants.O_RDWR;
      const creation = opts.create === 'new' ? constants.O_CREAT | constants.O_EXCL : opts.create === 'overwrite' ? constants.O_CREAT | constants.O_TRUNC : 0;
      const flags = access | creation | (opts.confine ? constants.O_NOFOLLOW : 0);
      const fh = await open(target, flags, 0o644).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ELOOP') {
          throw new VdiskError('E_PATH', `${path}: became a symbolic link while it was being opened`, { cause: err });
        }
        throw fromSystemError(err, path);
      });
      try {
        if (opts.confine) opts.confine(openedPath(fh.fd) ?? target);
        const st = await fh.stat();
        if (!st.isFile() && !st.isBlockDevice()) throw new VdiskError('E_USAGE', `${path}: not a regular file or block device`);
        const seek = st.isFile() ? nativeSeek() : undefined;
        return new FileStorage(path, fh, st.size, readOnly, unlock, seek && holesReported(seek, fh.fd, st.size, st.blocks * 512) ? seek : undefined);
      } catch (err) {
        await fh.close();
        throw err;
      }
    } catch (err) {
      await unlock?.();
      throw err;
    }
  }

  get size(): number {
    return this.length;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const fd = this.fd();
    checkInside(this.name, offset, buf.length, this.length);
    // Big reads go to the thread pool, where the round trip is small next to the copy:
    // a reader that keeps reads in flight (convert's read-ahead) then copies on
    // another core while this thread writes.
    if (buf.length >= ASYNC_READ) return this.readAsync(buf, offset);
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = readSync(fd, buf, done, Math.min(SLICE, buf.length - done), offset + done);
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
      if (n === 0) throw new VdiskError('E_BOUNDS', `${this.name}: unexpected end of file at ${offset + done}`);
      done += n;
    }
  }

  private async readAsync(buf: Uint8Array, offset: number): Promise<void> {
    const fh = this.handle();
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await fh.read(buf, done, buf.length - done, offset + done));
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
      if (n === 0) throw new VdiskError('E_BOUNDS', `${this.name}: unexpected end of file at ${offset + done}`);
      done += n;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    const fd = this.fd();
    this.writable();
    checkIoArgs(this.name, offset, buf.length);
    let done = 0;
    while (done < buf.length) {
      try {
        done += writeSync(fd, buf, done, Math.min(WRITE_SLICE, buf.length - done), offset + done);
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
    }
    if (offset + buf.length > this.length) this.length = offset + buf.length;
  }

  async truncate(size: number): Promise<void> {
    const fh = this.handle();
    this.writable();
    checkIoArgs(this.name, size, 0);
    try {
      await fh.truncate(size);
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
    this.length = size;
  }

  async flush(): Promise<void> {
    const fh = this.handle();
    if (this.readOnly) return;
    try {
      await fdatasyncP(fh.fd);
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    this.fh = undefined;
    try {
      await fh.close();
    } finally {
      await this.unlock?.();
      this.unlock = undefined;
    }
  }

  /** Data and holes of [offset, offset+length) by SEEK_DATA/SEEK_HOLE, covering the range exactly. */
  private async *seekExtents(addon: NativeSeek, offset: number, length: number): AsyncIterable<StorageExtent> {
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const fd = this.fd();
      let data: number;
      let hole: number;
      try {
        data = addon.seek(fd, pos, addon.SEEK_DATA);
        // -1: nothing but hole from pos to the end of the file.
        data = data < 0 ? end : Math.min(data, end);
        hole = data < end ? addon.seek(fd, data, addon.SEEK_HOLE) : end;
      } catch (err) {
        throw fromSystemError(err, this.name);
      }
      // Past the file's end (a file grown by writes and not yet truncated to size) reads as zeros too.
      hole = hole < 0 ? end : Math.min(hole, end);
      if (data > pos) yield { offset: pos, length: data - pos, kind: 'zero' };
      if (hole > data) yield { offset: data, length: hole - data, kind: 'data' };
      pos = Math.max(hole, data);
    }
  }

  async allocatedSize(): Promise<number> {
    return fstatSync(this.fd()).blocks * 512;
  }

  private fd(): number {
    return this.handle().fd;
  }

  private handle(): FileHandle {
    if (!this.fh) throw new VdiskError('E_CLOSED', `${this.name}: storage is closed`);
    return this.fh;
  }

  private writable(): void {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.name}: opened read-only`);
  }
}
