/**
 * A VDI image as a BlockDevice: reads and writes through the block map, allocating
 * data blocks at the end of the file. Write order (DESIGN.md): data block, then its
 * map entry, then the header's cBlocksAllocated; releasing a block clears its map
 * entry first and moves the last data block into the hole, so a crash leaves at worst
 * a leak that the next writable open (or `check -r`) compacts away.
 */
import type { DiskImage, Extent, ImageInfo } from '../../device/block-device.js';
import { BlockDeviceBase, IO_CHUNK } from '../../device/base.js';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { blockStride, encodeMapEntry, isAllocated } from './blockmap.js';
import {
  VDI_BLOCK_FREE,
  VDI_BLOCK_ZERO,
  VDI_HEADER1PLUS_SIZE,
  VDI_MAP_ENTRY_SIZE,
  VDI_TYPE_NAMES,
  VdiImageType,
  encodeHeader,
  newUuid,
  type VdiHeader,
} from './header.js';

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
  readonly size: number;
  readonly backing?: DiskImage;
  private readonly storage: Storage;
  private readonly header: VdiHeader;
  private readonly headerRaw: Buffer;
  private readonly map: Uint32Array;
  private readonly owner: Int32Array;
  private nextSlot: number;
  private mapped: number;
  private readonly ownsParent: boolean;
  private readonly warnings: string[];
  private modified = false;

  constructor(p: VdiImageParts) {
    super();
    this.storage = p.storage;
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

  /** Fill `buf` with what lies under this image at `offset`: the parent's data, or zeros. */
  private async readBelow(buf: Uint8Array, offset: number): Promise<void> {
    const p = this.backing;
    const inParent = p ? Math.max(0, Math.min(buf.length, p.size - offset)) : 0;
    if (p && inParent > 0) await p.read(buf.subarray(0, inParent), offset);
    buf.fill(0, inParent);
  }

  protected async readAt(buf: Uint8Array, offset: number): Promise<void> {
    for (const pc of this.pieces(offset, buf.length)) {
      const piece = buf.subarray(pc.at, pc.at + pc.length);
      const e = this.map[pc.block]!;
      if (isAllocated(e)) await this.storage.read(piece, this.dataOffset(e) + pc.within);
      else if (e === VDI_BLOCK_FREE) await this.readBelow(piece, offset + pc.at);
      else piece.fill(0);
    }
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    this.noteModified();
    let allocated = false;
    for (const pc of this.pieces(offset, buf.length)) {
      const piece = buf.subarray(pc.at, pc.at + pc.length);
      const e = this.map[pc.block]!;
      if (isAllocated(e)) {
        await this.storage.write(piece, this.dataOffset(e) + pc.within);
      } else {
        await this.allocate(pc, piece, e);
        allocated = true;
      }
    }
    if (allocated || this.headerStale) await this.writeHeader();
  }

  /** Give virtual block `pc.block` a data block holding `piece` over what it read before. */
  private async allocate(pc: BlockPiece, piece: Uint8Array, was: number): Promise<void> {
    const h = this.header;
    const slot = this.nextSlot;
    if (slot >= h.cBlocks) throw new VdiskError('E_CORRUPT', `${this.filename}: no free data block left (cBlocks ${h.cBlocks}); run check`);
    const blockStart = pc.block * h.cbBlock;
    let data: Uint8Array;
    if (pc.length === h.cbBlock && h.cbBlockExtra === 0) {
      data = piece;
    } else {
      const b = Buffer.alloc(this.stride);
      const body = b.subarray(h.cbBlockExtra);
      if (was === VDI_BLOCK_FREE && this.backing) await this.readBelow(body.subarray(0, Math.min(h.cbBlock, this.size - blockStart)), blockStart);
      body.set(piece, pc.within);
      data = b;
    }
    // 1. data, 2. map entry, 3. (caller) header count.
    await this.storage.write(data, h.offData + slot * this.stride);
    await this.storage.write(encodeMapEntry(slot), h.offBlocks + pc.block * VDI_MAP_ENTRY_SIZE);
    this.map[pc.block] = slot;
    this.owner[slot] = pc.block;
    this.nextSlot = slot + 1;
    this.mapped++;
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
  private async compact(): Promise<void> {
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
    const buf = Buffer.alloc(Math.min(IO_CHUNK, this.stride));
    const src = this.header.offData + from * this.stride;
    const dst = this.header.offData + to * this.stride;
    for (let done = 0; done < this.stride; ) {
      const n = Math.min(buf.length, this.stride - done);
      await this.storage.read(buf.subarray(0, n), src + done);
      await this.storage.write(buf.subarray(0, n), dst + done);
      done += n;
    }
    await this.storage.write(encodeMapEntry(to), this.header.offBlocks + block * VDI_MAP_ENTRY_SIZE);
    this.map[block] = to;
    this.owner[to] = block;
    this.owner[from] = -1;
  }

  /**
   * Bring the file back to the shape other writers expect after a crash: no holes
   * between data blocks, no bytes past the last one, cBlocksAllocated equal to the
   * map's count. Returns what it changed (for check's report).
   */
  async settle(): Promise<{ movedOrTrimmed: boolean; countFixed: boolean }> {
    this.writable();
    const countFixed = this.header.cBlocksAllocated !== this.mapped;
    const before = this.storage.size;
    let holes = false;
    for (let n = 0; n < this.nextSlot; n++) if (this.owner[n]! < 0) holes = true;
    await this.compact();
    return { movedOrTrimmed: holes || this.storage.size !== before, countFixed };
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
    if (this.headerStale) await this.writeHeader();
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
    if (h.cBlocksAllocated !== this.mapped) warnings.push(`cBlocksAllocated ${h.cBlocksAllocated} differs from the ${this.mapped} blocks the map uses (an interrupted write; check -r fixes it)`);
    if (warnings.length) out.warnings = warnings;
    return out;
  }

  async actualSize(): Promise<number | undefined> {
    return this.storage.allocatedSize?.();
  }
}
