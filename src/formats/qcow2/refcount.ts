/**
 * qcow2 refcounts for a writer (qcow2.txt, "Host cluster management"): the refcount
 * table and its refcount blocks, allocation of host clusters at the end of the file,
 * and growth of the table. Every change is written through before the caller goes on,
 * and always before anything points at the cluster it counts, so a crash leaves at
 * worst a cluster counted but unused (a leak), never one used but uncounted.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { QCOW2_MAX_REFTABLE_BYTES, Qcow2Field } from './layout.js';
import { entryHalves, entryOffset, getRefcount, setRefcount, writeEntry } from './tables.js';

/** Refcount blocks kept in memory (they are written through, so any may be dropped). */
const BLOCK_CACHE = 64;

/** The refcount table and blocks of one image. */
export class Refcounts {
  private table: Buffer;
  private tableOffset: number;
  private readonly cs: number;
  private readonly bits: number;
  /** Entries in one refcount block. */
  private readonly perBlock: number;
  private readonly blocks = new Map<number, Buffer>();
  /** The next host cluster index allocation tries (the end of the file, in clusters). */
  private end: number;

  constructor(
    private readonly storage: Storage,
    opts: { clusterBits: number; refcountOrder: number; table: Buffer; tableOffset: number },
  ) {
    this.cs = 2 ** opts.clusterBits;
    this.bits = 2 ** opts.refcountOrder;
    this.perBlock = (this.cs * 8) / this.bits;
    this.table = opts.table;
    this.tableOffset = opts.tableOffset;
    this.end = Math.ceil(storage.size / this.cs);
  }

  /** Where the refcount table is now (it moves when it grows). */
  get tableAt(): { offset: number; clusters: number } {
    return { offset: this.tableOffset, clusters: this.table.length / this.cs };
  }

  private get tableEntries(): number {
    return this.table.length / 8;
  }

  /** Host offset of refcount block `t` (0 = none); checked against the file. */
  private blockOffset(t: number): number {
    if (t >= this.tableEntries) return 0;
    const [hi, lo] = entryHalves(this.table, t * 8);
    const off = entryOffset(hi, lo);
    if (off !== 0 && (off % this.cs !== 0 || off + this.cs > this.storage.size)) {
      throw new VdiskError('E_CORRUPT', `${this.storage.name}: refcount table entry ${t} names ${off}, not a cluster inside the file`);
    }
    return off;
  }

  private async block(off: number): Promise<Buffer> {
    let b = this.blocks.get(off);
    if (b) return b;
    b = Buffer.alloc(this.cs);
    await this.storage.read(b, off);
    this.blocks.set(off, b);
    if (this.blocks.size > BLOCK_CACHE) this.blocks.delete(this.blocks.keys().next().value as number);
    return b;
  }

  /** Refcount of host cluster `c`. */
  async get(c: number): Promise<number> {
    const off = this.blockOffset(Math.floor(c / this.perBlock));
    if (off === 0) return 0;
    return getRefcount(await this.block(off), c % this.perBlock, this.bits);
  }

  /** Set the refcount of host cluster `c`, whose refcount block must exist (write-through). */
  async put(c: number, value: number): Promise<void> {
    const off = this.blockOffset(Math.floor(c / this.perBlock));
    if (off === 0) throw new VdiskError('E_CORRUPT', `${this.storage.name}: host cluster ${c} has no refcount block`);
    if (this.bits < 64 && value >= 2 ** this.bits) throw new VdiskError('E_UNSUPPORTED', `${this.storage.name}: refcount ${value} of host cluster ${c} does not fit ${this.bits} bits`);
    const b = await this.block(off);
    const [from, to] = setRefcount(b, c % this.perBlock, this.bits, value);
    if (this.deferred) {
      const d = this.deferred.get(off);
      this.deferred.set(off, d ? [b, Math.min(d[1], from), Math.max(d[2], to)] : [b, from, to]);
      return;
    }
    await this.storage.write(b.subarray(from, to), off + from);
  }

  /** Drop one reference to each host cluster of [offset, offset + length) (a freed cluster stays a hole: we allocate only at the end). */
  async release(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + length - 1) / this.cs);
    for (let c = first; c <= last; c++) {
      const n = await this.get(c);
      if (n > 0) await this.put(c, n - 1);
    }
  }

  /**
   * Allocate `n` host clusters with refcount 1 (all counted on disk when this
   * returns, one write per refcount block touched); their byte offsets, ascending.
   */
  async allocateMany(n: number): Promise<number[]> {
    const out: number[] = [];
    this.deferred = new Map();
    try {
      for (let k = 0; k < n; k++) out.push(await this.allocate());
    } finally {
      await this.writeDeferred();
      this.deferred = undefined;
    }
    return out;
  }

  /** While {@link allocateMany} runs: each refcount block (by offset) changed in memory, and the byte range not yet written. */
  private deferred: Map<number, [Buffer, number, number]> | undefined;

  /** Write the refcount ranges {@link allocateMany} has held back. */
  private async writeDeferred(): Promise<void> {
    if (!this.deferred) return;
    const dirty = [...this.deferred];
    this.deferred.clear();
    for (const [off, [b, from, to]] of dirty) await this.storage.write(b.subarray(from, to), off + from);
  }

  /** Allocate one host cluster with refcount 1 (counted on disk when this returns); its byte offset. */
  async allocate(): Promise<number> {
    for (;;) {
      const c = this.end;
      const t = Math.floor(c / this.perBlock);
      if (t >= this.tableEntries) {
        // Counts held back reach the disk before the table they belong to moves.
        await this.writeDeferred();
        const held = this.deferred;
        this.deferred = undefined;
        try {
          await this.growTable(t + 1);
        } finally {
          this.deferred = held;
        }
        continue;
      }
      if (this.blockOffset(t) === 0) {
        // A new refcount block at cluster c counts itself: it lies in the range it covers.
        const b = Buffer.alloc(this.cs);
        setRefcount(b, c % this.perBlock, this.bits, 1);
        await this.storage.write(b, c * this.cs);
        await this.storage.flush();
        writeEntry(this.table, t * 8, c * this.cs, 0);
        await this.storage.write(this.table.subarray(t * 8, t * 8 + 8), this.tableOffset + t * 8);
        this.blocks.set(c * this.cs, b);
        this.end = c + 1;
        continue;
      }
      this.end = c + 1;
      if ((await this.get(c)) !== 0) continue;
      await this.put(c, 1);
      return c * this.cs;
    }
  }

  /** True when host cluster `c` has a refcount block (a count of it can be set). */
  hasBlockFor(c: number): boolean {
    return this.blockOffset(Math.floor(c / this.perBlock)) !== 0;
  }

  /** Entries in one refcount block (the host clusters one block counts). */
  get clustersPerBlock(): number {
    return this.perBlock;
  }

  /** Host offset of the refcount block for range `t` (0 = none). */
  blockAt(t: number): number {
    return this.blockOffset(t);
  }

  /** Number of refcount block ranges the table has entries for. */
  get ranges(): number {
    return this.tableEntries;
  }

  /**
   * Move refcount block `t` to the free host cluster `to` (counted by an existing
   * block): the copy (counting `to` when it covers it) is written and flushed, then
   * the table entry, flushed; the old cluster is released last (a crash leaks it).
   */
  async moveBlock(t: number, to: number): Promise<void> {
    const from = this.blockOffset(t);
    if (from === 0) throw new VdiskError('E_USAGE', `${this.storage.name}: refcount block ${t} does not exist`);
    const toCluster = to / this.cs;
    const copy = Buffer.from(await this.block(from));
    if (Math.floor(toCluster / this.perBlock) === t) setRefcount(copy, toCluster % this.perBlock, this.bits, 1);
    else await this.put(toCluster, 1);
    await this.storage.write(copy, to);
    await this.storage.flush();
    writeEntry(this.table, t * 8, to, 0);
    await this.storage.write(this.table.subarray(t * 8, t * 8 + 8), this.tableOffset + t * 8);
    await this.storage.flush();
    this.blocks.delete(from);
    this.blocks.set(to, copy);
    await this.put(from / this.cs, 0);
  }

  /**
   * Forget refcount block `t`, whose range counts nothing but (maybe) the block
   * itself: the table entry goes first, then, when the block lies in another range,
   * its own count there.
   */
  async dropBlock(t: number): Promise<void> {
    const at = this.blockOffset(t);
    if (at === 0) return;
    writeEntry(this.table, t * 8, 0, 0);
    await this.storage.write(this.table.subarray(t * 8, t * 8 + 8), this.tableOffset + t * 8);
    await this.storage.flush();
    this.blocks.delete(at);
    const c = at / this.cs;
    if (Math.floor(c / this.perBlock) !== t && this.hasBlockFor(c)) await this.put(c, 0);
  }

  /**
   * Move the refcount table to the free, counted-by-existing-blocks host clusters
   * starting at `to`: counted, written, flushed, then named by the header (one
   * write), flushed, and the old clusters released.
   */
  async moveTable(to: number): Promise<void> {
    const clusters = this.table.length / this.cs;
    for (let k = 0; k < clusters; k++) await this.put(to / this.cs + k, 1);
    await this.storage.write(this.table, to);
    await this.storage.flush();
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(to), 0);
    hdr.writeUInt32BE(clusters, 8);
    await this.storage.write(hdr, Qcow2Field.refcountTableOffset);
    await this.storage.flush();
    const old = this.tableOffset;
    this.tableOffset = to;
    for (let k = 0; k < clusters; k++) await this.put(old / this.cs + k, 0);
  }

  /** After the file was cut: allocation continues at its new end. */
  restartAtEnd(): void {
    this.end = Math.ceil(this.storage.size / this.cs);
  }

  /**
   * Allocate `n` contiguous host clusters at the end of the file (refcount 1 each);
   * the byte offset of the first. Clusters a refcount block splits off are given back.
   */
  async allocateRun(n: number): Promise<number> {
    const got: number[] = [];
    while (got.length < n) {
      const at = await this.allocate();
      if (got.length > 0 && at !== got[got.length - 1]! + this.cs) {
        for (const g of got) await this.put(g / this.cs, 0);
        got.length = 0;
      }
      got.push(at);
    }
    return got[0]!;
  }

  /**
   * Move the refcount table to a larger one at the end of the file, with the new
   * refcount blocks that count the new area itself: blocks and table are written
   * and flushed before one header write switches to them; the old table is
   * released after.
   */
  private async growTable(minEntries: number): Promise<void> {
    const start = this.end;
    let entries = Math.max(minEntries, Math.ceil(this.tableEntries * 1.5));
    let newBlocks: number[] = [];
    let tableClusters = 0;
    for (let guard = 0; guard < 64; guard++) {
      tableClusters = Math.ceil((entries * 8) / this.cs);
      const areaEnd = start + newBlocks.length + tableClusters;
      const need: number[] = [];
      for (let r = Math.floor(start / this.perBlock); r <= Math.floor((areaEnd - 1) / this.perBlock); r++) if (this.blockOffset(r) === 0) need.push(r);
      entries = Math.max(entries, Math.floor((areaEnd - 1) / this.perBlock) + 1);
      const stable = need.length === newBlocks.length && Math.ceil((entries * 8) / this.cs) === tableClusters;
      newBlocks = need;
      if (stable) break;
    }
    if (tableClusters * this.cs > QCOW2_MAX_REFTABLE_BYTES) throw new VdiskError('E_NOSPC', `${this.storage.name}: the refcount table would grow past ${QCOW2_MAX_REFTABLE_BYTES} bytes`);
    const areaEnd = start + newBlocks.length + tableClusters;
    // Area clusters in ranges that already have a block are counted there first.
    for (let c = start; c < areaEnd; c++) if (!newBlocks.includes(Math.floor(c / this.perBlock))) await this.put(c, 1);
    const table = Buffer.alloc(tableClusters * this.cs);
    this.table.copy(table);
    for (const [k, r] of newBlocks.entries()) {
      const at = (start + k) * this.cs;
      const b = Buffer.alloc(this.cs);
      for (let c = Math.max(start, r * this.perBlock); c < Math.min(areaEnd, (r + 1) * this.perBlock); c++) setRefcount(b, c % this.perBlock, this.bits, 1);
      await this.storage.write(b, at);
      writeEntry(table, r * 8, at, 0);
    }
    const tableAt = (start + newBlocks.length) * this.cs;
    await this.storage.write(table, tableAt);
    await this.storage.flush();
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(tableAt), 0);
    hdr.writeUInt32BE(tableClusters, 8);
    await this.storage.write(hdr, Qcow2Field.refcountTableOffset);
    await this.storage.flush();
    const old = { offset: this.tableOffset, length: this.table.length };
    this.table = table;
    this.tableOffset = tableAt;
    this.blocks.clear();
    this.end = areaEnd;
    await this.release(old.offset, old.length);
  }
}
