/**
 * VHD on-disk structures (Microsoft "Virtual Hard Disk Image Format Specification",
 * v1.0, 2006): the hard disk footer, the dynamic disk header with its parent
 * locators, the block allocation table and sector bitmaps. Every structure is
 * described once here as a decode/encode pair; all integers are big-endian. The
 * metadata is read from its container and validated field by field at the end.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';

/** Bytes in a sector; VHD counts everything in 512-byte sectors. */
export const SECTOR_SIZE = 512;
/** Hard disk footer size (spec "Hard Disk Footer Format"). */
export const FOOTER_SIZE = 512;
/** Dynamic disk header size (spec "Dynamic Disk Header Format"). */
export const DYNAMIC_HEADER_SIZE = 1024;
/** Footer cookie. */
export const FOOTER_COOKIE = 'conectix';
/** Dynamic header cookie. */
export const DYNAMIC_COOKIE = 'cxsparse';
/** Features field: bit 1 "reserved" must always be set. */
export const FEATURES_RESERVED = 0x00000002;
/** File format version 1.0. */
export const FILE_FORMAT_VERSION = 0x00010000;
/** Dynamic header version 1.0. */
export const HEADER_VERSION = 0x00010000;
/** Data offset of a fixed disk: all ones ("0xFFFFFFFF" in the spec). */
export const NO_DATA_OFFSET = -1;
/** Unused BAT entry. */
export const BAT_UNUSED = 0xffffffff;
/** Disk types (spec "Disk Type"). */
export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;
/** Default block size: 2 MiB (spec "Block Size"). */
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** Largest disk VHD can describe: 2040 GiB (0xff000000 sectors, as Hyper-V and qemu limit it). */
export const MAX_DISK_SIZE = 0xff000000 * SECTOR_SIZE;
/** Field limits of the footer's geometry, as the spec's algorithm keeps to them (appendix "CHS Calculation"). */
const CHS_MAX_CYLINDERS = 65535;
const CHS_MAX_HEADS = 16;
const CHS_MAX_SECTORS_PER_TRACK = 255;
/** Largest CHS geometry: 65535 cylinders, 16 heads, 255 sectors per track. */
export const MAX_CHS_SECTORS = CHS_MAX_CYLINDERS * CHS_MAX_HEADS * CHS_MAX_SECTORS_PER_TRACK;
/** Number of parent locator entries in the dynamic header. */
export const PARENT_LOCATOR_COUNT = 8;
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC). */
export const VHD_EPOCH_SECONDS = 946684800;
/** Our creator application: current_size is authoritative in images we write. */
export const CREATOR_APPLICATION = 'vdsk';
/** Creator version we record (major.minor in the high/low 16 bits). */
export const CREATOR_VERSION = 0x00010000;
/** Creator host OS "Wi2k" (Windows), as qemu and Hyper-V write. */
export const HOST_OS_WINDOWS = 0x5769326b;

/** Parent locator platform codes (spec "Parent Locator Entry"). */
export const PLATFORM = {
  NONE: 0,
  /** Deprecated Windows relative path, ANSI. */
  Wi2r: 0x57693272,
  /** Deprecated Windows absolute path, ANSI. */
  Wi2k: 0x5769326b,
  /** Windows relative path, UTF-16LE. */
  W2ru: 0x57327275,
  /** Windows absolute path, UTF-16LE. */
  W2ku: 0x57326b75,
  /** Mac OS alias record. */
  Mac: 0x4d616320,
  /** Mac OS X file URL, UTF-8. */
  MacX: 0x4d616358,
} as const;

/** Printable name of a four-character code. */
export function fourCC(code: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(code >>> 0);
  return b.toString('latin1').replace(/\0/g, '\\0');
}

/** The hard disk footer (spec "Hard Disk Footer Format"). */
export interface VhdFooter {
  cookie: string;
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header, or -1 for a fixed disk. */
  dataOffset: number;
  /** Seconds since 2000-01-01 UTC. */
  timestamp: number;
  /** Four bytes, e.g. `vpc `, `qemu`, `qem2`, `win `, `wa\0\0`, `vdsk`. */
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: number;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  checksum: number;
  uniqueId: Buffer;
  savedState: number;
}

/** Footer field offsets. */
const F = {
  cookie: 0,
  features: 8,
  formatVersion: 12,
  dataOffset: 16,
  timestamp: 24,
  creatorApplication: 28,
  creatorVersion: 32,
  creatorHostOs: 36,
  originalSize: 40,
  currentSize: 48,
  cylinders: 56,
  heads: 58,
  sectorsPerTrack: 59,
  diskType: 60,
  checksum: 64,
  uniqueId: 68,
  savedState: 84,
} as const;

/** The footer's field layout, for fuzzing and tests. */
export const FOOTER_FIELDS = F;

/** One's complement of the byte sum, skipping the 4-byte checksum field at `skip` (spec "Checksum"). */
export function vhdChecksum(buf: Uint8Array, skip: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= skip && i < skip + 4) continue;
    sum += buf[i]!;
  }
  return ~sum >>> 0;
}

/**
 * Read an unsigned 64-bit field as a number; all ones becomes -1. Values past 2^53
 * lose precision but stay huge, so the range checks against the file size reject them.
 */
function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64BE(off);
  if (v === 0xffffffffffffffffn) return -1;
  return Number(v);
}

function putU64(buf: Buffer, off: number, v: number): void {
  if (v >= 2 ** 64 || !Number.isInteger(v)) throw new VdiskError('E_USAGE', `64-bit VHD field value ${v} is out of range`);
  buf.writeBigUInt64BE(v < 0 ? 0xffffffffffffffffn : BigInt(v), off);
}

/** Decode a 512-byte footer; `valid` says whether the cookie and checksum are right. */
export function decodeFooter(buf: Buffer): { footer: VhdFooter; valid: boolean; why?: string } {
  const cookie = buf.toString('latin1', F.cookie, F.cookie + 8);
  const checksum = buf.readUInt32BE(F.checksum);
  const footer: VhdFooter = {
    cookie,
    features: buf.readUInt32BE(F.features),
    formatVersion: buf.readUInt32BE(F.formatVersion),
    dataOffset: u64(buf, F.dataOffset),
    timestamp: buf.readUInt32BE(F.timestamp),
    creatorApplication: buf.toString('latin1', F.creatorApplication, F.creatorApplication + 4),
    creatorVersion: buf.readUInt32BE(F.creatorVersion),
    creatorHostOs: buf.readUInt32BE(F.creatorHostOs),
    originalSize: u64(buf, F.originalSize),
    currentSize: u64(buf, F.currentSize),
    cylinders: buf.readUInt16BE(F.cylinders),
    heads: buf.readUInt8(F.heads),
    sectorsPerTrack: buf.readUInt8(F.sectorsPerTrack),
    diskType: buf.readUInt32BE(F.diskType),
    checksum,
    uniqueId: Buffer.from(buf.subarray(F.uniqueId, F.uniqueId + 16)),
    savedState: buf.readUInt8(F.savedState),
  };
  if (cookie !== FOOTER_COOKIE) return { footer, valid: false, why: `footer cookie is "${cookie.replace(/[^\x20-\x7e]/g, '?')}", not "${FOOTER_COOKIE}"` };
  const expected = vhdChecksum(buf.subarray(0, FOOTER_SIZE), F.checksum);
  if (expected !== checksum) return { footer, valid: false, why: `footer checksum is 0x${hex(checksum)}, expected 0x${hex(expected)}` };
  return { footer, valid: true };
}

/** Encode a footer with its checksum computed. */
export function encodeFooter(f: VhdFooter): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  buf.write(f.cookie, F.cookie, 8, 'latin1');
  buf.writeUInt32BE(f.features >>> 0, F.features);
  buf.writeUInt32BE(f.formatVersion >>> 0, F.formatVersion);
  putU64(buf, F.dataOffset, f.dataOffset);
  buf.writeUInt32BE(f.timestamp >>> 0, F.timestamp);
  buf.write(f.creatorApplication.padEnd(4, '\0').slice(0, 4), F.creatorApplication, 4, 'latin1');
  buf.writeUInt32BE(f.creatorVersion >>> 0, F.creatorVersion);
  buf.writeUInt32BE(f.creatorHostOs >>> 0, F.creatorHostOs);
  putU64(buf, F.originalSize, f.originalSize);
  putU64(buf, F.currentSize, f.currentSize);
  buf.writeUInt16BE(f.cylinders, F.cylinders);
  buf.writeUInt8(f.heads, F.heads);
  buf.writeUInt8(f.sectorsPerTrack, F.sectorsPerTrack);
  buf.writeUInt32BE(f.diskType >>> 0, F.diskType);
  f.uniqueId.copy(buf, F.uniqueId, 0, 16);
  buf.writeUInt8(f.savedState, F.savedState);
  f.checksum = vhdChecksum(buf, F.checksum);
  buf.writeUInt32BE(f.checksum, F.checksum);
  return buf;
}

/** One parent locator entry (spec "Parent Locator Entries"). */
export interface ParentLocator {
  platformCode: number;
  /** Space reserved for the locator data (Microsoft writes bytes, the spec says sectors). */
  platformDataSpace: number;
  /** Bytes of locator data. */
  platformDataLength: number;
  /** Absolute file offset of the locator data. */
  platformDataOffset: number;
}

/** The dynamic disk header (spec "Dynamic Disk Header Format"). */
export interface DynamicHeader {
  cookie: string;
  dataOffset: number;
  /** Absolute offset of the block allocation table. */
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Buffer;
  parentTimestamp: number;
  /** The parent's file name (UTF-16BE in the file). */
  parentUnicodeName: string;
  parentLocators: ParentLocator[];
}

/** Dynamic header field offsets. */
const H = {
  cookie: 0,
  dataOffset: 8,
  tableOffset: 16,
  headerVersion: 24,
  maxTableEntries: 28,
  blockSize: 32,
  checksum: 36,
  parentUniqueId: 40,
  parentTimestamp: 56,
  parentUnicodeName: 64,
  parentUnicodeNameSize: 512,
  parentLocators: 576,
  parentLocatorSize: 24,
} as const;

/** The dynamic header's field layout, for fuzzing and tests. */
export const HEADER_FIELDS = H;

/** Decode a 1024-byte dynamic header; `valid` says whether cookie and checksum are right. */
export function decodeDynamicHeader(buf: Buffer): { header: DynamicHeader; valid: boolean; why?: string } {
  const cookie = buf.toString('latin1', H.cookie, H.cookie + 8);
  const locators: ParentLocator[] = [];
  for (let i = 0; i < PARENT_LOCATOR_COUNT; i++) {
    const o = H.parentLocators + i * H.parentLocatorSize;
    locators.push({
      platformCode: buf.readUInt32BE(o),
      platformDataSpace: buf.readUInt32BE(o + 4),
      platformDataLength: buf.readUInt32BE(o + 8),
      platformDataOffset: u64(buf, o + 16),
    });
  }
  const header: DynamicHeader = {
    cookie,
    dataOffset: u64(buf, H.dataOffset),
    tableOffset: u64(buf, H.tableOffset),
    headerVersion: buf.readUInt32BE(H.headerVersion),
    maxTableEntries: buf.readUInt32BE(H.maxTableEntries),
    blockSize: buf.readUInt32BE(H.blockSize),
    checksum: buf.readUInt32BE(H.checksum),
    parentUniqueId: Buffer.from(buf.subarray(H.parentUniqueId, H.parentUniqueId + 16)),
    parentTimestamp: buf.readUInt32BE(H.parentTimestamp),
    parentUnicodeName: utf16be(buf.subarray(H.parentUnicodeName, H.parentUnicodeName + H.parentUnicodeNameSize)),
    parentLocators: locators,
  };
  if (cookie !== DYNAMIC_COOKIE) return { header, valid: false, why: `dynamic header cookie is "${cookie.replace(/[^\x20-\x7e]/g, '?')}", not "${DYNAMIC_COOKIE}"` };
  const expected = vhdChecksum(buf.subarray(0, DYNAMIC_HEADER_SIZE), H.checksum);
  if (expected !== header.checksum) {
    return { header, valid: false, why: `dynamic header checksum is 0x${hex(header.checksum)}, expected 0x${hex(expected)}` };
  }
  return { header, valid: true };
}

/** Encode a dynamic header with its checksum computed. */
export function encodeDynamicHeader(h: DynamicHeader): Buffer {
  const buf = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  buf.write(h.cookie, H.cookie, 8, 'latin1');
  putU64(buf, H.dataOffset, h.dataOffset);
  putU64(buf, H.tableOffset, h.tableOffset);
  buf.writeUInt32BE(h.headerVersion >>> 0, H.headerVersion);
  buf.writeUInt32BE(h.maxTableEntries >>> 0, H.maxTableEntries);
  buf.writeUInt32BE(h.blockSize >>> 0, H.blockSize);
  h.parentUniqueId.copy(buf, H.parentUniqueId, 0, 16);
  buf.writeUInt32BE(h.parentTimestamp >>> 0, H.parentTimestamp);
  const nameBytes = toUtf16be(h.parentUnicodeName).subarray(0, H.parentUnicodeNameSize);
  nameBytes.copy(buf, H.parentUnicodeName);
  for (let i = 0; i < PARENT_LOCATOR_COUNT; i++) {
    const l = h.parentLocators[i];
    if (!l) continue;
    const o = H.parentLocators + i * H.parentLocatorSize;
    buf.writeUInt32BE(l.platformCode >>> 0, o);
    buf.writeUInt32BE(l.platformDataSpace >>> 0, o + 4);
    buf.writeUInt32BE(l.platformDataLength >>> 0, o + 8);
    putU64(buf, o + 16, l.platformDataOffset);
  }
  h.checksum = vhdChecksum(buf, H.checksum);
  buf.writeUInt32BE(h.checksum, H.checksum);
  return buf;
}

function utf16be(b: Uint8Array): string {
  const swapped = Buffer.from(b);
  swapped.swap16();
  const s = swapped.toString('utf16le');
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

function toUtf16be(s: string): Buffer {
  const b = Buffer.from(s, 'utf16le');
  return b.swap16();
}

/** Decode the data of a parent locator into a path as stored (may use `\`); undefined if the platform is unknown. */
export function decodeLocatorData(platformCode: number, data: Buffer): string | undefined {
  const trim = (s: string): string => {
    const nul = s.indexOf('\0');
    return (nul < 0 ? s : s.slice(0, nul)).trim();
  };
  switch (platformCode) {
    case PLATFORM.W2ru:
    case PLATFORM.W2ku:
      return trim(data.subarray(0, data.length & ~1).toString('utf16le'));
    case PLATFORM.Wi2r:
    case PLATFORM.Wi2k:
      return trim(data.toString('latin1'));
    case PLATFORM.MacX: {
      // A file URL such as file://localhost/Users/x/parent.vhd.
      const url = trim(data.toString('utf8'));
      const m = /^file:\/\/[^/]*(\/.*)$/.exec(url);
      try {
        return m ? decodeURIComponent(m[1]!) : url;
      } catch {
        return undefined;
      }
    }
    case PLATFORM.Mac: {
      // A classic Mac OS alias record: the target's file name is a Str63 at offset 50;
      // the folder is not recoverable without the Alias Manager, so look beside the child.
      if (data.length < 51) return undefined;
      const len = Math.min(data[50]!, 63, data.length - 51);
      return len > 0 ? trim(data.toString('latin1', 51, 51 + len)) : undefined;
    }
    default:
      return undefined;
  }
}

/** Encode a path for a W2ru/W2ku locator (UTF-16LE, no terminator). */
export function encodeLocatorData(path: string): Buffer {
  return Buffer.from(path, 'utf16le');
}

/** A footer's disk geometry (spec "Disk Geometry"). */
export interface VhdGeometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The largest geometry, 65535x16x255: readers that size by CHS (qemu) take it as "use current_size". */
export const MAX_GEOMETRY: Readonly<VhdGeometry> = { cylinders: CHS_MAX_CYLINDERS, heads: CHS_MAX_HEADS, sectorsPerTrack: CHS_MAX_SECTORS_PER_TRACK };

/** CHS geometry for a disk of `size` bytes by the spec's algorithm (appendix "CHS Calculation"). */
export function chsGeometry(size: number): VhdGeometry {
  let totalSectors = Math.floor(size / SECTOR_SIZE);
  if (totalSectors > MAX_CHS_SECTORS) totalSectors = MAX_CHS_SECTORS;
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.floor((cylinderTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

/** Sectors a geometry describes. */
export function geometrySectors(g: VhdGeometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

/** Sectors per track a BIOS can address (INT 13h); exact geometries within it are tried first. */
const BIOS_MAX_SECTORS_PER_TRACK = 63;

/** A geometry of exactly `sectors` sectors with `maxSpt` down to `minSpt` sectors per track, most heads first. */
function exactGeometry(sectors: number, maxSpt: number, minSpt: number): VhdGeometry | undefined {
  for (let sectorsPerTrack = maxSpt; sectorsPerTrack >= minSpt; sectorsPerTrack--) {
    if (sectors % sectorsPerTrack !== 0) continue;
    const tracks = sectors / sectorsPerTrack;
    for (let heads = CHS_MAX_HEADS; heads >= 1; heads--) {
      if (tracks % heads === 0 && tracks / heads <= CHS_MAX_CYLINDERS) return { cylinders: tracks / heads, heads, sectorsPerTrack };
    }
  }
  return undefined;
}

/**
 * The geometry vdisk writes for a disk of `size` bytes (a multiple of 512), chosen so
 * that readers that size a VHD by CHS (qemu, for every creator it does not know, ours
 * included; Virtual PC) see the same size as those that take current_size (Hyper-V,
 * Azure, libvhdi, vdisk). In order: the spec's geometry when its product is the size;
 * else another geometry whose product is the size (tracks of at most 63 sectors
 * first); else, when no product of the fields' range is the size (a prime sector
 * count over 65535, 127 GiB, anything over 65535x16x255 sectors), the largest
 * geometry, which qemu reads as "use current_size", as qemu-img itself writes with
 * force_size=on. `exact` says whether the CHS product is the size.
 */
export function diskGeometry(size: number): VhdGeometry & { exact: boolean } {
  const sectors = size / SECTOR_SIZE;
  if (Number.isSafeInteger(sectors) && sectors > 0 && sectors <= MAX_CHS_SECTORS) {
    const spec = chsGeometry(size);
    if (geometrySectors(spec) === sectors) return { ...spec, exact: true };
    const found = exactGeometry(sectors, BIOS_MAX_SECTORS_PER_TRACK, 1) ?? exactGeometry(sectors, CHS_MAX_SECTORS_PER_TRACK, BIOS_MAX_SECTORS_PER_TRACK + 1);
    if (found) return { ...found, exact: true };
  }
  return { ...MAX_GEOMETRY, exact: false };
}

/** Sectors searched either way for the nearest exact geometry (gaps stay under 16x255 sectors). */
const NEAREST_EXACT_SEARCH = 8192;

/** The nearest sizes below and above `size` (a multiple of 512) that have an exact CHS geometry. */
export function nearestExactSizes(size: number): { below?: number; above?: number } {
  const sectors = Math.floor(size / SECTOR_SIZE);
  const out: { below?: number; above?: number } = {};
  for (let d = 1; d <= NEAREST_EXACT_SEARCH && (out.below === undefined || out.above === undefined); d++) {
    const lo = sectors - d;
    const hi = sectors + d;
    if (out.below === undefined && lo > 0 && lo <= MAX_CHS_SECTORS && diskGeometry(lo * SECTOR_SIZE).exact) out.below = lo * SECTOR_SIZE;
    if (out.above === undefined && hi <= MAX_CHS_SECTORS && diskGeometry(hi * SECTOR_SIZE).exact) out.above = hi * SECTOR_SIZE;
  }
  return out;
}

/** Bytes of a block's sector bitmap: one bit per sector, padded to a whole sector. */
export function bitmapBytes(blockSize: number): number {
  const bits = blockSize / SECTOR_SIZE;
  return Math.ceil(bits / 8 / SECTOR_SIZE) * SECTOR_SIZE;
}

/** True when sector `i`'s bit is set (most significant bit first, spec "Sector Bitmap"). */
export function bitmapGet(bitmap: Uint8Array, i: number): boolean {
  return ((bitmap[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0;
}

/** Set sector `i`'s bit. */
export function bitmapSet(bitmap: Uint8Array, i: number): void {
  bitmap[i >> 3] = (bitmap[i >> 3] ?? 0) | (0x80 >> (i & 7));
}

/** A VHD timestamp for a JS date. */
export function vhdTimestamp(date: Date): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH_SECONDS) >>> 0;
}

/** ISO date of a VHD timestamp. */
export function timestampToIso(ts: number): string {
  return new Date((ts + VHD_EPOCH_SECONDS) * 1000).toISOString();
}

/** A 16-byte unique id printed as a GUID string (bytes in file order, as libvhdi prints them). */
export function uuidString(id: Uint8Array): string {
  const h = Buffer.from(id).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Round up to a whole sector. */
export function roundUpSector(n: number): number {
  return Math.ceil(n / SECTOR_SIZE) * SECTOR_SIZE;
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

// ---- Validation at open ----

/*
 * Reading a VHD's metadata from its container and validating it field by field
 * before anything trusts it: footer (trailing, or the copy at offset 0), dynamic
 * header, BAT, parent locators.
 */
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
  if (fileSize < FOOTER_SIZE) throw new VdiskError('E_FORMAT', `${name}: ${fileSize} bytes is too small for a VHD footer`, { file: name, value: fileSize });

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
    throw new VdiskError('E_FORMAT', `${name}: no VHD footer (cookie "${FOOTER_COOKIE}") at the end or at offset 0`, { file: name, field: 'cookie', offset: fileSize - FOOTER_SIZE });
  }

  // Structured data for each refusal: the field in the spec's (and qemu's) words, where it sits, what it holds.
  const footerAt = footerSource === 'trailing' ? fileSize - FOOTER_SIZE : 0;
  const corrupt = (message: string, field: string, offset: number, value: number): VdiskError =>
    new VdiskError('E_CORRUPT', `${name}: ${message}`, { file: name, field, offset, value });
  const type = footer.diskType;
  if (type !== DISK_TYPE_FIXED && type !== DISK_TYPE_DYNAMIC && type !== DISK_TYPE_DIFFERENCING) {
    throw corrupt(`footer disk_type ${type} is not fixed (2), dynamic (3) or differencing (4)`, 'disk_type', footerAt + F.diskType, type);
  }
  if (footer.currentSize < 0 || footer.currentSize > MAX_DISK_SIZE) {
    throw corrupt(`footer current_size ${footer.currentSize} is over the format's 2040 GiB`, 'current_size', footerAt + F.currentSize, footer.currentSize);
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
      throw corrupt(`footer current_size ${virtualSize} is larger than the file's ${fileSize - FOOTER_SIZE} data bytes`, 'current_size', footerAt + F.currentSize, virtualSize);
    }
    return meta;
  }

  // Dynamic and differencing disks: the dynamic header and the BAT.
  const hdrOff = footer.dataOffset;
  if (hdrOff < 0 || hdrOff + DYNAMIC_HEADER_SIZE > fileSize) {
    throw corrupt(`footer data_offset ${hdrOff} puts the dynamic header outside the ${fileSize}-byte file`, 'data_offset', footerAt + F.dataOffset, hdrOff);
  }
  const hbuf = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  await storage.read(hbuf, hdrOff);
  const dh = decodeDynamicHeader(hbuf);
  if (!dh.valid) throw new VdiskError('E_CORRUPT', `${name}: ${dh.why}`);
  const header = dh.header;
  const bs = header.blockSize;
  if (bs < SECTOR_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) {
    throw corrupt(`dynamic header block_size ${bs} is not a power of two between 512 and 2^31`, 'block_size', hdrOff + H.blockSize, bs);
  }
  const batBytes = header.maxTableEntries * 4;
  if (header.tableOffset < 0 || header.tableOffset + batBytes > fileSize) {
    throw corrupt(`BAT (table_offset ${header.tableOffset}, max_table_entries ${header.maxTableEntries}) lies outside the ${fileSize}-byte file`, 'table_offset', hdrOff + H.tableOffset, header.tableOffset);
  }
  const needed = Math.ceil(virtualSize / bs);
  if (header.maxTableEntries < needed) {
    throw corrupt(`dynamic header max_table_entries ${header.maxTableEntries} covers less than the ${virtualSize}-byte disk (needs ${needed})`, 'max_table_entries', hdrOff + H.maxTableEntries, header.maxTableEntries);
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
