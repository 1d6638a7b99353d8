/**
 * A VDI image as a BlockDevice: reads and writes through the block map, allocating
 * data blocks at the end of the file. Write order: data block, then the header's
 * cBlocksAllocated (the allocation pointer every VDI writer appends at), then the
 * map entry; releasing a block clears its map entry first, moves the last data block
 * into the hole and lowers the count last. So cBlocksAllocated is never behind the
 * map and a crash leaves at worst a leak that the next writable open (or `check -r`)
 * compacts away.
 */
import { readBelow } from '../../device/below.js';
import type { CompactOptions, CompactResult, DiskImage, Extent, ImageInfo, ResizeImageOptions } from '../../device/block-device.js';
import { ProgressMeter } from '../../device/progress.js';
import { BlockDeviceBase } from '../../device/base.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import { copyBytes } from '../../storage/copy.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { compactVdi, relinkVdi, resizeVdi, type VdiMaintained } from './maintain.js';
import {
  blockStride,
  encodeMapEntries,
  encodeMapEntry,
  isAllocated,
  VDI_BLOCK_FREE,
  VDI_BLOCK_ZERO,
  VDI_HEADER1PLUS_SIZE,
  VDI_MAP_ENTRY_SIZE,
  VDI_PREHEADER_SIZE,
  VDI_TYPE_NAMES,
  VdiImageType,
  encodeHeader,
  newUuid,
  readBlockMap,
  scanBlockMap,
  VDI_HEADER1_SIZE,
  VDI_HEADER_BYTES,
  VDI_SIGNATURE,
  VdiField,
  decodeHeader,
  validateHeader,
  type VdiHeader,
  type BlockMapScan,
} from './layout.js';
import type { DriverOpenOptions } from '../driver.js';

/** Allocations whose header count and map entries may wait in memory before commitMap writes them. */
const PENDING_LIMIT = 64;

/** How a VdiImage is wired up (the driver decodes and validates before constructing). */
export interface VdiImageParts {
  storage: Storage;
  header: VdiHeader;
  /** Header bytes as read, so unknown bytes survive a header rewrite. */
  headerRaw: Buffer;
  map: Uint32Array;
  owner: Int32Array;
  nextSlot: number;
  readOnly: boolean;
  parent?: DiskImage;
  /** Close the parent with this image (false for a parent the caller gave). */
  ownsParent: boolean;
  warnings: string[];
  /** A differencing image opened without its parent (noBacking): writes that would need the parent's data are refused. */
  parentMissing?: boolean;
  /** Where the image lives: lets a resize rewrite it into a temp file renamed over it (see relayout). */
  location?: ImageLocation;
}

/** One piece of a request that falls inside one block. */
interface BlockPiece {
  block: number;
  /** Offset inside the block. */
  within: number;
  /** Offset inside the request's buffer. */
  at: number;
  length: number;
}

/** A VDI image (normal, fixed, undo or differencing). */
export class VdiImage extends BlockDeviceBase implements DiskImage, VdiMaintained {
  readonly format = 'vdi';
  readonly filename: string;
  readonly readOnly: boolean;
  /** Virtual size (changes with {@link resize}). */
  size: number;
  /** The parent (changes with {@link setBacking}). */
  backing?: DiskImage;
  /** @internal */
  storage: Storage;
  /** @internal Files replaced by a relayout, kept open (and locked) until close. */
  readonly retired: Storage[] = [];
  /** @internal */
  readonly location?: ImageLocation;
  /** @internal */
  readonly header: VdiHeader;
  /** @internal */
  readonly headerRaw: Buffer;
  /** @internal */
  map: Uint32Array;
  /** @internal */
  owner: Int32Array;
  /** @internal */
  nextSlot: number;
  /** @internal */
  mapped: number;
  /** @internal */
  ownsParent: boolean;
  private readonly warnings: string[];
  private modified = false;

  constructor(p: VdiImageParts) {
    super();
    this.storage = p.storage;
    this.location = p.location;
    this.filename = p.storage.name;
    this.header = p.header;
    this.headerRaw = p.headerRaw;
    this.map = p.map;
    this.owner = p.owner;
    this.nextSlot = p.nextSlot;
    this.mapped = 0;
    for (let n = 0; n < p.nextSlot; n++) if (p.owner[n]! >= 0) this.mapped++;
    this.readOnly = p.readOnly || p.storage.readOnly;
    // qemu rounds odd sizes (VBoxManage convertfromraw makes them) up to a sector.
    this.size = Math.ceil(p.header.cbDisk / 512) * 512;
    if (p.parent) this.backing = p.parent;
    this.ownsParent = p.ownsParent;
    this.warnings = p.warnings;
    this.parentMissing = p.parentMissing === true;
  }

  /** @internal True for a differencing image opened without its parent. */
  parentMissing: boolean;

  /** @internal Refuse `what` when the parent it needs was not opened. */
  needParent(what: string): void {
    if (this.parentMissing) {
      throw new VdiskError('E_CHAIN', `${this.filename}: ${what} needs the parent image, which was not opened (a broken chain; rebase -u can re-link it)`);
    }
  }

  /** The decoded header (a copy). */
  get vdiHeader(): VdiHeader {
    return { ...this.header };
  }

  /** The creation uuid children link to (uuidLinkage). */
  get uuid(): string {
    return this.header.uuidCreate;
  }

  /** The last-modification uuid children record (uuidParentModify). */
  get modificationUuid(): string {
    return this.header.uuidModify;
  }

  /** @internal */
  get stride(): number {
    return blockStride(this.header);
  }

  /** @internal Offset in the file of data block `slot`'s first byte of block data (after the extra bytes). */
  dataOffset(slot: number): number {
    return this.header.offData + slot * this.stride + this.header.cbBlockExtra;
  }

  private *pieces(offset: number, length: number): Generator<BlockPiece> {
    const bs = this.header.cbBlock;
    for (let pos = offset; pos < offset + length; ) {
      const block = Math.floor(pos / bs);
      const within = pos - block * bs;
      const n = Math.min(bs - within, offset + length - pos);
      yield { block, within, at: pos - offset, length: n };
      pos += n;
    }
  }

  protected async readAt(buf: Uint8Array, offset: number): Promise<void> {
    for (const pc of this.pieces(offset, buf.length)) {
      const piece = buf.subarray(pc.at, pc.at + pc.length);
      const e = this.map[pc.block]!;
      if (isAllocated(e)) await this.readData(piece, this.dataOffset(e) + pc.within);
      else if (e === VDI_BLOCK_FREE) await readBelow(this.backing, piece, offset + pc.at);
      else piece.fill(0);
    }
  }

  /**
   * Read block data at `at` in the file. A new block's tail can lie past the file's
   * end until the next commitMap extends the file over it (see allocate); it reads
   * as zeros. Reads never extend the file themselves: a truncate racing a write past
   * the end could cut that write off.
   */
  private async readData(piece: Uint8Array, at: number): Promise<void> {
    const inFile = Math.max(0, Math.min(piece.length, this.storage.size - at));
    if (inFile > 0) await this.storage.read(inFile === piece.length ? piece : piece.subarray(0, inFile), at);
    if (inFile < piece.length) piece.fill(0, inFile);
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    this.noteModified();
    for (const pc of this.pieces(offset, buf.length)) {
      const piece = buf.subarray(pc.at, pc.at + pc.length);
      const e = this.map[pc.block]!;
      if (isAllocated(e)) {
        await this.storage.write(piece, this.dataOffset(e) + pc.within);
      } else {
        await this.allocate(pc, piece, e);
      }
    }
    if (this.headerStale) await this.writeHeader();
  }

  /** @internal Give virtual block `pc.block` a data block holding `piece` over what it read before. */
  async allocate(pc: BlockPiece, piece: Uint8Array, was: number): Promise<void> {
    const h = this.header;
    const slot = this.nextSlot;
    if (slot >= h.cBlocks) throw new VdiskError('E_CORRUPT', `${this.filename}: no free data block left (cBlocks ${h.cBlocks}); run check`);
    const blockStart = pc.block * h.cbBlock;
    if (was === VDI_BLOCK_FREE && pc.length < Math.min(h.cbBlock, this.size - blockStart)) this.needParent(`a partial write to block ${pc.block}`);
    const slotStart = h.offData + slot * this.stride;
    const fromParent = was === VDI_BLOCK_FREE && this.backing !== undefined;
    // 1. data, 2. header count, 3. map entry (as VirtualBox and qemu order it): a crash
    // leaves cBlocksAllocated at most one ahead of the map, a leak; never behind it,
    // where the next writer (qemu, VirtualBox: both allocate at cBlocksAllocated)
    // would hand out a block that is in use.
    // The count and the map entry are deferred (commitMap), so a sequential writer
    // pays one header write and one map run write per PENDING_LIMIT blocks, not two
    // small writes per block; the order on disk stays data, count, map entries.
    if (pc.length === h.cbBlock && h.cbBlockExtra === 0) {
      await this.storage.write(piece, slotStart);
    } else if (!fromParent && slotStart >= this.storage.size) {
      // A new block past the end of the file reads as zeros where it is not written:
      // write only the piece and extend the file over the rest, a hole. A convert that
      // skips zero runs thus writes each block's data once, not a zero-filled block
      // and then its pieces.
      // The extension itself waits for the next commitMap (which makes it before any map
      // entry that points into it) or read: one ftruncate per batch of blocks instead
      // of one per block (each took about 0.3 ms here, a fifth of a raw -> VDI convert).
      await this.storage.write(piece, slotStart + h.cbBlockExtra + pc.within);
      this.fileEndOwed = Math.max(this.fileEndOwed, slotStart + this.stride);
    } else {
      const b = this.blockScratch();
      const body = b.subarray(h.cbBlockExtra);
      if (fromParent) await readBelow(this.backing, body.subarray(0, Math.min(h.cbBlock, this.size - blockStart)), blockStart);
      body.set(piece, pc.within);
      await this.storage.write(b, slotStart);
    }
    this.map[pc.block] = slot;
    this.owner[slot] = pc.block;
    this.nextSlot = slot + 1;
    this.mapped++;
    this.pendingMap.push(pc.block);
    if (this.pendingMap.length >= PENDING_LIMIT) await this.commitMap();
  }

  private scratch?: Buffer;

  /** A zero-filled buffer of one block's stride, reused (fresh 1 MiB buffers are faulted in page by page). */
  private blockScratch(): Buffer {
    if (this.scratch?.length !== this.stride) this.scratch = Buffer.alloc(this.stride);
    return this.scratch.fill(0);
  }

  /** Virtual blocks whose data is written but whose map entries are not yet on disk. */
  private pendingMap: number[] = [];

  /**
   * Put the deferred allocations on disk: the header's cBlocksAllocated first (a crash
   * after it leaves the count ahead of the map: a leak, never a block handed out
   * twice), then the map entries, one write per run of adjacent entries.
   */
  /** How long the file must be for the blocks allocated so far (see allocate); made so by {@link extendFile}. */
  private fileEndOwed = 0;

  /** Extend the file over the blocks allocated past its end, if it does not reach them yet. */
  private async extendFile(): Promise<void> {
    if (this.storage.size < this.fileEndOwed) await this.storage.truncate(this.fileEndOwed);
    this.fileEndOwed = 0;
  }

  /** @internal */
  async commitMap(): Promise<void> {
    await this.extendFile();
    if (this.pendingMap.length === 0) return;
    const blocks = this.pendingMap.sort((a, b) => a - b);
    this.pendingMap = [];
    let i = 0;
    try {
      await this.writeHeader();
      while (i < blocks.length) {
        let j = i + 1;
        while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1) j++;
        const first = blocks[i]!;
        const run = encodeMapEntries(this.map, first, j - i);
        await this.storage.write(run, this.header.offBlocks + first * VDI_MAP_ENTRY_SIZE);
        i = j;
      }
    } catch (err) {
      // Still owed: the flush that reports this error can be retried and will write them.
      this.pendingMap = [...blocks.slice(i), ...this.pendingMap];
      this.headerStale = true;
      throw err;
    }
  }

  /** @internal True when the header on disk lags behind (a new modification uuid, a changed count). */
  headerStale = false;

  /** @internal First write since open: a new uuidModify, as VirtualBox's VD layer does. */
  noteModified(): void {
    if (this.modified) return;
    this.modified = true;
    this.header.uuidModify = newUuid();
    this.headerStale = true;
  }

  private async writeHeader(): Promise<void> {
    this.header.cBlocksAllocated = this.mapped;
    await this.storage.write(encodeHeader(this.header, this.headerRaw), 0);
    this.headerStale = false;
  }

  /** @internal True when whole blocks can be deallocated (not in a preallocated image). */
  get canDeallocate(): boolean {
    return this.header.type !== VdiImageType.FIXED;
  }

  protected override async writeZeroesAt(offset: number, length: number): Promise<void> {
    if (!this.canDeallocate) return super.writeZeroesAt(offset, length);
    await this.commitMap();
    this.noteModified();
    for (const pc of this.pieces(offset, length)) {
      if (this.wholeBlock(pc)) {
        await this.release(pc.block, VDI_BLOCK_ZERO);
        continue;
      }
      const e = this.map[pc.block]!;
      // Nothing to do where the block already reads as zeros.
      if (e === VDI_BLOCK_ZERO || (e === VDI_BLOCK_FREE && !this.backing)) continue;
      await super.writeZeroesAt(offset + pc.at, pc.length);
    }
    await this.finishRelease();
  }

  protected override async discardAt(offset: number, length: number): Promise<void> {
    if (!this.canDeallocate) return;
    await this.commitMap();
    this.noteModified();
    for (const pc of this.pieces(offset, length)) if (this.wholeBlock(pc)) await this.release(pc.block, VDI_BLOCK_FREE);
    await this.finishRelease();
  }

  /** A piece covers its whole block (the last block counts as whole up to the disk's end). */
  private wholeBlock(pc: BlockPiece): boolean {
    const start = pc.block * this.header.cbBlock;
    return pc.within === 0 && (pc.length === this.header.cbBlock || start + pc.length === this.size);
  }

  /** @internal Point block `block` at `marker` (ZERO or FREE) and give its data block back. */
  async release(block: number, marker: number): Promise<void> {
    const e = this.map[block]!;
    if (e === marker) return;
    await this.storage.write(encodeMapEntry(marker), this.header.offBlocks + block * VDI_MAP_ENTRY_SIZE);
    this.map[block] = marker;
    if (!isAllocated(e)) return;
    this.owner[e] = -1;
    this.mapped--;
    this.headerStale = true;
    this.freed.push(e);
  }

  /** Data blocks released by the current request, to be refilled by finishRelease. */
  private freed: number[] = [];

  /**
   * After releasing blocks: keep data blocks dense (VirtualBox and qemu append at
   * cBlocksAllocated) by moving the last ones into the holes, then write the
   * header's count, then trim the file's tail.
   */
  private async finishRelease(): Promise<void> {
    const holes = this.freed.sort((a, b) => a - b);
    this.freed = [];
    this.trimTail();
    for (const hole of holes) {
      if (hole >= this.nextSlot) break;
      // compactSlots may have filled it already.
      if (this.owner[hole]! >= 0) continue;
      await this.move(this.nextSlot - 1, hole);
      this.trimTail();
    }
    if (this.headerStale) await this.writeHeader();
    const end = this.header.offData + this.nextSlot * this.stride;
    if (this.storage.size > end) await this.storage.truncate(end);
  }

  /**
   * Move the last data block into each hole, then trim the file. Each move copies
   * the data before repointing its map entry, so a crash mid-way leaves only a leak.
   * @internal
   */
  async compactSlots(): Promise<void> {
    this.trimTail();
    for (let hole = 0; hole < this.nextSlot; hole++) {
      if (this.owner[hole]! >= 0) continue;
      await this.move(this.nextSlot - 1, hole);
      this.trimTail();
    }
    if (this.header.cBlocksAllocated !== this.mapped) this.headerStale = true;
    await this.finishRelease();
  }

  private trimTail(): void {
    while (this.nextSlot > 0 && this.owner[this.nextSlot - 1]! < 0) this.nextSlot--;
  }

  /** @internal */
  async move(from: number, to: number): Promise<void> {
    const block = this.owner[from]!;
    await copyBytes(this.storage, this.header.offData + from * this.stride, this.storage, this.header.offData + to * this.stride, this.stride);
    await this.storage.write(encodeMapEntry(to), this.header.offBlocks + block * VDI_MAP_ENTRY_SIZE);
    this.map[block] = to;
    this.owner[to] = block;
    this.owner[from] = -1;
    this.moveMeter?.add(this.stride);
  }

  /** @internal Where a resize counts the bytes of the data blocks it moves. */
  moveMeter?: ProgressMeter;

  /**
   * Bring the file back to the shape other writers expect after a crash: no holes
   * between data blocks, no bytes past the last one, cBlocksAllocated equal to the
   * map's count. Returns what it changed (for check's report).
   */
  async settle(): Promise<{ movedOrTrimmed: boolean; countFixed: boolean }> {
    this.writable();
    await this.commitMap();
    const countFixed = this.header.cBlocksAllocated !== this.mapped;
    const before = this.storage.size;
    let holes = false;
    for (let n = 0; n < this.nextSlot; n++) if (this.owner[n]! < 0) holes = true;
    await this.compactSlots();
    return { movedOrTrimmed: holes || this.storage.size !== before, countFixed };
  }

  // ---- Maintenance: resize, compact, setBacking (DiskImage hooks; the work and its write order are maintain.ts's) ----

  /** Change the virtual size in place; a crash leaves the old or the new size (maintain.ts). */
  resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    return resizeVdi(this, newSize, opts);
  }

  /** Give back space (zero blocks released, the rest packed, the file cut); guest content unchanged (maintain.ts). */
  compact(opts: CompactOptions = {}): Promise<CompactResult> {
    return compactVdi(this, opts);
  }

  /** Point this image at another VDI parent in its folder, or with `undefined` make it standalone (maintain.ts). */
  setBacking(parent: DiskImage | undefined, ref?: string): Promise<void> {
    return relinkVdi(this, parent, ref);
  }

  /** @internal True when `d` is a VDI image (maintain.ts links only to those). */
  isVdi(d: DiskImage): d is VdiImage {
    return d instanceof VdiImage;
  }

  /** @internal Read guest bytes below the device's gate (maintain.ts, mid-way through a layout change). */
  readVirtual(buf: Uint8Array, offset: number): Promise<void> {
    return this.readAt(buf, offset);
  }

  /** @internal Refuse to go on when the image is read-only or closed. */
  mustBeWritable(): void {
    this.writable();
  }

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    let freeStart = -1;
    const below = async function* (this: VdiImage, from: number, to: number): AsyncIterable<Extent> {
      const p = this.backing;
      const inParent = p ? Math.max(0, Math.min(to, p.size) - from) : 0;
      if (p && inParent > 0) for await (const x of p.extents(from, inParent)) yield { ...x, depth: x.depth + 1 };
      if (to - from > inParent) yield { offset: from + inParent, length: to - from - inParent, kind: 'hole', depth: p ? 1 : 0 };
    };
    for (const pc of this.pieces(offset, length)) {
      const pos = offset + pc.at;
      const e = this.map[pc.block]!;
      if (e === VDI_BLOCK_FREE) {
        if (freeStart < 0) freeStart = pos;
        continue;
      }
      if (freeStart >= 0) {
        yield* below.call(this, freeStart, pos);
        freeStart = -1;
      }
      yield { offset: pos, length: pc.length, kind: isAllocated(e) ? 'data' : 'zero', depth: 0 };
    }
    if (freeStart >= 0) yield* below.call(this, freeStart, offset + length);
  }

  protected async flushAll(): Promise<void> {
    await this.commitMap();
    if (this.headerStale) await this.writeHeader();
    await this.storage.flush();
  }

  protected async closeAll(): Promise<void> {
    try {
      await this.storage.close();
      for (const s of this.retired.splice(0)) await s.close();
    } finally {
      if (this.ownsParent) await this.backing?.close();
    }
  }

  async info(): Promise<ImageInfo> {
    const h = this.header;
    const facts: Record<string, unknown> = {
      'image-type': VDI_TYPE_NAMES[h.type] ?? String(h.type),
      'header-variant': h.cbHeader >= VDI_HEADER1PLUS_SIZE ? `VDIHEADER1PLUS (${h.cbHeader} bytes, with LCHS geometry)` : `VDIHEADER1 (${h.cbHeader} bytes)`,
      'header-size': h.cbHeader,
      banner: h.banner.trimEnd(),
      uuid: h.uuidCreate,
      'modification-uuid': h.uuidModify,
      'block-size': h.cbBlock,
      'block-extra': h.cbBlockExtra,
      blocks: h.cBlocks,
      'allocated-blocks': h.cBlocksAllocated,
      'mapped-blocks': this.mapped,
      'offset-blocks': h.offBlocks,
      'offset-data': h.offData,
    };
    if (h.type === VdiImageType.DIFF || h.type === VdiImageType.UNDO) {
      facts['parent-uuid'] = h.uuidLinkage;
      facts['parent-modification-uuid'] = h.uuidParentModify;
    }
    if (h.comment) facts.comment = h.comment;
    if (h.lchsGeometry) facts['lchs-geometry'] = { ...h.lchsGeometry };
    const out: ImageInfo = { clusterSize: h.cbBlock, formatSpecific: facts };
    if (this.backing) {
      out.backingFilename = this.backing.filename;
      out.fullBackingFilename = this.backing.filename;
    }
    const warnings = [...this.warnings];
    // Allocations not yet committed (pendingMap) are not an interrupted write.
    if (this.pendingMap.length === 0 && h.cBlocksAllocated !== this.mapped) warnings.push(`cBlocksAllocated ${h.cBlocksAllocated} differs from the ${this.mapped} blocks the map uses (an interrupted write; check -r fixes it)`);
    if (warnings.length) out.warnings = warnings;
    return out;
  }

  async actualSize(): Promise<number | undefined> {
    return this.storage.allocatedSize?.();
  }
}

// ---- Opening: the header validated, the block map scanned, the parent found by uuid ----

/** Header bytes, decoded and checked against the file. */
export async function loadHeader(storage: Storage): Promise<{ header: VdiHeader; raw: Buffer }> {
  const len = Math.min(storage.size, VDI_HEADER_BYTES);
  if (len < VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE) {
    throw new VdiskError('E_FORMAT', `${storage.name}: ${storage.size} bytes is too short for a VDI image`);
  }
  const raw = Buffer.alloc(len);
  await storage.read(raw, 0);
  const header = decodeHeader(raw, storage.name);
  validateHeader(header, storage.size, storage.name);
  return { header, raw };
}

/** The uuids of a VDI file, or undefined when it is not one (for the parent search). */
async function peekUuids(storage: Storage): Promise<{ create: string; modify: string } | undefined> {
  if (storage.size < VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE) return undefined;
  const raw = Buffer.alloc(VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE);
  await storage.read(raw, 0);
  if (raw.readUInt32LE(VdiField.u32Signature) !== VDI_SIGNATURE) return undefined;
  const h = decodeHeader(raw, storage.name);
  return { create: h.uuidCreate, modify: h.uuidModify };
}

/**
 * Find the parent of a differencing image among the files in its folder: the VDI
 * whose uuidCreate is the child's uuidLinkage, preferring one whose uuidModify is
 * the child's uuidParentModify. Returns the resolved name.
 */
async function findParentByUuid(location: ImageLocation, self: string, h: VdiHeader): Promise<{ name: string; modifyMatches: boolean }> {
  const selfRef = location.relativeName(location.name);
  let fallback: string | undefined;
  let scanned = 0;
  const refused: string[] = [];
  for (const sibling of (await location.siblings()).sort()) {
    const ref = location.relativeName(sibling);
    if (ref === selfRef) continue;
    let name: string;
    try {
      name = location.resolve(ref);
    } catch (err) {
      // A link out of the allowed folders is not looked into, but the user hears of it.
      if (isVdiskError(err) && err.code === 'E_PATH') refused.push(ref);
      continue;
    }
    let s: Storage | undefined;
    try {
      s = await location.open(name, { readOnly: true });
      scanned++;
      const ids = await peekUuids(s);
      if (!ids || ids.create !== h.uuidLinkage) continue;
      if (ids.modify === h.uuidParentModify) return { name, modifyMatches: true };
      fallback ??= name;
    } catch (err) {
      // Folders, unreadable and damaged files are not the parent; keep looking.
      if (!isVdiskError(err)) throw err;
      if (err.code === 'E_PATH') refused.push(ref);
    } finally {
      await s?.close().catch(() => undefined);
    }
  }
  if (fallback) return { name: fallback, modifyMatches: false };
  const skipped = refused.length === 0 ? '' : `; not looked into, as they lead outside the allowed folders (through a symbolic link): ${refused.join(', ')} (--allow-path to follow)`;
  throw new VdiskError('E_CHAIN', `${self}: parent with uuid ${h.uuidLinkage} (uuidLinkage) not found among ${scanned} files in the image's folder (give it explicitly)${skipped}`);
}

/** Open a validated VDI image on `storage`, following its parent. */
export async function openVdi(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<VdiImage> {
  const { header, raw } = await loadHeader(storage);
  const map = await readBlockMap(storage, header);
  const scan = scanBlockMap(header, map, storage.size, storage.name);
  const fatal = scan.pointsNowhere[0];
  if (fatal) throw new VdiskError('E_CORRUPT', fatal.message);
  const readOnly = opts.readOnly || storage.readOnly;
  const dup = scan.duplicates[0];
  if (dup && !readOnly) throw new VdiskError('E_CORRUPT', `${dup.message} (writing could change both; open read-only or run check)`);
  const warnings: string[] = [];
  let parent: DiskImage | undefined;
  let ownsParent = false;
  const differencing = header.type === VdiImageType.DIFF || header.type === VdiImageType.UNDO;
  if (differencing) {
    if (header.uuidLinkage === header.uuidCreate) throw new VdiskError('E_CHAIN', `${storage.name}: uuidLinkage names the image itself (${header.uuidCreate})`);
    if (opts.parent) {
      parent = opts.parent;
      if (parent instanceof VdiImage && parent.uuid !== header.uuidLinkage) {
        warnings.push(`the given parent's uuid ${parent.uuid} is not uuidLinkage ${header.uuidLinkage}`);
      }
    } else if (!opts.noBacking) {
      const found = await findParentByUuid(location, storage.name, header);
      parent = await opts.openParent(found.name);
      ownsParent = true;
      if (!found.modifyMatches) {
        warnings.push(`parent ${found.name} was modified after this image was made (uuidModify is not uuidParentModify ${header.uuidParentModify})`);
      }
    }
    // Opened without its parent (noBacking: info on a broken chain, rebase -u to repair
    // the link): writes that need the parent's data are refused by the image.
  }
  const image = new VdiImage({ storage, header, headerRaw: raw, map, owner: scan.owner, nextSlot: scan.nextSlot, readOnly, parent, ownsParent, warnings, parentMissing: differencing && !parent, location });
  if (!image.readOnly && needsSettling(header, scan, storage.size)) {
    try {
      await image.settle();
    } catch (err) {
      if (ownsParent) await parent?.close().catch(() => undefined);
      throw err;
    }
  }
  return image;
}

/** True when a crash left holes, a tail or a stale count that other writers would trip over. */
function needsSettling(h: VdiHeader, scan: BlockMapScan, fileSize: number): boolean {
  if (h.cBlocksAllocated !== scan.mapped) return true;
  if (scan.mapped !== scan.nextSlot) return true;
  // Bytes past a preallocated image's last block are left alone.
  return h.type !== VdiImageType.FIXED && fileSize > h.offData + scan.nextSlot * blockStride(h);
}
