/**
 * A VDI image as a BlockDevice: reads and writes through the block map, allocating
 * data blocks at the end of the file. Write order: data block, then the header's
 * cBlocksAllocated (the allocation pointer every VDI writer appends at), then the
 * map entry; releasing a block clears its map entry first, moves the last data block
 * into the hole and lowers the count last. So cBlocksAllocated is never behind the
 * map and a crash leaves at worst a leak that the next writable open (or `check -r`)
 * compacts away.
 */
import { dirname, resolve } from 'node:path';
import { readBelow } from '../../device/below.js';
import type { CompactOptions, CompactResult, DiskImage, Extent, ImageInfo, ResizeImageOptions } from '../../device/block-device.js';
import { ProgressMeter } from '../../device/progress.js';
import { BlockDeviceBase } from '../../device/base.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import { copyBytes } from '../../storage/copy.js';
import { filterStorage } from '../../storage/filter.js';
import type { ImageLocation } from '../../storage/location.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import { isZero } from '../../device/zero.js';
import { planGrowth } from './maintain.js';
import {
  VDI_MAX_BLOCKS,
  blockStride,
  encodeMapEntries,
  encodeMapEntry,
  isAllocated,
  NULL_UUID,
  VDI_BLOCK_FREE,
  VDI_BLOCK_ZERO,
  VDI_DATA_ALIGN,
  VDI_HEADER1PLUS_SIZE,
  VDI_MAP_ENTRY_SIZE,
  VDI_MAX_DISK_SIZE,
  VDI_MAX_LCHS_CYLINDERS,
  VDI_MAX_PCHS_CYLINDERS,
  VDI_PREHEADER_SIZE,
  VDI_TYPE_NAMES,
  VdiImageType,
  alignUp,
  encodeHeader,
  followGeometry,
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
export class VdiImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'vdi';
  readonly filename: string;
  readonly readOnly: boolean;
  /** Virtual size (changes with {@link resize}). */
  size: number;
  /** The parent (changes with {@link setBacking}). */
  backing?: DiskImage;
  private storage: Storage;
  /** Files replaced by a relayout, kept open (and locked) until close. */
  private readonly retired: Storage[] = [];
  private readonly location?: ImageLocation;
  private readonly header: VdiHeader;
  private readonly headerRaw: Buffer;
  private map: Uint32Array;
  private owner: Int32Array;
  private nextSlot: number;
  private mapped: number;
  private ownsParent: boolean;
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

  /** True for a differencing image opened without its parent. */
  private parentMissing: boolean;

  /** Refuse `what` when the parent it needs was not opened. */
  private needParent(what: string): void {
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

  private get stride(): number {
    return blockStride(this.header);
  }

  /** Offset in the file of data block `slot`'s first byte of block data (after the extra bytes). */
  private dataOffset(slot: number): number {
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

  /** Give virtual block `pc.block` a data block holding `piece` over what it read before. */
  private async allocate(pc: BlockPiece, piece: Uint8Array, was: number): Promise<void> {
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

  private async commitMap(): Promise<void> {
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

  /** True when the header on disk lags behind (a new modification uuid, a changed count). */
  private headerStale = false;

  /** First write since open: a new uuidModify, as VirtualBox's VD layer does. */
  private noteModified(): void {
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

  /** True when whole blocks can be deallocated (not in a preallocated image). */
  private get canDeallocate(): boolean {
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

  /** Point block `block` at `marker` (ZERO or FREE) and give its data block back. */
  private async release(block: number, marker: number): Promise<void> {
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
   */
  private async compactSlots(): Promise<void> {
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

  private async move(from: number, to: number): Promise<void> {
    const block = this.owner[from]!;
    await copyBytes(this.storage, this.header.offData + from * this.stride, this.storage, this.header.offData + to * this.stride, this.stride);
    await this.storage.write(encodeMapEntry(to), this.header.offBlocks + block * VDI_MAP_ENTRY_SIZE);
    this.map[block] = to;
    this.owner[to] = block;
    this.owner[from] = -1;
    this.moveMeter?.add(this.stride);
  }

  /** Where a resize counts the bytes of the data blocks it moves. */
  private moveMeter?: ProgressMeter;

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

  // ---- Maintenance: resize, compact, setBacking (DiskImage hooks) ----

  /** Write `next` as the header in one write (one sector: the switch point of every layout change). */
  private async switchHeader(next: VdiHeader): Promise<void> {
    await this.storage.write(encodeHeader(next, this.headerRaw), 0);
    Object.assign(this.header, next);
    this.headerStale = false;
  }

  /** Rebuild owner/nextSlot/mapped from the map (after a layout switch renumbered it). */
  private reindex(): void {
    this.owner = new Int32Array(Math.max(this.header.cBlocks, this.nextSlot)).fill(-1);
    this.mapped = 0;
    this.nextSlot = 0;
    for (let i = 0; i < this.map.length; i++) {
      const e = this.map[i]!;
      if (!isAllocated(e)) continue;
      this.owner[e] = i;
      this.mapped++;
      if (e + 1 > this.nextSlot) this.nextSlot = e + 1;
    }
  }

  /**
   * Change the virtual size in place. Growing writes the new block map entries where
   * nothing reads them yet (after the old map; before it; or, when neither has room,
   * in the space of the first data blocks, which are first copied to the end and
   * repointed one by one), then switches to the new layout with one header write.
   * When none of that has room (the map fills its space and every data block number
   * is in use), the image is first rewritten with room for the map (relayout).
   * Shrinking first writes the new size with the old block count (so the part cut
   * off is invisible at once), then releases the blocks past the new end, moves the
   * last data blocks into the holes, truncates, and lowers cBlocks last. A crash
   * leaves the old or the new size and content, with at most leaked blocks.
   */
  async resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    this.writable();
    await this.commitMap();
    this.needParent('resize');
    const h = this.header;
    if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % 512 !== 0) {
      throw new VdiskError('E_USAGE', `${this.filename}: new size ${newSize} is not a positive multiple of 512 bytes`);
    }
    if (newSize > VDI_MAX_DISK_SIZE) throw new VdiskError('E_USAGE', `${this.filename}: ${newSize} bytes is too large for a VDI image (cbDisk)`);
    const blocks = Math.ceil(newSize / h.cbBlock);
    if (blocks > VDI_MAX_BLOCKS) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: ${newSize} bytes needs ${blocks} blocks (cBlocks), more than the ${VDI_MAX_BLOCKS} vdisk handles`);
    if (newSize === this.size) return;
    const meter = new ProgressMeter(0, opts.onProgress);
    this.moveMeter = meter;
    try {
      if (newSize < this.size) await this.shrinkTo(newSize, blocks);
      else await this.growTo(newSize, blocks);
    } finally {
      this.moveMeter = undefined;
    }
    meter.finish();
  }

  /** The header fields that follow the size: cbDisk, cBlocks and both CHS geometries (heads and sectors kept). */
  private sized(newSize: number, blocks: number): VdiHeader {
    const h = this.header;
    const next: VdiHeader = { ...h, cbDisk: newSize, cBlocks: blocks, legacyGeometry: followGeometry(h.legacyGeometry, newSize, VDI_MAX_PCHS_CYLINDERS) };
    if (h.lchsGeometry) next.lchsGeometry = followGeometry(h.lchsGeometry, newSize, VDI_MAX_LCHS_CYLINDERS);
    return next;
  }

  private async shrinkTo(newSize: number, blocks: number): Promise<void> {
    const h = this.header;
    this.noteModified();
    // 1. The new size with the block count kept (cBlocks above what cbDisk needs is
    //    valid): from here on what lies past the new end is invisible.
    if (newSize !== this.size) {
      await this.switchHeader({ ...this.sized(newSize, h.cBlocks), cBlocksAllocated: this.mapped });
      this.size = newSize;
      await this.storage.flush();
    }
    // 2. Zero what stays of the last block past the new end, so a later grow reads zeros there.
    const last = this.map[blocks - 1]!;
    const cut = newSize - (blocks - 1) * h.cbBlock;
    if (isAllocated(last) && cut < h.cbBlock) await this.storage.write(Buffer.alloc(h.cbBlock - cut), this.dataOffset(last) + cut);
    // 3. Release the blocks past the new end (map entries first), move the last data
    //    blocks into the holes, write the count, truncate.
    for (let i = blocks; i < h.cBlocks; i++) if (isAllocated(this.map[i]!)) await this.release(i, VDI_BLOCK_FREE);
    let moves = 0;
    for (let n = this.mapped; n < this.nextSlot; n++) if (this.owner[n]! >= 0) moves++;
    this.moveMeter?.more(moves * this.stride);
    this.headerStale = true;
    await this.compactSlots();
    await this.storage.flush();
    // 4. Every data block left is now below `mapped` <= blocks: the block count follows.
    await this.switchHeader({ ...h, cBlocks: blocks, cBlocksAllocated: this.mapped });
    this.map = this.map.slice(0, blocks);
    this.reindex();
    await this.storage.flush();
  }

  private async growTo(newSize: number, blocks: number, relaidOut = false): Promise<void> {
    const h = this.header;
    const oldSize = this.size;
    // An interrupted grow can leave more map entries than the size needs (cBlocks past
    // the last visible block); bring cBlocks back to the size first.
    const visible = Math.ceil(oldSize / h.cbBlock);
    if (h.cBlocks > visible) await this.shrinkTo(oldSize, visible);
    const oldBlocks = h.cBlocks;
    const stride = this.stride;
    const fixed = h.type === VdiImageType.FIXED;
    const mapBytes = blocks * VDI_MAP_ENTRY_SIZE;
    // A partial last block over a bigger parent must read zeros past the old end: it gets a block of its own.
    const lastOld = oldBlocks - 1;
    const tailFrom = oldSize - lastOld * h.cbBlock;
    const parentShows = this.backing !== undefined && this.backing.size > oldSize;
    const tailBlock = tailFrom < h.cbBlock && this.map[lastOld] === VDI_BLOCK_FREE && parentShows;

    // Plan where the new map goes, before changing anything (maintain.ts).
    const plan = planGrowth(h, blocks, { owner: this.owner, nextSlot: this.nextSlot }, tailBlock);
    if (!plan.fits && this.location && !relaidOut) {
      // No room in place (the map fills its space and no free data block number is
      // left to move the first blocks to): rewrite the image with room for the new
      // map, then grow that in place.
      await this.relayout(blocks);
      return this.growTo(newSize, blocks, true);
    }
    if (!plan.fits) {
      throw new VdiskError(
        'E_UNSUPPORTED',
        `${this.filename}: the block map for ${blocks} blocks needs the space of the first ${plan.shift} data blocks, and with ${this.mapped} of ${oldBlocks} blocks allocated there is no free data block number (cBlocks ${plan.count}) to move them to; compact the image or convert it`,
      );
    }
    const { mapAt, shift, firstDest, tailSlot } = plan;

    this.noteModified();
    // 0. More block numbers when the moves need them: FREE entries in the slack after
    //    the map (read by nothing yet), then a header with more cBlocks and the same size.
    if (plan.count > oldBlocks) {
      await this.storage.write(Buffer.alloc((plan.count - oldBlocks) * VDI_MAP_ENTRY_SIZE, 0xff), h.offBlocks + oldBlocks * VDI_MAP_ENTRY_SIZE);
      await this.storage.flush();
      await this.switchHeader({ ...h, cBlocks: plan.count, cBlocksAllocated: this.mapped });
      const map = new Uint32Array(plan.count).fill(VDI_BLOCK_FREE);
      map.set(this.map);
      this.map = map;
      const owner = new Int32Array(plan.count).fill(-1);
      owner.set(this.owner.subarray(0, Math.min(this.owner.length, plan.count)));
      this.owner = owner;
    }
    // 1. Move the data blocks in the new map's way to the end (data, then map entry).
    this.moveMeter?.more(plan.toMove * stride);
    let dest = firstDest;
    for (let n = 0; n < Math.min(shift, this.nextSlot); n++) {
      if (this.owner[n]! < 0) continue;
      await this.move(n, dest);
      dest++;
      if (dest > this.nextSlot) this.nextSlot = dest;
    }
    // 2. Make the old last block read zeros past the old end (invisible until the switch).
    if (tailFrom < h.cbBlock) {
      const e = this.map[lastOld]!;
      if (isAllocated(e)) {
        await this.storage.write(Buffer.alloc(h.cbBlock - tailFrom), this.dataOffset(e) + tailFrom);
      } else if (tailBlock) {
        const body = Buffer.alloc(h.cbBlock);
        await this.readAt(body.subarray(0, tailFrom), lastOld * h.cbBlock);
        this.nextSlot = tailSlot;
        await this.allocate({ block: lastOld, within: 0, at: 0, length: h.cbBlock }, body, VDI_BLOCK_ZERO);
        // Its map entry must be on disk before the switch (step 5 may write only the new entries).
        await this.commitMap();
      }
    }
    // 3. The new map, in memory: renumbered by `shift`; new blocks FREE, ZERO where a
    //    parent would show through, or (fixed) preallocated after the last data block.
    const map = new Uint32Array(blocks);
    for (let i = 0; i < oldBlocks; i++) {
      const e = this.map[i]!;
      map[i] = isAllocated(e) ? e - shift : e;
    }
    let slotsAfter = Math.max(0, this.nextSlot - shift);
    for (let i = oldBlocks; i < blocks; i++) {
      if (fixed) map[i] = slotsAfter++;
      else map[i] = this.backing && i * h.cbBlock < this.backing.size ? VDI_BLOCK_ZERO : VDI_BLOCK_FREE;
    }
    const offData = h.offData + shift * stride;
    // 4. The file must reach the new data area (and hold a fixed image's new blocks, zeroed).
    const dataEnd = offData + Math.max(0, this.nextSlot - shift) * stride;
    if (fixed && this.storage.size > dataEnd) await this.storage.truncate(dataEnd);
    const end = offData + slotsAfter * stride;
    if (this.storage.size < end) await this.storage.truncate(end);
    // 5. Write the map where the old header reads nothing: only the new entries when in place.
    const raw = encodeMapEntries(map, 0, blocks, mapBytes);
    if (mapAt === h.offBlocks) await this.storage.write(raw.subarray(oldBlocks * VDI_MAP_ENTRY_SIZE), mapAt + oldBlocks * VDI_MAP_ENTRY_SIZE);
    else await this.storage.write(raw, mapAt);
    await this.storage.flush();
    // 6. Switch: one header write names the new map, data area, block count and size.
    const next = this.sized(newSize, blocks);
    next.offBlocks = mapAt;
    next.offData = offData;
    next.cBlocksAllocated = this.mapped + (fixed ? blocks - oldBlocks : 0);
    await this.switchHeader(next);
    this.map = map;
    this.size = newSize;
    this.reindex();
    await this.storage.flush();
  }

  /**
   * Rewrite the image, content and size unchanged, with its block map followed by
   * room for `entries` entries (the data area starts at the next MiB, as VirtualBox
   * lays images out): header, map and data blocks go into a temp file next to the
   * image, which is flushed and then renamed over it (the rename is durable when it
   * returns). A crash before the rename leaves the image as it was (and a temp file
   * the next attempt replaces); after it, the new layout. The old file stays open
   * (holding the write lock on the image's name) until close.
   */
  private async relayout(entries: number): Promise<void> {
    const loc = this.location!;
    const h = this.header;
    const stride = this.stride;
    const tmp = `${loc.name}.vdisk-tmp`;
    if (await loc.exists(tmp)) await loc.remove(tmp);
    const out = await loc.create(tmp);
    const offData = alignUp(h.offBlocks + entries * VDI_MAP_ENTRY_SIZE, VDI_DATA_ALIGN);
    const used = this.nextSlot * stride;
    this.moveMeter?.more(used);
    try {
      // Bytes before the map as they are (pre-header, header, anything after it), then the new header over them.
      const head = Buffer.alloc(h.offBlocks);
      await this.storage.read(head, 0);
      await out.write(head, 0);
      const next: VdiHeader = { ...h, offData, cBlocksAllocated: this.mapped };
      await out.write(encodeHeader(next, this.headerRaw), 0);
      const raw = encodeMapEntries(this.map, 0, this.map.length, offData - h.offBlocks);
      await out.write(raw, h.offBlocks);
      // Data blocks keep their numbers: the data area is copied as it is.
      await copyBytes(this.storage, h.offData, out, offData, used, (n) => this.moveMeter?.add(n));
      await out.flush();
    } catch (err) {
      await out.close().catch(() => undefined);
      throw err;
    }
    await loc.rename(tmp, loc.name);
    this.retired.push(this.storage);
    this.storage = filterStorage(out, {}, this.filename);
    h.offData = offData;
    h.cBlocksAllocated = this.mapped;
  }

  /**
   * Give back space: data blocks that read only zeros are released (FREE when what
   * lies below reads zeros too, else ZERO so a parent's data stays hidden), blocks
   * no map entry names are reclaimed, the last data blocks move into the holes and
   * the file is truncated. Guest content is unchanged, so uuidModify is kept and
   * children stay linked.
   */
  async compact(opts: CompactOptions = {}): Promise<CompactResult> {
    this.writable();
    await this.commitMap();
    this.needParent('compact');
    if (!this.canDeallocate) {
      throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a fixed (preallocated) VDI keeps every block; convert it to a dynamic one to compact it`);
    }
    const h = this.header;
    const sizeBefore = this.storage.size;
    const slotsInFile = sizeBefore > h.offData ? Math.floor((sizeBefore - h.offData) / this.stride) : 0;
    let released = 0;
    for (let n = 0; n < Math.min(slotsInFile, this.owner.length); n++) if (this.owner[n]! < 0) released++;
    const buf = Buffer.alloc(Math.min(IO_CHUNK, h.cbBlock));
    for (let i = 0; i < h.cBlocks; i++) {
      const e = this.map[i]!;
      if (isAllocated(e)) {
        const start = i * h.cbBlock;
        const len = Math.min(h.cbBlock, this.size - start);
        if (await this.readsZero(buf, (b, off) => this.storage.read(b, this.dataOffset(e) + off), len)) {
          const belowZero = await this.readsZero(buf, (b, off) => readBelow(this.backing, b, start + off), len);
          await this.release(i, belowZero ? VDI_BLOCK_FREE : VDI_BLOCK_ZERO);
          released++;
        }
      }
      opts.onProgress?.(i + 1, h.cBlocks);
    }
    await this.compactSlots();
    await this.storage.flush();
    return { releasedBlocks: released, sizeBefore, sizeAfter: this.storage.size };
  }

  /** True when `len` bytes read through `read` in chunks of `buf` are all zero. */
  private async readsZero(buf: Buffer, read: (b: Buffer, off: number) => Promise<void>, len: number): Promise<boolean> {
    for (let off = 0; off < len; off += buf.length) {
      const piece = buf.subarray(0, Math.min(buf.length, len - off));
      await read(piece, off);
      if (!isZero(piece)) return false;
    }
    return true;
  }

  /**
   * Point this image at another parent (only the link: uuidLinkage and
   * uuidParentModify become the new parent's uuids; the type becomes diff), or with
   * `undefined` make it a normal standalone image. A VDI finds its parent by uuid in
   * its own folder, so the parent must be a VDI there. One header write.
   */
  async setBacking(parent: DiskImage | undefined, ref?: string): Promise<void> {
    this.writable();
    await this.commitMap();
    const h = this.header;
    let link = { type: h.type, uuidLinkage: NULL_UUID, uuidParentModify: NULL_UUID };
    if (parent === undefined) {
      if (h.type === VdiImageType.DIFF || h.type === VdiImageType.UNDO) link.type = VdiImageType.NORMAL;
    } else {
      if (!(parent instanceof VdiImage)) {
        throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a VDI links to its parent by uuid, so the parent must be a VDI image (${parent.filename} is ${parent.format})`);
      }
      if (h.type === VdiImageType.FIXED) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a fixed VDI cannot have a parent (u32Type fixed)`);
      // `ref` is not stored: a VDI names its parent only by uuid.
      if (dirname(resolve(parent.filename)) !== dirname(resolve(this.filename))) {
        throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a VDI finds its parent by uuid among the files of its own folder; ${ref ?? parent.filename} is in another folder`);
      }
      for (let p: DiskImage | undefined = parent; p; p = p.backing) {
        if (p instanceof VdiImage && p.uuid === h.uuidCreate) throw new VdiskError('E_CHAIN', `${this.filename}: ${parent.filename} is this image or one of its children (uuid ${h.uuidCreate}); that would make a loop`);
      }
      link = { type: h.type === VdiImageType.NORMAL ? VdiImageType.DIFF : h.type, uuidLinkage: parent.uuid, uuidParentModify: parent.modificationUuid };
    }
    this.noteModified();
    await this.switchHeader({ ...h, ...link, cBlocksAllocated: this.mapped });
    await this.storage.flush();
    if (this.backing !== parent && this.ownsParent) await this.backing?.close();
    this.backing = parent;
    this.ownsParent = false;
    this.parentMissing = false;
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
