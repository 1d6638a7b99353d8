/**
 * A qcow2 image as a BlockDevice: guest offsets go through the L1 table and L2
 * tables (kept in a bounded cache) to host clusters, which are normal, compressed
 * (raw deflate, at most one cluster once inflated) or zero; unallocated clusters
 * fall through to the backing image.
 *
 * Writes (see {@link Qcow2Image.writeAt}) never overwrite a cluster that anything
 * else may share: a new cluster is taken at the end of the file and counted
 * (refcount), filled (data), then named by its L2 entry, and a new L2 table by its L1
 * entry, with a flush between the steps; clusters no longer named are released last.
 * A crash at any point leaves at worst leaked clusters.
 */
import { inflateRawSync } from 'node:zlib';
import { readBelow } from '../../device/below.js';
import type { DiskImage, Extent, ImageInfo } from '../../device/block-device.js';
import { BlockDeviceBase } from '../../device/base.js';
import { isZero } from '../../device/zero.js';
import { compressCluster } from '../compress.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import type { CompactOptions, CompactResult, ResizeImageOptions } from '../../device/block-device.js';
import { Compatible, Incompatible, QCOW2_MAX_L1_BYTES, Qcow2Field, loadHeader, readSnapshots, type Qcow2Header } from './layout.js';
import { growL1, l1EntriesFor, packClusters, relinkHeader, writeVirtualSize, type Qcow2State } from './maintain.js';
import { Refcounts } from './refcount.js';
import { QCOW_OFLAG_COPIED_HI, QCOW_OFLAG_ZERO, decodeL2, entryHalves, entryOffset, writeEntry, type L2Mapping } from './tables.js';

/** Bytes of L2 tables the cache keeps (at least a few tables whatever the cluster size). */
const L2_CACHE_BYTES = 32 * 1024 * 1024;
const L2_CACHE_MIN_TABLES = 4;
/** zlib's default level, which qemu's qcow2 compression uses. */
const DEFAULT_COMPRESSION_LEVEL = 6;
/** Partly filled host clusters compressed data may still go into. */
const COMPRESSED_TAILS = 8;
/** Map updates that may wait in memory before {@link Qcow2Image.commit} writes them. */
const PENDING_LIMIT = 256;

/** How a Qcow2Image is wired up (the driver decodes and validates before constructing). */
export interface Qcow2ImageParts {
  storage: Storage;
  header: Qcow2Header;
  /** The L1 table as on disk (l1_size entries). */
  l1: Buffer;
  readOnly: boolean;
  parent?: DiskImage;
  ownsParent: boolean;
  warnings: string[];
  /** The refcounts, for a writable image. */
  refcounts?: Refcounts;
  /** Write whole new clusters compressed (convert -c). */
  compress?: boolean;
}

/** A qcow2 image (version 2 or 3), optionally over a backing image. */
export class Qcow2Image extends BlockDeviceBase implements DiskImage {
  readonly format = 'qcow2';
  readonly filename: string;
  readonly readOnly: boolean;
  /** Virtual size (changes with {@link resize}). */
  size: number;
  /** The backing image (changes with {@link setBacking}). */
  backing?: DiskImage;
  private readonly storage: Storage;
  private header: Qcow2Header;
  private l1: Buffer;
  private readonly clusterSize: number;
  /** log2 of the number of entries in an L2 table. */
  private readonly l2Bits: number;
  /** Extended L2 entries (qcow2.txt): 128 bits, the second half a bitmap of 32 subclusters. */
  private readonly extendedL2: boolean;
  private readonly ownsParent: boolean;
  private readonly warnings: string[];
  /** L2 tables by host offset, least recently used first. */
  private readonly l2Cache = new Map<number, Buffer>();
  private readonly l2CacheMax: number;
  /** The last compressed cluster inflated (sequential small reads of one cluster inflate once). */
  private inflated?: { offset: number; data: Buffer };

  constructor(p: Qcow2ImageParts) {
    super();
    this.storage = p.storage;
    this.filename = p.storage.name;
    this.header = p.header;
    this.l1 = p.l1;
    this.readOnly = p.readOnly || p.storage.readOnly;
    this.size = p.header.size;
    this.clusterSize = 2 ** p.header.clusterBits;
    this.extendedL2 = (p.header.incompatibleFeatures & BigInt(Incompatible.EXTENDED_L2)) !== 0n;
    this.l2Bits = p.header.clusterBits - (this.extendedL2 ? 4 : 3);
    if (p.parent) this.backing = p.parent;
    this.ownsParent = p.ownsParent;
    this.warnings = p.warnings;
    this.l2CacheMax = Math.max(L2_CACHE_MIN_TABLES, Math.floor(L2_CACHE_BYTES / this.clusterSize));
    this.refcounts = p.refcounts;
    if (p.compress) this.compressLevel = DEFAULT_COMPRESSION_LEVEL;
    if (!this.readOnly && !this.refcounts) throw new VdiskError('E_USAGE', `${this.filename}: a writable qcow2 image needs its refcounts`);
  }

  private refcounts?: Refcounts;
  /** zlib level for whole clusters written compressed (convert -c); undefined: not compressed. */
  private readonly compressLevel?: number;

  /** The decoded header (a copy). */
  get qcow2Header(): Qcow2Header {
    return { ...this.header };
  }

  /** Host offset of the L2 table for L1 index `i` (0 = none). */
  private l2Offset(i: number): number {
    const [hi, lo] = entryHalves(this.l1, i * 8);
    const off = entryOffset(hi, lo);
    if (off !== 0 && (off % this.clusterSize !== 0 || off + this.clusterSize > this.storage.size)) {
      throw new VdiskError('E_CORRUPT', `${this.filename}: L1 entry ${i} names an L2 table at ${off}, which is not a cluster-aligned offset inside the ${this.storage.size}-byte file`);
    }
    return off;
  }

  /** The L2 table at host offset `off`, through the cache. */
  private async l2Table(off: number): Promise<Buffer> {
    const hit = this.l2Cache.get(off);
    if (hit) {
      this.l2Cache.delete(off);
      this.l2Cache.set(off, hit);
      return hit;
    }
    const t = Buffer.alloc(this.clusterSize);
    await this.storage.read(t, off);
    this.cacheL2(off, t);
    return t;
  }

  private cacheL2(off: number, t: Buffer): void {
    this.l2Cache.set(off, t);
    if (this.l2Cache.size <= this.l2CacheMax) return;
    for (const key of this.l2Cache.keys()) {
      // Tables with changes not yet on disk stay (commit bounds how many there are).
      if (this.pendingL2.has(key)) continue;
      this.l2Cache.delete(key);
      if (this.l2Cache.size <= this.l2CacheMax) return;
    }
  }

  /** The mapping of guest cluster `c` (for extended L2 entries, of its whole cluster; `segment` splits it by subcluster). */
  private async lookup(c: number): Promise<L2Mapping> {
    return (await this.lookupEntry(c)).m;
  }

  private async lookupEntry(c: number): Promise<{ m: L2Mapping; bitmap?: [number, number] }> {
    const i = Math.floor(c / 2 ** this.l2Bits);
    if (i >= this.header.l1Size) return { m: { kind: 'unallocated' } };
    const l2 = this.l2Offset(i);
    if (l2 === 0) return { m: { kind: 'unallocated' } };
    const t = await this.l2Table(l2);
    const j = c % 2 ** this.l2Bits;
    if (!this.extendedL2) {
      const [hi, lo] = entryHalves(t, j * 8);
      const m = decodeL2(hi, lo, this.header.clusterBits, this.header.version);
      this.checkMapping(m, c);
      return { m };
    }
    const [hi, lo] = entryHalves(t, j * 16);
    // Bit 0 is not the zero flag here: zeros are marked per subcluster in the bitmap.
    const m = decodeL2(hi, lo & ~QCOW_OFLAG_ZERO, this.header.clusterBits, this.header.version);
    this.checkMapping(m, c);
    const [zero, alloc] = entryHalves(t, j * 16 + 8);
    return { m, bitmap: [alloc >>> 0, zero >>> 0] };
  }

  /**
   * The run of guest bytes from `pos` that one mapping answers: to the end of the
   * cluster, or with extended L2 entries to the end of the subclusters sharing a status.
   */
  private async segment(pos: number): Promise<{ m: L2Mapping; c: number; end: number }> {
    const cs = this.clusterSize;
    const c = Math.floor(pos / cs);
    const { m, bitmap } = await this.lookupEntry(c);
    const end = (c + 1) * cs;
    if (!bitmap || m.kind === 'compressed') return { m, c, end };
    const [alloc, zero] = bitmap;
    const scs = cs / 32;
    const state = (sc: number): number => {
      const a = (alloc >>> sc) & 1;
      const z = (zero >>> sc) & 1;
      if (a && z) throw new VdiskError('E_CORRUPT', `${this.filename}: subcluster ${sc} of guest cluster ${c} is marked both allocated and zero`);
      return a ? 1 : z ? 2 : 0;
    };
    const first = Math.floor((pos - c * cs) / scs);
    const s = state(first);
    let last = first + 1;
    while (last < 32 && state(last) === s) last++;
    const runEnd = c * cs + last * scs;
    if (s === 1) {
      if (m.kind !== 'normal') throw new VdiskError('E_CORRUPT', `${this.filename}: guest cluster ${c} has allocated subclusters but no host cluster`);
      return { m, c, end: runEnd };
    }
    return { m: s === 2 ? { kind: 'zero', offset: 0 } : { kind: 'unallocated' }, c, end: runEnd };
  }

  private checkMapping(m: L2Mapping, c: number): void {
    const fileSize = this.storage.size;
    if (m.kind === 'normal' || (m.kind === 'zero' && m.offset !== 0)) {
      if (m.offset % this.clusterSize !== 0) throw new VdiskError('E_CORRUPT', `${this.filename}: L2 entry of guest cluster ${c} names host offset ${m.offset}, which is not cluster-aligned`);
      if (m.kind === 'normal' && m.offset >= fileSize) throw new VdiskError('E_CORRUPT', `${this.filename}: L2 entry of guest cluster ${c} names host offset ${m.offset}, past the ${fileSize}-byte file`);
    } else if (m.kind === 'compressed') {
      if (m.offset < this.clusterSize || m.offset >= fileSize) throw new VdiskError('E_CORRUPT', `${this.filename}: compressed guest cluster ${c} at host offset ${m.offset} lies outside the ${fileSize}-byte file`);
    }
  }

  /** Read host bytes; what lies past the end of the file reads as zeros (qemu allows a short last cluster). */
  private async readHost(buf: Uint8Array, off: number): Promise<void> {
    const n = Math.max(0, Math.min(buf.length, this.storage.size - off));
    if (n > 0) await this.storage.read(buf.subarray(0, n), off);
    buf.fill(0, n);
  }

  /** Inflate the compressed cluster `m` (bounded to one cluster). */
  private async inflate(m: { offset: number; length: number }, c: number): Promise<Buffer> {
    if (this.inflated?.offset === m.offset) return this.inflated.data;
    const len = Math.min(m.length, this.storage.size - m.offset, 2 * this.clusterSize);
    const raw = Buffer.alloc(len);
    await this.storage.read(raw, m.offset);
    let out: Buffer;
    try {
      out = inflateRawSync(raw, { maxOutputLength: this.clusterSize, finishFlush: 2 /* Z_SYNC_FLUSH: a stream cut at the sector end is fine */ });
    } catch (err) {
      throw new VdiskError('E_CORRUPT', `${this.filename}: compressed guest cluster ${c} at host offset ${m.offset} does not inflate to at most one cluster (${(err as Error).message})`, { cause: err });
    }
    const data = Buffer.alloc(this.clusterSize);
    out.copy(data);
    this.inflated = { offset: m.offset, data };
    return data;
  }

  /** Read guest cluster `c`'s bytes [within, within + piece.length) into `piece`. */
  private async readCluster(c: number, within: number, piece: Uint8Array): Promise<void> {
    await this.readAt(piece, c * this.clusterSize + within);
  }

  /** Read `piece` at guest offset `pos`, which mapping `m` of guest cluster `c` answers. */
  private async readMapped(m: L2Mapping, c: number, pos: number, piece: Uint8Array): Promise<void> {
    const within = pos - c * this.clusterSize;
    switch (m.kind) {
      case 'normal':
        return this.readHost(piece, m.offset + within);
      case 'zero':
        piece.fill(0);
        return;
      case 'compressed': {
        const data = await this.inflate(m, c);
        piece.set(data.subarray(within, within + piece.length));
        return;
      }
      case 'unallocated':
        return readBelow(this.backing, piece, pos);
    }
  }

  protected async readAt(buf: Uint8Array, offset: number): Promise<void> {
    const end = offset + buf.length;
    for (let pos = offset; pos < end; ) {
      const seg = await this.segment(pos);
      const n = Math.min(seg.end, end) - pos;
      await this.readMapped(seg.m, seg.c, pos, buf.subarray(pos - offset, pos - offset + n));
      pos += n;
    }
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    await this.noteModified();
    const cs = this.clusterSize;
    const end = offset + buf.length;
    for (let pos = offset; pos < end; ) {
      const c = Math.floor(pos / cs);
      const within = pos - c * cs;
      const n = Math.min(cs - within, end - pos);
      if (within === 0 && n === cs) {
        // Whole clusters that need new host clusters go as one run: their refcounts
        // in one write per refcount block, their data in one write per contiguous run.
        const fresh: Array<[number, L2Mapping]> = [];
        for (let q = c; (q + 1) * cs <= end && fresh.length < PENDING_LIMIT; q++) {
          const m = await this.lookup(q);
          if (m.kind === 'normal' && m.copied) break;
          fresh.push([q, m]);
        }
        if (fresh.length > 0 && this.compressLevel !== undefined) {
          await this.writeCompressedClusters(fresh, buf.subarray(pos - offset, pos - offset + fresh.length * cs));
          pos += fresh.length * cs;
          if (this.pendingCount >= PENDING_LIMIT) await this.commit();
          continue;
        }
        if (fresh.length > 0) {
          await this.writeFreshClusters(fresh, buf.subarray(pos - offset, pos - offset + fresh.length * cs));
          pos += fresh.length * cs;
          if (this.pendingCount >= PENDING_LIMIT) await this.commit();
          continue;
        }
      }
      await this.writeCluster(c, within, buf.subarray(pos - offset, pos - offset + n));
      pos += n;
    }
    if (this.pendingCount >= PENDING_LIMIT) await this.commit();
  }

  /** Write whole guest clusters `runs` (consecutive) from `data` into new host clusters, in the order {@link writeCluster} keeps. */
  private async writeFreshClusters(runs: Array<[number, L2Mapping]>, data: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    const hosts = await this.refcounts!.allocateMany(runs.length);
    for (let k = 0; k < hosts.length; ) {
      let e = k + 1;
      while (e < hosts.length && hosts[e] === hosts[e - 1]! + cs) e++;
      await this.storage.write(data.subarray(k * cs, e * cs), hosts[k]!);
      k = e;
    }
    for (let k = 0; k < runs.length; k++) {
      const [c, m] = runs[k]!;
      await this.setL2(c, hosts[k]!, QCOW_OFLAG_COPIED_HI, 0);
      this.releaseLater(m);
    }
  }

  /**
   * Write whole guest clusters `runs` compressed (qemu's `convert -c`): all deflated
   * at once on the worker pool, then each packed after the previous one, sharing
   * host clusters byte by byte as qemu packs them (a host cluster's refcount counts
   * the compressed clusters in it). One that would not shrink is
   * written as it is.
   */
  private async writeCompressedClusters(runs: Array<[number, L2Mapping]>, data: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    const zs = await Promise.all(runs.map((_, k) => compressCluster(data.subarray(k * cs, (k + 1) * cs), this.compressLevel!)));
    const x = 62 - (this.header.clusterBits - 8);
    for (let k = 0; k < runs.length; k++) {
      const [c, m] = runs[k]!;
      const z = zs[k]!;
      // As qemu: compressed when the deflated cluster fits in cluster_size - 1 bytes.
      if (z.length === 0 || z.length >= cs) {
        const host = await this.refcounts!.allocate();
        await this.storage.write(data.subarray(k * cs, (k + 1) * cs), host);
        await this.setL2(c, host, QCOW_OFLAG_COPIED_HI, 0);
      } else {
        const at = await this.placeCompressed(z.length);
        await this.storage.write(z, at);
        const sectors = Math.floor((at + z.length - 1) / 512) - Math.floor(at / 512);
        const v = (1n << 62n) | (BigInt(sectors) << BigInt(x)) | BigInt(at);
        await this.putL2(c, (t, e) => void t.writeBigUInt64BE(v, e));
      }
      this.releaseLater(m);
    }
  }

  /**
   * Host clusters partly filled with compressed data (the most recent last), and how
   * many of their bytes are used: a later compressed cluster that fits goes into one
   * of them, so a plain cluster written between two compressed ones wastes no room.
   */
  private compressedTails: Array<{ cluster: number; used: number }> = [];

  /** Host bytes for `length` bytes of compressed data, counted (refcounts) before this returns. */
  private async placeCompressed(length: number): Promise<number> {
    const cs = this.clusterSize;
    const rc = this.refcounts!;
    const tails = this.compressedTails;
    // A host cluster already holding compressed data gains one reference per cluster added.
    const share = async (t: { cluster: number; used: number }): Promise<number> => {
      const n = t.cluster / cs;
      await rc.put(n, (await rc.get(n)) + 1);
      return t.cluster + t.used;
    };
    const fit = tails.findIndex((t) => cs - t.used >= length);
    if (fit >= 0) {
      const t = tails[fit]!;
      const at = await share(t);
      t.used += length;
      if (t.used === cs) tails.splice(fit, 1);
      return at;
    }
    const latest = tails[tails.length - 1];
    const room = latest ? cs - latest.used : 0;
    const more = Math.ceil((length - room) / cs);
    const first = await rc.allocateRun(more);
    let at: number;
    if (latest && first === latest.cluster + cs) {
      // Spanning from the latest partial cluster into the run that follows it.
      at = await share(latest);
      tails.pop();
    } else {
      // Not next to it (a plain cluster or an L2 table came between): start afresh,
      // taking the clusters after the run if it is too short (giving the run back
      // would leave a hole: allocation only moves forward).
      at = first;
      const short = Math.ceil(length / cs) - more;
      // A refcount block may land between the two runs: then a run of its own (the first leaks as a hole).
      if (short > 0 && (await rc.allocateRun(short)) !== first + more * cs) at = await rc.allocateRun(Math.ceil(length / cs));
    }
    const end = at + length;
    const last = Math.floor((end - 1) / cs) * cs;
    if (end - last < cs) {
      tails.push({ cluster: last, used: end - last });
      // Keep the few with the most room.
      if (tails.length > COMPRESSED_TAILS) {
        let worst = 0;
        for (let k = 1; k < tails.length - 1; k++) if (tails[k]!.used > tails[worst]!.used) worst = k;
        tails.splice(worst, 1);
      }
    }
    return at;
  }

  /** Write into guest cluster `c`: in place when it is ours alone, else into a new cluster. */
  private async writeCluster(c: number, within: number, piece: Uint8Array): Promise<void> {
    const m = await this.lookup(c);
    if (m.kind === 'normal' && m.copied) {
      await this.storage.write(piece, m.offset + within);
      return;
    }
    const cs = this.clusterSize;
    let data: Uint8Array = piece;
    if (piece.length !== cs) {
      const full = Buffer.alloc(cs);
      const inDisk = Math.min(cs, this.size - c * cs);
      await this.readCluster(c, 0, full.subarray(0, inDisk));
      full.set(piece, within);
      data = full;
    }
    // 1. refcount, 2. data, 3. (later, after a flush) the L2 entry naming it.
    const host = await this.refcounts!.allocate();
    await this.storage.write(data, host);
    await this.setL2(c, host, QCOW_OFLAG_COPIED_HI, 0);
    this.releaseLater(m);
  }

  /** Queue the host clusters of a mapping that is being replaced, released after the new one is on disk. */
  private releaseLater(m: L2Mapping): void {
    if (m.kind === 'normal' || (m.kind === 'zero' && m.offset !== 0)) this.pendingFree.push([m.offset, this.clusterSize]);
    else if (m.kind === 'compressed') this.pendingFree.push([m.offset, m.length]);
    if (this.inflated && m.kind === 'compressed' && this.inflated.offset === m.offset) this.inflated = undefined;
  }

  /**
   * Point guest cluster `c` at a new entry. The L2 table must be ours alone: a
   * missing (or shared) one is replaced by a new table, counted and written whole,
   * whose L1 entry waits for {@link commit} like every L2 entry.
   */
  private async setL2(c: number, offset: number, hiFlags: number, loFlags: number): Promise<void> {
    await this.putL2(c, (t, at) => writeEntry(t, at, offset, hiFlags, loFlags));
  }

  /** Point guest cluster `c` at the entry `fill` writes into its L2 table (see {@link setL2}). */
  private async putL2(c: number, fill: (table: Buffer, at: number) => void): Promise<void> {
    const i = Math.floor(c / 2 ** this.l2Bits);
    const j = c % 2 ** this.l2Bits;
    let off = this.l2Offset(i);
    const [l1hi] = entryHalves(this.l1, i * 8);
    if (off === 0 || !(l1hi & QCOW_OFLAG_COPIED_HI)) {
      const t = Buffer.alloc(this.clusterSize);
      if (off !== 0) (await this.l2Table(off)).copy(t);
      fill(t, j * 8);
      const at = await this.refcounts!.allocate();
      await this.storage.write(t, at);
      if (off !== 0) this.pendingFree.push([off, this.clusterSize]);
      writeEntry(this.l1, i * 8, at, QCOW_OFLAG_COPIED_HI);
      this.pendingL1.add(i);
      this.cacheL2(at, t);
      off = at;
      this.pendingCount++;
      return;
    }
    const t = await this.l2Table(off);
    fill(t, j * 8);
    let set = this.pendingL2.get(off);
    if (!set) this.pendingL2.set(off, (set = new Set()));
    set.add(j);
    this.pendingCount++;
  }

  /** L2 entries (by table offset) written in memory, not yet on disk. */
  private readonly pendingL2 = new Map<number, Set<number>>();
  /** L1 entries written in memory, not yet on disk. */
  private readonly pendingL1 = new Set<number>();
  /** Host ranges to release once nothing on disk names them. */
  private pendingFree: Array<[number, number]> = [];
  private pendingCount = 0;
  private modified = false;

  /**
   * Put the deferred map updates on disk in crash-safe order: flush (the new
   * clusters' refcounts and contents), L2 entries, flush, L1 entries, flush, then
   * release the clusters they replaced.
   */
  async commit(): Promise<void> {
    if (this.pendingL2.size === 0 && this.pendingL1.size === 0 && this.pendingFree.length === 0) return;
    await this.storage.flush();
    for (const [off, set] of this.pendingL2) {
      const t = this.l2Cache.get(off)!;
      const idx = [...set].sort((a, b) => a - b);
      await this.writeRuns(t, off, idx);
    }
    this.pendingL2.clear();
    if (this.pendingL1.size > 0) {
      await this.storage.flush();
      await this.writeRuns(this.l1, this.header.l1TableOffset, [...this.pendingL1].sort((a, b) => a - b));
      this.pendingL1.clear();
    }
    this.pendingCount = 0;
    if (this.pendingFree.length > 0) {
      await this.storage.flush();
      const frees = this.pendingFree;
      this.pendingFree = [];
      for (const [off, len] of frees) await this.refcounts!.release(off, len);
    }
  }

  /** Write the 8-byte entries `idx` (sorted) of `table`, one write per run of neighbours. */
  private async writeRuns(table: Buffer, at: number, idx: number[]): Promise<void> {
    for (let k = 0; k < idx.length; ) {
      let e = k + 1;
      while (e < idx.length && idx[e] === idx[e - 1]! + 1) e++;
      const from = idx[k]! * 8;
      const to = (idx[e - 1]! + 1) * 8;
      await this.storage.write(table.subarray(from, to), at + from);
      k = e;
    }
  }

  /** First write since open: autoclear features (bitmaps) this writer does not keep are cleared, as qcow2.txt asks. */
  private async noteModified(): Promise<void> {
    if (this.modified) return;
    this.modified = true;
    if (this.header.autoclearFeatures !== 0n) {
      const b = Buffer.alloc(8);
      await this.storage.write(b, Qcow2Field.autoclearFeatures);
      await this.storage.flush();
      this.header.autoclearFeatures = 0n;
    }
  }

  /** True when guest cluster `c` reads zeros with mapping `m`. */
  private readsZero(m: L2Mapping): boolean {
    return m.kind === 'zero' || (m.kind === 'unallocated' && !this.backing);
  }

  protected override async writeZeroesAt(offset: number, length: number): Promise<void> {
    await this.noteModified();
    await this.forClusters(offset, length, async (c, whole, pos, n) => {
      const m = await this.lookup(c);
      if (this.readsZero(m)) return;
      if (whole && this.header.version >= 3) {
        await this.setL2(c, 0, 0, QCOW_OFLAG_ZERO);
        this.releaseLater(m);
      } else if (whole && !this.backing) {
        await this.setL2(c, 0, 0, 0);
        this.releaseLater(m);
      } else {
        await super.writeZeroesAt(pos, n);
      }
    });
  }

  protected override async discardAt(offset: number, length: number): Promise<void> {
    await this.noteModified();
    await this.forClusters(offset, length, async (c, whole) => {
      if (!whole) return;
      const m = await this.lookup(c);
      if (m.kind === 'unallocated') return;
      await this.setL2(c, 0, 0, 0);
      this.releaseLater(m);
    });
  }

  /** Call `fn` for each guest cluster of a range, saying whether the range covers it whole (the last one up to the disk's end). */
  private async forClusters(offset: number, length: number, fn: (c: number, whole: boolean, pos: number, n: number) => Promise<void>): Promise<void> {
    const cs = this.clusterSize;
    for (let pos = offset; pos < offset + length; ) {
      const c = Math.floor(pos / cs);
      const within = pos - c * cs;
      const n = Math.min(cs - within, offset + length - pos);
      await fn(c, within === 0 && (n === cs || pos + n === this.size), pos, n);
      pos += n;
      if (this.pendingCount >= PENDING_LIMIT) await this.commit();
    }
  }

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    const cs = this.clusterSize;
    const perL2 = 2 ** this.l2Bits;
    let below = -1;
    const end = offset + length;
    const fallThrough = async function* (this: Qcow2Image, from: number, to: number): AsyncIterable<Extent> {
      const p = this.backing;
      const inParent = p ? Math.max(0, Math.min(to, p.size) - from) : 0;
      if (p && inParent > 0) for await (const x of p.extents(from, inParent)) yield { ...x, depth: x.depth + 1 };
      // Past the backing file's end qemu answers from this image (depth 0), as qemu-img map shows.
      if (to - from > inParent) yield { offset: from + inParent, length: to - from - inParent, kind: 'hole', depth: 0 };
    };
    for (let pos = offset; pos < end; ) {
      const c = Math.floor(pos / cs);
      const i = Math.floor(c / perL2);
      // A whole missing L2 table is one unallocated run.
      if (i >= this.header.l1Size || this.l2Offset(i) === 0) {
        const next = Math.min(end, (i + 1) * perL2 * cs);
        if (below < 0) below = pos;
        pos = next;
        continue;
      }
      const seg = await this.segment(pos);
      const m = seg.m;
      const n = Math.min(seg.end, end) - pos;
      if (m.kind === 'unallocated') {
        if (below < 0) below = pos;
      } else {
        if (below >= 0) {
          yield* fallThrough.call(this, below, pos);
          below = -1;
        }
        yield { offset: pos, length: n, kind: m.kind === 'zero' ? 'zero' : 'data', depth: 0 };
      }
      pos += n;
    }
    if (below >= 0) yield* fallThrough.call(this, below, end);
  }

  protected async flushAll(): Promise<void> {
    await this.commit();
    await this.storage.flush();
  }

  protected async closeAll(): Promise<void> {
    try {
      await this.storage.close();
    } finally {
      if (this.ownsParent) await this.backing?.close();
    }
  }

  async info(): Promise<ImageInfo> {
    const h = this.header;
    const incompat = h.incompatibleFeatures;
    const facts: Record<string, unknown> = {
      compat: h.version === 2 ? '0.10' : '1.1',
      version: h.version,
      'cluster-size': this.clusterSize,
      'refcount-bits': 2 ** h.refcountOrder,
      'lazy-refcounts': (h.compatibleFeatures & BigInt(Compatible.LAZY_REFCOUNTS)) !== 0n,
      'dirty-bit': (incompat & BigInt(Incompatible.DIRTY)) !== 0n,
      corrupt: (incompat & BigInt(Incompatible.CORRUPT)) !== 0n,
      'compression-type': 'zlib',
      'extended-l2': this.extendedL2,
      snapshots: h.nbSnapshots,
      'l1-size': h.l1Size,
      'l1-table-offset': h.l1TableOffset,
      'refcount-table-offset': this.refcounts?.tableAt.offset ?? h.refcountTableOffset,
      'refcount-table-clusters': this.refcounts?.tableAt.clusters ?? h.refcountTableClusters,
    };
    if (h.backingFormat !== undefined) facts['backing-format'] = h.backingFormat;
    const warnings = [...this.warnings];
    if (h.nbSnapshots > 0) {
      try {
        const read = async (len: number, at: number): Promise<Buffer> => {
          const b = Buffer.alloc(len);
          await this.storage.read(b, at);
          return b;
        };
        facts['snapshot-list'] = await readSnapshots(read, h.snapshotsOffset, h.nbSnapshots, this.storage.size, this.filename);
      } catch (err) {
        if (!(err instanceof VdiskError)) throw err;
        warnings.push(`snapshot table not listed: ${err.message}`);
      }
    }
    const out: ImageInfo = { clusterSize: this.clusterSize, formatSpecific: facts };
    if ((incompat & BigInt(Incompatible.DIRTY)) !== 0n) out.dirty = true;
    if (h.backingFile !== undefined) out.backingFilename = h.backingFile;
    if (this.backing) out.fullBackingFilename = this.backing.filename;
    if (warnings.length) out.warnings = warnings;
    return out;
  }

  async actualSize(): Promise<number | undefined> {
    return this.storage.allocatedSize?.();
  }

  // ---- maintenance (order of writes: maintain.ts) --------------------------

  /** Every deferred update on disk, then the metadata as maintenance sees it. */
  private async settle(): Promise<Qcow2State> {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.filename}: opened read-only`);
    await this.noteModified();
    await this.commit();
    await this.storage.flush();
    return { storage: this.storage, header: this.header, l1: this.l1, refcounts: this.refcounts! };
  }

  /** Re-read header, L1 table and refcounts after an in-place change (the file is the truth). */
  private async reload(): Promise<void> {
    const header = await loadHeader(this.storage);
    const l1 = Buffer.alloc(header.l1Size * 8);
    if (l1.length > 0) await this.storage.read(l1, header.l1TableOffset);
    const table = Buffer.alloc(header.refcountTableClusters * this.clusterSize);
    await this.storage.read(table, header.refcountTableOffset);
    header.autoclearFeatures = this.header.autoclearFeatures;
    this.header = header;
    this.l1 = l1;
    this.size = header.size;
    this.refcounts = new Refcounts(this.storage, { clusterBits: header.clusterBits, refcountOrder: header.refcountOrder, table, tableOffset: header.refcountTableOffset });
    this.l2Cache.clear();
    this.inflated = undefined;
    this.compressedTails = [];
  }

  /** Guest ranges [from, to) (cluster-aligned) cut at L2 table bounds, only where an L2 table exists. */
  private *mappedRanges(from: number, to: number): Iterable<[number, number]> {
    const span = 2 ** this.l2Bits * this.clusterSize;
    for (let i = Math.floor(from / span); i * span < to && i < this.header.l1Size; i++) {
      if (this.l2Offset(i) === 0) continue;
      yield [Math.max(from, i * span), Math.min(to, (i + 1) * span)];
    }
  }

  /**
   * Change the virtual size. Growing: the L1 table grows first (a longer table is
   * valid for the old size), whatever a crash or an earlier shrink left mapped past
   * the old end is dropped (or zeroed, where a larger backing file would show
   * through, as qemu does), then the size is written. Shrinking: the size is written
   * first, then the clusters past the new end and L2 tables wholly past it are released.
   */
  async resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % 512 !== 0) throw new VdiskError('E_USAGE', `${this.filename}: new size ${newSize} is not a positive multiple of 512`);
    const st = await this.settle();
    const oldSize = this.size;
    if (newSize === oldSize) return;
    const cs = this.clusterSize;
    try {
      if (newSize > oldSize) {
        this.l1 = await growL1(st, l1EntriesFor(newSize, this.header.clusterBits));
        const tail = Math.floor(oldSize / cs);
        if (oldSize % cs !== 0) {
          // The last cluster's bytes past the old end (a shrink leaves them) must read as zeros.
          const m = await this.lookup(tail);
          const showsBelow = m.kind === 'unallocated' && this.backing !== undefined && this.backing.size > oldSize;
          if (m.kind === 'normal' || m.kind === 'compressed' || showsBelow) {
            const full = Buffer.alloc(cs);
            await this.readMapped(m, tail, tail * cs, full.subarray(0, oldSize - tail * cs));
            await this.writeCluster(tail, 0, full);
          }
        }
        const from = Math.ceil(oldSize / cs) * cs;
        const to = Math.ceil(newSize / cs) * cs;
        const below = this.backing ? Math.min(to, Math.ceil(this.backing.size / cs) * cs) : 0;
        if (below > from) await this.writeZeroesAt(from, below - from);
        for (const [a, b] of this.mappedRanges(Math.max(from, below), to)) await this.discardAt(a, b - a);
        await this.commit();
        await this.storage.flush();
        opts.onProgress?.(1, 2);
        await writeVirtualSize(this.storage, newSize);
      } else {
        await writeVirtualSize(this.storage, newSize);
        this.size = newSize;
        const span = 2 ** this.l2Bits * cs;
        const keep = Math.ceil(newSize / cs) * cs;
        for (const [a, b] of this.mappedRanges(keep, Math.ceil(oldSize / cs) * cs)) {
          const i = Math.floor(a / span);
          if (a === i * span) {
            // A table wholly past the end: its clusters go with it, after its L1 entry is gone.
            const t = await this.l2Table(this.l2Offset(i));
            for (let j = 0; j < 2 ** this.l2Bits; j++) {
              const [hi, lo] = entryHalves(t, j * 8);
              this.releaseLater(decodeL2(hi, lo, this.header.clusterBits, this.header.version));
            }
            this.pendingFree.push([this.l2Offset(i), cs]);
            writeEntry(this.l1, i * 8, 0, 0);
            this.pendingL1.add(i);
            this.pendingCount++;
          } else {
            await this.discardAt(a, b - a);
          }
        }
        await this.commit();
        await this.storage.flush();
      }
    } finally {
      await this.reload();
    }
    opts.onProgress?.(2, 2);
  }

  /**
   * Give back space: clusters that read as zeros are released (unallocated without a
   * backing file, else zero clusters; a version 2 image over a backing file keeps
   * them), leaked clusters are uncounted, the clusters at the end are moved into the
   * holes and the file is cut (maintain.ts: packClusters).
   */
  async compact(opts: CompactOptions = {}): Promise<CompactResult> {
    await this.settle();
    const sizeBefore = this.storage.size;
    const cs = this.clusterSize;
    const guestClusters = Math.ceil(this.size / cs);
    const buf = Buffer.alloc(cs);
    let released = 0;
    try {
      for (const [a, b] of this.mappedRanges(0, guestClusters * cs)) {
        for (let c = a / cs; c < b / cs; c++) {
          opts.onProgress?.(c, guestClusters * 2);
          const m = await this.lookup(c);
          let zero = m.kind === 'zero' && m.offset !== 0;
          if (m.kind === 'normal') {
            await this.readHost(buf, m.offset);
            zero = isZero(buf);
          }
          if (!zero) continue;
          if (!this.backing) await this.setL2(c, 0, 0, 0);
          else if (this.header.version >= 3) await this.setL2(c, 0, 0, QCOW_OFLAG_ZERO);
          else continue;
          this.releaseLater(m);
          released++;
          if (this.pendingCount >= PENDING_LIMIT) await this.commit();
        }
      }
      const st = await this.settle();
      this.l1 = await packClusters(st, (done, total) => opts.onProgress?.(guestClusters + (done / total) * guestClusters, guestClusters * 2));
    } finally {
      await this.reload();
    }
    opts.onProgress?.(guestClusters * 2, guestClusters * 2);
    return { releasedBlocks: released, sizeBefore, sizeAfter: this.storage.size };
  }

  /**
   * Point this image at another backing file (`ref` as the header names it, with
   * the parent's format as backing_fmt), or at none: one header write (maintain.ts).
   */
  async setBacking(parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    await this.settle();
    if (parent && ref === undefined) throw new VdiskError('E_USAGE', `${this.filename}: a backing file needs a name to store in the header`);
    if (ref !== undefined && /^[a-z][a-z0-9+.-]*:/i.test(ref)) throw new VdiskError('E_USAGE', `${this.filename}: backing file "${ref}" looks like a protocol; give a file name`);
    await relinkHeader(this.storage, this.header, parent && ref !== undefined ? { name: ref, format: QEMU_FORMAT_NAMES[parent.format] ?? parent.format } : undefined);
    const old = this.backing;
    if (parent) this.backing = parent;
    else delete this.backing;
    if (old && old !== parent && this.ownsParent) await old.close();
  }
}

/** qemu's names for backing formats (backing_fmt) where they differ from vdisk's. */
export const QEMU_FORMAT_NAMES: Readonly<Record<string, string>> = { vhd: 'vpc' };

// ---- Opening: the header validated, the backing file found ----

/** Formats a backing_fmt may name (qemu's names; `vpc` is VHD). */
const BACKING_FORMATS: Record<string, string> = { qcow2: 'qcow2', raw: 'raw', vpc: 'vhd', vhd: 'vhd', vdi: 'vdi', vmdk: 'vmdk' };

/** Open the backing file the header names, confined to the image's folder, with its recorded format. */
async function openBacking(storage: Storage, location: ImageLocation, h: Qcow2Header, opts: DriverOpenOptions, warnings: string[]): Promise<DiskImage> {
  const ref = h.backingFile!;
  // qemu reads "json:{...}", "nbd:..." and other protocol strings here; an image never chooses where we read.
  if (/^[a-z][a-z0-9+.-]*:/i.test(ref)) {
    throw new VdiskError('E_PATH', `${storage.name}: backing file "${ref}" is a protocol or pseudo-protocol reference, not a file (vdisk follows only file names)`);
  }
  let format: string | undefined;
  if (h.backingFormat !== undefined) {
    format = BACKING_FORMATS[h.backingFormat];
    if (!format) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: backing_fmt "${h.backingFormat}" is not a format vdisk reads`);
  } else {
    warnings.push(`no backing_fmt recorded: the format of ${ref} was detected by its magic`);
  }
  const name = location.resolve(ref);
  return opts.openParent(name, format);
}

/** Make `header` describe internal snapshot `which` (id first, then name): its L1 table and size. */
async function pointAtSnapshot(storage: Storage, header: Qcow2Header, which: string): Promise<void> {
  const read = async (len: number, at: number): Promise<Buffer> => {
    const b = Buffer.alloc(len);
    await storage.read(b, at);
    return b;
  };
  const snaps = await readSnapshots(read, header.snapshotsOffset, header.nbSnapshots, storage.size, storage.name);
  const s = snaps.find((x) => x.id === which) ?? snaps.find((x) => x.name === which);
  if (!s) throw new VdiskError('E_NOENT', `${storage.name}: no internal snapshot with id or name "${which}" (vdisk info lists them)`);
  const cs = 2 ** header.clusterBits;
  const bytes = s['l1-size'] * 8;
  if (s['l1-offset'] % cs !== 0 || bytes > QCOW2_MAX_L1_BYTES || s['l1-offset'] + bytes > storage.size) {
    throw new VdiskError('E_CORRUPT', `${storage.name}: snapshot ${s.id}'s L1 table (${s['l1-size']} entries at ${s['l1-offset']}) is misaligned, too large or past the file`);
  }
  const size = s['disk-size'] ?? header.size;
  if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0) throw new VdiskError('E_CORRUPT', `${storage.name}: snapshot ${s.id} has a bad disk size ${size}`);
  header.l1TableOffset = s['l1-offset'];
  header.l1Size = s['l1-size'];
  header.size = size;
}

/** Open a validated qcow2 image on `storage`, following its backing file. */
export async function openQcow2(storage: Storage, location: ImageLocation, opts: DriverOpenOptions, ownsGivenParent = false, compress = false): Promise<Qcow2Image> {
  const header = await loadHeader(storage);
  if (opts.snapshot !== undefined) await pointAtSnapshot(storage, header, opts.snapshot);
  const l1 = Buffer.alloc(header.l1Size * 8);
  if (l1.length > 0) await storage.read(l1, header.l1TableOffset);
  const warnings: string[] = [];
  let parent: DiskImage | undefined;
  let ownsParent = false;
  if (opts.parent) {
    parent = opts.parent;
    ownsParent = ownsGivenParent;
  } else if (header.backingFile !== undefined && !opts.noBacking) {
    parent = await openBacking(storage, location, header, opts, warnings);
    ownsParent = true;
  }
  const readOnly = opts.readOnly || storage.readOnly;
  let refcounts: Refcounts | undefined;
  try {
    if (!readOnly) {
      refuseWriting(header, storage.name);
      const table = Buffer.alloc(header.refcountTableClusters * 2 ** header.clusterBits);
      await storage.read(table, header.refcountTableOffset);
      refcounts = new Refcounts(storage, { clusterBits: header.clusterBits, refcountOrder: header.refcountOrder, table, tableOffset: header.refcountTableOffset });
    }
    return new Qcow2Image({ storage, header, l1, readOnly, parent, ownsParent, warnings, refcounts, compress });
  } catch (err) {
    if (ownsParent) await parent?.close().catch(() => undefined);
    throw err;
  }
}

/** Refuse a writable open of an image whose refcounts or sharing this writer cannot keep right. */
function refuseWriting(h: Qcow2Header, name: string): void {
  if (h.incompatibleFeatures & BigInt(Incompatible.CORRUPT)) throw new VdiskError('E_CORRUPT', `${name}: the qcow2 corrupt bit is set; open it read-only or repair it (qemu-img check -r all)`);
  if (h.incompatibleFeatures & BigInt(Incompatible.DIRTY)) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: the qcow2 dirty bit is set (lazy refcounts not written back); repair it with vdisk check -r all (or qemu-img check -r all), or open read-only`);
  }
  if (h.incompatibleFeatures & BigInt(Incompatible.EXTENDED_L2)) throw new VdiskError('E_UNSUPPORTED', `${name}: writing qcow2 images with extended L2 entries (subclusters) is not supported; open it read-only`);
  if (h.nbSnapshots > 0) throw new VdiskError('E_UNSUPPORTED', `${name}: writing a qcow2 image with internal snapshots (${h.nbSnapshots}) is not supported; open it read-only`);
}
