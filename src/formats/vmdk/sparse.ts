/**
 * A hosted sparse extent (spec: "Hosted Sparse Extents"): a header, a grain directory
 * (GD) of grain tables (GT) whose entries give each grain's sector, an optional
 * redundant GD/GT copy kept in step, and, in stream-optimized extents, compressed
 * grains behind markers with the GD found through a footer at the end.
 *
 * Write order (DESIGN.md): new grain data first, then its GT entry (primary, then the
 * redundant copy). A crash between the two leaks a grain, never corrupts.
 */
import { inflate, inflateRaw, type InputType, type ZlibOptions } from 'node:zlib';
import { zeroBuffer } from '../../device/zero.js';
import { VdiskError, type VdiskErrorData } from '../../errors.js';
import { MAX_OFFSET } from '../../storage/checks.js';
import type { Storage } from '../../storage/storage.js';
import type { ExtentRun, ReadBelow, VmdkExtent } from './extent.js';
import {
  COMPRESSION_DEFLATE,
  EMBEDDED_DESCRIPTOR_SECTORS,
  encodeSparseHeader,
  sparseLayout,
  FLAG_COMPRESSED_GRAINS,
  FLAG_MARKERS,
  FLAG_REDUNDANT_GRAIN_TABLE,
  GRAIN_MARKER_HEADER,
  GTE_UNALLOCATED,
  GTE_ZEROED,
  HEADER_SIZE,
  MARKER_EOS,
  MARKER_FOOTER,
  MAX_GRAIN_SECTORS,
  MAX_GTES_PER_GT,
  SECTOR,
  SparseHeaderField,
  type SparseHeader,
  decodeEntries,
  decodeMarker,
  decodeSparseHeader,
  encodeEntries,
  entrySectors,
} from './layout.js';


/** Compressed grains of one read inflating at once (the thread pool has four threads). */
const INFLATE_AT_ONCE = 8;

/** One zlib call on the thread pool, as a promise. */
function zlibCall(fn: (buf: InputType, options: ZlibOptions, cb: (err: Error | null, out: Buffer) => void) => void, data: Buffer, options: ZlibOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => fn(data, options, (err, out) => (err ? reject(err) : resolve(out))));
}

/** Largest grain directory vdisk loads (16 Mi entries cover 512 PiB at 64 KiB grains). */
const MAX_GD_BYTES = 64 * 1024 * 1024;
/** Grain tables kept in memory at once (each 2 KiB for 512 entries). */
const GT_CACHE_LIMIT = 1024;
/** Grain tables read in one go when they lie back to back. */
const GT_PREFETCH = 64;

/** Where the footer of a stream-optimized extent starts, counted back from the end (spec: footer marker, footer, EOS). */
export const FOOTER_FROM_END = 3 * SECTOR;

function corrupt(name: string, what: string, data: VdiskErrorData = {}): VdiskError {
  return new VdiskError('E_CORRUPT', `${name}: ${what}`, { file: name, ...data });
}

/** Check a sparse header's fields against the container, field by field; returns the usable header. */
export async function readSparseHeader(storage: Storage): Promise<SparseHeader> {
  const name = storage.name;
  if (storage.size < HEADER_SIZE) throw corrupt(name, `file of ${storage.size} bytes is too small for a sparse extent header`);
  const head = Buffer.alloc(HEADER_SIZE);
  await storage.read(head, 0);
  let h = decodeSparseHeader(head, name);
  // The data of a refusal: the field, where it sits (in the footer copy for a stream-optimized extent) and what it holds.
  let headerAt = 0;
  const at = (field: keyof typeof SparseHeaderField, value: number): VdiskErrorData => ({ field, offset: headerAt + SparseHeaderField[field], value });
  if (h.version < 1 || h.version > 3) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: sparse extent version ${h.version} is not supported (1 to 3 are)`, { file: name, ...at('version', h.version) });
  }
  if (h.gdAtEnd) {
    // Stream-optimized (spec): footer marker, footer header, end-of-stream marker.
    if (storage.size < HEADER_SIZE + FOOTER_FROM_END) throw corrupt(name, 'gdOffset is GD_AT_END but the file is too small for a footer');
    const tail = Buffer.alloc(FOOTER_FROM_END);
    await storage.read(tail, storage.size - FOOTER_FROM_END);
    const fm = decodeMarker(tail.subarray(0, SECTOR), name);
    const eos = decodeMarker(tail.subarray(2 * SECTOR), name);
    if (fm.size !== 0 || fm.type !== MARKER_FOOTER) throw corrupt(name, 'gdOffset is GD_AT_END but no footer marker is at end-1536');
    if (eos.size !== 0 || eos.type !== MARKER_EOS || eos.val !== 0) throw corrupt(name, 'no end-of-stream marker at the end of the stream-optimized extent');
    headerAt = storage.size - FOOTER_FROM_END + SECTOR;
    const footer = decodeSparseHeader(tail.subarray(SECTOR, 2 * SECTOR), `${name} (footer)`, { file: name, at: headerAt });
    if (footer.gdAtEnd) throw corrupt(name, 'footer gdOffset is GD_AT_END too', { field: 'gdOffset', offset: headerAt + SparseHeaderField.gdOffset });
    h = footer;
  }
  if (h.grainSize < 1 || h.grainSize > MAX_GRAIN_SECTORS || (h.grainSize & (h.grainSize - 1)) !== 0) {
    throw corrupt(name, `grainSize ${h.grainSize} is not a power of two from 1 to ${MAX_GRAIN_SECTORS} sectors`, at('grainSize', h.grainSize));
  }
  if (h.numGTEsPerGT < 1 || h.numGTEsPerGT > MAX_GTES_PER_GT) throw corrupt(name, `numGTEsPerGT ${h.numGTEsPerGT} is out of range (1 to ${MAX_GTES_PER_GT})`, at('numGTEsPerGT', h.numGTEsPerGT));
  if (h.capacity * SECTOR > MAX_OFFSET) throw corrupt(name, `capacity ${h.capacity} sectors is out of range`, at('capacity', h.capacity));
  if (h.flags & FLAG_COMPRESSED_GRAINS && h.compressAlgorithm !== COMPRESSION_DEFLATE) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: compressAlgorithm ${h.compressAlgorithm} is not supported (1, deflate, is)`, { file: name, ...at('compressAlgorithm', h.compressAlgorithm) });
  }
  return h;
}

/** An opened hosted sparse extent. */
export class SparseExtent implements VmdkExtent {
  /** Grain size in bytes. */
  readonly grainBytes: number;
  /** Bytes covered by one grain table. */
  readonly tableBytes: number;
  readonly compressed: boolean;
  readonly markers: boolean;
  /** Primary grain directory: sector of each GT (0 = none). */
  readonly gd: Uint32Array;
  /** Redundant grain directory, when the extent keeps one. */
  readonly rgd: Uint32Array | undefined;
  private readonly gtCache = new Map<number, Uint32Array>();
  /** Where the next grain goes (bytes, sector-aligned). */
  private fileEnd: number;
  /** Last inflated grain (sequential small reads of compressed extents). */
  private lastGrain: { index: number; data: Buffer } | undefined;

  private constructor(
    readonly storage: Storage,
    readonly header: SparseHeader,
    readonly length: number,
    private readonly readOnly: boolean,
    gd: Uint32Array,
    rgd: Uint32Array | undefined,
  ) {
    this.grainBytes = header.grainSize * SECTOR;
    this.tableBytes = this.grainBytes * header.numGTEsPerGT;
    this.compressed = (header.flags & FLAG_COMPRESSED_GRAINS) !== 0;
    this.markers = (header.flags & FLAG_MARKERS) !== 0;
    this.gd = gd;
    this.rgd = rgd;
    this.fileEnd = Math.ceil(storage.size / SECTOR) * SECTOR;
  }

  /** Number of GD entries needed for `capacity` sectors. */
  static gdEntries(h: SparseHeader): number {
    return Math.ceil(h.capacity / (h.grainSize * h.numGTEsPerGT));
  }

  /** Open the extent in `storage`, `length` bytes long (from the descriptor; at most the capacity). */
  static async open(storage: Storage, length: number, readOnly: boolean, header?: SparseHeader): Promise<SparseExtent> {
    const name = storage.name;
    const h = header ?? (await readSparseHeader(storage));
    if (length > h.capacity * SECTOR) throw corrupt(name, `extent of ${length / SECTOR} sectors is larger than the header capacity ${h.capacity}`);
    const entries = SparseExtent.gdEntries(h);
    const gdBytes = entries * 4;
    if (gdBytes > MAX_GD_BYTES) throw corrupt(name, `grain directory of ${entries} entries is too large`);
    const readDir = async (sector: number, field: string): Promise<Uint32Array> => {
      if (entries === 0) return new Uint32Array(0);
      if (sector === 0 || sector * SECTOR + gdBytes > storage.size) throw corrupt(name, `${field} ${sector} puts the grain directory outside the file`);
      const buf = Buffer.alloc(gdBytes);
      await storage.read(buf, sector * SECTOR);
      return decodeEntries(buf, entries);
    };
    const gd = await readDir(h.gdOffset, 'gdOffset');
    let rgd: Uint32Array | undefined;
    if (h.flags & FLAG_REDUNDANT_GRAIN_TABLE && h.rgdOffset !== 0 && !h.gdAtEnd) rgd = await readDir(h.rgdOffset, 'rgdOffset');
    const ext = new SparseExtent(storage, h, length, readOnly || (h.flags & FLAG_COMPRESSED_GRAINS) !== 0, gd, rgd);
    return ext;
  }

  /** The grain table `index` (cached), or undefined when the GD entry is 0. */
  async table(index: number): Promise<Uint32Array | undefined> {
    const hit = this.gtCache.get(index);
    if (hit) {
      this.gtCache.delete(index);
      this.gtCache.set(index, hit);
      return hit;
    }
    const sector = this.gd[index] ?? 0;
    if (sector === 0) return undefined;
    // Tables laid out back to back (as every writer preallocates them) are read together.
    const n = this.header.numGTEsPerGT;
    const step = entrySectors(n);
    let count = 1;
    while (count < GT_PREFETCH && index + count < this.gd.length && this.gd[index + count] === sector + count * step && !this.gtCache.has(index + count)) count++;
    if (sector * SECTOR + ((count - 1) * step * SECTOR) + n * 4 > this.storage.size) count = 1;
    if (count === 1) {
      const gt = await this.readTable(sector, `grain directory entry ${index}`);
      this.remember(index, gt);
      return gt;
    }
    const buf = Buffer.alloc((count - 1) * step * SECTOR + n * 4);
    await this.storage.read(buf, sector * SECTOR);
    for (let k = 0; k < count; k++) this.remember(index + k, decodeEntries(buf.subarray(k * step * SECTOR), n));
    return this.gtCache.get(index)!;
  }

  private remember(index: number, gt: Uint32Array): void {
    this.gtCache.set(index, gt);
    if (this.gtCache.size > GT_CACHE_LIMIT) this.gtCache.delete(this.gtCache.keys().next().value as number);
  }

  /** Read a grain table at `sector`, checking it lies in the file. */
  async readTable(sector: number, field: string): Promise<Uint32Array> {
    const n = this.header.numGTEsPerGT;
    if (sector * SECTOR + n * 4 > this.storage.size) throw corrupt(this.storage.name, `${field} (sector ${sector}) points past the end of the file`);
    const buf = Buffer.alloc(n * 4);
    await this.storage.read(buf, sector * SECTOR);
    return decodeEntries(buf, n);
  }

  /** The grain table entry for grain `g`. */
  async entry(g: number): Promise<number> {
    const n = this.header.numGTEsPerGT;
    const gt = await this.table(Math.floor(g / n));
    return gt ? gt[g % n]! : GTE_UNALLOCATED;
  }

  /** Bytes of grain `g` that lie inside the extent. */
  private grainLength(g: number): number {
    return Math.min(this.grainBytes, this.length - g * this.grainBytes);
  }

  /** Check that an uncompressed grain at `sector` lies after the metadata and inside the file. */
  private checkGrain(g: number, sector: number): void {
    if (sector < this.header.overHead) throw corrupt(this.storage.name, `grain table entry for grain ${g} (sector ${sector}) points into the metadata (overHead ${this.header.overHead})`);
    if (!this.compressed && sector * SECTOR + this.grainLength(g) > this.storage.size) {
      throw corrupt(this.storage.name, `grain table entry for grain ${g} (sector ${sector}) points past the end of the file`);
    }
    if (this.compressed && sector * SECTOR >= this.storage.size) throw corrupt(this.storage.name, `grain table entry for grain ${g} (sector ${sector}) points past the end of the file`);
  }

  /** Inflate compressed grain `g` stored at `sector`; never more than one grain. */
  async inflateGrain(g: number, sector: number): Promise<Buffer> {
    if (this.lastGrain?.index === g) return this.lastGrain.data;
    const name = this.storage.name;
    const pos = sector * SECTOR;
    const bound = 2 * this.grainBytes + SECTOR;
    let data: Buffer;
    if (this.markers) {
      const head = Buffer.alloc(GRAIN_MARKER_HEADER + 4);
      await this.storage.read(head.subarray(0, Math.min(head.length, this.storage.size - pos)), pos);
      const m = decodeMarker(head, name);
      if (m.size === 0) throw corrupt(name, `grain table entry for grain ${g} points at a metadata marker, not a grain`);
      if (m.size > bound) throw corrupt(name, `compressed grain ${g} claims ${m.size} bytes, over the bound of ${bound}`);
      if (m.val !== g * this.header.grainSize) throw corrupt(name, `grain marker at sector ${sector} is for LBA ${m.val}, not ${g * this.header.grainSize}`);
      if (pos + GRAIN_MARKER_HEADER + m.size > this.storage.size) throw corrupt(name, `compressed grain ${g} runs past the end of the file`);
      data = Buffer.alloc(m.size);
      await this.storage.read(data, pos + GRAIN_MARKER_HEADER);
    } else {
      data = Buffer.alloc(Math.min(bound, this.storage.size - pos));
      await this.storage.read(data, pos);
    }
    let out: Buffer;
    try {
      out = await zlibCall(inflate, data, { maxOutputLength: this.grainBytes, chunkSize: this.grainBytes });
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw corrupt(name, `compressed grain ${g} inflates past one grain (${this.grainBytes} bytes)`);
      try {
        out = await zlibCall(inflateRaw, data, { maxOutputLength: this.grainBytes, chunkSize: this.grainBytes }); // raw deflate, tolerated on read
      } catch {
        throw corrupt(name, `compressed grain ${g} at sector ${sector} does not inflate`);
      }
    }
    if (out.length < this.grainBytes) {
      const full = Buffer.alloc(this.grainBytes);
      out.copy(full);
      out = full;
    }
    this.lastGrain = { index: g, data: out };
    return out;
  }

  async read(buf: Buffer, offset: number, below: ReadBelow): Promise<void> {
    // Compressed grains inflate on the thread pool, several at once (each copies itself
    // into place when done): a request of many grains uses every core, where inflating
    // one grain after the other on this thread left the others idle.
    const inflating: Array<Promise<void>> = [];
    try {
      await this.readPieces(buf, offset, below, inflating);
      await Promise.all(inflating);
    } finally {
      await Promise.allSettled(inflating);
    }
  }

  private async readPieces(buf: Buffer, offset: number, below: ReadBelow, inflating: Array<Promise<void>>): Promise<void> {
    const G = this.grainBytes;
    const end = offset + buf.length;
    // Merge runs of contiguous file ranges and of fall-through ranges into single I/Os.
    let run: { kind: 'file' | 'below'; bufOff: number; fileOff: number; len: number } | undefined;
    const flushRun = async (): Promise<void> => {
      if (!run) return;
      const piece = buf.subarray(run.bufOff, run.bufOff + run.len);
      if (run.kind === 'file') await this.storage.read(piece, run.fileOff);
      else await below(piece, offset + run.bufOff);
      run = undefined;
    };
    for (let pos = offset; pos < end; ) {
      const g = Math.floor(pos / G);
      const inGrain = pos - g * G;
      const n = Math.min(G - inGrain, end - pos);
      const bufOff = pos - offset;
      const gte = await this.entry(g);
      if (gte === GTE_UNALLOCATED) {
        if (run?.kind === 'below') run.len += n;
        else {
          await flushRun();
          run = { kind: 'below', bufOff, fileOff: 0, len: n };
        }
      } else if (gte === GTE_ZEROED) {
        await flushRun();
        buf.fill(0, bufOff, bufOff + n);
      } else {
        this.checkGrain(g, gte);
        if (this.compressed) {
          await flushRun();
          if (this.lastGrain?.index === g) this.lastGrain.data.copy(buf, bufOff, inGrain, inGrain + n);
          else {
            if (inflating.length >= INFLATE_AT_ONCE) await inflating[inflating.length - INFLATE_AT_ONCE];
            const job = this.inflateGrain(g, gte).then((grain) => void grain.copy(buf, bufOff, inGrain, inGrain + n));
            job.catch(() => undefined);
            inflating.push(job);
          }
        } else {
          const fileOff = gte * SECTOR + inGrain;
          if (run?.kind === 'file' && run.fileOff + run.len === fileOff) run.len += n;
          else {
            await flushRun();
            run = { kind: 'file', bufOff, fileOff, len: n };
          }
        }
      }
      pos += n;
    }
    await flushRun();
  }

  async write(buf: Buffer, offset: number, below: ReadBelow): Promise<void> {
    const name = this.storage.name;
    if (this.compressed) throw new VdiskError('E_UNSUPPORTED', `${name}: compressed (stream-optimized) extents are written once, in order; convert the image to change it`);
    if (this.readOnly) throw new VdiskError('E_READONLY', `${name}: extent is read-only`);
    const G = this.grainBytes;
    const n = this.header.numGTEsPerGT;
    const end = offset + buf.length;
    const fresh: Array<{ g: number; data: Buffer }> = [];
    let direct: { fileOff: number; bufOff: number; len: number } | undefined;
    const flushDirect = async (): Promise<void> => {
      if (direct) await this.storage.write(buf.subarray(direct.bufOff, direct.bufOff + direct.len), direct.fileOff);
      direct = undefined;
    };
    for (let pos = offset; pos < end; ) {
      const g = Math.floor(pos / G);
      const inGrain = pos - g * G;
      const len = Math.min(G - inGrain, end - pos);
      const bufOff = pos - offset;
      const gte = await this.entry(g);
      if (gte > GTE_ZEROED) {
        this.checkGrain(g, gte);
        const fileOff = gte * SECTOR + inGrain;
        if (direct && direct.fileOff + direct.len === fileOff) direct.len += len;
        else {
          await flushDirect();
          direct = { fileOff, bufOff, len };
        }
      } else {
        const glen = this.grainLength(g);
        let data: Buffer;
        if (inGrain === 0 && len === G) data = buf.subarray(bufOff, bufOff + len);
        else {
          data = Buffer.alloc(G);
          if (gte === GTE_UNALLOCATED && !(inGrain === 0 && len >= glen)) await below(data.subarray(0, glen), g * G);
          buf.copy(data, inGrain, bufOff, bufOff + len);
        }
        fresh.push({ g, data });
      }
      pos += len;
    }
    await flushDirect();
    if (fresh.length === 0) return;
    // Make sure every grain table exists (allocating tables before the data they will map).
    for (const f of fresh) await this.ensureTable(Math.floor(f.g / n));
    // Data first: all new grains, contiguous at the end of the file. Grains that lie
    // back to back in memory (whole grains of the caller's buffer) go out in one write
    // without a copy.
    const start = this.fileEnd;
    let at = start;
    for (let i = 0; i < fresh.length; ) {
      const first = fresh[i]!.data;
      let len = first.length;
      let j = i + 1;
      for (; j < fresh.length; j++) {
        const d = fresh[j]!.data;
        if (d.buffer !== first.buffer || d.byteOffset !== first.byteOffset + len) break;
        len += d.length;
      }
      await this.storage.write(j === i + 1 ? first : Buffer.from(first.buffer, first.byteOffset, len), at);
      at += len;
      i = j;
    }
    this.fileEnd = start + fresh.length * G;
    // Then the GT entries, grouped per table: primary copy, then the redundant one.
    const byTable = new Map<number, Array<{ idx: number; sector: number }>>();
    fresh.forEach((f, i) => {
      const t = Math.floor(f.g / n);
      const list = byTable.get(t) ?? [];
      list.push({ idx: f.g % n, sector: (start + i * G) / SECTOR });
      byTable.set(t, list);
    });
    for (const [t, list] of byTable) {
      const gt = (await this.table(t))!;
      for (const e of list) gt[e.idx] = e.sector;
      const lo = Math.min(...list.map((e) => e.idx));
      const hi = Math.max(...list.map((e) => e.idx));
      const bytes = encodeEntries(gt.subarray(lo, hi + 1), 4);
      await this.storage.write(bytes, this.gd[t]! * SECTOR + lo * 4);
      const r = this.rgd?.[t];
      if (r) await this.storage.write(bytes, r * SECTOR + lo * 4);
    }
  }

  /** Zero the allocated grains of a range (unallocated and zeroed grains already read as zeros when nothing lies below). */
  async zeroAllocated(offset: number, length: number): Promise<void> {
    if (this.compressed) throw new VdiskError('E_UNSUPPORTED', `${this.storage.name}: compressed (stream-optimized) extents are written once, in order`);
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.storage.name}: extent is read-only`);
    const G = this.grainBytes;
    for (let pos = offset; pos < offset + length; ) {
      const g = Math.floor(pos / G);
      const inGrain = pos - g * G;
      const n = Math.min(G - inGrain, offset + length - pos);
      const gte = await this.entry(g);
      if (gte > GTE_ZEROED) {
        this.checkGrain(g, gte);
        await this.storage.write(zeroBuffer(n), gte * SECTOR + inGrain);
      }
      pos += n;
    }
  }

  /** Allocate grain table `t` (and its redundant copy) at the end of the file when its GD entry is 0. */
  private async ensureTable(t: number): Promise<void> {
    if (this.gd[t] !== 0) return;
    const h = this.header;
    const sectors = entrySectors(h.numGTEsPerGT);
    const zero = Buffer.alloc(sectors * SECTOR);
    const primary = this.fileEnd / SECTOR;
    await this.storage.write(zero, this.fileEnd);
    this.fileEnd += zero.length;
    let redundant = 0;
    if (this.rgd) {
      redundant = this.fileEnd / SECTOR;
      await this.storage.write(zero, this.fileEnd);
      this.fileEnd += zero.length;
    }
    const entry = Buffer.alloc(4);
    entry.writeUInt32LE(primary, 0);
    await this.storage.write(entry, h.gdOffset * SECTOR + t * 4);
    this.gd[t] = primary;
    if (this.rgd) {
      entry.writeUInt32LE(redundant, 0);
      await this.storage.write(entry, h.rgdOffset * SECTOR + t * 4);
      this.rgd[t] = redundant;
    }
  }

  async *map(offset: number, length: number): AsyncIterable<ExtentRun> {
    const G = this.grainBytes;
    const n = this.header.numGTEsPerGT;
    const end = offset + length;
    let cur: ExtentRun | undefined;
    const emit = (r: ExtentRun): ExtentRun | undefined => {
      if (cur && cur.kind === r.kind && cur.offset + cur.length === r.offset) {
        cur.length += r.length;
        return undefined;
      }
      const out = cur;
      cur = r;
      return out;
    };
    for (let pos = offset; pos < end; ) {
      const t = Math.floor(pos / this.tableBytes);
      const tEnd = Math.min(end, (t + 1) * this.tableBytes);
      const gt = await this.table(t);
      const runs: ExtentRun[] = [];
      if (!gt) {
        const out = emit({ offset: pos, length: tEnd - pos, kind: 'hole' });
        if (out) runs.push(out);
        pos = tEnd;
      } else {
        // One table at a time, classified without further awaits.
        const kindOf = (gte: number): ExtentRun['kind'] => (gte === GTE_UNALLOCATED ? 'hole' : gte === GTE_ZEROED ? 'zero' : 'data');
        while (pos < tEnd) {
          let g = Math.floor(pos / G);
          const kind = kindOf(gt[g % n]!);
          while ((g + 1) * G < tEnd && kindOf(gt[(g + 1) % n]!) === kind) g++;
          const runEnd = Math.min(tEnd, (g + 1) * G);
          const out = emit({ offset: pos, length: runEnd - pos, kind });
          if (out) runs.push(out);
          pos = runEnd;
        }
      }
      yield* runs;
    }
    if (cur) yield cur;
  }

  flush(): Promise<void> {
    return this.readOnly ? Promise.resolve() : this.storage.flush();
  }

  describe(): Record<string, unknown> {
    return {
      filename: this.storage.name,
      type: 'SPARSE',
      'virtual-size': this.length,
      'cluster-size': this.grainBytes,
      compressed: this.compressed,
      version: this.header.version,
    };
  }
}

/** Write a new, empty sparse extent into `storage` (with the descriptor text embedded when given). */
export async function writeSparseExtent(storage: Storage, capacity: number, descriptorText?: string): Promise<void> {
  const text = descriptorText === undefined ? undefined : Buffer.from(descriptorText, 'utf8');
  const descSectors = text ? Math.max(EMBEDDED_DESCRIPTOR_SECTORS, Math.ceil(text.length / SECTOR)) : 0;
  const { header, rgdEntries, gdEntries } = sparseLayout(capacity, descSectors);
  // Zero-filled tables first (truncate), then directories, then header last.
  await storage.truncate(header.overHead * SECTOR);
  if (text) {
    const area = Buffer.alloc(descSectors * SECTOR);
    text.copy(area);
    await storage.write(area, SECTOR);
  }
  if (rgdEntries.length > 0) {
    await storage.write(encodeEntries(rgdEntries), header.rgdOffset * SECTOR);
    await storage.write(encodeEntries(gdEntries), header.gdOffset * SECTOR);
  }
  await storage.write(encodeSparseHeader(header), 0);
}
