/**
 * Reading a VHD's metadata from its container and validating it field by field
 * before anything trusts it: footer (trailing, or the copy at offset 0), dynamic
 * header, BAT, parent locators.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import {
  BAT_UNUSED,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  DYNAMIC_HEADER_SIZE,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  MAX_CHS_SECTORS,
  MAX_DISK_SIZE,
  SECTOR_SIZE,
  bitmapBytes,
  decodeDynamicHeader,
  decodeFooter,
  decodeLocatorData,
  fourCC,
  geometrySectors,
  roundUpSector,
  type DynamicHeader,
  type VhdFooter,
} from './layout.js';

/** Largest parent locator data vdisk reads (a path; Windows uses at most 64 KiB). */
const MAX_LOCATOR_DATA = 64 * 1024;
/** Largest block size accepted: the field is 32 bits; 2^31 is its largest power of two. */
const MAX_BLOCK_SIZE = 2 ** 31;

/** A region of the file that holds metadata, not block data. */
export interface MetaRegion {
  start: number;
  end: number;
  what: string;
}

/** Everything known about a VHD after validation. */
export interface VhdMeta {
  footer: VhdFooter;
  /** The footer in use, byte for byte as found (written back unchanged when the file grows). */
  footerBytes: Buffer;
  /** Where the footer in use came from. */
  footerSource: 'trailing' | 'copy-at-0';
  /** Why the trailing footer was not used, when it was not. */
  trailingProblem?: string;
  /** True when the copy at offset 0 exists and is valid (dynamic and differencing disks). */
  copyValid: boolean;
  /** True when both footers are valid but differ (qemu reads the copy at 0, we the trailing one). */
  copyDiffers: boolean;
  /** Why the copy at offset 0 is unusable (dynamic/differencing disks only). */
  copyProblem?: string;
  /** Disk size as the guest sees it. */
  virtualSize: number;
  /** Which field the size came from. */
  sizeSource: FooterSize['source'];
  header?: DynamicHeader;
  /** BAT entries covering the virtual size (sector offsets or BAT_UNUSED). */
  bat?: Uint32Array;
  blockSize: number;
  bitmapSize: number;
  metadata: MetaRegion[];
  fileSize: number;
  /**
   * Parent locators whose data lies under an allocated block: another writer (qemu
   * appends new blocks right after the BAT or the last block) wrote a block over them.
   * The block is taken as the newer data; these locators are not read.
   */
  overwrittenLocators: Array<{ index: number; message: string }>;
}

/** A disk size and the footer field it came from. */
export interface FooterSize {
  size: number;
  source: 'current_size' | 'chs';
}

/**
 * The size a reader gives `f` when it sizes this creator by CHS geometry (`byChs`)
 * or not: the CHS product, unless the geometry is the largest (65535x16x255), which
 * means "use current_size" (rounded down to a sector), as qemu reads it.
 */
function footerSize(f: VhdFooter, byChs: boolean): FooterSize {
  const chsSectors = geometrySectors(f);
  if (byChs && chsSectors !== MAX_CHS_SECTORS) return { size: chsSectors * SECTOR_SIZE, source: 'chs' };
  return { size: Math.floor(f.currentSize / SECTOR_SIZE) * SECTOR_SIZE, source: 'current_size' };
}

/** True when the footer's creator wrote its size as CHS geometry, so vdisk reads it so. */
function sizeFromChs(f: VhdFooter): boolean {
  // Virtual PC ("vpc ") and qemu without force_size ("qemu") round the size to a CHS
  // product; Hyper-V, disk2vhd, XenServer, Azure, qem2 and we (vdsk) write an exact
  // current_size.
  return f.creatorApplication === 'qemu' || f.creatorApplication === 'vpc ';
}

/**
 * True when readers of `f`'s creator take the largest geometry (65535x16x255) to mean
 * "use current_size": qemu does for every creator; Virtual PC ("vpc "), which reads
 * the geometry alone, has no such rule.
 */
export function largestGeometryReadsCurrentSize(f: VhdFooter): boolean {
  return f.creatorApplication !== 'vpc ';
}

/** Creators whose current_size qemu 7.2 trusts (block/vpc.c); it sizes every other VHD by CHS geometry. */
const QEMU_CURRENT_SIZE_CREATORS: readonly string[] = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];

/** The size qemu-img 7.2 gives a VHD with footer `f` when opened plainly (no force_size_calc). */
export function qemuVirtualSize(f: VhdFooter): FooterSize {
  return footerSize(f, !QEMU_CURRENT_SIZE_CREATORS.includes(f.creatorApplication));
}

/** True when `storage` looks like a VHD (footer cookie at the end, or its copy at offset 0). */
export async function probeVhd(storage: Storage): Promise<boolean> {
  if (storage.size < FOOTER_SIZE) return false;
  const b = Buffer.alloc(8);
  await storage.read(b, 0);
  if (b.toString('latin1') === FOOTER_COOKIE) return true;
  await storage.read(b, storage.size - FOOTER_SIZE);
  return b.toString('latin1') === FOOTER_COOKIE;
}

/** Read and validate a VHD's metadata; E_FORMAT if it is not a VHD, E_CORRUPT naming the field otherwise. */
export async function readVhdMeta(storage: Storage): Promise<VhdMeta> {
  const name = storage.name;
  const fileSize = storage.size;
  if (fileSize < FOOTER_SIZE) throw new VdiskError('E_FORMAT', `${name}: ${fileSize} bytes is too small for a VHD footer`);

  const trailingBuf = Buffer.alloc(FOOTER_SIZE);
  await storage.read(trailingBuf, fileSize - FOOTER_SIZE);
  const trailing = decodeFooter(trailingBuf);
  const copyBuf = Buffer.alloc(FOOTER_SIZE);
  await storage.read(copyBuf, 0);
  const copy = decodeFooter(copyBuf);

  let footer: VhdFooter;
  let footerBytes: Buffer;
  let footerSource: VhdMeta['footerSource'];
  if (trailing.valid) {
    footer = trailing.footer;
    footerBytes = trailingBuf;
    footerSource = 'trailing';
  } else if (copy.valid && copy.footer.diskType !== DISK_TYPE_FIXED && fileSize >= FOOTER_SIZE + DYNAMIC_HEADER_SIZE) {
    footer = copy.footer;
    footerBytes = copyBuf;
    footerSource = 'copy-at-0';
  } else if (trailing.footer.cookie === FOOTER_COOKIE || copy.footer.cookie === FOOTER_COOKIE) {
    const why = trailing.footer.cookie === FOOTER_COOKIE ? trailing.why : `trailing ${trailing.why}; copy at offset 0: ${copy.why ?? 'a fixed disk has no copy'}`;
    throw new VdiskError('E_CORRUPT', `${name}: ${why}`);
  } else {
    throw new VdiskError('E_FORMAT', `${name}: no VHD footer (cookie "${FOOTER_COOKIE}") at the end or at offset 0`);
  }

  const type = footer.diskType;
  if (type !== DISK_TYPE_FIXED && type !== DISK_TYPE_DYNAMIC && type !== DISK_TYPE_DIFFERENCING) {
    throw new VdiskError('E_CORRUPT', `${name}: footer disk_type ${type} is not fixed (2), dynamic (3) or differencing (4)`);
  }
  if (footer.currentSize < 0 || footer.currentSize > MAX_DISK_SIZE) {
    throw new VdiskError('E_CORRUPT', `${name}: footer current_size ${footer.currentSize} is over the format's 2040 GiB`);
  }
  const { size: virtualSize, source: sizeSource } = footerSize(footer, sizeFromChs(footer));

  const copyProblem = type === DISK_TYPE_FIXED ? undefined : copy.valid ? undefined : copy.why;
  const meta: VhdMeta = {
    footer,
    footerBytes,
    footerSource,
    copyValid: type !== DISK_TYPE_FIXED && copy.valid,
    copyDiffers: type !== DISK_TYPE_FIXED && trailing.valid && copy.valid && !trailingBuf.equals(copyBuf),
    virtualSize,
    sizeSource,
    blockSize: 0,
    bitmapSize: 0,
    metadata: [],
    fileSize,
    overwrittenLocators: [],
  };
  if (!trailing.valid) meta.trailingProblem = trailing.why;
  if (copyProblem) meta.copyProblem = copyProblem;

  if (type === DISK_TYPE_FIXED) {
    if (virtualSize > fileSize - FOOTER_SIZE) {
      throw new VdiskError('E_CORRUPT', `${name}: footer current_size ${virtualSize} is larger than the file's ${fileSize - FOOTER_SIZE} data bytes`);
    }
    return meta;
  }

  // Dynamic and differencing disks: the dynamic header and the BAT.
  const hdrOff = footer.dataOffset;
  if (hdrOff < 0 || hdrOff + DYNAMIC_HEADER_SIZE > fileSize) {
    throw new VdiskError('E_CORRUPT', `${name}: footer data_offset ${hdrOff} puts the dynamic header outside the ${fileSize}-byte file`);
  }
  const hbuf = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  await storage.read(hbuf, hdrOff);
  const dh = decodeDynamicHeader(hbuf);
  if (!dh.valid) throw new VdiskError('E_CORRUPT', `${name}: ${dh.why}`);
  const header = dh.header;
  const bs = header.blockSize;
  if (bs < SECTOR_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) {
    throw new VdiskError('E_CORRUPT', `${name}: dynamic header block_size ${bs} is not a power of two between 512 and 2^31`);
  }
  const batBytes = header.maxTableEntries * 4;
  if (header.tableOffset < 0 || header.tableOffset + batBytes > fileSize) {
    throw new VdiskError('E_CORRUPT', `${name}: BAT (table_offset ${header.tableOffset}, max_table_entries ${header.maxTableEntries}) lies outside the ${fileSize}-byte file`);
  }
  const needed = Math.ceil(virtualSize / bs);
  if (header.maxTableEntries < needed) {
    throw new VdiskError('E_CORRUPT', `${name}: dynamic header max_table_entries ${header.maxTableEntries} covers less than the ${virtualSize}-byte disk (needs ${needed})`);
  }
  const batBuf = Buffer.alloc(needed * 4);
  if (needed > 0) await storage.read(batBuf, header.tableOffset);
  const bat = new Uint32Array(needed);
  for (let i = 0; i < needed; i++) bat[i] = batBuf.readUInt32BE(i * 4);

  meta.header = header;
  meta.bat = bat;
  meta.blockSize = bs;
  meta.bitmapSize = bitmapBytes(bs);
  meta.metadata.push({ start: 0, end: FOOTER_SIZE, what: 'footer copy' });
  meta.metadata.push({ start: hdrOff, end: hdrOff + DYNAMIC_HEADER_SIZE, what: 'dynamic header' });
  meta.metadata.push({ start: header.tableOffset, end: roundUpSector(header.tableOffset + batBytes), what: 'BAT' });
  const span = meta.bitmapSize + bs;
  header.parentLocators.forEach((l, i) => {
    if (l.platformCode === 0 || l.platformDataLength === 0) return;
    if (l.platformDataOffset < 0 || l.platformDataOffset + l.platformDataLength > fileSize) return;
    const start = l.platformDataOffset;
    const end = roundUpSector(start + l.platformDataLength);
    const under = bat.findIndex((e) => e !== BAT_UNUSED && e * SECTOR_SIZE < end && e * SECTOR_SIZE + span > start && e * SECTOR_SIZE + span <= fileSize);
    if (under >= 0) {
      meta.overwrittenLocators.push({
        index: i,
        message:
          `${name}: parent locator ${i} (${fourCC(l.platformCode)}, offset ${start}) lies under the block of BAT entry ${under} (sector ${bat[under]}): ` +
          'another program (qemu appends new blocks after the BAT and the last block) wrote that block over it; the block is kept and the locator ignored ' +
          '(name the parent again with `vdisk rebase -u -b PARENT IMAGE`)',
      });
      return;
    }
    meta.metadata.push({ start, end, what: `parent locator ${i}` });
  });
  return meta;
}

/**
 * Metadata other writers would append a block over: qemu puts a new block at the
 * BAT's end or the last block's end, whichever is later, so a dynamic header or
 * parent locator data starting there is at risk. `locators` are their indexes.
 */
export function metadataAtRisk(meta: VhdMeta): { header: boolean; locators: number[] } {
  const h = meta.header;
  if (!h || !meta.bat) return { header: false, locators: [] };
  const span = meta.bitmapSize + meta.blockSize;
  let appendAt = roundUpSector(h.tableOffset + h.maxTableEntries * 4);
  for (const e of meta.bat) if (e !== BAT_UNUSED) appendAt = Math.max(appendAt, e * SECTOR_SIZE + span);
  const locators: number[] = [];
  h.parentLocators.forEach((l, i) => {
    if (l.platformCode === 0 || l.platformDataLength === 0 || meta.overwrittenLocators.some((o) => o.index === i)) return;
    if (l.platformDataOffset >= appendAt) locators.push(i);
  });
  return { header: meta.footer.dataOffset >= appendAt, locators };
}

/** One problem with the block allocation table. */
export interface BatProblem {
  message: string;
  offset: number;
}

/**
 * Check every allocated BAT entry: inside the file (before the trailing footer when
 * that is valid), not over metadata, not overlapping another block. Returns the
 * problems (at most `limit`) and where the allocated data ends.
 */
export function validateBat(meta: VhdMeta, name: string, limit = 100): { problems: BatProblem[]; dataEnd: number; allocated: number } {
  const problems: BatProblem[] = [];
  let dataEnd = meta.metadata.reduce((m, r) => Math.max(m, r.end), 0);
  const bat = meta.bat;
  if (!bat) return { problems, dataEnd, allocated: 0 };
  const span = meta.bitmapSize + meta.blockSize;
  const limitEnd = meta.footerSource === 'trailing' ? meta.fileSize - FOOTER_SIZE : meta.fileSize;
  const starts: number[] = [];
  let allocated = 0;
  for (let i = 0; i < bat.length; i++) {
    const e = bat[i]!;
    if (e === BAT_UNUSED) continue;
    allocated++;
    const start = e * SECTOR_SIZE;
    const end = start + span;
    if (end > limitEnd) {
      if (problems.length < limit) problems.push({ message: `${name}: BAT entry ${i} (sector ${e}) puts its block past the end of the file's data (${limitEnd} bytes)`, offset: start });
      continue;
    }
    const over = meta.metadata.find((r) => start < r.end && end > r.start);
    if (over) {
      if (problems.length < limit) problems.push({ message: `${name}: BAT entry ${i} (sector ${e}) puts its block over the ${over.what}`, offset: start });
      continue;
    }
    starts.push(start);
    dataEnd = Math.max(dataEnd, end);
  }
  starts.sort((a, b) => a - b);
  for (let k = 1; k < starts.length; k++) {
    if (starts[k]! < starts[k - 1]! + span && problems.length < limit) {
      problems.push({ message: `${name}: two BAT entries overlap: blocks at ${starts[k - 1]} and ${starts[k]} (block span ${span})`, offset: starts[k]! });
    }
  }
  return { problems, dataEnd, allocated };
}

/**
 * Leaked blocks: stretches of at least one block span (bitmap + block) between
 * metadata and blocks that nothing refers to. Smaller gaps are alignment padding,
 * which other writers (Hyper-V) leave on purpose.
 */
export function findLeaks(meta: VhdMeta): Array<{ start: number; end: number }> {
  const used: Array<[number, number]> = meta.metadata.map((r) => [r.start, r.end]);
  const span = meta.bitmapSize + meta.blockSize;
  for (const e of meta.bat ?? []) if (e !== BAT_UNUSED) used.push([e * SECTOR_SIZE, e * SECTOR_SIZE + span]);
  used.sort((a, b) => a[0] - b[0]);
  const end = meta.footerSource === 'trailing' ? meta.fileSize - FOOTER_SIZE : meta.fileSize;
  const leaks: Array<{ start: number; end: number }> = [];
  let pos = 0;
  for (const [s, e] of used) {
    if (s - pos >= SECTOR_SIZE) leaks.push({ start: pos, end: Math.min(s, end) });
    pos = Math.max(pos, e);
  }
  if (end - pos >= SECTOR_SIZE) leaks.push({ start: pos, end });
  return leaks.filter((l) => l.end - l.start >= span);
}

/** A parent reference read from a locator. */
export interface ParentRef {
  platform: string;
  ref: string;
}

/** Read the parent references of a differencing disk, most trustworthy first (W2ru, W2ku, Wi2r, Wi2k, MacX, Mac). */
export async function readParentRefs(storage: Storage, header: DynamicHeader, overwritten: VhdMeta['overwrittenLocators'] = []): Promise<{ refs: ParentRef[]; skipped: string[] }> {
  const order = ['W2ru', 'W2ku', 'Wi2r', 'Wi2k', 'MacX', 'Mac '];
  const refs: ParentRef[] = [];
  const skipped: string[] = [];
  for (const [i, l] of header.parentLocators.entries()) {
    if (l.platformCode === 0) continue;
    const gone = overwritten.find((o) => o.index === i);
    if (gone) {
      skipped.push(gone.message);
      continue;
    }
    const platform = fourCC(l.platformCode);
    if (l.platformDataLength === 0 || l.platformDataLength > MAX_LOCATOR_DATA || l.platformDataOffset < 0 || l.platformDataOffset + l.platformDataLength > storage.size) {
      skipped.push(`parent locator ${i} (${platform}): data (offset ${l.platformDataOffset}, length ${l.platformDataLength}) is not inside the file`);
      continue;
    }
    const data = Buffer.alloc(l.platformDataLength);
    await storage.read(data, l.platformDataOffset);
    const ref = decodeLocatorData(l.platformCode, data);
    if (ref === undefined || ref === '') {
      skipped.push(`parent locator ${i}: platform code ${platform} is unknown or empty`);
      continue;
    }
    refs.push({ platform, ref });
  }
  refs.sort((a, b) => order.indexOf(a.platform) - order.indexOf(b.platform));
  return { refs, skipped };
}
