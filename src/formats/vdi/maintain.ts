/**
 * How a VDI grows in place: where the block map for more blocks goes and which data
 * blocks move out of its way, decided before anything is written (growTo below carries
 * the plan out, data first and the header switch last). The strategies, in order:
 *   1. the new entries fit after the old ones, before offData: nothing moves;
 *   2. the whole new map fits between the header and the old map: nothing moves;
 *   3. the map moves after the old one into the space of the first data blocks,
 *      which are copied to the end first (they need free data block numbers);
 *   4. as 3, with the map first extended into its slack for more block numbers
 *      (cBlocks above what the size needs, which VirtualBox and qemu accept).
 * When none fits, the image is rewritten with room for the map (relayout below).
 */
import { dirname, resolve } from 'node:path';
import { readBelow } from '../../device/below.js';
import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import { ProgressMeter } from '../../device/progress.js';
import { isZero } from '../../device/zero.js';
import { VdiskError } from '../../errors.js';
import { copyBytes } from '../../storage/copy.js';
import { filterStorage } from '../../storage/filter.js';
import { IO_CHUNK } from '../../storage/storage.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import {
  NULL_UUID,
  VDI_BLOCK_FREE,
  VDI_BLOCK_ZERO,
  VDI_DATA_ALIGN,
  VDI_MAP_ENTRY_SIZE,
  VDI_MAX_BLOCKS,
  VDI_MAX_DISK_SIZE,
  VDI_MAX_LCHS_CYLINDERS,
  VDI_MAX_PCHS_CYLINDERS,
  VDI_PREHEADER_SIZE,
  VDI_SECTOR_SIZE,
  VdiImageType,
  alignUp,
  blockStride,
  encodeHeader,
  encodeMapEntries,
  followGeometry,
  isAllocated,
  type VdiHeader,
} from './layout.js';

/**
 * What maintenance works on: a VDI image's block map state and the primitives of
 * image.ts that keep it consistent (VdiImage is one; this room does not import it).
 */
export interface VdiMaintained {
  readonly filename: string;
  size: number;
  backing?: DiskImage;
  storage: Storage;
  readonly retired: Storage[];
  readonly location?: ImageLocation;
  readonly header: VdiHeader;
  readonly headerRaw: Buffer;
  map: Uint32Array;
  owner: Int32Array;
  nextSlot: number;
  mapped: number;
  ownsParent: boolean;
  parentMissing: boolean;
  headerStale: boolean;
  moveMeter?: ProgressMeter;
  readonly stride: number;
  readonly canDeallocate: boolean;
  mustBeWritable(): void;
  needParent(what: string): void;
  commitMap(): Promise<void>;
  noteModified(): void;
  dataOffset(slot: number): number;
  allocate(pc: { block: number; within: number; at: number; length: number }, piece: Uint8Array, was: number): Promise<void>;
  release(block: number, marker: number): Promise<void>;
  compactSlots(): Promise<void>;
  move(from: number, to: number): Promise<void>;
  readVirtual(buf: Uint8Array, offset: number): Promise<void>;
  /** True when `d` is a VDI image (a VDI links only to those, by uuid). */
  isVdi(d: DiskImage): d is DiskImage & { readonly uuid: string; readonly modificationUuid: string };
}

/** Where a grown block map goes and what moves for it. */
export interface GrowthPlan {
  /** File offset of the new map (offBlocks after the switch). */
  mapAt: number;
  /** Data blocks the data area moves up by (their numbers drop by as much). */
  shift: number;
  /** Allocated data blocks in the new map's way, to copy to the end first. */
  toMove: number;
  /** The first data block number they are copied to. */
  firstDest: number;
  /** The data block number a new tail block gets (a partial last block over a bigger parent). */
  tailSlot: number;
  /** True when the plan has the data block numbers it needs. */
  fits: boolean;
  /** cBlocks while moving (above the old count in strategy 4). */
  count: number;
}

/**
 * The plan for growing `h` to `blocks` blocks, given which data block numbers are in
 * use (`owner[n] >= 0`, below `nextSlot`) and whether the old last block needs a
 * block of its own (`tailBlock`); `fits` is false when only a relayout makes room.
 */
export function planGrowth(h: VdiHeader, blocks: number, used: { owner: Int32Array; nextSlot: number }, tailBlock: boolean): GrowthPlan {
  const oldBlocks = h.cBlocks;
  const stride = blockStride(h);
  const mapBytes = blocks * VDI_MAP_ENTRY_SIZE;
  const headerEnd = VDI_PREHEADER_SIZE + h.cbHeader;
  /** The move plan when `count` data block numbers (cBlocks) are usable while moving. */
  const planFor = (count: number, mapAt: number): GrowthPlan => {
    const shift = Math.max(0, Math.ceil((mapAt + mapBytes - h.offData) / stride));
    let toMove = 0;
    for (let n = 0; n < Math.min(shift, used.nextSlot); n++) if (used.owner[n]! >= 0) toMove++;
    const firstDest = Math.max(used.nextSlot, shift);
    const tailSlot = Math.max(toMove > 0 ? firstDest + toMove : used.nextSlot, shift);
    const fits = (toMove === 0 || firstDest + toMove <= count) && (!tailBlock || tailSlot < count);
    return { mapAt, shift, toMove, firstDest, tailSlot, fits, count };
  };
  // 1. In place.
  let plan = planFor(oldBlocks, h.offBlocks);
  if (h.offBlocks + mapBytes > h.offData) {
    const before = alignUp(headerEnd, VDI_SECTOR_SIZE);
    if (before + mapBytes <= h.offBlocks) {
      // 2. Before the old map.
      plan = { ...planFor(oldBlocks, before), shift: 0 };
    } else {
      // 3. After the old map, over the first data blocks.
      plan = planFor(oldBlocks, alignUp(h.offBlocks + oldBlocks * VDI_MAP_ENTRY_SIZE, VDI_SECTOR_SIZE));
      if (!plan.fits) {
        // 4. More data block numbers: extend the map into its slack with the size unchanged.
        const room = Math.min(VDI_MAX_BLOCKS, Math.floor((h.offData - h.offBlocks) / VDI_MAP_ENTRY_SIZE));
        if (room > oldBlocks) plan = planFor(room, alignUp(h.offBlocks + room * VDI_MAP_ENTRY_SIZE, VDI_SECTOR_SIZE));
      }
    }
  }
  return plan;
}

/** Write `next` as the header in one write (one sector: the switch point of every layout change). */
export async function switchHeader(img: VdiMaintained, next: VdiHeader): Promise<void> {
  await img.storage.write(encodeHeader(next, img.headerRaw), 0);
  Object.assign(img.header, next);
  img.headerStale = false;
}

/** Rebuild owner/nextSlot/mapped from the map (after a layout switch renumbered it). */
function reindex(img: VdiMaintained): void {
  img.owner = new Int32Array(Math.max(img.header.cBlocks, img.nextSlot)).fill(-1);
  img.mapped = 0;
  img.nextSlot = 0;
  for (let i = 0; i < img.map.length; i++) {
    const e = img.map[i]!;
    if (!isAllocated(e)) continue;
    img.owner[e] = i;
    img.mapped++;
    if (e + 1 > img.nextSlot) img.nextSlot = e + 1;
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
export async function resizeVdi(img: VdiMaintained, newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
  img.mustBeWritable();
  await img.commitMap();
  img.needParent('resize');
  const h = img.header;
  if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % 512 !== 0) {
    throw new VdiskError('E_USAGE', `${img.filename}: new size ${newSize} is not a positive multiple of 512 bytes`);
  }
  if (newSize > VDI_MAX_DISK_SIZE) throw new VdiskError('E_USAGE', `${img.filename}: ${newSize} bytes is too large for a VDI image (cbDisk)`);
  const blocks = Math.ceil(newSize / h.cbBlock);
  if (blocks > VDI_MAX_BLOCKS) throw new VdiskError('E_UNSUPPORTED', `${img.filename}: ${newSize} bytes needs ${blocks} blocks (cBlocks), more than the ${VDI_MAX_BLOCKS} vdisk handles`);
  if (newSize === img.size) return;
  const meter = new ProgressMeter(0, opts.onProgress);
  img.moveMeter = meter;
  try {
    if (newSize < img.size) await shrinkTo(img, newSize, blocks);
    else await growTo(img, newSize, blocks);
  } finally {
    img.moveMeter = undefined;
  }
  meter.finish();
}

/** The header fields that follow the size: cbDisk, cBlocks and both CHS geometries (heads and sectors kept). */
function sized(img: VdiMaintained, newSize: number, blocks: number): VdiHeader {
  const h = img.header;
  const next: VdiHeader = { ...h, cbDisk: newSize, cBlocks: blocks, legacyGeometry: followGeometry(h.legacyGeometry, newSize, VDI_MAX_PCHS_CYLINDERS) };
  if (h.lchsGeometry) next.lchsGeometry = followGeometry(h.lchsGeometry, newSize, VDI_MAX_LCHS_CYLINDERS);
  return next;
}

async function shrinkTo(img: VdiMaintained, newSize: number, blocks: number): Promise<void> {
  const h = img.header;
  img.noteModified();
  // 1. The new size with the block count kept (cBlocks above what cbDisk needs is
  //    valid): from here on what lies past the new end is invisible.
  if (newSize !== img.size) {
    await switchHeader(img, { ...sized(img, newSize, h.cBlocks), cBlocksAllocated: img.mapped });
    img.size = newSize;
    await img.storage.flush();
  }
  // 2. Zero what stays of the last block past the new end, so a later grow reads zeros there.
  const last = img.map[blocks - 1]!;
  const cut = newSize - (blocks - 1) * h.cbBlock;
  if (isAllocated(last) && cut < h.cbBlock) await img.storage.write(Buffer.alloc(h.cbBlock - cut), img.dataOffset(last) + cut);
  // 3. Release the blocks past the new end (map entries first), move the last data
  //    blocks into the holes, write the count, truncate.
  for (let i = blocks; i < h.cBlocks; i++) if (isAllocated(img.map[i]!)) await img.release(i, VDI_BLOCK_FREE);
  let moves = 0;
  for (let n = img.mapped; n < img.nextSlot; n++) if (img.owner[n]! >= 0) moves++;
  img.moveMeter?.more(moves * img.stride);
  img.headerStale = true;
  await img.compactSlots();
  await img.storage.flush();
  // 4. Every data block left is now below `mapped` <= blocks: the block count follows.
  await switchHeader(img, { ...h, cBlocks: blocks, cBlocksAllocated: img.mapped });
  img.map = img.map.slice(0, blocks);
  reindex(img);
  await img.storage.flush();
}

async function growTo(img: VdiMaintained, newSize: number, blocks: number, relaidOut = false): Promise<void> {
  const h = img.header;
  const oldSize = img.size;
  // An interrupted grow can leave more map entries than the size needs (cBlocks past
  // the last visible block); bring cBlocks back to the size first.
  const visible = Math.ceil(oldSize / h.cbBlock);
  if (h.cBlocks > visible) await shrinkTo(img, oldSize, visible);
  const oldBlocks = h.cBlocks;
  const stride = img.stride;
  const fixed = h.type === VdiImageType.FIXED;
  const mapBytes = blocks * VDI_MAP_ENTRY_SIZE;
  // A partial last block over a bigger parent must read zeros past the old end: it gets a block of its own.
  const lastOld = oldBlocks - 1;
  const tailFrom = oldSize - lastOld * h.cbBlock;
  const parentShows = img.backing !== undefined && img.backing.size > oldSize;
  const tailBlock = tailFrom < h.cbBlock && img.map[lastOld] === VDI_BLOCK_FREE && parentShows;

  // Plan where the new map goes, before changing anything (maintain.ts).
  const plan = planGrowth(h, blocks, { owner: img.owner, nextSlot: img.nextSlot }, tailBlock);
  if (!plan.fits && img.location && !relaidOut) {
    // No room in place (the map fills its space and no free data block number is
    // left to move the first blocks to): rewrite the image with room for the new
    // map, then grow that in place.
    await relayout(img, blocks);
    return growTo(img, newSize, blocks, true);
  }
  if (!plan.fits) {
    throw new VdiskError(
      'E_UNSUPPORTED',
      `${img.filename}: the block map for ${blocks} blocks needs the space of the first ${plan.shift} data blocks, and with ${img.mapped} of ${oldBlocks} blocks allocated there is no free data block number (cBlocks ${plan.count}) to move them to; compact the image or convert it`,
    );
  }
  const { mapAt, shift, firstDest, tailSlot } = plan;

  img.noteModified();
  // 0. More block numbers when the moves need them: FREE entries in the slack after
  //    the map (read by nothing yet), then a header with more cBlocks and the same size.
  if (plan.count > oldBlocks) {
    await img.storage.write(Buffer.alloc((plan.count - oldBlocks) * VDI_MAP_ENTRY_SIZE, 0xff), h.offBlocks + oldBlocks * VDI_MAP_ENTRY_SIZE);
    await img.storage.flush();
    await switchHeader(img, { ...h, cBlocks: plan.count, cBlocksAllocated: img.mapped });
    const map = new Uint32Array(plan.count).fill(VDI_BLOCK_FREE);
    map.set(img.map);
    img.map = map;
    const owner = new Int32Array(plan.count).fill(-1);
    owner.set(img.owner.subarray(0, Math.min(img.owner.length, plan.count)));
    img.owner = owner;
  }
  // 1. Move the data blocks in the new map's way to the end (data, then map entry).
  img.moveMeter?.more(plan.toMove * stride);
  let dest = firstDest;
  for (let n = 0; n < Math.min(shift, img.nextSlot); n++) {
    if (img.owner[n]! < 0) continue;
    await img.move(n, dest);
    dest++;
    if (dest > img.nextSlot) img.nextSlot = dest;
  }
  // 2. Make the old last block read zeros past the old end (invisible until the switch).
  if (tailFrom < h.cbBlock) {
    const e = img.map[lastOld]!;
    if (isAllocated(e)) {
      await img.storage.write(Buffer.alloc(h.cbBlock - tailFrom), img.dataOffset(e) + tailFrom);
    } else if (tailBlock) {
      const body = Buffer.alloc(h.cbBlock);
      await img.readVirtual(body.subarray(0, tailFrom), lastOld * h.cbBlock);
      img.nextSlot = tailSlot;
      await img.allocate({ block: lastOld, within: 0, at: 0, length: h.cbBlock }, body, VDI_BLOCK_ZERO);
      // Its map entry must be on disk before the switch (step 5 may write only the new entries).
      await img.commitMap();
    }
  }
  // 3. The new map, in memory: renumbered by `shift`; new blocks FREE, ZERO where a
  //    parent would show through, or (fixed) preallocated after the last data block.
  const map = new Uint32Array(blocks);
  for (let i = 0; i < oldBlocks; i++) {
    const e = img.map[i]!;
    map[i] = isAllocated(e) ? e - shift : e;
  }
  let slotsAfter = Math.max(0, img.nextSlot - shift);
  for (let i = oldBlocks; i < blocks; i++) {
    if (fixed) map[i] = slotsAfter++;
    else map[i] = img.backing && i * h.cbBlock < img.backing.size ? VDI_BLOCK_ZERO : VDI_BLOCK_FREE;
  }
  const offData = h.offData + shift * stride;
  // 4. The file must reach the new data area (and hold a fixed image's new blocks, zeroed).
  const dataEnd = offData + Math.max(0, img.nextSlot - shift) * stride;
  if (fixed && img.storage.size > dataEnd) await img.storage.truncate(dataEnd);
  const end = offData + slotsAfter * stride;
  if (img.storage.size < end) await img.storage.truncate(end);
  // 5. Write the map where the old header reads nothing: only the new entries when in place.
  const raw = encodeMapEntries(map, 0, blocks, mapBytes);
  if (mapAt === h.offBlocks) await img.storage.write(raw.subarray(oldBlocks * VDI_MAP_ENTRY_SIZE), mapAt + oldBlocks * VDI_MAP_ENTRY_SIZE);
  else await img.storage.write(raw, mapAt);
  await img.storage.flush();
  // 6. Switch: one header write names the new map, data area, block count and size.
  const next = sized(img, newSize, blocks);
  next.offBlocks = mapAt;
  next.offData = offData;
  next.cBlocksAllocated = img.mapped + (fixed ? blocks - oldBlocks : 0);
  await switchHeader(img, next);
  img.map = map;
  img.size = newSize;
  reindex(img);
  await img.storage.flush();
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
async function relayout(img: VdiMaintained, entries: number): Promise<void> {
  const loc = img.location!;
  const h = img.header;
  const stride = img.stride;
  const tmp = `${loc.name}.vdisk-tmp`;
  if (await loc.exists(tmp)) await loc.remove(tmp);
  const out = await loc.create(tmp);
  const offData = alignUp(h.offBlocks + entries * VDI_MAP_ENTRY_SIZE, VDI_DATA_ALIGN);
  const used = img.nextSlot * stride;
  img.moveMeter?.more(used);
  try {
    // Bytes before the map as they are (pre-header, header, anything after it), then the new header over them.
    const head = Buffer.alloc(h.offBlocks);
    await img.storage.read(head, 0);
    await out.write(head, 0);
    const next: VdiHeader = { ...h, offData, cBlocksAllocated: img.mapped };
    await out.write(encodeHeader(next, img.headerRaw), 0);
    const raw = encodeMapEntries(img.map, 0, img.map.length, offData - h.offBlocks);
    await out.write(raw, h.offBlocks);
    // Data blocks keep their numbers: the data area is copied as it is.
    await copyBytes(img.storage, h.offData, out, offData, used, (n) => img.moveMeter?.add(n));
    await out.flush();
  } catch (err) {
    await out.close().catch(() => undefined);
    throw err;
  }
  await loc.rename(tmp, loc.name);
  img.retired.push(img.storage);
  img.storage = filterStorage(out, {}, img.filename);
  h.offData = offData;
  h.cBlocksAllocated = img.mapped;
}

/**
 * Give back space: data blocks that read only zeros are released (FREE when what
 * lies below reads zeros too, else ZERO so a parent's data stays hidden), blocks
 * no map entry names are reclaimed, the last data blocks move into the holes and
 * the file is truncated. Guest content is unchanged, so uuidModify is kept and
 * children stay linked.
 */
export async function compactVdi(img: VdiMaintained, opts: CompactOptions = {}): Promise<CompactResult> {
  img.mustBeWritable();
  await img.commitMap();
  img.needParent('compact');
  if (!img.canDeallocate) {
    throw new VdiskError('E_UNSUPPORTED', `${img.filename}: a fixed (preallocated) VDI keeps every block; convert it to a dynamic one to compact it`);
  }
  const h = img.header;
  const sizeBefore = img.storage.size;
  const slotsInFile = sizeBefore > h.offData ? Math.floor((sizeBefore - h.offData) / img.stride) : 0;
  let released = 0;
  for (let n = 0; n < Math.min(slotsInFile, img.owner.length); n++) if (img.owner[n]! < 0) released++;
  const buf = Buffer.alloc(Math.min(IO_CHUNK, h.cbBlock));
  for (let i = 0; i < h.cBlocks; i++) {
    const e = img.map[i]!;
    if (isAllocated(e)) {
      const start = i * h.cbBlock;
      const len = Math.min(h.cbBlock, img.size - start);
      if (await readsZero(buf, (b, off) => img.storage.read(b, img.dataOffset(e) + off), len)) {
        const belowZero = await readsZero(buf, (b, off) => readBelow(img.backing, b, start + off), len);
        await img.release(i, belowZero ? VDI_BLOCK_FREE : VDI_BLOCK_ZERO);
        released++;
      }
    }
    opts.onProgress?.(i + 1, h.cBlocks);
  }
  await img.compactSlots();
  await img.storage.flush();
  return { releasedBlocks: released, sizeBefore, sizeAfter: img.storage.size };
}

/** True when `len` bytes read through `read` in chunks of `buf` are all zero. */
async function readsZero(buf: Buffer, read: (b: Buffer, off: number) => Promise<void>, len: number): Promise<boolean> {
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
export async function relinkVdi(img: VdiMaintained, parent: DiskImage | undefined, ref?: string): Promise<void> {
  img.mustBeWritable();
  await img.commitMap();
  const h = img.header;
  let link = { type: h.type, uuidLinkage: NULL_UUID, uuidParentModify: NULL_UUID };
  if (parent === undefined) {
    if (h.type === VdiImageType.DIFF || h.type === VdiImageType.UNDO) link.type = VdiImageType.NORMAL;
  } else {
    if (!(img.isVdi(parent))) {
      throw new VdiskError('E_UNSUPPORTED', `${img.filename}: a VDI links to its parent by uuid, so the parent must be a VDI image (${parent.filename} is ${parent.format})`);
    }
    if (h.type === VdiImageType.FIXED) throw new VdiskError('E_UNSUPPORTED', `${img.filename}: a fixed VDI cannot have a parent (u32Type fixed)`);
    // `ref` is not stored: a VDI names its parent only by uuid.
    if (dirname(resolve(parent.filename)) !== dirname(resolve(img.filename))) {
      throw new VdiskError('E_UNSUPPORTED', `${img.filename}: a VDI finds its parent by uuid among the files of its own folder; ${ref ?? parent.filename} is in another folder`);
    }
    for (let p: DiskImage | undefined = parent; p; p = p.backing) {
      if (img.isVdi(p) && p.uuid === h.uuidCreate) throw new VdiskError('E_CHAIN', `${img.filename}: ${parent.filename} is this image or one of its children (uuid ${h.uuidCreate}); that would make a loop`);
    }
    link = { type: h.type === VdiImageType.NORMAL ? VdiImageType.DIFF : h.type, uuidLinkage: parent.uuid, uuidParentModify: parent.modificationUuid };
  }
  img.noteModified();
  await switchHeader(img, { ...h, ...link, cBlocksAllocated: img.mapped });
  await img.storage.flush();
  if (img.backing !== parent && img.ownsParent) await img.backing?.close();
  img.backing = parent;
  img.ownsParent = false;
  img.parentMissing = false;
}
