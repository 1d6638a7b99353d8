/**
 * In-place maintenance of a VHD: resize (fixed and dynamic, growing the BAT when it
 * must), compact (release blocks, pack the rest, shorten the file) and re-linking a
 * differencing disk to another parent (or to none).
 *
 * Crash safety rests on three facts of the format: a footer is one sector (written
 * whole or not at all), a BAT entry is four bytes inside one sector, and the dynamic
 * header's checksum lies in its first sector. Every step writes only space nothing
 * refers to yet, flushes, and then flips one such sector, so a crash leaves either the
 * old or the new image and at worst leaked space. The two footers (the copy at 0 and
 * the trailing one) are separate sectors: between their writes they differ, which
 * `check` reports as a warning; either of them describes a whole image.
 */
import { isAbsolute, posix, resolve as resolvePath } from 'node:path';
import type { DiskImage } from '../../device/block-device.js';
import { ProgressMeter } from '../../device/progress.js';
import { VdiskError } from '../../errors.js';
import { copyBytes } from '../../storage/copy.js';
import { FileLocation, type ImageLocation } from '../../storage/location.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import {
  BAT_UNUSED,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  DYNAMIC_HEADER_SIZE,
  FOOTER_SIZE,
  HEADER_FIELDS,
  MAX_DISK_SIZE,
  PARENT_LOCATOR_COUNT,
  PLATFORM,
  SECTOR_SIZE,
  bitmapGet,
  diskGeometry,
  encodeDynamicHeader,
  encodeFooter,
  encodeLocatorData,
  nearestExactSizes,
  roundUpSector,
  vhdChecksum,
  largestGeometryReadsCurrentSize,
  validateBat,
  type DynamicHeader,
  type ParentLocator,
  type VhdFooter,
  type VhdMeta,
} from './layout.js';

/** Largest sector number a BAT entry can hold. */
const MAX_BAT_SECTOR = 0xfffffffe;

/** The W2ku (absolute) spelling of a parent reference, as seen from the child's location. */
export function absoluteRef(location: ImageLocation | undefined, ref: string): string {
  // A reference read back from a W2ru locator is spelled like `.\name`: resolve it with `/`.
  const norm = ref.replace(/\\/g, '/');
  if (location instanceof FileLocation) return isAbsolute(norm) ? norm : resolvePath(posix.dirname(resolvePath(location.name)), norm);
  // Elsewhere (a memory folder) names are plain: `.\name` and `name` are the same file.
  return norm.replace(/^\.\//, '');
}

/** The parent name and locator payloads for a reference: W2ru (when relative) and W2ku (spec "Parent Locator Entries"). */
export function parentLinkData(ref: string, absolute: string): { name: string; locators: Array<{ code: number; data: Buffer }> } {
  const name = posix.basename(ref.replace(/\\/g, '/'));
  const out: Array<{ code: number; data: Buffer }> = [];
  if (!isAbsolute(ref)) out.push({ code: PLATFORM.W2ru, data: encodeLocatorData(`.\\${ref.replace(/\//g, '\\').replace(/^\.\\/, '')}`) });
  out.push({ code: PLATFORM.W2ku, data: encodeLocatorData(absolute) });
  return { name, locators: out };
}

/** Block data copied between two flushes while packing. */
const PACK_BATCH_BYTES = 64 * 1024 * 1024;

/** Zeros to write in pieces. */
const ZEROS = Buffer.alloc(IO_CHUNK);

/**
 * A writer over one VHD's container that keeps track of where the trailing footer is
 * and orders every change as the module comment describes.
 */
class VhdEditor {
  /** Where the trailing footer sits: everything from here on is the footer. */
  end: number;
  footer: VhdFooter;
  footerBytes: Buffer;
  readonly header?: DynamicHeader;
  readonly bat?: Uint32Array;
  readonly span: number;

  constructor(
    readonly storage: Storage,
    readonly meta: VhdMeta,
  ) {
    const name = storage.name;
    if (meta.footerSource !== 'trailing') throw new VdiskError('E_CORRUPT', `${name}: the trailing footer is damaged (${meta.trailingProblem}); repair it with check -r all first`);
    const { problems, dataEnd } = validateBat(meta, name, 1);
    if (problems[0]) throw new VdiskError('E_CORRUPT', problems[0].message);
    this.end = Math.ceil(Math.max(meta.fileSize - FOOTER_SIZE, dataEnd) / SECTOR_SIZE) * SECTOR_SIZE;
    this.footer = { ...meta.footer, uniqueId: Buffer.from(meta.footer.uniqueId) };
    this.footerBytes = meta.footerBytes;
    // Locators a block was written over are dropped: their space is the block's.
    const gone = (i: number): boolean => meta.overwrittenLocators.some((o) => o.index === i);
    if (meta.header) this.header = { ...meta.header, parentLocators: meta.header.parentLocators.map((l, i) => (gone(i) ? { platformCode: 0, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 } : { ...l })) };
    if (meta.bat) this.bat = Uint32Array.from(meta.bat);
    this.span = meta.bitmapSize + meta.blockSize;
  }

  get name(): string {
    return this.storage.name;
  }

  flush(): Promise<void> {
    return this.storage.flush();
  }

  /** Grow the file by `len` bytes at its end: the footer moves first, so the file always ends in a valid one. Returns where the space starts. */
  async appendSpace(len: number): Promise<number> {
    const start = this.end;
    if ((start + len) / SECTOR_SIZE > MAX_BAT_SECTOR) throw new VdiskError('E_NOSPC', `${this.name}: file would be too large for VHD's 32-bit sector offsets`);
    await this.storage.write(this.footerBytes, start + len);
    this.end = start + len;
    return start;
  }

  async writeZeros(from: number, to: number): Promise<void> {
    for (let p = from; p < to; p += ZEROS.length) await this.storage.write(ZEROS.subarray(0, Math.min(ZEROS.length, to - p)), p);
  }

  /** Copy `len` bytes within the file (regions must not overlap). */
  copy(from: number, to: number, len: number): Promise<void> {
    return copyBytes(this.storage, from, this.storage, to, len);
  }

  /** Point BAT entry `idx` at `sector` (one 4-byte write: atomic). */
  async setBatEntry(idx: number, sector: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(sector >>> 0);
    await this.storage.write(b, this.header!.tableOffset + idx * 4);
    if (idx < this.bat!.length) this.bat![idx] = sector;
  }

  /** Move block `idx` to `dest` (free space): copy bitmap and data, flush, then flip its BAT entry and flush. */
  async moveBlock(idx: number, dest: number): Promise<void> {
    const from = this.bat![idx]! * SECTOR_SIZE;
    await this.copy(from, dest, this.span);
    await this.flush();
    await this.setBatEntry(idx, dest / SECTOR_SIZE);
    await this.flush();
  }

  /** Write a new footer: the copy at offset 0 (dynamic disks) first, the trailing one (which vdisk reads) last; then flush. */
  async writeFooters(footer: VhdFooter): Promise<void> {
    const bytes = encodeFooter(footer);
    if (footer.diskType !== DISK_TYPE_FIXED) await this.storage.write(bytes, 0);
    await this.storage.write(bytes, this.end);
    await this.flush();
    this.footer = footer;
    this.footerBytes = bytes;
  }

  /**
   * Raise max_table_entries in the header in place. The field and the checksum both
   * lie in the header's first sector, so one sector write flips it atomically.
   */
  async setMaxTableEntries(entries: number): Promise<void> {
    const at = this.footer.dataOffset;
    const raw = Buffer.alloc(DYNAMIC_HEADER_SIZE);
    await this.storage.read(raw, at);
    raw.writeUInt32BE(entries >>> 0, HEADER_FIELDS.maxTableEntries);
    raw.writeUInt32BE(vhdChecksum(raw, HEADER_FIELDS.checksum), HEADER_FIELDS.checksum);
    await this.storage.write(raw.subarray(0, SECTOR_SIZE), at);
    await this.flush();
    this.header!.maxTableEntries = entries;
  }

  /**
   * Write a new dynamic header with its locator data at the end of the file, then
   * point the footers at it (`footerChange` may alter other footer fields in the same
   * sector write). Until the footers flip, the old header and locators stay intact.
   */
  async relocateHeader(h: DynamicHeader, locatorData: Array<Buffer | undefined>, footerChange: (f: VhdFooter) => void = () => undefined): Promise<void> {
    let len = DYNAMIC_HEADER_SIZE;
    for (const d of locatorData) if (d) len += roundUpSector(Math.max(d.length, 1));
    const start = await this.appendSpace(len);
    let pos = start + DYNAMIC_HEADER_SIZE;
    h.parentLocators = h.parentLocators.map((l, i) => {
      const d = locatorData[i];
      if (!d) return l;
      const space = roundUpSector(Math.max(d.length, 1));
      const loc: ParentLocator = { platformCode: l.platformCode, platformDataSpace: space, platformDataLength: d.length, platformDataOffset: pos };
      pos += space;
      return loc;
    });
    pos = start + DYNAMIC_HEADER_SIZE;
    for (const d of locatorData) {
      if (!d) continue;
      await this.storage.write(d, pos);
      pos += roundUpSector(Math.max(d.length, 1));
    }
    await this.storage.write(encodeDynamicHeader(h), start);
    await this.flush();
    const f: VhdFooter = { ...this.footer, dataOffset: start };
    footerChange(f);
    await this.writeFooters(f);
    Object.assign(this.header!, h);
  }

  /** Read locator `i`'s data. */
  async locatorData(l: ParentLocator): Promise<Buffer> {
    const b = Buffer.alloc(l.platformDataLength);
    await this.storage.read(b, l.platformDataOffset);
    return b;
  }

  /** File regions in use: metadata (footer copy, header, BAT, locator data) and blocks, sorted by start. */
  usedRegions(): Array<{ start: number; end: number; block?: number }> {
    const h = this.header!;
    const out: Array<{ start: number; end: number; block?: number }> = [
      { start: 0, end: FOOTER_SIZE },
      { start: this.footer.dataOffset, end: this.footer.dataOffset + DYNAMIC_HEADER_SIZE },
      { start: h.tableOffset, end: roundUpSector(h.tableOffset + h.maxTableEntries * 4) },
    ];
    for (const l of h.parentLocators) {
      if (l.platformCode === 0 || l.platformDataLength === 0 || l.platformDataOffset < 0) continue;
      out.push({ start: l.platformDataOffset, end: roundUpSector(l.platformDataOffset + l.platformDataLength) });
    }
    this.bat!.forEach((e, i) => {
      if (e !== BAT_UNUSED) out.push({ start: e * SECTOR_SIZE, end: e * SECTOR_SIZE + this.span, block: i });
    });
    return out.sort((a, b) => a.start - b.start);
  }

  /**
   * Pack blocks: fill each gap of at least one block span, lowest first, with the
   * block that lies last in the file, while that block lies after the gap; then cut
   * the file. The moves are planned in one pass over the regions, then done in
   * batches: copies into the gaps (free space below every block still in place, so
   * no copy lands on a block another move reads), one flush, the BAT entries, one
   * flush. Returns blocks moved.
   */
  async pack(): Promise<number> {
    const regions = this.usedRegions();
    const gone = new Set<number>();
    let hi = regions.length - 1;
    /** Index of the last block still in its place. */
    const lastBlock = (): number => {
      while (hi >= 0 && (regions[hi]!.block === undefined || gone.has(hi))) hi--;
      return hi;
    };
    const moves: Array<{ block: number; from: number; to: number }> = [];
    let pos = 0;
    for (let i = 0; i < regions.length && lastBlock() >= i; i++) {
      const r = regions[i]!;
      let gapStart = roundUpSector(pos);
      for (;;) {
        const l = lastBlock();
        if (l < i || r.start - gapStart < this.span || regions[l]!.start < gapStart + this.span) break;
        moves.push({ block: regions[l]!.block!, from: regions[l]!.start, to: gapStart });
        gone.add(l);
        gapStart += this.span;
        pos = gapStart;
      }
      if (!gone.has(i)) pos = Math.max(pos, r.end);
    }
    const perBatch = Math.max(1, Math.floor(PACK_BATCH_BYTES / this.span));
    for (let k = 0; k < moves.length; k += perBatch) {
      const batch = moves.slice(k, k + perBatch);
      for (const m of batch) await this.copy(m.from, m.to, this.span);
      await this.flush();
      for (const m of batch) await this.setBatEntry(m.block, m.to / SECTOR_SIZE);
      await this.flush();
    }
    await this.trimEnd();
    return moves.length;
  }

  /** Cut unused space at the end of the file: the footer moves back over it first, then the file is truncated. */
  async trimEnd(): Promise<void> {
    const usedEnd = roundUpSector(this.usedRegions().reduce((m, r) => Math.max(m, r.end), 0));
    if (usedEnd >= this.end) return;
    await this.storage.write(this.footerBytes, usedEnd);
    await this.flush();
    await this.storage.truncate(usedEnd + FOOTER_SIZE);
    await this.flush();
    this.end = usedEnd;
  }

  /**
   * Where the dynamic header belongs: right after the footer copy when that space is
   * free (a header left elsewhere by an interrupted rewrite goes back there), else
   * where it is.
   */
  homeOffset(): number {
    const at = FOOTER_SIZE;
    if (this.footer.dataOffset === at) return at;
    return this.usedRegions().some((r) => r.start < at + DYNAMIC_HEADER_SIZE && r.end > at) ? this.footer.dataOffset : at;
  }

  /**
   * Where each new locator's data fits below the BAT, first fit, or undefined when it
   * does not all fit. The space counted free is what the header `h` (once live) leaves
   * unused below table_offset: not the footer copy, the header's home, the BAT, blocks,
   * or locators `h` keeps (those without new data).
   */
  planBelowBat(h: DynamicHeader, home: number, locatorData: Array<Buffer | undefined>): number[] | undefined {
    const limit = this.header!.tableOffset;
    const used: Array<{ start: number; end: number }> = [
      { start: 0, end: FOOTER_SIZE },
      { start: home, end: home + DYNAMIC_HEADER_SIZE },
      ...this.usedRegions().filter((r) => r.block !== undefined || r.start === this.header!.tableOffset),
    ];
    h.parentLocators.forEach((l, i) => {
      if (!locatorData[i] && liveLocator(l)) used.push(locatorRegion(l));
    });
    used.sort((a, b) => a.start - b.start);
    const free: Array<{ start: number; end: number }> = [];
    let pos = 0;
    for (const r of used) {
      if (r.start > pos) free.push({ start: pos, end: Math.min(r.start, limit) });
      pos = Math.max(pos, r.end);
      if (pos >= limit) break;
    }
    if (pos < limit) free.push({ start: pos, end: limit });
    const plan: number[] = [];
    for (const [i, d] of locatorData.entries()) {
      if (!d) continue;
      const need = roundUpSector(Math.max(d.length, 1));
      const r = free.find((x) => x.end - x.start >= need);
      if (!r) return undefined;
      plan[i] = r.start;
      r.start += need;
    }
    return plan;
  }

  /**
   * Replace the dynamic header (and locator data) crash-safely, ending with the header
   * back at its old offset. Locator data must end up below the BAT's end: qemu appends
   * new blocks right after the BAT or the last block, over anything else there.
   *
   * When the new locators fit in free space below the BAT: first a copy of the header
   * with its locators at the end of the file goes live (relocateHeader); then the
   * locator data goes below the BAT (free since the flip), the header to its old place,
   * and the footers flip back to it. Otherwise the BAT moves to the end of the file
   * behind the new locator data (moveBatBehindLocators). Last, space no longer used at
   * the end is cut.
   */
  async rewriteHeader(h: DynamicHeader, locatorData: Array<Buffer | undefined>, footerChange: (f: VhdFooter) => void): Promise<void> {
    const home = this.homeOffset();
    const plan = this.planBelowBat(h, home, locatorData);
    if (!plan) return this.moveBatBehindLocators(h, home, locatorData, footerChange);
    await this.relocateHeader(h, locatorData, footerChange);
    const overlapsUsed = (start: number, end: number): boolean => this.usedRegions().some((r) => start < r.end && end > r.start);
    if (overlapsUsed(home, home + DYNAMIC_HEADER_SIZE)) return;
    const header: DynamicHeader = { ...this.header!, parentLocators: this.header!.parentLocators.map((l) => ({ ...l })) };
    for (const [i, d] of locatorData.entries()) {
      if (!d) continue;
      header.parentLocators[i]!.platformDataOffset = plan[i]!;
      await this.storage.write(d, plan[i]!);
    }
    await this.storage.write(encodeDynamicHeader(header), home);
    await this.flush();
    await this.writeFooters({ ...this.footer, dataOffset: home });
    Object.assign(this.header!, header);
    await this.trimEnd();
  }

  /**
   * Append the new locator data, a copy of the BAT and a copy of the header naming
   * both; flip the footers to that header; then write the header at its old place and
   * flip the footers back. The copy of the header, last in the file, is cut off. The
   * old BAT's and locators' space stays free below the new BAT for later locators.
   */
  async moveBatBehindLocators(h: DynamicHeader, home: number, locatorData: Array<Buffer | undefined>, footerChange: (f: VhdFooter) => void): Promise<void> {
    const spaces = locatorData.map((d) => (d ? roundUpSector(Math.max(d.length, 1)) : 0));
    const locLen = spaces.reduce((a, b) => a + b, 0);
    const entryBytes = this.header!.maxTableEntries * 4;
    const batLen = roundUpSector(entryBytes);
    const start = await this.appendSpace(locLen + batLen + DYNAMIC_HEADER_SIZE);
    let pos = start;
    const header: DynamicHeader = { ...h, parentLocators: h.parentLocators.map((l) => ({ ...l })) };
    for (const [i, d] of locatorData.entries()) {
      if (!d) continue;
      header.parentLocators[i] = { platformCode: h.parentLocators[i]!.platformCode, platformDataSpace: spaces[i]!, platformDataLength: d.length, platformDataOffset: pos };
      await this.storage.write(d, pos);
      pos += spaces[i]!;
    }
    const batAt = start + locLen;
    await this.copy(this.header!.tableOffset, batAt, entryBytes);
    if (batLen > entryBytes) await this.storage.write(Buffer.alloc(batLen - entryBytes, 0xff), batAt + entryBytes);
    header.tableOffset = batAt;
    const tmp = batAt + batLen;
    await this.storage.write(encodeDynamicHeader(header), tmp);
    await this.flush();
    const f: VhdFooter = { ...this.footer, dataOffset: tmp };
    footerChange(f);
    await this.writeFooters(f);
    Object.assign(this.header!, header);
    const overlapsUsed = (s: number, e: number): boolean => this.usedRegions().some((r) => s < r.end && e > r.start);
    if (overlapsUsed(home, home + DYNAMIC_HEADER_SIZE)) return;
    await this.storage.write(encodeDynamicHeader(header), home);
    await this.flush();
    await this.writeFooters({ ...this.footer, dataOffset: home });
    await this.trimEnd();
  }
}

/** True when a locator entry names data. */
function liveLocator(l: ParentLocator): boolean {
  return l.platformCode !== 0 && l.platformDataLength > 0 && l.platformDataOffset >= 0;
}

/** The sectors a locator's data occupies. */
function locatorRegion(l: ParentLocator): { start: number; end: number } {
  return { start: l.platformDataOffset, end: roundUpSector(l.platformDataOffset + l.platformDataLength) };
}

/** Check a new size against the format's limits and the size rule of the image's creator. */
function checkNewSize(meta: VhdMeta, name: string, newSize: number): VhdFooter {
  if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % SECTOR_SIZE !== 0) throw new VdiskError('E_USAGE', `${name}: new size ${newSize} is not a positive multiple of 512`);
  if (newSize > MAX_DISK_SIZE) throw new VdiskError('E_USAGE', `${name}: new size ${newSize} is over the VHD format's 2040 GiB`);
  const { exact, cylinders, heads, sectorsPerTrack } = diskGeometry(newSize);
  if (meta.sizeSource === 'chs' && !exact && !largestGeometryReadsCurrentSize(meta.footer)) {
    // Virtual PC reads the geometry alone: the largest one would read as 127.5 GiB.
    const { below, above } = nearestExactSizes(newSize);
    const nearest = [below !== undefined ? `${below} below` : '', above !== undefined ? `${above} above` : ''].filter(Boolean).join(', ');
    throw new VdiskError('E_UNSUPPORTED', `${name}: this VHD's creator (${meta.footer.creatorApplication}) makes readers take the size from the CHS geometry; ${newSize} bytes has no exact one${nearest ? ` (nearest: ${nearest})` : ''}`);
  }
  // original_size is "the size at creation" in the spec, but libvhdi (vhdiinfo) reports
  // it as the media size, so both fields follow, as they agree in a new image.
  return { ...meta.footer, uniqueId: Buffer.from(meta.footer.uniqueId), originalSize: newSize, currentSize: newSize, cylinders, heads, sectorsPerTrack };
}

/**
 * Resize a fixed VHD. Growing: the old footer is copied to the new end first (the
 * file is then longer than its old size needs, which is valid), the old footer's
 * place is zeroed, and the new footer goes over the copy. Shrinking: the new footer
 * goes over the old one first (the tail is then unused space), then to the new end,
 * and the file is cut.
 */
async function resizeFixed(storage: Storage, meta: VhdMeta, newSize: number, meter: ProgressMeter): Promise<void> {
  const name = storage.name;
  const footer = checkNewSize(meta, name, newSize);
  const fileSize = storage.size;
  if (fileSize % SECTOR_SIZE !== 0) throw new VdiskError('E_UNSUPPORTED', `${name}: a fixed VHD of ${fileSize} bytes (not whole sectors) cannot be resized`);
  const footerPos = fileSize - FOOTER_SIZE;
  const oldSize = meta.virtualSize;
  const bytes = encodeFooter(footer);
  const zero = async (from: number, to: number): Promise<void> => {
    for (let p = from; p < to; p += ZEROS.length) {
      const n = Math.min(ZEROS.length, to - p);
      await storage.write(ZEROS.subarray(0, n), p);
      meter.add(n);
    }
  };
  if (newSize > footerPos) meter.more(footerPos + FOOTER_SIZE - oldSize);
  else if (newSize > oldSize) meter.more(newSize - oldSize);
  if (newSize > footerPos) {
    await storage.write(meta.footerBytes, newSize);
    await storage.flush();
    await zero(oldSize, footerPos + FOOTER_SIZE);
    await storage.flush();
    await storage.write(bytes, newSize);
    await storage.flush();
  } else {
    if (newSize > oldSize) {
      await zero(oldSize, newSize);
      await storage.flush();
    }
    await storage.write(bytes, footerPos);
    await storage.flush();
    if (newSize < footerPos) {
      await storage.write(bytes, newSize);
      await storage.flush();
      await storage.truncate(newSize + FOOTER_SIZE);
      await storage.flush();
    }
  }
}

/**
 * Resize a dynamic or differencing VHD. Growing: make room for a longer BAT if it
 * must grow past its sector padding (parent locators in the way move with a
 * relocated header, blocks in the way move to the end of the file), fill the new
 * entries with "unused", raise max_table_entries, and only then write the footers
 * with the new size. Shrinking: the footers go first (the cut-off blocks become
 * invisible), then their BAT entries are cleared and the file packed.
 */
async function resizeDynamic(storage: Storage, meta: VhdMeta, newSize: number, meter: ProgressMeter): Promise<void> {
  const ed = new VhdEditor(storage, meta);
  const name = ed.name;
  const footer = checkNewSize(meta, name, newSize);
  const bs = meta.blockSize;
  const oldSize = meta.virtualSize;
  const oldN = meta.bat!.length;
  const newN = Math.ceil(newSize / bs);
  const h = ed.header!;
  const ff = (n: number): Buffer => Buffer.alloc(n * 4, 0xff);

  /** Zero the data of block `idx` from byte `inOff` to its end (space the guest cannot see). */
  const zeroTail = async (idx: number, inOff: number): Promise<void> => {
    const e = ed.bat![idx];
    if (e === undefined || e === BAT_UNUSED || inOff >= bs) return;
    const dataStart = e * SECTOR_SIZE + meta.bitmapSize;
    await ed.writeZeros(dataStart + inOff, dataStart + bs);
    await ed.flush();
  };

  if (newSize > oldSize) {
    if (newN > h.maxTableEntries) {
      let oldBatEnd = roundUpSector(h.tableOffset + h.maxTableEntries * 4);
      let newBatEnd = roundUpSector(h.tableOffset + newN * 4);
      const inWay = (s: number, e: number): boolean => s < newBatEnd && e > oldBatEnd;
      // Parent locators in the way (others put them after the BAT): rewrite the header
      // with their data below the BAT, or with the BAT moved behind them to the end. A
      // header in the way (left there by an interrupted rewrite) goes back to offset 512.
      const moveLocators = h.parentLocators.map((l) => liveLocator(l) && inWay(locatorRegion(l).start, locatorRegion(l).end));
      const headerInWay = inWay(ed.footer.dataOffset, ed.footer.dataOffset + DYNAMIC_HEADER_SIZE);
      if (moveLocators.some(Boolean) || headerInWay) {
        const data: Array<Buffer | undefined> = [];
        for (const [i, l] of h.parentLocators.entries()) data.push(moveLocators[i] ? await ed.locatorData(l) : undefined);
        await ed.rewriteHeader({ ...h, parentLocators: h.parentLocators.map((l) => ({ ...l })) }, data, () => undefined);
        oldBatEnd = roundUpSector(h.tableOffset + h.maxTableEntries * 4);
        newBatEnd = roundUpSector(h.tableOffset + newN * 4);
      }
      if (inWay(0, FOOTER_SIZE) || inWay(ed.footer.dataOffset, ed.footer.dataOffset + DYNAMIC_HEADER_SIZE)) {
        throw new VdiskError('E_UNSUPPORTED', `${name}: the BAT (table_offset ${h.tableOffset}) cannot grow to ${newN} entries: the footer copy or dynamic header follows it`);
      }
      // A BAT at the end of the file grows into new space (the footer moves first).
      if (newBatEnd > ed.end) await ed.appendSpace(newBatEnd - ed.end);
      // Blocks in the way move to the end of the file, lowest first.
      const blocks = ed.usedRegions().filter((r) => r.block !== undefined && inWay(r.start, r.end));
      meter.more(blocks.length * ed.span);
      for (const r of blocks) {
        const dest = await ed.appendSpace(ed.span);
        await ed.moveBlock(r.block!, dest);
        meter.add(ed.span);
      }
      // Hidden entries beyond the old table (or stale ones) must read "unused" before the table covers them.
      await storage.write(ff(newN - oldN), h.tableOffset + oldN * 4);
      await ed.flush();
      await ed.setMaxTableEntries(newN);
    } else if (newN > oldN) {
      await storage.write(ff(newN - oldN), h.tableOffset + oldN * 4);
      await ed.flush();
    }
    // The old last block's bytes past the old end become visible: make sure they are zeros.
    if (oldSize % bs !== 0) await zeroTail(oldN - 1, oldSize - (oldN - 1) * bs);
    await ed.writeFooters({ ...footer, dataOffset: ed.footer.dataOffset });
    return;
  }

  await ed.writeFooters({ ...footer, dataOffset: ed.footer.dataOffset });
  if (newN < oldN) {
    await storage.write(ff(oldN - newN), h.tableOffset + newN * 4);
    await ed.flush();
    for (let i = newN; i < oldN; i++) ed.bat![i] = BAT_UNUSED;
  }
  if (newSize % bs !== 0) await zeroTail(newN - 1, newSize - (newN - 1) * bs);
  await ed.pack();
}

/**
 * Change the virtual size of a VHD of any type in place (see resizeFixed and
 * resizeDynamic for the order); `onProgress` hears of the bytes zeroed or moved.
 */
export async function resizeVhd(storage: Storage, meta: VhdMeta, newSize: number, onProgress?: (done: number, total: number) => void): Promise<void> {
  const meter = new ProgressMeter(0, onProgress);
  if (meta.footer.diskType === DISK_TYPE_FIXED) await resizeFixed(storage, meta, newSize, meter);
  else await resizeDynamic(storage, meta, newSize, meter);
  meter.finish();
}

/**
 * Compact a dynamic or differencing VHD: release every block whose visible sectors
 * read the same with the block gone (zeros in a dynamic disk, the parent's bytes in
 * a differencing one), one BAT entry at a time; then pack the remaining blocks into
 * the holes and cut the file.
 */
export async function compactVhd(storage: Storage, meta: VhdMeta, parent: DiskImage | undefined, onProgress?: (done: number, total: number) => void): Promise<{ released: number }> {
  if (meta.footer.diskType === DISK_TYPE_FIXED) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: a fixed VHD has no blocks to release`);
  const differencing = meta.footer.diskType === DISK_TYPE_DIFFERENCING;
  // Without the parent, nothing says which blocks read the same as what lies below.
  if (differencing && !parent) throw new VdiskError('E_CHAIN', `${storage.name}: compacting a differencing VHD needs its parent open`);
  const ed = new VhdEditor(storage, meta);
  const bs = meta.blockSize;
  const bat = ed.bat!;
  const chunk = Math.min(bs, IO_CHUNK);
  const data = Buffer.alloc(chunk);
  const below = Buffer.alloc(chunk);
  const bitmap = Buffer.alloc(meta.bitmapSize);
  let released = 0;
  for (let idx = 0; idx < bat.length; idx++) {
    onProgress?.(idx, bat.length);
    const e = bat[idx]!;
    if (e === BAT_UNUSED) continue;
    await storage.read(bitmap, e * SECTOR_SIZE);
    const dataStart = e * SECTOR_SIZE + meta.bitmapSize;
    // The last block may reach past the disk's end: only its visible part counts.
    const visible = Math.min(bs, meta.virtualSize - idx * bs);
    let same = true;
    for (let off = 0; off < visible && same; off += chunk) {
      const n = Math.min(chunk, visible - off);
      await storage.read(data.subarray(0, n), dataStart + off);
      below.fill(0, 0, n);
      if (differencing && parent && idx * bs + off < parent.size) {
        const m = Math.min(n, parent.size - (idx * bs + off));
        await parent.read(below.subarray(0, m), idx * bs + off);
      }
      for (let s = 0; s < n && same; s += SECTOR_SIZE) {
        if (!bitmapGet(bitmap, (off + s) / SECTOR_SIZE)) continue;
        const t = Math.min(n, s + SECTOR_SIZE);
        if (!data.subarray(s, t).equals(below.subarray(s, t))) same = false;
      }
    }
    if (same) {
      await ed.setBatEntry(idx, BAT_UNUSED);
      released++;
    }
  }
  await ed.flush();
  onProgress?.(bat.length, bat.length);
  await ed.pack();
  return { released };
}

/**
 * Point a differencing VHD at `link` (or make it a dynamic disk with `undefined`).
 * A new header with the parent's unique id, time stamp, name and W2ru/W2ku locators
 * is written as rewriteHeader describes: every step leaves one valid header, the old
 * link until the footers flip, the new one after.
 */
export async function relinkVhd(storage: Storage, meta: VhdMeta, link: { uniqueId: Buffer; timestamp: number; ref: string; absolute: string } | undefined): Promise<void> {
  const name = storage.name;
  const type = meta.footer.diskType;
  if (type === DISK_TYPE_FIXED) throw new VdiskError('E_UNSUPPORTED', `${name}: a fixed VHD cannot have a parent`);
  const ed = new VhdEditor(storage, meta);
  const h = ed.header!;
  const empty = (): ParentLocator => ({ platformCode: 0, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 });
  if (!link) {
    if (type === DISK_TYPE_DYNAMIC) {
      // Already unlinked; a header an interrupted unlink left at the end goes back to offset 512.
      if (ed.homeOffset() !== ed.footer.dataOffset) await ed.rewriteHeader({ ...h, parentLocators: h.parentLocators.map((l) => ({ ...l })) }, [], () => undefined);
      return;
    }
    // The parent's data was copied in by the caller: clear bits now read as zeros, which they are.
    // A dynamic disk names no parent: its locators go too (their space could be taken by blocks).
    const header: DynamicHeader = { ...h, parentUniqueId: Buffer.alloc(16), parentTimestamp: 0, parentUnicodeName: '', parentLocators: h.parentLocators.map(empty) };
    await ed.rewriteHeader(header, [], (f) => {
      f.diskType = DISK_TYPE_DYNAMIC;
    });
    return;
  }
  const { name: parentName, locators } = parentLinkData(link.ref, link.absolute);
  const entries: ParentLocator[] = [];
  const data: Array<Buffer | undefined> = [];
  for (let i = 0; i < PARENT_LOCATOR_COUNT; i++) {
    const l = locators[i];
    entries.push({ ...empty(), platformCode: l?.code ?? 0 });
    data.push(l?.data);
  }
  // The link already says exactly this (a commit re-links to a parent whose id and time stamp writes left alone): nothing to write.
  if (type === DISK_TYPE_DIFFERENCING && !meta.copyDiffers && !meta.copyProblem && ed.homeOffset() === ed.footer.dataOffset && (await sameLink(ed, link, parentName, entries, data))) return;
  const header: DynamicHeader = { ...h, parentUniqueId: Buffer.from(link.uniqueId), parentTimestamp: link.timestamp, parentUnicodeName: parentName, parentLocators: entries };
  await ed.rewriteHeader(header, data, (f) => {
    f.diskType = DISK_TYPE_DIFFERENCING;
  });
}

/** True when `ed`'s header already names `link` with these locator codes and data. */
async function sameLink(ed: VhdEditor, link: { uniqueId: Buffer; timestamp: number }, name: string, entries: readonly ParentLocator[], data: ReadonlyArray<Buffer | undefined>): Promise<boolean> {
  const h = ed.header!;
  if (!h.parentUniqueId.equals(link.uniqueId) || h.parentTimestamp !== link.timestamp || h.parentUnicodeName !== name) return false;
  for (const [i, e] of entries.entries()) {
    const l = h.parentLocators[i]!;
    if (l.platformCode !== e.platformCode) return false;
    const want = data[i];
    if (want === undefined) continue;
    if (l.platformDataLength !== want.length || !(await ed.locatorData(l)).equals(want)) return false;
  }
  return true;
}

/**
 * Move a dynamic header and parent locator data that lie where other writers append
 * new blocks (see metadataAtRisk) below the BAT's end, as rewriteHeader does.
 */
export async function secureMetadata(storage: Storage, meta: VhdMeta, locators: readonly number[]): Promise<void> {
  const ed = new VhdEditor(storage, meta);
  const h = ed.header!;
  const data: Array<Buffer | undefined> = [];
  for (const [i, l] of h.parentLocators.entries()) data.push(locators.includes(i) ? await ed.locatorData(l) : undefined);
  await ed.rewriteHeader({ ...h, parentLocators: h.parentLocators.map((l) => ({ ...l })) }, data, () => undefined);
}
