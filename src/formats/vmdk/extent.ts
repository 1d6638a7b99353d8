/**
 * The extents a VMDK disk is made of, each behind one small interface: a hosted
 * sparse extent (sparse.ts), a FLAT/VMFS extent (a window of a plain file) and a ZERO
 * extent. Offsets here are bytes inside the extent.
 */
import type { ExtentKind } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { SECTOR } from './layout.js';

/** Reads what lies below an extent range (the parent, or zeros): fill `buf` for extent offset `offset`. */
export type ReadBelow = (buf: Buffer, offset: number) => Promise<void>;

/** A run of one kind inside an extent. */
export interface ExtentRun {
  offset: number;
  length: number;
  kind: ExtentKind;
}

/** One extent of a VMDK disk. */
export interface VmdkExtent {
  /** Length in bytes (the descriptor's sectors × 512). */
  readonly length: number;
  /** Fill `buf` from extent offset `offset`; unallocated parts come from `below`. */
  read(buf: Buffer, offset: number, below: ReadBelow): Promise<void>;
  /** Write `buf` at extent offset `offset`; partial new grains take the rest from `below`. */
  write(buf: Buffer, offset: number, below: ReadBelow): Promise<void>;
  /** Runs of `[offset, offset+length)` by kind, in order. */
  map(offset: number, length: number): AsyncIterable<ExtentRun>;
  /** Make completed writes durable. */
  flush(): Promise<void>;
  /** Facts for `info`. */
  describe(): Record<string, unknown>;
}

/** A FLAT or VMFS extent: `length` bytes of a plain file starting at `start`. */
export class FlatExtent implements VmdkExtent {
  constructor(
    private readonly storage: Storage,
    readonly length: number,
    private readonly start: number,
    private readonly readOnly: boolean,
    private readonly type: string,
  ) {
    if (storage.size < start + length) {
      throw new VdiskError('E_CORRUPT', `${storage.name}: ${type} extent needs ${start + length} bytes but the file has ${storage.size}`);
    }
  }

  read(buf: Buffer, offset: number): Promise<void> {
    return this.storage.read(buf, this.start + offset);
  }

  write(buf: Buffer, offset: number): Promise<void> {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.storage.name}: extent is read-only`);
    return this.storage.write(buf, this.start + offset);
  }

  async *map(offset: number, length: number): AsyncIterable<ExtentRun> {
    yield { offset, length, kind: 'data' };
  }

  flush(): Promise<void> {
    return this.readOnly ? Promise.resolve() : this.storage.flush();
  }

  describe(): Record<string, unknown> {
    return { filename: this.storage.name, type: this.type, 'virtual-size': this.length, offset: this.start / SECTOR };
  }
}

/** A ZERO extent: reads zeros, holds nothing. */
export class ZeroExtent implements VmdkExtent {
  constructor(readonly length: number) {}

  async read(buf: Buffer): Promise<void> {
    buf.fill(0);
  }

  async write(): Promise<void> {
    throw new VdiskError('E_UNSUPPORTED', 'cannot write into a ZERO extent');
  }

  async *map(offset: number, length: number): AsyncIterable<ExtentRun> {
    yield { offset, length, kind: 'zero' };
  }

  async flush(): Promise<void> {}

  describe(): Record<string, unknown> {
    return { type: 'ZERO', 'virtual-size': this.length };
  }
}
