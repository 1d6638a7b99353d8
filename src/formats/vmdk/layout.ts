/**
 * On-disk structures of a VMware hosted sparse extent, after VMware's "Virtual Disk
 * Format 1.1" (section "Hosted Sparse Extents" for the header, grain directory and
 * grain tables; section "Stream-Optimized Compressed Sparse Extents" for markers).
 * Every structure has one decode/encode pair here; nothing else knows offsets.
 */
import { VdiskError } from '../../errors.js';

/** Bytes per sector; every VMDK offset and size field counts these. */
export const SECTOR = 512;
/** `magicNumber` of a hosted sparse extent: "KDMV" little-endian (spec: SparseExtentHeader). */
export const SPARSE_MAGIC = 0x564d444b;
/** Magic of an ESX 2.x / vmfsSparse "COWD" extent, which vdisk does not read. */
export const COWD_MAGIC = 0x44574f43;
/** Size of the SparseExtentHeader on disk: one sector. */
export const HEADER_SIZE = 512;

/** flags bit 0: the newline-test characters are valid. */
export const FLAG_VALID_NEWLINE_TEST = 1 << 0;
/** flags bit 1: a redundant grain directory and tables are kept. */
export const FLAG_REDUNDANT_GRAIN_TABLE = 1 << 1;
/** flags bit 2: a grain table entry of 1 means "zeroed grain". */
export const FLAG_ZEROED_GRAIN_GTE = 1 << 2;
/** flags bit 16: grains are compressed. */
export const FLAG_COMPRESSED_GRAINS = 1 << 16;
/** flags bit 17: the extent has markers (stream-optimized). */
export const FLAG_MARKERS = 1 << 17;

/** compressAlgorithm: none. */
export const COMPRESSION_NONE = 0;
/** compressAlgorithm: deflate (zlib stream, RFC 1950). */
export const COMPRESSION_DEFLATE = 1;

/** gdOffset value meaning "the grain directory is found through the footer at the end". */
export const GD_AT_END = 0xffffffffffffffffn;
/** A grain table entry of 0: grain not allocated (read the parent, or zeros). */
export const GTE_UNALLOCATED = 0;
/** A grain table entry of 1 (with FLAG_ZEROED_GRAIN_GTE): the grain reads as zeros. */
export const GTE_ZEROED = 1;
/** Grain table entries per table that VMware writes (spec: numGTEsPerGT is 512). */
export const DEFAULT_GTES_PER_GT = 512;
/** Default grain size in sectors (64 KiB). */
export const DEFAULT_GRAIN_SECTORS = 128;
/** Largest grain vdisk accepts, in sectors (1 MiB; VMware and qemu use 64 KiB). */
export const MAX_GRAIN_SECTORS = 2048;
/** Largest numGTEsPerGT vdisk accepts. */
export const MAX_GTES_PER_GT = 4096;

/** Marker types (spec: stream-optimized "Marker" type field). */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;
/** Bytes of a marker before its payload: uint64 val, uint32 size (grain markers' data start here). */
export const GRAIN_MARKER_HEADER = 12;

/** The SparseExtentHeader (spec: "Header"), with sector counts as numbers. */
export interface SparseHeader {
  version: number;
  flags: number;
  /** Capacity of this extent in sectors. */
  capacity: number;
  /** Grain size in sectors. */
  grainSize: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  /** Redundant grain directory, in sectors (0 when none). */
  rgdOffset: number;
  /** Grain directory in sectors; meaningless when `gdAtEnd`. */
  gdOffset: number;
  /** gdOffset was GD_AT_END: read the footer (stream-optimized). */
  gdAtEnd: boolean;
  /** Sectors of metadata before the first grain. */
  overHead: number;
  uncleanShutdown: boolean;
  compressAlgorithm: number;
  /** The newline test characters were intact (false means the file went through a text-mode transfer). */
  newlinesIntact: boolean;
}

// Field offsets (spec: SparseExtentHeader, packed little-endian).
const OFF_MAGIC = 0;
const OFF_VERSION = 4;
const OFF_FLAGS = 8;
const OFF_CAPACITY = 12;
const OFF_GRAIN_SIZE = 20;
const OFF_DESCRIPTOR_OFFSET = 28;
const OFF_DESCRIPTOR_SIZE = 36;
const OFF_NUM_GTES = 44;
const OFF_RGD_OFFSET = 48;
const OFF_GD_OFFSET = 56;
const OFF_OVERHEAD = 64;
const OFF_UNCLEAN = 72;
const OFF_SINGLE_END_LINE = 73; // '\n'
const OFF_NON_END_LINE = 74; // ' '
const OFF_DOUBLE_END_LINE1 = 75; // '\r'
const OFF_DOUBLE_END_LINE2 = 76; // '\n'
const OFF_COMPRESS_ALGORITHM = 77;

/** Offsets of the SparseExtentHeader fields, by the spec's names, for errors that say where a field sits. */
export const SparseHeaderField = {
  magicNumber: OFF_MAGIC,
  version: OFF_VERSION,
  flags: OFF_FLAGS,
  capacity: OFF_CAPACITY,
  grainSize: OFF_GRAIN_SIZE,
  descriptorOffset: OFF_DESCRIPTOR_OFFSET,
  descriptorSize: OFF_DESCRIPTOR_SIZE,
  numGTEsPerGT: OFF_NUM_GTES,
  rgdOffset: OFF_RGD_OFFSET,
  gdOffset: OFF_GD_OFFSET,
  overHead: OFF_OVERHEAD,
  uncleanShutdown: OFF_UNCLEAN,
  compressAlgorithm: OFF_COMPRESS_ALGORITHM,
} as const;

/** Where a decoded header came from: the file, and the header's offset in it (the footer copy of a stream-optimized extent is not at 0). */
export interface HeaderPlace {
  file: string;
  at: number;
}

function u64(view: DataView, off: number, field: string, name: string, place: HeaderPlace): number {
  const v = view.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VdiskError('E_CORRUPT', `${name}: header field ${field} (${v}) is out of range`, { file: place.file, field, offset: place.at + off, value: v.toString() });
  }
  return Number(v);
}

/** True when `buf` starts with the KDMV magic. */
export function hasSparseMagic(buf: Uint8Array): boolean {
  return buf.length >= 4 && new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0, true) === SPARSE_MAGIC;
}

/** Decode a SparseExtentHeader; E_FORMAT without the magic, E_CORRUPT for fields out of range. */
export function decodeSparseHeader(buf: Uint8Array, name: string, place: HeaderPlace = { file: name, at: 0 }): SparseHeader {
  if (buf.length < HEADER_SIZE) throw new VdiskError('E_CORRUPT', `${name}: sparse header is truncated`, { file: place.file, offset: place.at, value: buf.length });
  const view = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  const magic = view.getUint32(OFF_MAGIC, true);
  if (magic !== SPARSE_MAGIC) {
    throw new VdiskError('E_FORMAT', `${name}: no KDMV magic in the sparse extent header`, { file: place.file, field: 'magicNumber', offset: place.at + OFF_MAGIC, value: magic });
  }
  const gdRaw = view.getBigUint64(OFF_GD_OFFSET, true);
  const gdAtEnd = gdRaw === GD_AT_END;
  return {
    version: view.getUint32(OFF_VERSION, true),
    flags: view.getUint32(OFF_FLAGS, true),
    capacity: u64(view, OFF_CAPACITY, 'capacity', name, place),
    grainSize: u64(view, OFF_GRAIN_SIZE, 'grainSize', name, place),
    descriptorOffset: u64(view, OFF_DESCRIPTOR_OFFSET, 'descriptorOffset', name, place),
    descriptorSize: u64(view, OFF_DESCRIPTOR_SIZE, 'descriptorSize', name, place),
    numGTEsPerGT: view.getUint32(OFF_NUM_GTES, true),
    rgdOffset: u64(view, OFF_RGD_OFFSET, 'rgdOffset', name, place),
    gdOffset: gdAtEnd ? 0 : u64(view, OFF_GD_OFFSET, 'gdOffset', name, place),
    gdAtEnd,
    overHead: u64(view, OFF_OVERHEAD, 'overHead', name, place),
    uncleanShutdown: view.getUint8(OFF_UNCLEAN) !== 0,
    compressAlgorithm: view.getUint16(OFF_COMPRESS_ALGORITHM, true),
    newlinesIntact:
      view.getUint8(OFF_SINGLE_END_LINE) === 0x0a &&
      view.getUint8(OFF_NON_END_LINE) === 0x20 &&
      view.getUint8(OFF_DOUBLE_END_LINE1) === 0x0d &&
      view.getUint8(OFF_DOUBLE_END_LINE2) === 0x0a,
  };
}

/** Encode a SparseExtentHeader into one 512-byte sector (newline test characters always set). */
export function encodeSparseHeader(h: SparseHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  const view = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  view.setUint32(OFF_MAGIC, SPARSE_MAGIC, true);
  view.setUint32(OFF_VERSION, h.version, true);
  view.setUint32(OFF_FLAGS, h.flags >>> 0, true);
  view.setBigUint64(OFF_CAPACITY, BigInt(h.capacity), true);
  view.setBigUint64(OFF_GRAIN_SIZE, BigInt(h.grainSize), true);
  view.setBigUint64(OFF_DESCRIPTOR_OFFSET, BigInt(h.descriptorOffset), true);
  view.setBigUint64(OFF_DESCRIPTOR_SIZE, BigInt(h.descriptorSize), true);
  view.setUint32(OFF_NUM_GTES, h.numGTEsPerGT, true);
  view.setBigUint64(OFF_RGD_OFFSET, BigInt(h.rgdOffset), true);
  view.setBigUint64(OFF_GD_OFFSET, h.gdAtEnd ? GD_AT_END : BigInt(h.gdOffset), true);
  view.setBigUint64(OFF_OVERHEAD, BigInt(h.overHead), true);
  view.setUint8(OFF_UNCLEAN, h.uncleanShutdown ? 1 : 0);
  view.setUint8(OFF_SINGLE_END_LINE, 0x0a);
  view.setUint8(OFF_NON_END_LINE, 0x20);
  view.setUint8(OFF_DOUBLE_END_LINE1, 0x0d);
  view.setUint8(OFF_DOUBLE_END_LINE2, 0x0a);
  view.setUint16(OFF_COMPRESS_ALGORITHM, h.compressAlgorithm, true);
  return buf;
}

/** A stream-optimized marker (spec: "Marker"): a grain marker when `size` > 0, else a metadata marker of `type`. */
export interface Marker {
  /** Grain markers: the grain's first sector (LBA); metadata markers: sectors of metadata that follow. */
  val: number;
  /** Grain markers: bytes of compressed data that follow; 0 for metadata markers. */
  size: number;
  /** Metadata markers: MARKER_EOS, MARKER_GT, MARKER_GD or MARKER_FOOTER. */
  type: number;
}

/** Decode a marker from the start of a sector. */
export function decodeMarker(buf: Uint8Array, name: string): Marker {
  if (buf.length < 16) throw new VdiskError('E_CORRUPT', `${name}: marker is truncated`);
  const view = new DataView(buf.buffer, buf.byteOffset, 16);
  const val = view.getBigUint64(0, true);
  if (val > BigInt(Number.MAX_SAFE_INTEGER)) throw new VdiskError('E_CORRUPT', `${name}: marker val ${val} is out of range`);
  const size = view.getUint32(8, true);
  return { val: Number(val), size, type: size === 0 ? view.getUint32(12, true) : -1 };
}

/** A metadata marker sector (GT, GD, footer or end-of-stream) announcing `sectors` sectors of metadata. */
export function encodeMetadataMarker(type: number, sectors: number): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeBigUInt64LE(BigInt(sectors), 0);
  buf.writeUInt32LE(0, 8);
  buf.writeUInt32LE(type, 12);
  return buf;
}

/** The 12-byte head of a grain marker: the grain's LBA and the compressed length. */
export function encodeGrainMarker(lba: number, size: number): Buffer {
  const buf = Buffer.alloc(GRAIN_MARKER_HEADER);
  buf.writeBigUInt64LE(BigInt(lba), 0);
  buf.writeUInt32LE(size, 8);
  return buf;
}

/** Grain directory or table entries (uint32 sector numbers) from bytes. */
export function decodeEntries(buf: Uint8Array, count: number): Uint32Array {
  const out = new Uint32Array(count);
  const view = new DataView(buf.buffer, buf.byteOffset, count * 4);
  for (let i = 0; i < count; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}

/** Bytes of grain directory or table entries, padded to whole sectors. */
export function encodeEntries(entries: ArrayLike<number>, padTo = SECTOR): Buffer {
  const bytes = Math.ceil((entries.length * 4) / padTo) * padTo;
  const buf = Buffer.alloc(bytes);
  for (let i = 0; i < entries.length; i++) buf.writeUInt32LE(entries[i]! >>> 0, i * 4);
  return buf;
}

/** Sectors needed for `count` uint32 entries. */
export function entrySectors(count: number): number {
  return Math.ceil((count * 4) / SECTOR);
}

// ---- A new sparse extent's layout (where vdisk places the header, directories and tables) ----

/** Sectors per extent of a twoGbMaxExtent* disk as VMware writes them (2 GiB minus 1 MiB). */
export const SPLIT_EXTENT_SECTORS = 4192256;
/** Sectors reserved for an embedded descriptor (as VMware and qemu reserve). */
export const EMBEDDED_DESCRIPTOR_SECTORS = 20;
/** Where the parts of a new sparse extent go, in sectors. */
export interface SparseLayout {
  header: SparseHeader;
  rgdEntries: Uint32Array;
  gdEntries: Uint32Array;
}

/** Lay out a new sparse extent of `capacity` sectors with `descriptorSectors` reserved after the header. */
export function sparseLayout(capacity: number, descriptorSectors: number): SparseLayout {
  const grain = DEFAULT_GRAIN_SECTORS;
  const gtes = DEFAULT_GTES_PER_GT;
  const tables = Math.ceil(capacity / (grain * gtes));
  const gdSectors = entrySectors(tables);
  const gtSectors = entrySectors(gtes);
  const rgdOffset = 1 + descriptorSectors;
  const rgts = rgdOffset + gdSectors;
  const gdOffset = rgts + tables * gtSectors;
  const gts = gdOffset + gdSectors;
  const end = gts + tables * gtSectors;
  const overHead = Math.ceil(end / grain) * grain;
  const rgdEntries = new Uint32Array(tables);
  const gdEntries = new Uint32Array(tables);
  for (let i = 0; i < tables; i++) {
    rgdEntries[i] = rgts + i * gtSectors;
    gdEntries[i] = gts + i * gtSectors;
  }
  const header: SparseHeader = {
    version: 1,
    flags: FLAG_VALID_NEWLINE_TEST | FLAG_REDUNDANT_GRAIN_TABLE,
    capacity,
    grainSize: grain,
    descriptorOffset: descriptorSectors > 0 ? 1 : 0,
    descriptorSize: descriptorSectors,
    numGTEsPerGT: gtes,
    rgdOffset,
    gdOffset,
    gdAtEnd: false,
    overHead,
    uncleanShutdown: false,
    compressAlgorithm: COMPRESSION_NONE,
    newlinesIntact: true,
  };
  return { header, rgdEntries, gdEntries };
}
