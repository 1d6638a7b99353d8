import { VdiskError } from '../errors.js';
import { checkInside, checkIoArgs } from './checks.js';
import type { Storage } from './storage.js';

/** Largest container MemoryStorage will grow to, so a hostile write cannot exhaust memory. */
const MEMORY_LIMIT = 4 * 1024 ** 3;

/** Storage held in memory; grows on write. Useful for tests and scratch images. */
export class MemoryStorage implements Storage {
  readonly name: string;
  readonly readOnly: boolean;
  private data: Buffer;
  private length: number;
  private closed = false;

  constructor(initial?: Uint8Array | number, opts: { name?: string; readOnly?: boolean } = {}) {
    this.name = opts.name ?? 'memory';
    this.readOnly = opts.readOnly ?? false;
    if (typeof initial === 'number') {
      this.data = Buffer.alloc(initial);
      this.length = initial;
    } else if (initial) {
      this.data = Buffer.from(initial);
      this.length = initial.length;
    } else {
      this.data = Buffer.alloc(0);
      this.length = 0;
    }
  }

  get size(): number {
    return this.length;
  }

  /** A copy of the current contents. */
  snapshot(): Buffer {
    return Buffer.from(this.data.subarray(0, this.length));
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.live();
    checkInside(this.name, offset, buf.length, this.length);
    buf.set(this.data.subarray(offset, offset + buf.length));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.live();
    this.writable();
    checkIoArgs(this.name, offset, buf.length);
    const end = offset + buf.length;
    if (end > this.length) this.resize(end);
    this.data.set(buf, offset);
  }

  async truncate(size: number): Promise<void> {
    this.live();
    this.writable();
    checkIoArgs(this.name, size, 0);
    this.resize(size);
  }

  async flush(): Promise<void> {
    this.live();
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  async allocatedSize(): Promise<number> {
    return this.length;
  }

  private resize(size: number): void {
    if (size > MEMORY_LIMIT) throw new VdiskError('E_BOUNDS', `${this.name}: ${size} bytes is over the memory storage limit`);
    if (size > this.data.length) {
      const grown = Buffer.alloc(Math.min(MEMORY_LIMIT, Math.max(size, this.data.length * 2)));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    } else if (size < this.length) {
      this.data.fill(0, size, this.length);
    }
    this.length = size;
  }

  private live(): void {
    if (this.closed) throw new VdiskError('E_CLOSED', `${this.name}: storage is closed`);
  }

  private writable(): void {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.name}: storage is read-only`);
  }
}
