import { open, stat, type FileHandle } from 'node:fs/promises';
import { VdiskError, fromSystemError } from '../errors.js';
import { checkInside, checkIoArgs } from './checks.js';
import { acquireWriteLock } from './lock.js';
import type { Storage } from './storage.js';

/** How {@link FileStorage.open} treats the file. */
export interface FileOpenOptions {
  /** Open without write access and without a lock. */
  readOnly?: boolean;
  /** `new`: create, failing with E_EXISTS if present; `overwrite`: create or empty it. */
  create?: 'new' | 'overwrite';
  /** Skip the write lock (the caller already holds it). */
  noLock?: boolean;
}

/** Storage over a local file through an fs/promises FileHandle. */
export class FileStorage implements Storage {
  readonly name: string;
  readonly readOnly: boolean;
  private fh: FileHandle | undefined;
  private length: number;
  private unlock: (() => Promise<void>) | undefined;

  private constructor(path: string, fh: FileHandle, size: number, readOnly: boolean, unlock?: () => Promise<void>) {
    this.name = path;
    this.fh = fh;
    this.length = size;
    this.readOnly = readOnly;
    this.unlock = unlock;
  }

  /** Open (or create) `path`. Writable opens take the exclusive write lock. */
  static async open(path: string, opts: FileOpenOptions = {}): Promise<FileStorage> {
    const readOnly = opts.readOnly ?? false;
    if (readOnly && opts.create) throw new VdiskError('E_USAGE', `${path}: cannot create read-only`);
    let unlock: (() => Promise<void>) | undefined;
    if (!readOnly && !opts.noLock) unlock = await acquireWriteLock(path);
    try {
      if (!opts.create) {
        const st = await stat(path).catch((err: unknown) => {
          throw fromSystemError(err, path);
        });
        if (st.isDirectory()) throw new VdiskError('E_USAGE', `${path}: is a folder, not an image`);
      }
      const flags = readOnly ? 'r' : opts.create === 'new' ? 'wx+' : opts.create === 'overwrite' ? 'w+' : 'r+';
      const fh = await open(path, flags, 0o644).catch((err: unknown) => {
        throw fromSystemError(err, path);
      });
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) {
        await fh.close();
        throw new VdiskError('E_USAGE', `${path}: not a regular file or block device`);
      }
      return new FileStorage(path, fh, st.size, readOnly, unlock);
    } catch (err) {
      await unlock?.();
      throw err;
    }
  }

  get size(): number {
    return this.length;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const fh = this.handle();
    checkInside(this.name, offset, buf.length, this.length);
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
    const fh = this.handle();
    this.writable();
    checkIoArgs(this.name, offset, buf.length);
    let done = 0;
    while (done < buf.length) {
      try {
        const { bytesWritten } = await fh.write(buf, done, buf.length - done, offset + done);
        done += bytesWritten;
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
      await fh.datasync();
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

  async allocatedSize(): Promise<number> {
    const st = await this.handle().stat();
    return st.blocks * 512;
  }

  private handle(): FileHandle {
    if (!this.fh) throw new VdiskError('E_CLOSED', `${this.name}: storage is closed`);
    return this.fh;
  }

  private writable(): void {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.name}: opened read-only`);
  }
}
