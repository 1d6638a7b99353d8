/**
 * An opened VHD: fixed (data then footer), dynamic (BAT + blocks, each a sector
 * bitmap then data) or differencing (a dynamic disk whose clear bitmap bits fall
 * through to the parent, sector by sector).
 */
import { isAbsolute } from 'node:path';
import { readBelow } from '../../device/below.js';
import type { CompactOptions, CompactResult, DiskImage, Extent, ImageInfo, ResizeImageOptions } from '../../device/block-device.js';
import { BlockDeviceBase } from '../../device/base.js';
import { blockPieces } from '../../device/blocks.js';
import { isZero, zeroBuffer } from '../../device/zero.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import {
  BAT_UNUSED,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_FIXED,
  FOOTER_SIZE,
  SECTOR_SIZE,
  bitmapGet,
  bitmapSet,
  fourCC,
  timestampToIso,
  uuidString,
  qemuVirtualSize,
  readParentRefs,
  readVhdMeta,
  validateBat,
  type VhdMeta,
} from './layout.js';
import { absoluteRef, compactVhd, relinkVhd, resizeVhd } from './maintain.js';
import type { DriverOpenOptions } from '../driver.js';
import { findParentRef } from '../parent.js';

/** Bytes of block bitmaps an image keeps in memory (512 B each for 2 MiB blocks). */
const BITMAP_CACHE_BYTES = 8 * 1024 * 1024;
/** Largest sector number a BAT entry can hold. */
const MAX_BAT_SECTOR = 0xfffffffe;

/** Names of the disk types for info. */
const TYPE_NAMES: Record<number, string> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };

/** Parent facts for a differencing image. */
export interface VhdParentInfo {
  /** The reference as stored in the locator used. */
  ref?: string;
  /** The resolved name it was opened by. */
  resolved?: string;
  /** The platform code of that locator. */
  platform?: string;
}

/** A VHD image of any of the three types. */
export class VhdImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'vhd';
  readonly filename: string;
  readonly readOnly: boolean;
  size: number;
  backing?: DiskImage;
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly bitmapCacheLimit: number;
  /** Where the next block goes: the trailing footer's place (or the end of what is there). */
  private nextFree: number;

  constructor(
    private readonly storage: Storage,
    public meta: VhdMeta,
    opts: { readOnly: boolean; dataEnd: number; parent?: DiskImage; parentInfo?: VhdParentInfo; warnings?: string[]; location?: ImageLocation },
  ) {
    super();
    this.filename = storage.name;
    this.size = meta.virtualSize;
    this.readOnly = opts.readOnly || storage.readOnly;
    if (opts.parent) this.backing = opts.parent;
    this.parentInfo = opts.parentInfo ?? {};
    this.warnings = opts.warnings ?? [];
    this.location = opts.location;
    this.bitmapCacheLimit = Math.max(4, Math.floor(BITMAP_CACHE_BYTES / Math.max(1, meta.bitmapSize)));
    // Never overwrite anything but a valid trailing footer: a damaged tail is left in place (a leak check reports).
    // BAT entries count sectors, so a block starts on a sector even when the file size is odd.
    const tail = meta.footerSource === 'trailing' ? meta.fileSize - FOOTER_SIZE : meta.fileSize;
    this.nextFree = Math.ceil(Math.max(tail, opts.dataEnd) / SECTOR_SIZE) * SECTOR_SIZE;
  }

  private parentInfo: VhdParentInfo;
  private readonly warnings: string[];
  /** Where the image lives (for the absolute parent locator); undefined when opened bare. */
  private readonly location: ImageLocation | undefined;

  /** The footer in use, byte for byte (written back unchanged when the file grows). */
  private get footerBytes(): Buffer {
    return this.meta.footerBytes;
  }

  /** The 16-byte unique id from the footer. */
  get uniqueId(): Buffer {
    return this.meta.footer.uniqueId;
  }

  /** The footer's timestamp (seconds since 2000-01-01 UTC). */
  get timestamp(): number {
    return this.meta.footer.timestamp;
  }

  /** Block size of a dynamic or differencing disk; 0 for fixed. */
  get blockSize(): number {
    return this.meta.blockSize;
  }

  private get isFixed(): boolean {
    return this.meta.footer.diskType === DISK_TYPE_FIXED;
  }

  private get isDifferencing(): boolean {
    return this.meta.footer.diskType === DISK_TYPE_DIFFERENCING;
  }

  // ---- reading -------------------------------------------------------------

  protected async readAt(buf: Uint8Array, offset: number): Promise<void> {
    if (this.isFixed) return this.storage.read(buf, offset);
    const bs = this.meta.blockSize;
    for (const { index: idx, within: inOff, done, length: n } of blockPieces(offset, buf.length, bs)) {
      const pos = offset + done;
      const piece = buf.subarray(done, done + n);
      const entry = this.meta.bat![idx]!;
      if (entry === BAT_UNUSED) {
        await readBelow(this.backing, piece, pos);
      } else {
        const bitmap = await this.bitmap(idx);
        const dataStart = entry * SECTOR_SIZE + this.meta.bitmapSize;
        await this.forEachRun(bitmap, inOff, n, async (a, b, set) => {
          const part = piece.subarray(a - inOff, b - inOff);
          if (set) await this.storage.read(part, dataStart + a);
          else await readBelow(this.backing, part, idx * bs + a);
        });
      }
    }
  }

  /** Call `fn` for each run of sectors with the same bitmap bit over bytes [inOff, inOff+n) of a block. */
  private async forEachRun(bitmap: Buffer, inOff: number, n: number, fn: (a: number, b: number, set: boolean) => Promise<void>): Promise<void> {
    const end = inOff + n;
    let a = inOff;
    while (a < end) {
      const s = Math.floor(a / SECTOR_SIZE);
      const set = bitmapGet(bitmap, s);
      let t = s + 1;
      const last = Math.ceil(end / SECTOR_SIZE);
      const whole = set ? 0xff : 0;
      while (t < last && bitmapGet(bitmap, t) === set) {
        // Whole bitmap bytes of one kind (the common case: a fully written block) in one step.
        if ((t & 7) === 0) while (t + 8 <= last && bitmap[t >> 3] === whole) t += 8;
        if (t < last && bitmapGet(bitmap, t) === set) t++;
      }
      const b = Math.min(end, t * SECTOR_SIZE);
      await fn(a, b, set);
      a = b;
    }
  }

  private async bitmap(idx: number): Promise<Buffer> {
    const cached = this.bitmaps.get(idx);
    if (cached) return cached;
    const b = Buffer.alloc(this.meta.bitmapSize);
    await this.storage.read(b, this.meta.bat![idx]! * SECTOR_SIZE);
    this.cacheBitmap(idx, b);
    return b;
  }

  private cacheBitmap(idx: number, b: Buffer): void {
    if (this.bitmaps.size >= this.bitmapCacheLimit) this.bitmaps.delete(this.bitmaps.keys().next().value!);
    this.bitmaps.set(idx, b);
  }

  // ---- writing -------------------------------------------------------------

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    if (this.isFixed) return this.storage.write(buf, offset);
    const end = offset + buf.length;
    if (offset % SECTOR_SIZE === 0 && end % SECTOR_SIZE === 0) return this.writeSectors(buf, offset);
    // Partial sectors: read the whole sectors (through the parent), merge, write whole sectors.
    const a0 = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
    const a1 = Math.min(this.size, Math.ceil(end / SECTOR_SIZE) * SECTOR_SIZE);
    for (let p = a0; p < a1; p += IO_CHUNK) {
      const n = Math.min(IO_CHUNK, a1 - p);
      const tmp = Buffer.alloc(n);
      const from = Math.max(p, offset);
      const to = Math.min(p + n, end);
      if (from > p || to < p + n) await this.readAt(tmp, p);
      tmp.set(buf.subarray(from - offset, to - offset), from - p);
      await this.writeSectors(tmp, p);
    }
  }

  /** Write whole sectors of a dynamic or differencing disk, block by block. */
  private async writeSectors(buf: Uint8Array, offset: number): Promise<void> {
    for (const { index: idx, within: inOff, done, length: n } of blockPieces(offset, buf.length, this.meta.blockSize)) {
      const piece = buf.subarray(done, done + n);
      const entry = this.meta.bat![idx]!;
      if (entry === BAT_UNUSED) {
        // Zeros over a hole of a dynamic disk (nothing below it) need no block.
        if (!this.isDifferencing && isZero(piece)) continue;
        await this.allocateBlock(idx, piece, inOff);
      } else {
        const blockStart = entry * SECTOR_SIZE;
        // Data first, then the bitmap bits that make it visible.
        await this.storage.write(piece, blockStart + this.meta.bitmapSize + inOff);
        const bitmap = await this.bitmap(idx);
        const first = inOff / SECTOR_SIZE;
        const last = (inOff + n) / SECTOR_SIZE;
        let lo = -1;
        let hi = -1;
        for (let s = first; s < last; s++) {
          if (!bitmapGet(bitmap, s)) {
            bitmapSet(bitmap, s);
            if (lo < 0) lo = s;
            hi = s;
          }
        }
        if (lo >= 0) {
          const b0 = Math.floor((lo >> 3) / SECTOR_SIZE) * SECTOR_SIZE;
          const b1 = Math.floor((hi >> 3) / SECTOR_SIZE) * SECTOR_SIZE + SECTOR_SIZE;
          try {
            await this.storage.write(bitmap.subarray(b0, b1), blockStart + b0);
          } catch (err) {
            this.bitmaps.delete(idx); // the cached copy ran ahead of the file
            throw err;
          }
        }
      }
    }
  }

  /**
   * Give block `idx` space at the end of the file, holding `piece` at `inOff`.
   * Order (crash safety): the footer goes to the new end first, so the file always
   * ends in a valid footer; then the bitmap and data over the old footer's place;
   * the BAT entry that makes the block live comes last. A crash before the BAT
   * entry leaves only leaked space.
   */
  private async allocateBlock(idx: number, piece: Uint8Array, inOff: number): Promise<void> {
    const bs = this.meta.blockSize;
    const bmSize = this.meta.bitmapSize;
    const start = this.nextFree;
    const span = bmSize + bs;
    if (start / SECTOR_SIZE > MAX_BAT_SECTOR) throw new VdiskError('E_NOSPC', `${this.filename}: file is too large for another VHD block (BAT entries are 32-bit sectors)`);
    const oldSize = this.storage.size;
    await this.storage.write(this.footerBytes, start + span);

    const bitmap = Buffer.alloc(bmSize);
    const sectors = bs / SECTOR_SIZE;
    if (this.isDifferencing) {
      // Only the sectors written: the rest still falls through to the parent.
      for (let s = inOff / SECTOR_SIZE; s < (inOff + piece.length) / SECTOR_SIZE; s++) bitmapSet(bitmap, s);
    } else {
      // A dynamic disk's new block is all data (zeros where not written), as qemu and Hyper-V read it.
      bitmap.fill(0xff, 0, sectors >> 3);
      for (let s = sectors & ~7; s < sectors; s++) bitmapSet(bitmap, s);
    }
    // Write the block: bitmap, then data (straight from the caller's buffer). Bytes
    // beyond the old file end already read as zeros (the footer write extended the
    // file), so besides the bitmap and the new data only old content (the old footer,
    // leaked space) inside the block is overwritten, with zeros.
    await this.storage.write(bitmap, start);
    const dataStart = start + bmSize;
    const dataLo = dataStart + inOff;
    const dataHi = dataLo + piece.length;
    const oldEnd = Math.min(oldSize, start + span);
    await this.writeZeros(dataStart, Math.min(oldEnd, dataLo));
    await this.writeZeros(Math.max(dataStart, dataHi), oldEnd);
    if (piece.length > 0) await this.storage.write(piece, dataLo);

    // The BAT entry stays a write of its own, made before this call returns: a write
    // that reports success is live, and a failed one leaves only leaked space (the
    // single-failed-write test in crash.test.ts holds the driver to that).
    const entry = Buffer.alloc(4);
    entry.writeUInt32BE(start / SECTOR_SIZE);
    await this.storage.write(entry, this.meta.header!.tableOffset + idx * 4);
    this.meta.bat![idx] = start / SECTOR_SIZE;
    this.nextFree = start + span;
    this.cacheBitmap(idx, bitmap);
  }

  /** Zeros over file bytes [from, to) (nothing when empty). */
  private async writeZeros(from: number, to: number): Promise<void> {
    for (let p = from; p < to; p += IO_CHUNK) await this.storage.write(zeroBuffer(Math.min(IO_CHUNK, to - p)), p);
  }

  /**
   * Release every whole block inside the range (its BAT entry becomes unused: zeros in
   * a dynamic disk, the parent in a differencing one). One 4-byte write per block;
   * partial blocks are left as they are (a discard is a hint).
   */
  protected override async discardAt(offset: number, length: number): Promise<void> {
    if (this.isFixed) return;
    const bs = this.meta.blockSize;
    const first = Math.ceil(offset / bs);
    // The last block counts as whole when the range reaches the end of the disk.
    const end = offset + length >= this.size ? this.meta.bat!.length : Math.floor((offset + length) / bs);
    const unused = Buffer.alloc(4, 0xff);
    for (let idx = first; idx < end; idx++) {
      if (this.meta.bat![idx] === BAT_UNUSED) continue;
      await this.storage.write(unused, this.meta.header!.tableOffset + idx * 4);
      this.meta.bat![idx] = BAT_UNUSED;
      this.bitmaps.delete(idx);
    }
  }

  // ---- extents -------------------------------------------------------------

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    if (this.isFixed) {
      yield { offset, length, kind: 'data', depth: 0 };
      return;
    }
    const bs = this.meta.blockSize;
    const end = offset + length;
    // Runs that fall through are gathered so the parent is asked once per run.
    let below: { offset: number; length: number } | undefined;
    const flushBelow = async function* (self: VhdImage): AsyncIterable<Extent> {
      if (!below) return;
      const r = below;
      below = undefined;
      yield* self.extentsBelow(r.offset, r.length);
    };
    for (let pos = offset; pos < end; ) {
      const idx = Math.floor(pos / bs);
      const inOff = pos - idx * bs;
      let n = Math.min(end - pos, bs - inOff);
      const bat = this.meta.bat!;
      const entry = bat[idx]!;
      const runs: Array<[number, number, boolean]> = [];
      if (entry === BAT_UNUSED) {
        // One run over every unallocated block in a row (a huge empty disk is one step).
        let j = idx + 1;
        while (j * bs < end && bat[j] === BAT_UNUSED) j++;
        n = Math.min(end, j * bs) - pos;
        runs.push([pos, pos + n, false]);
      } else {
        const bitmap = await this.bitmap(idx);
        await this.forEachRun(bitmap, inOff, n, async (a, b, set) => {
          runs.push([idx * bs + a, idx * bs + b, set]);
        });
      }
      for (const [a, b, set] of runs) {
        if (set) {
          yield* flushBelow(this);
          yield { offset: a, length: b - a, kind: 'data', depth: 0 };
        } else if (below && below.offset + below.length === a) {
          below.length += b - a;
        } else {
          yield* flushBelow(this);
          below = { offset: a, length: b - a };
        }
      }
      pos += n;
    }
    yield* flushBelow(this);
  }

  /** Extents of what lies below: the parent's with depth + 1, holes past it or without one. */
  private async *extentsBelow(offset: number, length: number): AsyncIterable<Extent> {
    const p = this.backing;
    if (!p || !this.isDifferencing) {
      yield { offset, length, kind: 'hole', depth: 0 };
      return;
    }
    const inside = Math.max(0, Math.min(length, p.size - offset));
    if (inside > 0) {
      for await (const e of p.extents(offset, inside)) yield { ...e, depth: e.depth + 1 };
    }
    if (inside < length) yield { offset: offset + inside, length: length - inside, kind: 'hole', depth: 1 };
  }

  // ---- the rest ------------------------------------------------------------

  protected flushAll(): Promise<void> {
    return this.storage.flush();
  }

  protected async closeAll(): Promise<void> {
    try {
      await this.storage.close();
    } finally {
      await this.backing?.close();
    }
  }

  /** Blocks that have space in the file. */
  allocatedBlocks(): number {
    let n = 0;
    for (const e of this.meta.bat ?? []) if (e !== BAT_UNUSED) n++;
    return n;
  }

  async info(): Promise<ImageInfo> {
    const f = this.meta.footer;
    const facts: Record<string, unknown> = {
      type: TYPE_NAMES[f.diskType],
      'virtual-size': this.size,
      'size-source': this.meta.sizeSource,
      'current-size': f.currentSize,
      'original-size': f.originalSize,
      geometry: { cylinders: f.cylinders, heads: f.heads, 'sectors-per-track': f.sectorsPerTrack },
      creator: { application: f.creatorApplication.replace(/\0/g, '\\0'), version: `${f.creatorVersion >>> 16}.${f.creatorVersion & 0xffff}`, 'host-os': fourCC(f.creatorHostOs) },
      timestamp: timestampToIso(f.timestamp),
      uuid: uuidString(f.uniqueId),
      'saved-state': f.savedState !== 0,
      'footer-source': this.meta.footerSource,
    };
    const out: ImageInfo = { formatSpecific: facts };
    if (!this.isFixed) {
      const h = this.meta.header!;
      facts['block-size'] = h.blockSize;
      facts['allocated-blocks'] = this.allocatedBlocks();
      facts['total-blocks'] = this.meta.bat!.length;
      facts['max-table-entries'] = h.maxTableEntries;
      out.clusterSize = h.blockSize;
    }
    if (this.isDifferencing) {
      const h = this.meta.header!;
      facts['parent-uuid'] = uuidString(h.parentUniqueId);
      facts['parent-name'] = h.parentUnicodeName;
      facts['parent-timestamp'] = timestampToIso(h.parentTimestamp);
      if (this.parentInfo.ref !== undefined) {
        facts['parent-path'] = this.parentInfo.ref;
        facts['parent-locator'] = this.parentInfo.platform;
        out.backingFilename = this.parentInfo.ref;
      } else if (h.parentUnicodeName) out.backingFilename = h.parentUnicodeName;
      if (this.parentInfo.resolved !== undefined) out.fullBackingFilename = this.parentInfo.resolved;
    }
    const warnings = [...this.warnings];
    const qemu = qemuVirtualSize(f);
    if (qemu.size !== this.size) {
      // Images from other tools (or edited): qemu would show the guest a different disk.
      const rule = qemu.source === 'chs' ? `its CHS geometry ${f.cylinders}x${f.heads}x${f.sectorsPerTrack}` : 'current_size';
      const creator = f.creatorApplication.replace(/\0/g, '\\0');
      warnings.push(`qemu sizes this VHD (creator "${creator}") by ${rule}: ${qemu.size} bytes, not ${this.size}; a guest under qemu sees ${qemu.size < this.size ? 'less' : 'more'} disk (vdisk convert -O vhd writes a copy every reader sizes alike)`);
    }
    if (warnings.length) out.warnings = warnings;
    return out;
  }

  // ---- maintenance (order of writes: maintain.ts) --------------------------

  /** Re-read the metadata (before and after an in-place change), so the image reflects the file exactly. */
  private async reload(): Promise<void> {
    const meta = await readVhdMeta(this.storage);
    const { problems, dataEnd } = validateBat(meta, this.filename, 1);
    if (problems[0]) throw new VdiskError('E_CORRUPT', problems[0].message);
    this.meta = meta;
    this.size = meta.virtualSize;
    this.bitmaps.clear();
    this.nextFree = Math.ceil(Math.max(meta.fileSize - FOOTER_SIZE, dataEnd) / SECTOR_SIZE) * SECTOR_SIZE;
  }

  /** Change the virtual size in place; a crash leaves the old or the new size (maintain.ts). */
  async resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    this.writable();
    if (newSize === this.size) return;
    await this.reload();
    try {
      await resizeVhd(this.storage, this.meta, newSize, opts.onProgress);
    } finally {
      await this.reload();
    }
  }

  /** Release blocks that read the same without them, pack the rest and shorten the file. */
  async compact(opts: CompactOptions = {}): Promise<CompactResult> {
    this.writable();
    await this.reload();
    const sizeBefore = this.storage.size;
    let released = 0;
    try {
      released = (await compactVhd(this.storage, this.meta, this.backing, opts.onProgress)).released;
    } finally {
      await this.reload();
    }
    return { releasedBlocks: released, sizeBefore, sizeAfter: this.storage.size };
  }

  /**
   * Point this image at another VHD parent (`ref` as the child names it), or make it a
   * dynamic disk with `undefined` (the caller has copied the parent's data in first).
   */
  async setBacking(parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    this.writable();
    if (parent && !(parent instanceof VhdImage)) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a VHD's parent must be a VHD, not ${parent.format}`);
    if (parent && ref === undefined) throw new VdiskError('E_USAGE', `${this.filename}: a parent needs a reference to store in the locators`);
    await this.reload();
    const link = parent && ref !== undefined ? { uniqueId: parent.uniqueId, timestamp: parent.timestamp, ref, absolute: absoluteRef(this.location, ref) } : undefined;
    try {
      await relinkVhd(this.storage, this.meta, link);
    } finally {
      await this.reload();
    }
    const old = this.backing;
    if (parent) {
      this.backing = parent;
      this.parentInfo = { ref: ref!, resolved: parent.filename, platform: isAbsolute(ref!) ? 'W2ku' : 'W2ru' };
    } else {
      delete this.backing;
      this.parentInfo = {};
    }
    if (old && old !== parent) await old.close();
  }

  async actualSize(): Promise<number | undefined> {
    return this.storage.allocatedSize?.();
  }
}

// ---- Opening: the metadata read and validated, the parent found ----

/** Find and open the parent of a differencing disk; E_PATH/E_CHAIN when it cannot. */
export async function openParent(storage: Storage, location: ImageLocation, meta: VhdMeta, opts: DriverOpenOptions): Promise<{ parent?: DiskImage; info: VhdParentInfo; warnings: string[] }> {
  const header = meta.header!;
  const { refs, skipped } = await readParentRefs(storage, header, meta.overwrittenLocators);
  if (header.parentUnicodeName) refs.push({ platform: 'parent_unicode_name', ref: header.parentUnicodeName });
  const warnings = [...skipped];
  const { found, pathError } = await findParentRef(location, refs);
  const info: VhdParentInfo = found ? { ref: found.ref, resolved: found.resolved, platform: found.platform } : refs[0] ? { ref: refs[0].ref, platform: refs[0].platform } : {};
  if (opts.noBacking) return { info, warnings };
  if (!found) {
    if (pathError) throw pathError;
    const tried = refs.map((r) => `${r.platform} "${r.ref}"`).join(', ') || 'no parent locators';
    throw new VdiskError('E_CHAIN', `${storage.name}: parent of this differencing VHD not found (tried ${tried})`);
  }
  const parent = await opts.openParent(found.resolved);
  if (!(parent instanceof VhdImage)) {
    await parent.close().catch(() => undefined);
    throw new VdiskError('E_CHAIN', `${storage.name}: parent ${found.resolved} is a ${parent.format} image, not a VHD`);
  }
  if (!parent.uniqueId.equals(header.parentUniqueId)) {
    await parent.close().catch(() => undefined);
    throw new VdiskError(
      'E_CHAIN',
      `${storage.name}: parent ${found.resolved} has unique id ${uuidString(parent.uniqueId)}, but the dynamic header's parent_unique_id is ${uuidString(header.parentUniqueId)}`,
    );
  }
  return { parent, info, warnings };
}

/** Open a VHD whose metadata was read and whose BAT was validated. */
export async function openVhd(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<VhdImage> {
  const meta = await readVhdMeta(storage);
  const { problems, dataEnd } = validateBat(meta, storage.name, 1);
  if (problems[0]) throw new VdiskError('E_CORRUPT', problems[0].message);
  const warnings: string[] = [];
  if (meta.footerSource === 'copy-at-0') warnings.push(`trailing footer unusable (${meta.trailingProblem}); using the footer copy at offset 0`);
  else if (meta.copyProblem) warnings.push(`footer copy at offset 0 is damaged (${meta.copyProblem})`);
  else if (meta.copyDiffers) warnings.push('footer copy at offset 0 differs from the trailing footer; using the trailing one');
  let parent: DiskImage | undefined;
  let parentInfo: VhdParentInfo | undefined;
  if (meta.footer.diskType === DISK_TYPE_DIFFERENCING) {
    if (opts.parent) {
      parent = opts.parent;
      parentInfo = { ref: parent.filename, resolved: parent.filename };
    } else {
      const r = await openParent(storage, location, meta, opts);
      parent = r.parent;
      parentInfo = r.info;
      warnings.push(...r.warnings);
    }
  }
  const o: ConstructorParameters<typeof VhdImage>[2] = { readOnly: opts.readOnly, dataEnd, warnings, location };
  if (parent) o.parent = parent;
  if (parentInfo) o.parentInfo = parentInfo;
  return new VhdImage(storage, meta, o);
}
