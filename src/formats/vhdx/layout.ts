/**
 * VHDX on-disk structures (Microsoft [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File
 * Format", sections named below): the file type identifier, the two headers, the
 * two region tables, the metadata table and its known items, BAT entries, and the
 * log's entry header, descriptors and data sectors. Every structure is decoded and
 * encoded once here; all integers are little-endian, GUIDs are stored as Windows
 * writes them (first three groups little-endian).
 */
import { createRequire } from 'node:module';
import type CRC32Lib from 'crc-32';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- 2.1 / 2.2: the header section ------------------------------------------

/** File type identifier signature "vhdxfile" at offset 0 (2.2.1). */
export const FILE_SIGNATURE = 'vhdxfile';
/** Offsets of the structures in the 1 MiB header section (2.1). */
export const HEADER1_OFFSET = 64 * KiB;
export const HEADER2_OFFSET = 128 * KiB;
export const REGION_TABLE1_OFFSET = 192 * KiB;
export const REGION_TABLE2_OFFSET = 256 * KiB;
/** The header section: nothing else may lie below this (2.1). */
export const HEADER_SECTION_SIZE = 1 * MiB;
/** Bytes of a header covered by its checksum (2.2.2). */
export const HEADER_SIZE = 4 * KiB;
/** Header signature "head" (2.2.2). */
export const HEADER_SIGNATURE = 0x64616568;
/** The only header Version defined (2.2.2). */
export const HEADER_VERSION = 1;
/** The only LogVersion defined (2.2.2). */
export const LOG_VERSION = 0;
/** Region table size, all covered by its checksum (2.2.3). */
export const REGION_TABLE_SIZE = 64 * KiB;
/** Region table signature "regi" (2.2.3.1). */
export const REGION_SIGNATURE = 0x69676572;
/** Most region table entries (2.2.3.1). */
export const MAX_REGION_ENTRIES = 2047;
/** Regions and the log lie on 1 MiB boundaries and are multiples of 1 MiB (2.2.3.2, 2.2.2). */
export const REGION_ALIGNMENT = 1 * MiB;
/** Region GUIDs (2.2.3.2). */
export const BAT_REGION_GUID = '2DC27766-F623-4200-9D64-115E9BFD4A08';
export const METADATA_REGION_GUID = '8B7CA206-4790-4B9A-B8FE-575F050F886E';

// ---- 2.3: the log ----------------------------------------------------------

/** Log sectors are 4 KiB (2.3). */
export const LOG_SECTOR_SIZE = 4 * KiB;
/** Log entry signature "loge" (2.3.1.1). */
export const LOG_ENTRY_SIGNATURE = 0x65676f6c;
/** Zero descriptor "zero" and data descriptor "desc" (2.3.1.2, 2.3.1.3). */
export const ZERO_DESCRIPTOR_SIGNATURE = 0x6f72657a;
export const DATA_DESCRIPTOR_SIGNATURE = 0x63736564;
/** Data sector signature "data" (2.3.1.4). */
export const DATA_SECTOR_SIGNATURE = 0x61746164;
/** Log entry header and descriptor sizes (2.3.1.1-2.3.1.3). */
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;
/** Bytes of a 4 KiB sector a data sector carries; the first 8 and last 4 live in its descriptor (2.3.1.3-2.3.1.4). */
export const DATA_SECTOR_PAYLOAD = 4084;

// ---- 2.4: the BAT -----------------------------------------------------------

/** Payload block states (2.5.1.1). */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
/** qemu reads state 5 as unmapped, as the 0.95 draft of the specification numbered it. */
export const PAYLOAD_BLOCK_UNMAPPED_V095 = 5;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
/** Sector bitmap block states (2.5.1.2). */
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;
/** Bits 0-2 of a BAT entry are the state; bits 20-63 the file offset in MiB (2.5.1). */
export const BAT_STATE_MASK = 7;
export const BAT_OFFSET_SHIFT = 20;
/** A sector bitmap block is 1 MiB: 2^23 bits, one per logical sector (2.5, 2.6.2.4). */
export const SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB;
export const SECTORS_PER_BITMAP_BLOCK = 2 ** 23;

// ---- 2.6: the metadata region ----------------------------------------------

/** Metadata table signature "metadata" (2.6.1.1) and its size. */
export const METADATA_SIGNATURE = 'metadata';
export const METADATA_TABLE_SIZE = 64 * KiB;
/** Most metadata table entries (2.6.1.1). */
export const MAX_METADATA_ENTRIES = 2047;
/** Largest metadata item (2.6.1.2). */
export const MAX_METADATA_ITEM = 1 * MiB;
/** Metadata entry flags (2.6.1.2). */
export const META_IS_USER = 1;
export const META_IS_VIRTUAL_DISK = 2;
export const META_IS_REQUIRED = 4;
/** Known metadata items (2.6.2). */
export const FILE_PARAMETERS_GUID = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B';
export const VIRTUAL_DISK_SIZE_GUID = '2FA54224-CD1B-4876-B211-5DBED83BF4B8';
export const PAGE83_DATA_GUID = 'BECA12AB-B2E6-4523-93EF-C309E000C746';
export const LOGICAL_SECTOR_SIZE_GUID = '8141BF1D-A96F-4709-BA47-F233A8FAAB5F';
export const PHYSICAL_SECTOR_SIZE_GUID = 'CDA348C7-445D-4471-9CC9-E9885251C556';
export const PARENT_LOCATOR_GUID = 'A8D35F2D-B30B-454D-ABF7-D3D84834AB0C';
/** The locator type of a VHDX parent (2.6.2.6.1). */
export const VHDX_PARENT_LOCATOR_TYPE = 'B04AEFB7-D19E-4A81-B789-25B8E9445913';
/** File parameters flags (2.6.2.1). */
export const FILE_PARAM_LEAVE_BLOCKS_ALLOCATED = 1;
export const FILE_PARAM_HAS_PARENT = 2;
/** Block size bounds: a power of two from 1 MiB to 256 MiB (2.6.2.1). */
export const MIN_BLOCK_SIZE = 1 * MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
/** Largest virtual disk: 64 TiB (2.6.2.2). */
export const MAX_VIRTUAL_DISK_SIZE = 64 * 1024 * 1024 * MiB;

// ---- checksums and GUIDs ----------------------------------------------------

let crcLib: typeof CRC32Lib | undefined;

/**
 * CRC-32C (Castagnoli), as every VHDX checksum is (2.2.2). From SheetJS's crc-32
 * package (`crc-32/crc32c`), already a dependency for GPT's CRC-32: table-driven,
 * pure JS, the same API for both polynomials.
 */
export function crc32c(data: Uint8Array): number {
  crcLib ??= createRequire(import.meta.url)('crc-32/crc32c') as typeof CRC32Lib;
  return crcLib.buf(data) >>> 0;
}

/** CRC-32C of `data` with the 4-byte checksum field at `at` taken as zero (2.2.2). */
export function checksumWithFieldZero(data: Uint8Array, at: number): number {
  const copy = Buffer.from(data);
  copy.fill(0, at, at + 4);
  return crc32c(copy);
}

/** Text of a GUID stored in Windows byte order at `at`. */
export function decodeGuid(b: Uint8Array, at = 0): string {
  const hex = (i: number): string => b[at + i]!.toString(16).padStart(2, '0');
  const part = (idx: number[]): string => idx.map(hex).join('');
  return `${part([3, 2, 1, 0])}-${part([5, 4])}-${part([7, 6])}-${part([8, 9])}-${part([10, 11, 12, 13, 14, 15])}`.toUpperCase();
}

/** Store a textual GUID in Windows byte order at `at`. */
export function encodeGuid(guid: string, b: Uint8Array, at = 0): void {
  const m = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i.exec(guid);
  if (!m) throw new VdiskError('E_USAGE', `"${guid}" is not a GUID`);
  const bytes = (s: string): number[] => s.match(/../g)!.map((x) => parseInt(x, 16));
  const out = [...bytes(m[1]!).reverse(), ...bytes(m[2]!).reverse(), ...bytes(m[3]!).reverse(), ...bytes(m[4]!), ...bytes(m[5]!)];
  b.set(out, at);
}

/** The all-zero GUID. */
export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

/** A fresh random GUID (version 4). */
export function randomGuid(): string {
  return crypto.randomUUID().toUpperCase();
}

function u64(b: Buffer, at: number, name: string, field: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new VdiskError('E_CORRUPT', `${name}: ${field} ${v} is out of range`);
  return Number(v);
}

function corrupt(name: string, message: string): VdiskError {
  return new VdiskError('E_CORRUPT', `${name}: ${message}`);
}

const isPowerOfTwo = (n: number): boolean => n > 0 && Number.isInteger(Math.log2(n));

// ---- 2.2.1 file type identifier ---------------------------------------------

/** True when `b` starts with the file type identifier's signature. */
export function hasFileSignature(b: Uint8Array): boolean {
  return b.length >= 8 && Buffer.from(b.buffer, b.byteOffset, 8).toString('latin1') === FILE_SIGNATURE;
}

/** The creator string of the file type identifier (UTF-16LE, 512 bytes, NUL-padded). */
export function decodeCreator(b: Buffer): string {
  const s = b.subarray(8, 8 + 512).toString('utf16le');
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

/** The file type identifier: signature and creator (2.2.1). */
export function encodeFileIdentifier(creator: string): Buffer {
  const b = Buffer.alloc(64 * KiB);
  b.write(FILE_SIGNATURE, 0, 'latin1');
  b.write(creator.slice(0, 255), 8, 'utf16le');
  return b;
}

// ---- 2.2.2 header -----------------------------------------------------------

/** A VHDX header (2.2.2). */
export interface VhdxHeader {
  signature: number;
  checksum: number;
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

/** Decode a 4 KiB header (no checks). */
export function decodeHeader(b: Buffer, name: string): VhdxHeader {
  return {
    signature: b.readUInt32LE(0),
    checksum: b.readUInt32LE(4),
    sequenceNumber: b.readBigUInt64LE(8),
    fileWriteGuid: decodeGuid(b, 16),
    dataWriteGuid: decodeGuid(b, 32),
    logGuid: decodeGuid(b, 48),
    logVersion: b.readUInt16LE(64),
    version: b.readUInt16LE(66),
    logLength: b.readUInt32LE(68),
    logOffset: u64(b, 72, name, 'header LogOffset'),
  };
}

/** Encode a header with its checksum computed (4 KiB). */
export function encodeHeader(h: Omit<VhdxHeader, 'signature' | 'checksum'>): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(HEADER_SIGNATURE, 0);
  b.writeBigUInt64LE(h.sequenceNumber, 8);
  encodeGuid(h.fileWriteGuid, b, 16);
  encodeGuid(h.dataWriteGuid, b, 32);
  encodeGuid(h.logGuid, b, 48);
  b.writeUInt16LE(h.logVersion, 64);
  b.writeUInt16LE(h.version, 66);
  b.writeUInt32LE(h.logLength, 68);
  b.writeBigUInt64LE(BigInt(h.logOffset), 72);
  b.writeUInt32LE(crc32c(b), 4);
  return b;
}

/** Why a header is unusable, or undefined when it is valid (2.2.2: signature, checksum, version, log placement). */
export function headerProblem(raw: Buffer, fileSize: number, name: string): string | undefined {
  if (raw.readUInt32LE(0) !== HEADER_SIGNATURE) return 'signature is not "head"';
  const sum = raw.readUInt32LE(4);
  const want = checksumWithFieldZero(raw, 4);
  if (sum !== want) return `checksum ${sum.toString(16)} does not match the CRC-32C ${want.toString(16)}`;
  let h: VhdxHeader;
  try {
    h = decodeHeader(raw, name);
  } catch (err) {
    return (err as Error).message;
  }
  if (h.version !== HEADER_VERSION) return `Version ${h.version} is not ${HEADER_VERSION}`;
  if (h.logVersion !== LOG_VERSION) return `LogVersion ${h.logVersion} is not ${LOG_VERSION}`;
  if (h.logLength === 0 || h.logLength % REGION_ALIGNMENT !== 0) return `LogLength ${h.logLength} is not a non-zero multiple of 1 MiB`;
  if (h.logOffset % REGION_ALIGNMENT !== 0 || h.logOffset < HEADER_SECTION_SIZE) return `LogOffset ${h.logOffset} is not a multiple of 1 MiB past the header section`;
  if (h.logGuid !== ZERO_GUID && h.logOffset + h.logLength > fileSize) return `the log (${h.logLength} bytes at ${h.logOffset}) lies past the ${fileSize}-byte file`;
  return undefined;
}

// ---- 2.2.3 region table -----------------------------------------------------

/** One region table entry (2.2.3.2). */
export interface RegionEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

/** Decode and check a 64 KiB region table; a string says why it is unusable. */
export function decodeRegionTable(raw: Buffer, name: string): RegionEntry[] | string {
  if (raw.readUInt32LE(0) !== REGION_SIGNATURE) return 'signature is not "regi"';
  const sum = raw.readUInt32LE(4);
  const want = checksumWithFieldZero(raw, 4);
  if (sum !== want) return `checksum ${sum.toString(16)} does not match the CRC-32C ${want.toString(16)}`;
  const count = raw.readUInt32LE(8);
  if (count > MAX_REGION_ENTRIES) return `EntryCount ${count} is over ${MAX_REGION_ENTRIES}`;
  const out: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    out.push({ guid: decodeGuid(raw, at), fileOffset: u64(raw, at + 16, name, `region ${i} FileOffset`), length: raw.readUInt32LE(at + 24), required: (raw.readUInt32LE(at + 28) & 1) !== 0 });
  }
  return out;
}

/** Encode a region table with its checksum (64 KiB). */
export function encodeRegionTable(entries: readonly RegionEntry[]): Buffer {
  const b = Buffer.alloc(REGION_TABLE_SIZE);
  b.writeUInt32LE(REGION_SIGNATURE, 0);
  b.writeUInt32LE(entries.length, 8);
  entries.forEach((e, i) => {
    const at = 16 + i * 32;
    encodeGuid(e.guid, b, at);
    b.writeBigUInt64LE(BigInt(e.fileOffset), at + 16);
    b.writeUInt32LE(e.length, at + 24);
    b.writeUInt32LE(e.required ? 1 : 0, at + 28);
  });
  b.writeUInt32LE(crc32c(b), 4);
  return b;
}

/** The BAT and metadata regions of a region table, checked for placement and overlap (2.2.3.2). */
export function validateRegions(entries: readonly RegionEntry[], fileSize: number, log: { offset: number; length: number }, name: string): { bat: RegionEntry; metadata: RegionEntry } {
  let bat: RegionEntry | undefined;
  let metadata: RegionEntry | undefined;
  const spans: Array<[number, number, string]> = [[0, HEADER_SECTION_SIZE, 'the header section'], [log.offset, log.offset + log.length, 'the log']];
  for (const e of entries) {
    const what = e.guid === BAT_REGION_GUID ? 'the BAT region' : e.guid === METADATA_REGION_GUID ? 'the metadata region' : `region ${e.guid}`;
    if (e.guid === BAT_REGION_GUID) {
      if (bat) throw corrupt(name, 'the region table names the BAT twice');
      bat = e;
    } else if (e.guid === METADATA_REGION_GUID) {
      if (metadata) throw corrupt(name, 'the region table names the metadata region twice');
      metadata = e;
    } else if (e.required) {
      throw new VdiskError('E_UNSUPPORTED', `${name}: required region ${e.guid} is not one vdisk knows`);
    }
    if (e.fileOffset % REGION_ALIGNMENT !== 0 || e.length === 0 || e.length % REGION_ALIGNMENT !== 0) {
      throw corrupt(name, `${what} (${e.length} bytes at ${e.fileOffset}) is not on 1 MiB boundaries`);
    }
    if (e.fileOffset + e.length > fileSize) throw corrupt(name, `${what} (${e.length} bytes at ${e.fileOffset}) lies past the ${fileSize}-byte file`);
    for (const [a, z, other] of spans) {
      if (e.fileOffset < z && a < e.fileOffset + e.length) throw corrupt(name, `${what} (${e.length} bytes at ${e.fileOffset}) overlaps ${other}`);
    }
    spans.push([e.fileOffset, e.fileOffset + e.length, what]);
  }
  if (!bat) throw corrupt(name, 'the region table has no BAT region');
  if (!metadata) throw corrupt(name, 'the region table has no metadata region');
  return { bat, metadata };
}

// ---- 2.6 metadata -----------------------------------------------------------

/** One metadata table entry (2.6.1.2). */
export interface MetadataEntry {
  itemId: string;
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

/** Decode and check the metadata table against its region's length. */
export function decodeMetadataTable(raw: Buffer, regionLength: number, name: string): MetadataEntry[] {
  if (raw.subarray(0, 8).toString('latin1') !== METADATA_SIGNATURE) throw corrupt(name, 'metadata table signature is not "metadata"');
  const count = raw.readUInt16LE(10);
  if (count > MAX_METADATA_ENTRIES) throw corrupt(name, `metadata table EntryCount ${count} is over ${MAX_METADATA_ENTRIES}`);
  const out: MetadataEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const flags = raw.readUInt32LE(at + 24);
    const e: MetadataEntry = {
      itemId: decodeGuid(raw, at),
      offset: raw.readUInt32LE(at + 16),
      length: raw.readUInt32LE(at + 20),
      isUser: (flags & META_IS_USER) !== 0,
      isVirtualDisk: (flags & META_IS_VIRTUAL_DISK) !== 0,
      isRequired: (flags & META_IS_REQUIRED) !== 0,
    };
    if (e.length > MAX_METADATA_ITEM) throw corrupt(name, `metadata item ${e.itemId} is ${e.length} bytes, over ${MAX_METADATA_ITEM}`);
    if (e.length > 0 && (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > regionLength)) {
      throw corrupt(name, `metadata item ${e.itemId} (${e.length} bytes at ${e.offset}) lies outside the ${regionLength}-byte metadata region`);
    }
    if (out.some((o) => o.itemId === e.itemId && o.isUser === e.isUser)) throw corrupt(name, `metadata item ${e.itemId} appears twice`);
    out.push(e);
  }
  return out;
}

/** Encode a metadata table (64 KiB). */
export function encodeMetadataTable(entries: readonly MetadataEntry[]): Buffer {
  const b = Buffer.alloc(METADATA_TABLE_SIZE);
  b.write(METADATA_SIGNATURE, 0, 'latin1');
  b.writeUInt16LE(entries.length, 10);
  entries.forEach((e, i) => {
    const at = 32 + i * 32;
    encodeGuid(e.itemId, b, at);
    b.writeUInt32LE(e.offset, at + 16);
    b.writeUInt32LE(e.length, at + 20);
    b.writeUInt32LE((e.isUser ? META_IS_USER : 0) | (e.isVirtualDisk ? META_IS_VIRTUAL_DISK : 0) | (e.isRequired ? META_IS_REQUIRED : 0), at + 24);
  });
  return b;
}

/** The parent locator item (2.6.2.6): its type and key/value pairs. */
export interface ParentLocator {
  locatorType: string;
  entries: Record<string, string>;
}

/** Decode a parent locator, bounded by its own length. */
export function decodeParentLocator(b: Buffer, name: string): ParentLocator {
  if (b.length < 20) throw corrupt(name, `parent locator is ${b.length} bytes, shorter than its 20-byte header`);
  const locatorType = decodeGuid(b, 0);
  const count = b.readUInt16LE(18);
  if (20 + count * 12 > b.length) throw corrupt(name, `parent locator KeyValueCount ${count} does not fit its ${b.length} bytes`);
  const entries: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12;
    const ko = b.readUInt32LE(at);
    const vo = b.readUInt32LE(at + 4);
    const kl = b.readUInt16LE(at + 8);
    const vl = b.readUInt16LE(at + 10);
    if (ko + kl > b.length || vo + vl > b.length || kl === 0) throw corrupt(name, `parent locator entry ${i} lies outside the locator`);
    const key = b.subarray(ko, ko + kl).toString('utf16le');
    if (Object.hasOwn(entries, key)) throw corrupt(name, `parent locator key "${key}" appears twice`);
    entries[key] = b.subarray(vo, vo + vl).toString('utf16le');
  }
  return { locatorType, entries };
}

/** Encode a parent locator item. */
export function encodeParentLocator(p: ParentLocator): Buffer {
  const pairs = Object.entries(p.entries).map(([k, v]) => [Buffer.from(k, 'utf16le'), Buffer.from(v, 'utf16le')] as const);
  let at = 20 + pairs.length * 12;
  const head = Buffer.alloc(at);
  encodeGuid(p.locatorType, head, 0);
  head.writeUInt16LE(pairs.length, 18);
  const body: Buffer[] = [];
  pairs.forEach(([k, v], i) => {
    head.writeUInt32LE(at, 20 + i * 12);
    head.writeUInt32LE(at + k.length, 20 + i * 12 + 4);
    head.writeUInt16LE(k.length, 20 + i * 12 + 8);
    head.writeUInt16LE(v.length, 20 + i * 12 + 10);
    body.push(k, v);
    at += k.length + v.length;
  });
  return Buffer.concat([head, ...body]);
}

/** The disk's parameters from the required metadata items (2.6.2.1-2.6.2.5). */
export interface VhdxParameters {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
  virtualDiskSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Page 83 data: the VirtualDiskId. */
  virtualDiskId: string;
  parentLocator?: ParentLocator;
}

/** Known items whose absence makes the file unreadable (2.6.2). */
const REQUIRED_ITEMS = [FILE_PARAMETERS_GUID, VIRTUAL_DISK_SIZE_GUID, PAGE83_DATA_GUID, LOGICAL_SECTOR_SIZE_GUID, PHYSICAL_SECTOR_SIZE_GUID];
const ITEM_SIZES: Record<string, number> = {
  [FILE_PARAMETERS_GUID]: 8,
  [VIRTUAL_DISK_SIZE_GUID]: 8,
  [PAGE83_DATA_GUID]: 16,
  [LOGICAL_SECTOR_SIZE_GUID]: 4,
  [PHYSICAL_SECTOR_SIZE_GUID]: 4,
};

/** Decode and check the known metadata items; `item` reads one entry's bytes. */
export async function decodeParameters(entries: readonly MetadataEntry[], item: (e: MetadataEntry) => Promise<Buffer>, name: string): Promise<VhdxParameters> {
  const system = new Map<string, MetadataEntry>();
  for (const e of entries) {
    if (e.isUser) continue;
    system.set(e.itemId, e);
    if (e.isRequired && !REQUIRED_ITEMS.includes(e.itemId) && e.itemId !== PARENT_LOCATOR_GUID) {
      throw new VdiskError('E_UNSUPPORTED', `${name}: required metadata item ${e.itemId} is not one vdisk knows`);
    }
  }
  const read = async (guid: string, label: string): Promise<Buffer> => {
    const e = system.get(guid);
    if (!e) throw corrupt(name, `the metadata has no ${label} item`);
    if (e.length < ITEM_SIZES[guid]!) throw corrupt(name, `the ${label} item is ${e.length} bytes, shorter than ${ITEM_SIZES[guid]}`);
    return item(e);
  };
  const fp = await read(FILE_PARAMETERS_GUID, 'file parameters');
  const blockSize = fp.readUInt32LE(0);
  const flags = fp.readUInt32LE(4);
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) throw corrupt(name, `file parameters BlockSize ${blockSize} is not a power of two from 1 MiB to 256 MiB`);
  const logicalSectorSize = (await read(LOGICAL_SECTOR_SIZE_GUID, 'logical sector size')).readUInt32LE(0);
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw corrupt(name, `LogicalSectorSize ${logicalSectorSize} is neither 512 nor 4096`);
  const physicalSectorSize = (await read(PHYSICAL_SECTOR_SIZE_GUID, 'physical sector size')).readUInt32LE(0);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw corrupt(name, `PhysicalSectorSize ${physicalSectorSize} is neither 512 nor 4096`);
  const vs = (await read(VIRTUAL_DISK_SIZE_GUID, 'virtual disk size')).readBigUInt64LE(0);
  if (vs === 0n || vs > BigInt(MAX_VIRTUAL_DISK_SIZE) || vs % BigInt(logicalSectorSize) !== 0n) {
    throw corrupt(name, `VirtualDiskSize ${vs} is not a non-zero multiple of the ${logicalSectorSize}-byte logical sector up to 64 TiB`);
  }
  const virtualDiskId = decodeGuid(await read(PAGE83_DATA_GUID, 'page 83 data'), 0);
  const p: VhdxParameters = {
    blockSize,
    leaveBlocksAllocated: (flags & FILE_PARAM_LEAVE_BLOCKS_ALLOCATED) !== 0,
    hasParent: (flags & FILE_PARAM_HAS_PARENT) !== 0,
    virtualDiskSize: Number(vs),
    logicalSectorSize,
    physicalSectorSize,
    virtualDiskId,
  };
  const pl = system.get(PARENT_LOCATOR_GUID);
  if (p.hasParent) {
    if (!pl || pl.length === 0) throw corrupt(name, 'HasParent is set but the metadata has no parent locator');
    p.parentLocator = decodeParentLocator(await item(pl), name);
  }
  return p;
}

// ---- 2.5 BAT geometry -------------------------------------------------------

/** How the BAT interleaves payload and sector bitmap entries (2.5). */
export interface BatGeometry {
  /** Payload blocks per sector bitmap block: 2^23 * LogicalSectorSize / BlockSize. */
  chunkRatio: number;
  payloadBlocks: number;
  sectorBitmapBlocks: number;
  /** Entries the BAT must hold. */
  totalEntries: number;
}

/** The BAT's shape for these parameters (2.5). */
export function batGeometry(p: Pick<VhdxParameters, 'blockSize' | 'logicalSectorSize' | 'virtualDiskSize' | 'hasParent'>): BatGeometry {
  const chunkRatio = (SECTORS_PER_BITMAP_BLOCK * p.logicalSectorSize) / p.blockSize;
  const payloadBlocks = Math.ceil(p.virtualDiskSize / p.blockSize);
  const sectorBitmapBlocks = Math.ceil(payloadBlocks / chunkRatio);
  const totalEntries = p.hasParent ? sectorBitmapBlocks * (chunkRatio + 1) : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  return { chunkRatio, payloadBlocks, sectorBitmapBlocks, totalEntries };
}

/** Index in the BAT of payload block `n`. */
export function payloadEntryIndex(n: number, chunkRatio: number): number {
  return n + Math.floor(n / chunkRatio);
}

/** Index in the BAT of the sector bitmap block of chunk `c`. */
export function bitmapEntryIndex(c: number, chunkRatio: number): number {
  return c * (chunkRatio + 1) + chunkRatio;
}

/** A BAT entry's state and file offset in bytes (2.5.1). */
export function decodeBatEntry(b: Buffer, at: number): { state: number; offset: number } {
  const lo = b.readUInt32LE(at);
  const hi = b.readUInt32LE(at + 4);
  // FileOffsetMB is bits 20-63: 12 bits from the low word, 32 from the high.
  return { state: lo & BAT_STATE_MASK, offset: ((hi * 2 ** 12) + (lo >>> BAT_OFFSET_SHIFT)) * MiB };
}

/** Store a BAT entry. */
export function encodeBatEntry(b: Buffer, at: number, state: number, offset: number): void {
  const mb = offset / MiB;
  b.writeUInt32LE(((mb % 2 ** 12) * 2 ** BAT_OFFSET_SHIFT + state) >>> 0, at);
  b.writeUInt32LE(Math.floor(mb / 2 ** 12), at + 4);
}

// ---- 2.3.1 log entries ------------------------------------------------------

/** A log entry header (2.3.1.1). */
export interface LogEntryHeader {
  signature: number;
  checksum: number;
  entryLength: number;
  tail: number;
  sequenceNumber: bigint;
  descriptorCount: number;
  logGuid: string;
  flushedFileOffset: number;
  lastFileOffset: number;
}

/** Decode a log entry header (no checks beyond range). */
export function decodeLogEntryHeader(b: Buffer, name: string): LogEntryHeader {
  return {
    signature: b.readUInt32LE(0),
    checksum: b.readUInt32LE(4),
    entryLength: b.readUInt32LE(8),
    tail: b.readUInt32LE(12),
    sequenceNumber: b.readBigUInt64LE(16),
    descriptorCount: b.readUInt32LE(24),
    logGuid: decodeGuid(b, 32),
    flushedFileOffset: u64(b, 48, name, 'log entry FlushedFileOffset'),
    lastFileOffset: u64(b, 56, name, 'log entry LastFileOffset'),
  };
}

/** One descriptor of a log entry: zeros, or a 4 KiB sector's data (2.3.1.2-2.3.1.3). */
export type LogDescriptor =
  | { kind: 'zero'; fileOffset: number; zeroLength: number; sequenceNumber: bigint }
  | { kind: 'data'; fileOffset: number; sequenceNumber: bigint; leading: Buffer; trailing: Buffer };

/** Decode the descriptor at `at`; a string says why it is bad. */
export function decodeLogDescriptor(b: Buffer, at: number, name: string): LogDescriptor | string {
  const sig = b.readUInt32LE(at);
  if (sig === ZERO_DESCRIPTOR_SIGNATURE) {
    return { kind: 'zero', zeroLength: u64(b, at + 8, name, 'zero descriptor ZeroLength'), fileOffset: u64(b, at + 16, name, 'zero descriptor FileOffset'), sequenceNumber: b.readBigUInt64LE(at + 24) };
  }
  if (sig === DATA_DESCRIPTOR_SIGNATURE) {
    return { kind: 'data', trailing: Buffer.from(b.subarray(at + 4, at + 8)), leading: Buffer.from(b.subarray(at + 8, at + 16)), fileOffset: u64(b, at + 16, name, 'data descriptor FileOffset'), sequenceNumber: b.readBigUInt64LE(at + 24) };
  }
  return `descriptor signature ${sig.toString(16)} is neither "zero" nor "desc"`;
}

/** Sectors an entry's header and `descriptors` descriptors occupy (2.3.1). */
export function descriptorSectors(descriptors: number): number {
  return Math.ceil((LOG_ENTRY_HEADER_SIZE + descriptors * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR_SIZE);
}

/**
 * Encode a whole log entry: header, descriptors, then one data sector per data
 * descriptor, with the checksum over all of it (2.3.1).
 */
export function encodeLogEntry(
  h: { tail: number; sequenceNumber: bigint; logGuid: string; flushedFileOffset: number; lastFileOffset: number },
  writes: ReadonlyArray<{ fileOffset: number; data: Buffer } | { fileOffset: number; zeroLength: number }>,
): Buffer {
  const dataWrites = writes.filter((w): w is { fileOffset: number; data: Buffer } => 'data' in w);
  const headSectors = descriptorSectors(writes.length);
  const b = Buffer.alloc((headSectors + dataWrites.length) * LOG_SECTOR_SIZE);
  b.writeUInt32LE(LOG_ENTRY_SIGNATURE, 0);
  b.writeUInt32LE(b.length, 8);
  b.writeUInt32LE(h.tail, 12);
  b.writeBigUInt64LE(h.sequenceNumber, 16);
  b.writeUInt32LE(writes.length, 24);
  encodeGuid(h.logGuid, b, 32);
  b.writeBigUInt64LE(BigInt(h.flushedFileOffset), 48);
  b.writeBigUInt64LE(BigInt(h.lastFileOffset), 56);
  let sector = headSectors;
  writes.forEach((w, i) => {
    const at = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    b.writeBigUInt64LE(BigInt(w.fileOffset), at + 16);
    b.writeBigUInt64LE(h.sequenceNumber, at + 24);
    if ('data' in w) {
      if (w.data.length !== LOG_SECTOR_SIZE) throw new VdiskError('E_USAGE', 'a log data descriptor carries exactly one 4 KiB sector');
      b.writeUInt32LE(DATA_DESCRIPTOR_SIGNATURE, at);
      w.data.copy(b, at + 4, 4092, 4096);
      w.data.copy(b, at + 8, 0, 8);
      const s = sector++ * LOG_SECTOR_SIZE;
      b.writeUInt32LE(DATA_SECTOR_SIGNATURE, s);
      b.writeUInt32LE(Number(h.sequenceNumber >> 32n), s + 4);
      w.data.copy(b, s + 8, 8, 8 + DATA_SECTOR_PAYLOAD);
      b.writeUInt32LE(Number(h.sequenceNumber & 0xffffffffn), s + 4092);
    } else {
      b.writeUInt32LE(ZERO_DESCRIPTOR_SIGNATURE, at);
      b.writeBigUInt64LE(BigInt(w.zeroLength), at + 8);
    }
  });
  b.writeUInt32LE(crc32c(b), 4);
  return b;
}

/** Everything read and validated at open. */
export interface VhdxMeta {
  /** The storage the metadata was read through (a replayed view for a read-only open of a dirty image). */
  storage: Storage;
  creator: string;
  header: VhdxHeader;
  /** 0 or 1: which header is current. */
  headerIndex: number;
  bat: RegionEntry;
  metadata: RegionEntry;
  params: VhdxParameters;
  geometry: BatGeometry;
  /** The BAT as on disk (geometry.totalEntries entries). */
  batTable: Buffer;
  /** End of the last present block (or of the metadata), where new blocks may go. */
  dataEnd: number;
  warnings: string[];
  /** Log entries replayed at open, and whether into memory only. */
  replay?: { entries: number; inMemory: boolean };
}
