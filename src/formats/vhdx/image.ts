/**
 * An opened VHDX ([MS-VHDX]): the headers, region tables, metadata and BAT read and
 * validated at open (after the log is replayed), and the device over them. Payload
 * blocks are present (fully, or per sector through the sector bitmap of a
 * differencing disk) or answered without data: zeros, or the parent.
 *
 * Writes put data in place (a present block) or in a new block at the end of the
 * file; the BAT entries that name new blocks wait in memory and are written through
 * the log on flush ({@link VhdxImage.flush}): data flushed, log entry flushed,
 * BAT sectors written and flushed. The first write of a session gives the file new
 * FileWriteGuid and DataWriteGuid (2.2.2); closing clears the LogGuid.
 */
import { readBelow } from '../../device/below.js';
import type { CompactOptions, CompactResult, DiskImage, Extent, ImageInfo, ResizeImageOptions } from '../../device/block-device.js';
import { isZero } from '../../device/zero.js';
import { BlockDeviceBase } from '../../device/base.js';
import { blockPieces } from '../../device/blocks.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import {
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SECTION_SIZE,
  HEADER_SIZE,
  LOG_SECTOR_SIZE,
  MAX_VIRTUAL_DISK_SIZE,
  METADATA_TABLE_SIZE,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNDEFINED,
  PAYLOAD_BLOCK_UNMAPPED,
  PAYLOAD_BLOCK_UNMAPPED_V095,
  PAYLOAD_BLOCK_ZERO,
  REGION_ALIGNMENT,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  REGION_TABLE_SIZE,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
  ZERO_GUID,
  batGeometry,
  bitmapEntryIndex,
  decodeBatEntry,
  decodeCreator,
  decodeHeader,
  decodeMetadataTable,
  decodeParameters,
  decodeRegionTable,
  encodeBatEntry,
  encodeHeader,
  hasFileSignature,
  headerProblem,
  payloadEntryIndex,
  randomGuid,
  validateRegions,
  type BatGeometry,
  type RegionEntry,
  type VhdxHeader,
  type VhdxParameters,
  type VhdxMeta,
} from './layout.js';
import { LogWriter, findActiveSequence, replayOnto, replayedView, type LogPlace } from './log.js';
import { checkNewSize, locatorSectors, virtualSizeSectors, windowsRelative } from './maintain.js';

export type { VhdxMeta } from './layout.js';

/** Largest BAT vdisk keeps in memory (a 64 TiB disk with 1 MiB blocks needs 512 MiB). */
export const MAX_BAT_BYTES = 512 * 1024 * 1024;
/** BAT sectors that may wait in memory before a write commits them through the log. */
const PENDING_SECTORS_LIMIT = 128;
/** Sector bitmap slices kept in memory. */
const BITMAP_CACHE_ENTRIES = 1024;

const corrupt = (name: string, message: string): VdiskError => new VdiskError('E_CORRUPT', `${name}: ${message}`);

async function readAt(storage: Storage, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await storage.read(b, offset);
  return b;
}

/** True when `storage` starts with the VHDX file type identifier. */
export async function probeVhdx(storage: Storage): Promise<boolean> {
  if (storage.size < 8) return false;
  return hasFileSignature(await readAt(storage, 0, 8));
}

/** The current header of the two (2.2.2): the valid one, or of two valid ones the higher SequenceNumber. */
export async function currentHeader(storage: Storage): Promise<{ header: VhdxHeader; index: number; warnings: string[] }> {
  const name = storage.name;
  const raws = [await readAt(storage, HEADER1_OFFSET, HEADER_SIZE), await readAt(storage, HEADER2_OFFSET, HEADER_SIZE)];
  const problems = raws.map((r) => headerProblem(r, storage.size, name));
  if (problems[0] && problems[1]) throw corrupt(name, `both headers are unusable (header 1: ${problems[0]}; header 2: ${problems[1]})`);
  const warnings: string[] = [];
  let index: number;
  if (problems[0] || problems[1]) {
    index = problems[0] ? 1 : 0;
    warnings.push(`header ${2 - index} is unusable (${problems[1 - index]}); using header ${index + 1}`);
  } else {
    const [a, b] = raws.map((r) => decodeHeader(r, name).sequenceNumber) as [bigint, bigint];
    if (a === b && !raws[0]!.equals(raws[1]!)) throw corrupt(name, `both headers have SequenceNumber ${a} but differ`);
    index = b > a ? 1 : 0;
  }
  return { header: decodeHeader(raws[index]!, name), index, warnings };
}

/** Write a header update (2.2.2.1): the non-current header gets the next SequenceNumber and becomes current, flushed. */
export async function updateHeader(storage: Storage, meta: Pick<VhdxMeta, 'header' | 'headerIndex'>, change: Partial<Pick<VhdxHeader, 'fileWriteGuid' | 'dataWriteGuid' | 'logGuid'>>): Promise<void> {
  if (meta.header.sequenceNumber >= 0xffffffffffffffffn) throw new VdiskError('E_CORRUPT', `${storage.name}: the header's SequenceNumber is at its largest value; no header update can follow it`);
  const next: VhdxHeader = { ...meta.header, ...change, sequenceNumber: meta.header.sequenceNumber + 1n };
  const index = 1 - meta.headerIndex;
  await storage.write(encodeHeader(next), index === 0 ? HEADER1_OFFSET : HEADER2_OFFSET);
  await storage.flush();
  meta.header = next;
  meta.headerIndex = index;
}

/** Both headers brought up to date with `change`, one at a time, so one of them is always whole. */
export async function updateBothHeaders(storage: Storage, meta: Pick<VhdxMeta, 'header' | 'headerIndex'>, change: Partial<Pick<VhdxHeader, 'fileWriteGuid' | 'dataWriteGuid' | 'logGuid'>>): Promise<void> {
  await updateHeader(storage, meta, change);
  await updateHeader(storage, meta, {});
}

/** The region tables (2.2.3): the first valid copy. */
async function readRegions(storage: Storage, header: VhdxHeader, warnings: string[]): Promise<{ bat: RegionEntry; metadata: RegionEntry }> {
  const name = storage.name;
  const t1 = decodeRegionTable(await readAt(storage, REGION_TABLE1_OFFSET, REGION_TABLE_SIZE), name);
  const t2 = decodeRegionTable(await readAt(storage, REGION_TABLE2_OFFSET, REGION_TABLE_SIZE), name);
  if (typeof t1 === 'string' && typeof t2 === 'string') throw corrupt(name, `both region tables are unusable (1: ${t1}; 2: ${t2})`);
  const entries = typeof t1 === 'string' ? (t2 as RegionEntry[]) : t1;
  if (typeof t1 === 'string') warnings.push(`region table 1 is unusable (${t1}); using region table 2`);
  else if (typeof t2 === 'string') warnings.push(`region table 2 is unusable (${t2})`);
  return validateRegions(entries, storage.size, { offset: header.logOffset, length: header.logLength }, name);
}

/** What a BAT entry may hold, checked for every entry at open (2.5.1). */
function validateBat(name: string, table: Buffer, g: BatGeometry, p: VhdxParameters, fileSize: number, regions: Array<[number, number]>): number {
  let dataEnd = 0;
  const inRegion = (off: number, len: number): boolean => off < HEADER_SECTION_SIZE || regions.some(([a, z]) => off < z && a < off + len);
  for (let i = 0; i < g.totalEntries; i++) {
    const { state, offset } = decodeBatEntry(table, i * 8);
    const isBitmap = (i + 1) % (g.chunkRatio + 1) === 0;
    if (isBitmap) {
      if (state !== SB_BLOCK_NOT_PRESENT && state !== SB_BLOCK_PRESENT) throw corrupt(name, `BAT entry ${i} (a sector bitmap) has state ${state}`);
      if (state === SB_BLOCK_PRESENT) {
        if (!p.hasParent) throw corrupt(name, `BAT entry ${i} names a sector bitmap block, but the disk has no parent`);
        if (offset + SECTOR_BITMAP_BLOCK_SIZE > fileSize || inRegion(offset, SECTOR_BITMAP_BLOCK_SIZE)) throw corrupt(name, `BAT entry ${i}: sector bitmap block at ${offset} lies past the ${fileSize}-byte file or over the metadata`);
        dataEnd = Math.max(dataEnd, offset + SECTOR_BITMAP_BLOCK_SIZE);
      }
      continue;
    }
    const n = i - Math.floor(i / (g.chunkRatio + 1));
    if (n >= g.payloadBlocks) {
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) throw corrupt(name, `BAT entry ${i} is past the last payload block but present`);
      continue;
    }
    switch (state) {
      case PAYLOAD_BLOCK_NOT_PRESENT:
      case PAYLOAD_BLOCK_UNDEFINED:
      case PAYLOAD_BLOCK_ZERO:
      case PAYLOAD_BLOCK_UNMAPPED:
      case PAYLOAD_BLOCK_UNMAPPED_V095:
        break;
      case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
      case PAYLOAD_BLOCK_FULLY_PRESENT: {
        if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT && !p.hasParent) throw corrupt(name, `BAT entry ${i} (payload block ${n}) is PARTIALLY_PRESENT, but the disk has no parent`);
        const len = Math.min(p.blockSize, p.virtualDiskSize - n * p.blockSize);
        if (offset < HEADER_SECTION_SIZE || offset + len > fileSize || inRegion(offset, len)) {
          throw corrupt(name, `BAT entry ${i} (payload block ${n}) names ${len} bytes at ${offset}, past the ${fileSize}-byte file or over the headers, log or regions`);
        }
        dataEnd = Math.max(dataEnd, offset + len);
        break;
      }
      default:
        throw corrupt(name, `BAT entry ${i} (payload block ${n}) has the undefined state ${state}`);
    }
  }
  return dataEnd;
}

/**
 * Read and validate everything a VHDX open needs. A non-empty log is replayed first:
 * onto the file when `writable`, into an in-memory view otherwise (said in `warnings`
 * and `replay`). A read-only open of a log that cannot replay goes on without it and
 * says so; a writable one is refused.
 */
export async function readVhdxMeta(storage: Storage, writable: boolean): Promise<VhdxMeta> {
  const name = storage.name;
  if (storage.size < HEADER_SECTION_SIZE) throw corrupt(name, `${storage.size} bytes is shorter than the 1 MiB header section`);
  const first = await readAt(storage, 0, 64 * 1024);
  if (!hasFileSignature(first)) throw new VdiskError('E_FORMAT', `${name}: no "vhdxfile" signature: not a VHDX image`);
  const creator = decodeCreator(first);
  const hdr = await currentHeader(storage);
  const warnings = [...hdr.warnings];
  const meta: Pick<VhdxMeta, 'header' | 'headerIndex'> = { header: hdr.header, headerIndex: hdr.index };
  let view = storage;
  let replay: VhdxMeta['replay'];
  if (hdr.header.logGuid !== ZERO_GUID) {
    const log: LogPlace = { offset: hdr.header.logOffset, length: hdr.header.logLength, guid: hdr.header.logGuid };
    let seq: Awaited<ReturnType<typeof findActiveSequence>>;
    try {
      seq = await findActiveSequence(storage, log);
    } catch (err) {
      if (writable || !isVdiskError(err, 'E_CORRUPT')) throw err;
      warnings.push(`the log does not replay (${err.message}); read without it`);
    }
    if (seq) {
      if (writable) {
        await replayOnto(storage, seq, log);
        await updateBothHeaders(storage, meta, { logGuid: ZERO_GUID });
        replay = { entries: seq.entries.length, inMemory: false };
        warnings.push(`replayed ${seq.entries.length} log entries onto the file`);
      } else {
        view = replayedView(storage, seq, log);
        replay = { entries: seq.entries.length, inMemory: true };
        warnings.push(`the log holds ${seq.entries.length} entries not yet applied: replayed in memory (the file is unchanged; open it writable to apply them)`);
      }
    } else if (!warnings.some((w) => w.startsWith('the log does not replay'))) {
      // A LogGuid with no whole entry of its own: the last entry was torn before it was applied, nothing to replay (2.3.3).
      warnings.push('the header names a log, but no whole entry of it is there: nothing to replay');
      if (writable) await updateBothHeaders(storage, meta, { logGuid: ZERO_GUID });
    }
  }
  const { bat, metadata } = await readRegions(view, meta.header, warnings);
  const table = decodeMetadataTable(await readAt(view, metadata.fileOffset, METADATA_TABLE_SIZE), metadata.length, name);
  const params = await decodeParameters(table, (e) => readAt(view, metadata.fileOffset + e.offset, e.length), name);
  const geometry = batGeometry(params);
  const batBytes = geometry.totalEntries * 8;
  if (batBytes > bat.length) throw corrupt(name, `the BAT region (${bat.length} bytes) is too small for ${geometry.totalEntries} entries`);
  if (batBytes > MAX_BAT_BYTES) throw new VdiskError('E_UNSUPPORTED', `${name}: a ${batBytes}-byte BAT is more than vdisk keeps in memory (${MAX_BAT_BYTES})`);
  const batTable = await readAt(view, bat.fileOffset, batBytes);
  const regions: Array<[number, number]> = [
    [meta.header.logOffset, meta.header.logOffset + meta.header.logLength],
    [bat.fileOffset, bat.fileOffset + bat.length],
    [metadata.fileOffset, metadata.fileOffset + metadata.length],
  ];
  const dataEnd = Math.max(validateBat(name, batTable, geometry, params, view.size, regions), ...regions.map((r) => r[1]));
  return { storage: view, creator, header: meta.header, headerIndex: meta.headerIndex, bat, metadata, params, geometry, batTable, dataEnd, warnings, replay };
}

/** Parent facts of a differencing VHDX. */
export interface VhdxParentInfo {
  ref?: string;
  resolved?: string;
  key?: string;
}

/** A VHDX image: dynamic, fixed (every block present) or differencing. */
export class VhdxImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'vhdx';
  readonly filename: string;
  readonly readOnly: boolean;
  size: number;
  override readonly sectorSize: number;
  backing?: DiskImage;
  private readonly storage: Storage;
  private readonly blockSize: number;
  private readonly chunkRatio: number;
  /** BAT sectors (by file offset) changed in memory, not yet written through the log. */
  private readonly pending = new Map<number, true>();
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly bitmapLoads = new Map<number, Promise<Buffer>>();
  /** Payload blocks whose cached bitmap bits were set and not yet written through the log. */
  private readonly dirtyBitmaps = new Set<number>();
  /** Where the next new block goes (1 MiB aligned, after everything). */
  private nextFree: number;
  private log?: LogWriter;
  /** The header update that gave this session's changes new write GUIDs (2.2.2), once started. */
  private touched?: Promise<void>;
  /** The DataWriteGuid this session's first change will give the file, once a child asked for it (commit). */
  private plannedDataWriteGuid?: string;
  /** File extensions run one at a time. */
  private extending: Promise<void> = Promise.resolve();
  /** Commits run one at a time. */
  private committing: Promise<void> = Promise.resolve();

  constructor(
    readonly meta: VhdxMeta,
    private readonly opts: { readOnly: boolean; parent?: DiskImage; ownsParent?: boolean; parentInfo?: VhdxParentInfo },
  ) {
    super();
    this.storage = meta.storage;
    this.filename = meta.storage.name;
    this.readOnly = opts.readOnly || meta.storage.readOnly;
    this.size = meta.params.virtualDiskSize;
    this.sectorSize = meta.params.logicalSectorSize;
    this.blockSize = meta.params.blockSize;
    this.chunkRatio = meta.geometry.chunkRatio;
    if (opts.parent) this.backing = opts.parent;
    this.nextFree = Math.ceil(Math.max(meta.dataEnd, this.storage.size) / REGION_ALIGNMENT) * REGION_ALIGNMENT;
  }

  /** The parameters from the metadata region. */
  get parameters(): VhdxParameters {
    return { ...this.meta.params };
  }

  /** The current header's DataWriteGuid (what a child's parent_linkage names). */
  get dataWriteGuid(): string {
    return this.meta.header.dataWriteGuid;
  }

  private entry(n: number): { state: number; offset: number } {
    return decodeBatEntry(this.meta.batTable, payloadEntryIndex(n, this.chunkRatio) * 8);
  }

  /** The bits of payload block `n` in its chunk's sector bitmap (LSB first), cached; undefined when the chunk has none. */
  private bitmap(n: number): Promise<Buffer | undefined> {
    const hit = this.bitmaps.get(n);
    if (hit) return Promise.resolve(hit);
    const c = Math.floor(n / this.chunkRatio);
    const { state, offset } = decodeBatEntry(this.meta.batTable, bitmapEntryIndex(c, this.chunkRatio) * 8);
    if (state !== SB_BLOCK_PRESENT) return Promise.resolve(undefined);
    // One load per block however many readers and writers ask at once: a writer's bits are never overwritten by a late load.
    let load = this.bitmapLoads.get(n);
    if (!load) {
      const spb = this.blockSize / this.sectorSize;
      load = readAt(this.storage, offset + ((n % this.chunkRatio) * spb) / 8, spb / 8).then((b) => {
        this.bitmapLoads.delete(n);
        const again = this.bitmaps.get(n);
        if (again) return again;
        if (this.bitmaps.size >= BITMAP_CACHE_ENTRIES) {
          for (const k of this.bitmaps.keys()) {
            if (this.dirtyBitmaps.has(k)) continue;
            this.bitmaps.delete(k);
            break;
          }
        }
        this.bitmaps.set(n, b);
        return b;
      });
      load.catch(() => this.bitmapLoads.delete(n));
      this.bitmapLoads.set(n, load);
    }
    return load;
  }

  /** Runs of [from, to) within a block by "present here" (partially present blocks). */
  private async runs(n: number, within: number, length: number): Promise<Array<[number, number, boolean]>> {
    const bm = await this.bitmap(n);
    if (!bm) throw corrupt(this.filename, `payload block ${n} is PARTIALLY_PRESENT but its chunk has no sector bitmap block`);
    const ss = this.sectorSize;
    const out: Array<[number, number, boolean]> = [];
    const end = within + length;
    let a = within;
    while (a < end) {
      const s = Math.floor(a / ss);
      const set = ((bm[s >> 3]! >> (s & 7)) & 1) === 1;
      let t = s + 1;
      const last = Math.ceil(end / ss);
      while (t < last && (((bm[t >> 3]! >> (t & 7)) & 1) === 1) === set) t++;
      const b = Math.min(end, t * ss);
      out.push([a, b, set]);
      a = b;
    }
    return out;
  }

  /** True when state `s` answers reads from the parent (differencing disks only). */
  private fromParent(state: number): boolean {
    return this.meta.params.hasParent && (state === PAYLOAD_BLOCK_NOT_PRESENT || state === PAYLOAD_BLOCK_UNDEFINED);
  }

  protected async readAt(buf: Uint8Array, offset: number): Promise<void> {
    for (const { index: n, within, done, length } of blockPieces(offset, buf.length, this.blockSize)) {
      const piece = buf.subarray(done, done + length);
      const { state, offset: at } = this.entry(n);
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) await this.storage.read(piece, at + within);
      else if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        for (const [a, b, here] of await this.runs(n, within, length)) {
          const part = piece.subarray(a - within, b - within);
          if (here) await this.storage.read(part, at + a);
          else await readBelow(this.backing, part, n * this.blockSize + a);
        }
      } else if (this.fromParent(state)) await readBelow(this.backing, piece, offset + done);
      else piece.fill(0);
    }
  }

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    for (const { index: n, within, done, length: len } of blockPieces(offset, length, this.blockSize)) {
      const pos = offset + done;
      const { state } = this.entry(n);
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) yield { offset: pos, length: len, kind: 'data', depth: 0 };
      else if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        for (const [a, b, here] of await this.runs(n, within, len)) {
          const at = n * this.blockSize + a;
          if (here) yield { offset: at, length: b - a, kind: 'data', depth: 0 };
          else yield* this.below(at, b - a);
        }
      } else if (this.fromParent(state)) yield* this.below(pos, len);
      else if (state === PAYLOAD_BLOCK_NOT_PRESENT && !this.meta.params.hasParent) yield { offset: pos, length: len, kind: 'hole', depth: 0 };
      else yield { offset: pos, length: len, kind: 'zero', depth: 0 };
    }
  }

  private async *below(offset: number, length: number): AsyncIterable<Extent> {
    const p = this.backing;
    const inParent = p ? Math.max(0, Math.min(length, p.size - offset)) : 0;
    if (p && inParent > 0) for await (const e of p.extents(offset, inParent)) yield { ...e, depth: e.depth + 1 };
    if (inParent < length) yield { offset: offset + inParent, length: length - inParent, kind: 'hole', depth: p ? 1 : 0 };
  }

  // ---- writing -------------------------------------------------------------

  /** Before the first change of a session: new FileWriteGuid and DataWriteGuid (2.2.2); once, however many writers race. */
  private touch(): Promise<void> {
    this.touched ??= updateBothHeaders(this.storage, this.meta, { fileWriteGuid: randomGuid(), dataWriteGuid: this.plannedDataWriteGuid ?? randomGuid() });
    return this.touched;
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    await this.touch();
    const ss = this.sectorSize;
    const end = offset + buf.length;
    if (this.meta.params.hasParent && (offset % ss !== 0 || end % ss !== 0)) {
      // A sector is here or in the parent as a whole: merge partial sectors with what reads there now.
      const a0 = Math.floor(offset / ss) * ss;
      const a1 = Math.min(this.size, Math.ceil(end / ss) * ss);
      for (let p = a0; p < a1; p += IO_CHUNK) {
        const tmp = Buffer.alloc(Math.min(IO_CHUNK, a1 - p));
        const from = Math.max(p, offset);
        const to = Math.min(p + tmp.length, end);
        if (from > p || to < p + tmp.length) await this.readAt(tmp, p);
        tmp.set(buf.subarray(from - offset, to - offset), from - p);
        await this.writeSectors(tmp, p);
      }
    } else {
      await this.writeSectors(buf, offset);
    }
    if (this.pending.size + this.dirtyBitmaps.size >= PENDING_SECTORS_LIMIT) await this.commit();
  }

  /** Write whole sectors (any bytes on a disk without parent). */
  private async writeSectors(buf: Uint8Array, offset: number): Promise<void> {
    for (const { index: n, within, done, length } of blockPieces(offset, buf.length, this.blockSize)) {
      const piece = buf.subarray(done, done + length);
      const e = this.entry(n);
      if (e.state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        await this.storage.write(piece, e.offset + within);
      } else if (e.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        await this.storage.write(piece, e.offset + within);
        await this.markPresent(n, within, length);
      } else if (this.fromParent(e.state)) {
        // The rest of the block still comes from the parent: a partially present block and its bits.
        await this.sectorBitmapFor(n);
        const at = await this.allocate(n, PAYLOAD_BLOCK_PARTIALLY_PRESENT);
        await this.storage.write(piece, at + within);
        await this.markPresent(n, within, length);
      } else {
        // Every other state reads as zeros: a new block starts zeroed.
        await this.storage.write(piece, (await this.allocate(n)) + within);
      }
    }
  }

  /** Set the sector bitmap bits of [within, within+length) of payload block `n` (in memory, until the next commit). */
  private async markPresent(n: number, within: number, length: number): Promise<void> {
    const bm = await this.bitmap(n);
    if (!bm) throw corrupt(this.filename, `payload block ${n} is PARTIALLY_PRESENT but its chunk has no sector bitmap block`);
    const ss = this.sectorSize;
    for (let sct = within / ss; sct < (within + length) / ss; sct++) bm[sct >> 3]! |= 1 << (sct & 7);
    this.dirtyBitmaps.add(n);
  }

  /** Make sure the chunk of payload block `n` has a sector bitmap block (a new one is all zeros: nothing here yet). */
  private async sectorBitmapFor(n: number): Promise<void> {
    const i = bitmapEntryIndex(Math.floor(n / this.chunkRatio), this.chunkRatio);
    if (decodeBatEntry(this.meta.batTable, i * 8).state === SB_BLOCK_PRESENT) return;
    const at = this.nextFree;
    this.nextFree = at + SECTOR_BITMAP_BLOCK_SIZE;
    encodeBatEntry(this.meta.batTable, i * 8, SB_BLOCK_PRESENT, at);
    this.pending.set(Math.floor((i * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE, true);
    await this.extendTo(at + SECTOR_BITMAP_BLOCK_SIZE);
  }

  protected override async writeZeroesAt(offset: number, length: number): Promise<void> {
    for (const { index: n, done, length: len } of blockPieces(offset, length, this.blockSize)) {
      const { state } = this.entry(n);
      // Present blocks hold something to overwrite, and a parent shows through the others of a differencing disk.
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT || this.fromParent(state)) await super.writeZeroesAt(offset + done, len);
    }
  }

  /**
   * Give payload block `n` a new zeroed block at the end of the file; its BAT entry
   * waits for the next commit. The entry is set before anything is awaited, so a
   * concurrent write to the same block finds it allocated.
   */
  private async allocate(n: number, state = PAYLOAD_BLOCK_FULLY_PRESENT): Promise<number> {
    const at = this.nextFree;
    const len = Math.min(this.blockSize, this.size - n * this.blockSize);
    const end = at + Math.ceil(len / REGION_ALIGNMENT) * REGION_ALIGNMENT;
    this.nextFree = end;
    const i = payloadEntryIndex(n, this.chunkRatio);
    encodeBatEntry(this.meta.batTable, i * 8, state, at);
    this.pending.set(Math.floor((i * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE, true);
    await this.extendTo(end);
    return at;
  }

  /** Grow the file to at least `end`; extensions run one at a time, so a later one never cuts an earlier one short. */
  private extendTo(end: number): Promise<void> {
    const next = this.extending.then(async () => {
      if (this.storage.size < end) await this.storage.truncate(end);
    });
    this.extending = next.catch(() => undefined);
    return next;
  }

  /** Write the BAT sectors changed since the last commit through the log (data flushed first), one commit at a time. */
  private commit(): Promise<void> {
    const next = this.committing.then(() => this.commitNow());
    this.committing = next.catch(() => undefined);
    return next;
  }

  private async commitNow(): Promise<void> {
    if (this.pending.size === 0 && this.dirtyBitmaps.size === 0) return;
    const taken = [...this.pending.keys()].sort((a, b) => a - b);
    this.pending.clear();
    const bits = this.snapshotBitmaps();
    // The sectors as they are now, before anything is awaited: a block allocated meanwhile
    // marks its sector pending again and waits for the next commit, after its data's flush.
    const batBytes = this.meta.batTable.length;
    const sectors = taken.map((at) => ({ at, fileOffset: this.meta.bat.fileOffset + at, data: Buffer.from(this.meta.batTable.subarray(at, Math.min(at + LOG_SECTOR_SIZE, batBytes))) }));
    try {
      await this.storage.flush();
      if (!this.log) {
        const guid = randomGuid();
        await updateBothHeaders(this.storage, this.meta, { logGuid: guid });
        this.log = new LogWriter(this.storage, { offset: this.meta.header.logOffset, length: this.meta.header.logLength, guid });
      }
      for (const s of sectors) {
        if (s.data.length === LOG_SECTOR_SIZE) continue;
        // The last BAT sector may reach past the table we keep: the rest of the region stays as it is.
        const whole = Buffer.alloc(LOG_SECTOR_SIZE);
        await this.storage.read(whole, s.fileOffset);
        s.data.copy(whole, 0);
        s.data = whole;
      }
      await this.log.commit([...sectors, ...(await this.bitmapSectors(bits))]);
    } catch (err) {
      // Not written: the sectors stay pending for the next commit.
      for (const at of taken) this.pending.set(at, true);
      for (const b of bits) this.dirtyBitmaps.add(b.n);
      throw err;
    }
  }

  /** Copies of the dirty bitmap slices with where they go, taken before anything is awaited. */
  private snapshotBitmaps(): Array<{ n: number; fileOffset: number; bits: Buffer }> {
    const spb = this.blockSize / this.sectorSize;
    const out = [...this.dirtyBitmaps].map((n) => {
      const { offset } = decodeBatEntry(this.meta.batTable, bitmapEntryIndex(Math.floor(n / this.chunkRatio), this.chunkRatio) * 8);
      return { n, fileOffset: offset + ((n % this.chunkRatio) * spb) / 8, bits: Buffer.from(this.bitmaps.get(n)!) };
    });
    this.dirtyBitmaps.clear();
    return out;
  }

  /** The 4 KiB sectors of sector bitmap blocks holding `slices`, as on disk with the slices laid over. */
  private async bitmapSectors(slices: ReadonlyArray<{ fileOffset: number; bits: Buffer }>): Promise<Array<{ fileOffset: number; data: Buffer }>> {
    const sectors = new Map<number, Buffer>();
    for (const sl of slices) {
      for (let at = Math.floor(sl.fileOffset / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE; at < sl.fileOffset + sl.bits.length; at += LOG_SECTOR_SIZE) {
        let data = sectors.get(at);
        if (!data) {
          data = await readAt(this.storage, at, LOG_SECTOR_SIZE);
          sectors.set(at, data);
        }
        const from = Math.max(at, sl.fileOffset);
        const to = Math.min(at + LOG_SECTOR_SIZE, sl.fileOffset + sl.bits.length);
        sl.bits.copy(data, from - at, from - sl.fileOffset, to - sl.fileOffset);
      }
    }
    return [...sectors].sort((a, b) => a[0] - b[0]).map(([fileOffset, data]) => ({ fileOffset, data }));
  }

  /**
   * Change the virtual size (dynamic and fixed disks). A fixed disk gets its new
   * blocks allocated; a partly used last block that must grow is moved to the end
   * first, or else has what lies past the old end zeroed (a shrink leaves the cut
   * bytes in place: they are outside the disk); on shrinking, the blocks past the new
   * end are dropped from the BAT (their file space leaks). The size and the BAT change in one log entry.
   */
  async resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    this.writable();
    const p = this.meta.params;
    if (p.hasParent) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: resizing a differencing VHDX is not supported`);
    checkNewSize(this.filename, p, newSize, MAX_VIRTUAL_DISK_SIZE);
    if (newSize === this.size) return;
    await this.touch();
    await this.flushAll();
    const oldSize = this.size;
    const g = batGeometry({ ...p, virtualDiskSize: newSize });
    if (g.totalEntries * 8 > this.meta.bat.length) {
      throw new VdiskError('E_UNSUPPORTED', `${this.filename}: ${newSize} bytes need ${g.totalEntries} BAT entries, more than the ${this.meta.bat.length}-byte BAT region holds (moving the BAT is not implemented)`);
    }
    const bs = this.blockSize;
    const oldLast = Math.ceil(oldSize / bs) - 1;
    const roundMiB = (n: number): number => Math.ceil(n / REGION_ALIGNMENT) * REGION_ALIGNMENT;
    const table = Buffer.alloc(Math.max(g.totalEntries, this.meta.geometry.totalEntries) * 8);
    this.meta.batTable.copy(table);
    const old = this.meta.batTable;
    this.meta.batTable = table;
    const changed = new Set<number>();
    const set = (n: number, state: number, at: number): void => {
      const i = payloadEntryIndex(n, this.chunkRatio);
      encodeBatEntry(table, i * 8, state, at);
      changed.add(Math.floor((i * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE);
    };
    try {
      if (newSize > oldSize) {
        // A last block that was partial and is present may lack the file space its new length needs.
        const e = this.entry(oldLast);
        const had = roundMiB(oldSize - oldLast * bs);
        const needs = roundMiB(Math.min(bs, newSize - oldLast * bs));
        if (e.state === PAYLOAD_BLOCK_FULLY_PRESENT && needs > had) {
          const at = this.nextFree;
          this.nextFree = at + needs;
          await this.extendTo(at + needs);
          const used = oldSize - oldLast * bs;
          const buf = Buffer.alloc(Math.min(used, 4 * REGION_ALIGNMENT));
          for (let d = 0; d < used; d += buf.length) {
            const n = Math.min(buf.length, used - d);
            await this.storage.read(buf.subarray(0, n), e.offset + d);
            await this.storage.write(buf.subarray(0, n), at + d);
          }
          set(oldLast, PAYLOAD_BLOCK_FULLY_PRESENT, at);
        } else if (e.state === PAYLOAD_BLOCK_FULLY_PRESENT && oldSize % bs !== 0) {
          // What lies past the old end in this block (left by a shrink, or by another writer) must read as zeros;
          // it is outside the disk until the new size commits.
          const to = Math.min(newSize, (oldLast + 1) * bs);
          const zeros = Buffer.alloc(Math.min(to - oldSize, 4 * REGION_ALIGNMENT));
          for (let d = oldSize; d < to; d += zeros.length) await this.storage.write(zeros.subarray(0, Math.min(zeros.length, to - d)), e.offset + (d - oldLast * bs));
        }
        if (p.leaveBlocksAllocated) {
          for (let n = oldLast + 1; n < g.payloadBlocks; n++) {
            const len = roundMiB(Math.min(bs, newSize - n * bs));
            set(n, PAYLOAD_BLOCK_FULLY_PRESENT, this.nextFree);
            this.nextFree += len;
            opts.onProgress?.(n - oldLast, g.payloadBlocks - oldLast - 1);
          }
          await this.extendTo(this.nextFree);
        }
      } else {
        for (let n = g.payloadBlocks; n <= oldLast; n++) set(n, PAYLOAD_BLOCK_NOT_PRESENT, 0);
      }
      await this.storage.flush();
      const sectors: Array<{ fileOffset: number; data: Buffer }> = [...changed].sort((a, b) => a - b).map((at) => {
        const data = Buffer.alloc(LOG_SECTOR_SIZE);
        table.copy(data, 0, at, Math.min(at + LOG_SECTOR_SIZE, table.length));
        return { fileOffset: this.meta.bat.fileOffset + at, data };
      });
      sectors.push(...(await virtualSizeSectors(this.storage, this.meta, newSize)));
      if (!this.log) {
        const guid = randomGuid();
        await updateBothHeaders(this.storage, this.meta, { logGuid: guid });
        this.log = new LogWriter(this.storage, { offset: this.meta.header.logOffset, length: this.meta.header.logLength, guid });
      }
      if (sectors.length > this.log.maxSectorsPerEntry) {
        throw new VdiskError('E_UNSUPPORTED', `${this.filename}: this resize changes ${sectors.length} metadata sectors, more than one entry of the ${this.meta.header.logLength}-byte log holds`);
      }
      await this.log.commit(sectors);
    } catch (err) {
      this.meta.batTable = old;
      throw err;
    }
    this.meta.batTable = table.subarray(0, g.totalEntries * 8);
    this.meta.geometry = g;
    this.meta.params.virtualDiskSize = newSize;
    this.size = newSize;
    this.bitmaps.clear();
    opts.onProgress?.(1, 1);
  }

  /**
   * Give back space (dynamic disks without parent): blocks that read as zeros become
   * NOT_PRESENT, then blocks are moved down into free space, each copy flushed before
   * its BAT entry changes through the log, and the file is cut after the last block.
   * A block is moved only where it overlaps nothing it still occupies, so a crash
   * leaves every BAT entry naming whole data.
   */
  async compact(opts: CompactOptions = {}): Promise<CompactResult> {
    this.writable();
    const p = this.meta.params;
    const sizeBefore = this.storage.size;
    if (p.hasParent || p.leaveBlocksAllocated) return { releasedBlocks: 0, sizeBefore, sizeAfter: sizeBefore };
    await this.flushAll();
    const g = this.meta.geometry;
    const bs = this.blockSize;
    const len = (n: number): number => Math.ceil(Math.min(bs, this.size - n * bs) / REGION_ALIGNMENT) * REGION_ALIGNMENT;
    const buf = Buffer.alloc(Math.min(bs, IO_CHUNK));
    let released = 0;
    for (let n = 0; n < g.payloadBlocks; n++) {
      opts.onProgress?.(n, g.payloadBlocks * 2);
      const e = this.entry(n);
      if (e.state !== PAYLOAD_BLOCK_FULLY_PRESENT) continue;
      let zero = true;
      const used = Math.min(bs, this.size - n * bs);
      for (let d = 0; d < used && zero; d += buf.length) {
        const piece = buf.subarray(0, Math.min(buf.length, used - d));
        await this.storage.read(piece, e.offset + d);
        zero = isZero(piece);
      }
      if (!zero) continue;
      await this.touch();
      const i = payloadEntryIndex(n, this.chunkRatio);
      encodeBatEntry(this.meta.batTable, i * 8, PAYLOAD_BLOCK_NOT_PRESENT, 0);
      this.pending.set(Math.floor((i * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE, true);
      released++;
    }
    await this.flushAll();
    // Blocks in file order; each moves to the lowest free place below it that it does not overlap.
    const live: Array<{ n: number; offset: number; length: number }> = [];
    for (let n = 0; n < g.payloadBlocks; n++) {
      const e = this.entry(n);
      if (e.state === PAYLOAD_BLOCK_FULLY_PRESENT) live.push({ n, offset: e.offset, length: len(n) });
    }
    live.sort((a, b) => a.offset - b.offset);
    const meta = Math.max(HEADER_SECTION_SIZE, this.meta.header.logOffset + this.meta.header.logLength, this.meta.bat.fileOffset + this.meta.bat.length, this.meta.metadata.fileOffset + this.meta.metadata.length);
    let target = Math.ceil(meta / REGION_ALIGNMENT) * REGION_ALIGNMENT;
    const copy = Buffer.alloc(Math.min(bs, 4 * REGION_ALIGNMENT));
    for (const [k, b] of live.entries()) {
      opts.onProgress?.(g.payloadBlocks + k, g.payloadBlocks * 2);
      if (b.offset < target + b.length || b.offset < meta) {
        target = Math.max(target, b.offset + b.length);
        continue;
      }
      await this.touch();
      for (let d = 0; d < b.length; d += copy.length) {
        const piece = copy.subarray(0, Math.min(copy.length, b.length - d));
        await this.storage.read(piece, b.offset + d);
        await this.storage.write(piece, target + d);
      }
      const i = payloadEntryIndex(b.n, this.chunkRatio);
      encodeBatEntry(this.meta.batTable, i * 8, PAYLOAD_BLOCK_FULLY_PRESENT, target);
      this.pending.set(Math.floor((i * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE, true);
      // Data flushed, then the entry through the log: the old place is free only after that.
      await this.flushAll();
      target += b.length;
    }
    const end = Math.max(target, Math.ceil(meta / REGION_ALIGNMENT) * REGION_ALIGNMENT);
    if (end < this.storage.size) {
      await this.touch();
      // The log's last entry names the file size before the cut (FlushedFileOffset): it is applied, so declare the log empty first.
      if (this.log) {
        await updateBothHeaders(this.storage, this.meta, { logGuid: ZERO_GUID });
        this.log = undefined;
      }
      await this.storage.truncate(end);
      await this.storage.flush();
    }
    this.nextFree = Math.ceil(Math.max(end, this.storage.size) / REGION_ALIGNMENT) * REGION_ALIGNMENT;
    opts.onProgress?.(g.payloadBlocks * 2, g.payloadBlocks * 2);
    return { releasedBlocks: released, sizeBefore, sizeAfter: this.storage.size };
  }

  /** The DataWriteGuid this image will have once written in this session (a child records it before a commit writes here). */
  nextDataWriteGuid(): string {
    if (this.touched) return this.meta.header.dataWriteGuid;
    this.plannedDataWriteGuid ??= randomGuid();
    return this.plannedDataWriteGuid;
  }

  /** Write new parent locator contents through the log. */
  private async writeLocator(entries: Record<string, string>): Promise<void> {
    const loc = this.meta.params.parentLocator;
    if (!this.meta.params.hasParent || !loc) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: not a differencing VHDX`);
    await this.touch();
    await this.flushAll();
    const next = { locatorType: loc.locatorType, entries };
    const sectors = await locatorSectors(this.storage, this.meta, next);
    await this.ensureLog();
    if (sectors.length > this.log!.maxSectorsPerEntry) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: the parent locator change does not fit one log entry`);
    await this.log!.commit(sectors);
    this.meta.params.parentLocator = next;
  }

  /** Before a commit writes into `parent`: the locator also names the DataWriteGuid the parent is about to take (parent_linkage2, 2.6.2.6.1). */
  async prepareCommit(parent: DiskImage): Promise<void> {
    this.writable();
    if (!(parent instanceof VhdxImage)) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a VHDX's parent must be a VHDX, not ${parent.format}`);
    const entries = { ...this.meta.params.parentLocator!.entries, parent_linkage2: `{${parent.nextDataWriteGuid()}}` };
    await this.writeLocator(entries);
  }

  /** Link this differencing image to `parent`, named `ref` (relative to this image's folder); standing alone is not supported. */
  async setBacking(parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    this.writable();
    if (!parent || ref === undefined) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: making a differencing VHDX stand alone is not supported`);
    if (!(parent instanceof VhdxImage)) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a VHDX's parent must be a VHDX, not ${parent.format}`);
    if (parent.sectorSize !== this.sectorSize) throw new VdiskError('E_USAGE', `${this.filename}: the parent has ${parent.sectorSize}-byte logical sectors, this image ${this.sectorSize}-byte ones`);
    await this.writeLocator({ parent_linkage: `{${parent.dataWriteGuid}}`, relative_path: windowsRelative(ref) });
    const old = this.backing;
    this.backing = parent;
    this.opts.parentInfo = { ref: windowsRelative(ref), resolved: parent.filename, key: 'relative_path' };
    if (old && old !== parent) await old.close();
  }

  /** Whole blocks become NOT_PRESENT (the parent, or zeros, shows through); their file space leaks. Parts of blocks are left. */
  protected override async discardAt(offset: number, length: number): Promise<void> {
    await this.touch();
    for (const { index: n, within, length: len } of blockPieces(offset, length, this.blockSize)) {
      const whole = within === 0 && (len === this.blockSize || n * this.blockSize + len === this.size);
      if (!whole || this.meta.params.leaveBlocksAllocated) continue;
      const i = payloadEntryIndex(n, this.chunkRatio);
      if (decodeBatEntry(this.meta.batTable, i * 8).state === PAYLOAD_BLOCK_NOT_PRESENT) continue;
      encodeBatEntry(this.meta.batTable, i * 8, PAYLOAD_BLOCK_NOT_PRESENT, 0);
      this.pending.set(Math.floor((i * 8) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE, true);
      this.bitmaps.delete(n);
      this.dirtyBitmaps.delete(n);
    }
    if (this.pending.size >= PENDING_SECTORS_LIMIT) await this.commit();
  }

  private async ensureLog(): Promise<void> {
    if (this.log) return;
    const guid = randomGuid();
    await updateBothHeaders(this.storage, this.meta, { logGuid: guid });
    this.log = new LogWriter(this.storage, { offset: this.meta.header.logOffset, length: this.meta.header.logLength, guid });
  }

  protected async flushAll(): Promise<void> {
    await this.commit();
    await this.storage.flush();
  }

  protected async closeAll(): Promise<void> {
    try {
      // flushAll ran: every entry is applied, so the log may be declared empty.
      if (!this.readOnly && this.log) await updateBothHeaders(this.storage, this.meta, { logGuid: ZERO_GUID });
    } finally {
      try {
        await this.storage.close();
      } finally {
        if (this.opts.ownsParent !== false) await this.backing?.close();
      }
    }
  }

  async info(): Promise<ImageInfo> {
    const p = this.meta.params;
    const info: ImageInfo = {
      clusterSize: p.blockSize,
      formatSpecific: {
        type: this.subformat,
        'block-size': p.blockSize,
        'logical-sector-size': p.logicalSectorSize,
        'physical-sector-size': p.physicalSectorSize,
        'leave-blocks-allocated': p.leaveBlocksAllocated,
        'has-parent': p.hasParent,
        'virtual-disk-id': p.virtualDiskId,
        'data-write-guid': this.meta.header.dataWriteGuid,
        'log-length': this.meta.header.logLength,
        creator: this.meta.creator,
        ...(p.parentLocator ? { 'parent-locator': p.parentLocator.entries } : {}),
        ...(this.meta.replay ? { 'log-replayed': this.meta.replay } : {}),
      },
    };
    if (this.meta.replay?.inMemory) info.dirty = true;
    if (this.opts.parentInfo?.ref) info.backingFilename = this.opts.parentInfo.ref;
    if (this.opts.parentInfo?.resolved) info.fullBackingFilename = this.opts.parentInfo.resolved;
    if (this.meta.warnings.length) info.warnings = [...this.meta.warnings];
    return info;
  }

  /** `differencing` (HasParent), `fixed` (LeaveBlocksAllocated, as Hyper-V and libvhdi read it) or `dynamic`. */
  get subformat(): string {
    if (this.meta.params.hasParent) return 'differencing';
    return this.meta.params.leaveBlocksAllocated ? 'fixed' : 'dynamic';
  }

  async actualSize(): Promise<number | undefined> {
    return (await this.storage.allocatedSize?.()) ?? this.storage.size;
  }
}

