import { VdiskError } from '../errors.js';
import { checkIoArgs } from '../storage/checks.js';
import { IO_CHUNK } from '../storage/storage.js';
import type { BlockDevice, Extent } from './block-device.js';
import { Gate } from './gate.js';
import { zeroBuffer } from './zero.js';

/** Throw E_BOUNDS unless [offset, offset+length) lies inside a device of `size` bytes. */
export function checkDeviceRange(name: string, size: number, offset: number, length: number): void {
  checkIoArgs(name, offset, length);
  if (offset + length > size) {
    throw new VdiskError('E_BOUNDS', `${name}: range ${offset}+${length} is past the end of the ${size}-byte disk`);
  }
}

/**
 * Shared plumbing for BlockDevice implementations: range, read-only and closed
 * checks happen here, so a format implements only the `*At` hooks with arguments
 * that are already valid.
 */
export abstract class BlockDeviceBase implements BlockDevice {
  abstract readonly size: number;
  readonly sectorSize: number = 512;
  abstract readonly readOnly: boolean;
  /** Name for messages. */
  abstract readonly filename: string;
  protected closed = false;
  /**
   * Writes, zeroing, discards, flushes and the close run one at a time, in the order
   * they were issued: a format allocates blocks and commits maps between awaits, so two
   * overlapping writes could take the same free block. Reads run beside them; each
   * format orders its writes so a read sees the old bytes or the new ones.
   */
  private readonly mutations = new Gate();

  protected abstract readAt(buf: Uint8Array, offset: number): Promise<void>;
  protected abstract writeAt(buf: Uint8Array, offset: number): Promise<void>;
  protected abstract extentsIn(offset: number, length: number): AsyncIterable<Extent>;
  protected abstract flushAll(): Promise<void>;
  protected abstract closeAll(): Promise<void>;

  /** Default: write zero buffers. Formats that can deallocate override this. */
  protected async writeZeroesAt(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const n = Math.min(IO_CHUNK, length - done);
      await this.writeAt(zeroBuffer(n), offset + done);
      done += n;
    }
  }

  /** Default: discard is a hint and does nothing. */
  protected async discardAt(_offset: number, _length: number): Promise<void> {}

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.live();
    checkDeviceRange(this.filename, this.size, offset, buf.length);
    if (buf.length > 0) await this.readAt(buf, offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.writable();
    checkDeviceRange(this.filename, this.size, offset, buf.length);
    if (buf.length > 0) await this.mutations.run(() => this.writeAt(buf, offset));
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.writable();
    checkDeviceRange(this.filename, this.size, offset, length);
    if (length > 0) await this.mutations.run(() => this.writeZeroesAt(offset, length));
  }

  async discard(offset: number, length: number): Promise<void> {
    this.writable();
    checkDeviceRange(this.filename, this.size, offset, length);
    if (length > 0) await this.mutations.run(() => this.discardAt(offset, length));
  }

  async flush(): Promise<void> {
    this.live();
    if (!this.readOnly) await this.mutations.run(() => this.flushAll());
  }

  async *extents(offset = 0, length = this.size - offset): AsyncIterable<Extent> {
    this.live();
    checkDeviceRange(this.filename, this.size, offset, length);
    if (length > 0) yield* coalesceExtents(this.extentsIn(offset, length));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.mutations.run(async () => {
      if (this.closed) return;
      try {
        if (!this.readOnly) await this.flushAll();
      } finally {
        this.closed = true;
        await this.closeAll();
      }
    });
  }

  protected live(): void {
    if (this.closed) throw new VdiskError('E_CLOSED', `${this.filename}: device is closed`);
  }

  protected writable(): void {
    this.live();
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.filename}: opened read-only`);
  }
}

/** Merge neighbouring extents of the same kind and depth, and drop empty ones. */
export async function* coalesceExtents(source: AsyncIterable<Extent>): AsyncIterable<Extent> {
  let pending: Extent | undefined;
  for await (const e of source) {
    if (e.length <= 0) continue;
    if (pending && pending.kind === e.kind && pending.depth === e.depth && pending.offset + pending.length === e.offset) {
      pending.length += e.length;
      continue;
    }
    if (pending) yield pending;
    pending = { ...e };
  }
  if (pending) yield pending;
}

/** Collect a device's extents into an array (for small ranges and tests). */
export async function listExtents(dev: BlockDevice, offset = 0, length = dev.size - offset): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of dev.extents(offset, length)) out.push(e);
  return out;
}
