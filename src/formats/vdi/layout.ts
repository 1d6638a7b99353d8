/**
 * The VDI header, described once: the pre-header (banner, signature, version) and
 * the version 1.1 header in its two sizes (VDIHEADER1, 384 bytes, as qemu writes it;
 * VDIHEADER1PLUS, 400 bytes with LCHS geometry, as VirtualBox writes it). Layout from
 * VirtualBox's VDICore.h (`VDIPREHEADER`, `VDIHEADER1`, `VDIHEADER1PLUS`); all fields
 * little-endian.
 */
import { randomUUID } from 'node:crypto';
import { VdiskError } from '../../errors.js';
import { MAX_OFFSET } from '../../storage/checks.js';
import type { CheckProblem } from '../../device/check.js';
import type { Storage } from '../../storage/storage.js';

/** VDICore.h VDI_IMAGE_FILE_INFO: the banner VirtualBox writes (eyes only). */
export const VDI_BANNER = '<<< Oracle VM VirtualBox Disk Image >>>\n';
/** VDIPREHEADER.szFileInfo is 64 bytes. */
export const VDI_BANNER_SIZE = 64;
/** VDICore.h VDI_IMAGE_SIGNATURE, at offset 0x40. */
export const VDI_SIGNATURE = 0xbeda107f;
/** VDI version 1.1 (major << 16 | minor), the only one written since VirtualBox 1.x. */
export const VDI_VERSION_1_1 = 0x00010001;
/** sizeof(VDIPREHEADER): banner + signature + version. */
export const VDI_PREHEADER_SIZE = 0x48;
/** sizeof(VDIHEADER1): what qemu writes in cbHeader. */
export const VDI_HEADER1_SIZE = 384;
/** sizeof(VDIHEADER1PLUS): VDIHEADER1 + LCHS geometry, what VirtualBox writes. */
export const VDI_HEADER1PLUS_SIZE = 400;
/** VDI_IMAGE_COMMENT_SIZE. */
export const VDI_COMMENT_SIZE = 256;
/** VDI_GEOMETRY_SECTOR_SIZE. */
export const VDI_SECTOR_SIZE = 512;
/** VDI_IMAGE_DEFAULT_BLOCK_SIZE (VDI.cpp): 1 MiB. */
export const VDI_DEFAULT_BLOCK_SIZE = 1024 * 1024;
/** VDI_DATA_ALIGN: VirtualBox aligns the block map and the data area to 1 MiB. */
export const VDI_DATA_ALIGN = 1024 * 1024;
/** VDI_IMAGE_BLOCK_FREE: not allocated; reads the parent (or zeros). */
export const VDI_BLOCK_FREE = 0xffffffff;
/** VDI_IMAGE_BLOCK_ZERO: not allocated; reads zeros, even over a parent. */
export const VDI_BLOCK_ZERO = 0xfffffffe;
/** Size of one block-map entry (VDIIMAGEBLOCKPOINTER, uint32). */
export const VDI_MAP_ENTRY_SIZE = 4;
/** Smallest block size vdisk accepts (one sector). */
export const VDI_MIN_BLOCK_SIZE = 512;
/** Largest block size (and cbBlockExtra) vdisk accepts: 256 MiB bounds any buffer a block needs. */
export const VDI_MAX_BLOCK_SIZE = 256 * 1024 * 1024;

/** Largest cbDisk vdisk writes: 2^32 blocks of 1 MiB less one byte (as create allows). */
export const VDI_MAX_DISK_SIZE = 2 ** 32 * 1024 * 1024 - 1;
/** Cylinder limit of the LCHS geometry (BIOS INT 13h addressing: 1024 cylinders). */
export const VDI_MAX_LCHS_CYLINDERS = 1024;
/** Cylinder limit of the legacy (physical CHS) geometry, as ATA disks report it. */
export const VDI_MAX_PCHS_CYLINDERS = 16383;

/** VDIIMAGETYPE. */
export const VdiImageType = {
  /** Dynamically growing base image. */
  NORMAL: 1,
  /** Preallocated base image. */
  FIXED: 2,
  /** Dynamically growing undo image (read like a differencing one). */
  UNDO: 3,
  /** Dynamically growing differencing image. */
  DIFF: 4,
} as const;

/** Names of the image types, as `info` prints them. */
export const VDI_TYPE_NAMES: Readonly<Record<number, string>> = { 1: 'normal', 2: 'fixed', 3: 'undo', 4: 'diff' };

/** Field offsets from the start of the file (VDIPREHEADER then VDIHEADER1PLUS, packed). */
export const VdiField = {
  banner: 0x00,
  u32Signature: 0x40,
  u32Version: 0x44,
  cbHeader: 0x48,
  u32Type: 0x4c,
  fFlags: 0x50,
  szComment: 0x54,
  offBlocks: 0x154,
  offData: 0x158,
  legacyGeometry: 0x15c,
  u32Dummy: 0x16c,
  cbDisk: 0x170,
  cbBlock: 0x178,
  cbBlockExtra: 0x17c,
  cBlocks: 0x180,
  cBlocksAllocated: 0x184,
  uuidCreate: 0x188,
  uuidModify: 0x198,
  uuidLinkage: 0x1a8,
  uuidParentModify: 0x1b8,
  /** Only when cbHeader >= VDI_HEADER1PLUS_SIZE. */
  lchsGeometry: 0x1c8,
} as const;

/** VDIDISKGEOMETRY. */
export interface VdiGeometry {
  cylinders: number;
  heads: number;
  sectors: number;
  sectorSize: number;
}

/** A decoded VDI 1.1 header. */
export interface VdiHeader {
  banner: string;
  signature: number;
  version: number;
  cbHeader: number;
  type: number;
  flags: number;
  comment: string;
  offBlocks: number;
  offData: number;
  legacyGeometry: VdiGeometry;
  cbDisk: number;
  cbBlock: number;
  cbBlockExtra: number;
  cBlocks: number;
  cBlocksAllocated: number;
  /** UUIDs as lower-case text (RTUUID is stored Microsoft-GUID style: first three fields little-endian). */
  uuidCreate: string;
  uuidModify: string;
  uuidLinkage: string;
  uuidParentModify: string;
  /** Present when cbHeader >= 400 (VDIHEADER1PLUS). */
  lchsGeometry?: VdiGeometry;
}

/** The all-zero uuid (RTUuidClear). */
export const NULL_UUID = '00000000-0000-0000-0000-000000000000';

/** Bytes of the header this module reads and writes: pre-header plus the larger header variant. */
export const VDI_HEADER_BYTES = VDI_PREHEADER_SIZE + VDI_HEADER1PLUS_SIZE;

function decodeUuid(b: Buffer, off: number): string {
  const hex = (from: number, to: number): string => b.subarray(off + from, off + to).toString('hex');
  const le = (from: number, len: number): string => Buffer.from(b.subarray(off + from, off + from + len)).reverse().toString('hex');
  return `${le(0, 4)}-${le(4, 2)}-${le(6, 2)}-${hex(8, 10)}-${hex(10, 16)}`;
}

function encodeUuid(b: Buffer, off: number, uuid: string): void {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new VdiskError('E_USAGE', `bad uuid "${uuid}"`);
  const raw = Buffer.from(hex, 'hex');
  Buffer.from(raw.subarray(0, 4)).reverse().copy(b, off);
  Buffer.from(raw.subarray(4, 6)).reverse().copy(b, off + 4);
  Buffer.from(raw.subarray(6, 8)).reverse().copy(b, off + 6);
  raw.copy(b, off + 8, 8, 16);
}

/** A fresh random uuid (RTUuidCreate). */
export function newUuid(): string {
  return randomUUID();
}

function decodeGeometry(b: Buffer, off: number): VdiGeometry {
  return { cylinders: b.readUInt32LE(off), heads: b.readUInt32LE(off + 4), sectors: b.readUInt32LE(off + 8), sectorSize: b.readUInt32LE(off + 12) };
}

function encodeGeometry(b: Buffer, off: number, g: VdiGeometry): void {
  b.writeUInt32LE(g.cylinders, off);
  b.writeUInt32LE(g.heads, off + 4);
  b.writeUInt32LE(g.sectors, off + 8);
  b.writeUInt32LE(g.sectorSize, off + 12);
}

/**
 * The geometry for a disk of `size` bytes keeping heads and sectors per track:
 * cylinders = size / (heads × sectors × sector size), capped at `maxCylinders`. An
 * unset geometry (0 heads or sectors: "compute on demand") stays unset.
 */
export function followGeometry(g: VdiGeometry, size: number, maxCylinders: number): VdiGeometry {
  if (g.heads === 0 || g.sectors === 0) return { ...g };
  const sectorSize = g.sectorSize || VDI_SECTOR_SIZE;
  const cylinders = Math.max(1, Math.min(maxCylinders, Math.floor(size / (g.heads * g.sectors * sectorSize))));
  return { ...g, cylinders };
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
}

/**
 * Decode the header from the first bytes of a file (at least VDI_PREHEADER_SIZE +
 * VDI_HEADER1_SIZE). Checks only what is needed to decode: signature, version and
 * cbHeader; {@link validateHeader} checks the rest against the file.
 */
export function decodeHeader(b: Buffer, name: string): VdiHeader {
  if (b.length < VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE) {
    throw new VdiskError('E_FORMAT', `${name}: ${b.length} bytes is too short for a VDI header`);
  }
  const signature = b.readUInt32LE(VdiField.u32Signature);
  if (signature !== VDI_SIGNATURE) {
    throw new VdiskError('E_FORMAT', `${name}: u32Signature is 0x${signature.toString(16)}, not the VDI signature 0x${VDI_SIGNATURE.toString(16)}`, {
      file: name,
      field: 'u32Signature',
      offset: VdiField.u32Signature,
      value: signature,
    });
  }
  const version = b.readUInt32LE(VdiField.u32Version);
  if (version !== VDI_VERSION_1_1) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: u32Version is ${version >>> 16}.${version & 0xffff}; vdisk reads VDI version 1.1 only`, {
      file: name,
      field: 'u32Version',
      offset: VdiField.u32Version,
      value: version,
    });
  }
  const cbHeader = b.readUInt32LE(VdiField.cbHeader);
  if (cbHeader < VDI_HEADER1_SIZE) {
    throw new VdiskError('E_CORRUPT', `${name}: cbHeader ${cbHeader} is smaller than a VDI 1.1 header (${VDI_HEADER1_SIZE} bytes)`, {
      file: name,
      field: 'cbHeader',
      offset: VdiField.cbHeader,
      value: cbHeader,
    });
  }
  const cbDisk = Number(b.readBigUInt64LE(VdiField.cbDisk));
  const h: VdiHeader = {
    banner: cString(b.subarray(0, VDI_BANNER_SIZE)),
    signature,
    version,
    cbHeader,
    type: b.readUInt32LE(VdiField.u32Type),
    flags: b.readUInt32LE(VdiField.fFlags),
    comment: cString(b.subarray(VdiField.szComment, VdiField.szComment + VDI_COMMENT_SIZE)),
    offBlocks: b.readUInt32LE(VdiField.offBlocks),
    offData: b.readUInt32LE(VdiField.offData),
    legacyGeometry: decodeGeometry(b, VdiField.legacyGeometry),
    cbDisk,
    cbBlock: b.readUInt32LE(VdiField.cbBlock),
    cbBlockExtra: b.readUInt32LE(VdiField.cbBlockExtra),
    cBlocks: b.readUInt32LE(VdiField.cBlocks),
    cBlocksAllocated: b.readUInt32LE(VdiField.cBlocksAllocated),
    uuidCreate: decodeUuid(b, VdiField.uuidCreate),
    uuidModify: decodeUuid(b, VdiField.uuidModify),
    uuidLinkage: decodeUuid(b, VdiField.uuidLinkage),
    uuidParentModify: decodeUuid(b, VdiField.uuidParentModify),
  };
  if (cbHeader >= VDI_HEADER1PLUS_SIZE && b.length >= VDI_HEADER_BYTES) h.lchsGeometry = decodeGeometry(b, VdiField.lchsGeometry);
  return h;
}

/**
 * Encode `h` over `base` (the header bytes as read, so fields vdisk does not know
 * survive) and return the bytes to write at offset 0: the pre-header plus cbHeader
 * bytes, at most VDIHEADER1PLUS.
 */
export function encodeHeader(h: VdiHeader, base?: Buffer): Buffer {
  const len = VDI_PREHEADER_SIZE + Math.min(h.cbHeader, VDI_HEADER1PLUS_SIZE);
  const b = Buffer.alloc(len);
  if (base) base.copy(b, 0, 0, Math.min(len, base.length));
  b.fill(0, 0, VDI_BANNER_SIZE);
  b.write(h.banner.slice(0, VDI_BANNER_SIZE - 1), 0, 'utf8');
  b.writeUInt32LE(h.signature, VdiField.u32Signature);
  b.writeUInt32LE(h.version, VdiField.u32Version);
  b.writeUInt32LE(h.cbHeader, VdiField.cbHeader);
  b.writeUInt32LE(h.type, VdiField.u32Type);
  b.writeUInt32LE(h.flags, VdiField.fFlags);
  b.fill(0, VdiField.szComment, VdiField.szComment + VDI_COMMENT_SIZE);
  b.write(h.comment, VdiField.szComment, VDI_COMMENT_SIZE - 1, 'utf8');
  b.writeUInt32LE(h.offBlocks, VdiField.offBlocks);
  b.writeUInt32LE(h.offData, VdiField.offData);
  encodeGeometry(b, VdiField.legacyGeometry, h.legacyGeometry);
  b.writeBigUInt64LE(BigInt(h.cbDisk), VdiField.cbDisk);
  b.writeUInt32LE(h.cbBlock, VdiField.cbBlock);
  b.writeUInt32LE(h.cbBlockExtra, VdiField.cbBlockExtra);
  b.writeUInt32LE(h.cBlocks, VdiField.cBlocks);
  b.writeUInt32LE(h.cBlocksAllocated, VdiField.cBlocksAllocated);
  encodeUuid(b, VdiField.uuidCreate, h.uuidCreate);
  encodeUuid(b, VdiField.uuidModify, h.uuidModify);
  encodeUuid(b, VdiField.uuidLinkage, h.uuidLinkage);
  encodeUuid(b, VdiField.uuidParentModify, h.uuidParentModify);
  if (h.lchsGeometry && len >= VDI_HEADER_BYTES) encodeGeometry(b, VdiField.lchsGeometry, h.lchsGeometry);
  return b;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Round up to a multiple of `align`. */
export function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * Check every header field against itself and the file size (VDI.cpp
 * vdiValidateHeader plus what vdisk needs to stay in bounds). Throws a VdiskError
 * naming the field.
 */
export function validateHeader(h: VdiHeader, fileSize: number, name: string): void {
  const bad = (field: keyof typeof VdiField, why: string): VdiskError => {
    // The header's own names for the fields (u32Type is `type`).
    const value = field === 'u32Type' ? h.type : (h as unknown as Record<string, unknown>)[field];
    return new VdiskError('E_CORRUPT', `${name}: ${field} ${why}`, { file: name, field, offset: VdiField[field], ...(typeof value === 'number' ? { value } : {}) });
  };
  if (VDI_PREHEADER_SIZE + h.cbHeader > fileSize) throw bad('cbHeader', `${h.cbHeader} reaches past the end of the ${fileSize}-byte file`);
  if (h.type < VdiImageType.NORMAL || h.type > VdiImageType.DIFF) throw bad('u32Type', `${h.type} is not a VDI image type (1-4)`);
  if (!isPowerOfTwo(h.cbBlock) || h.cbBlock < VDI_MIN_BLOCK_SIZE || h.cbBlock > VDI_MAX_BLOCK_SIZE) {
    throw bad('cbBlock', `${h.cbBlock} is not a power of two between ${VDI_MIN_BLOCK_SIZE} and ${VDI_MAX_BLOCK_SIZE}`);
  }
  if (h.cbBlockExtra !== 0 && (!isPowerOfTwo(h.cbBlockExtra) || h.cbBlockExtra > VDI_MAX_BLOCK_SIZE)) {
    throw bad('cbBlockExtra', `${h.cbBlockExtra} is neither 0 nor a power of two up to ${VDI_MAX_BLOCK_SIZE}`);
  }
  if (h.cbDisk === 0 || h.cbDisk > MAX_OFFSET) throw bad('cbDisk', `${h.cbDisk} is not a usable disk size`);
  if (h.cBlocks === 0) throw bad('cBlocks', 'is 0');
  const needed = Math.ceil(h.cbDisk / h.cbBlock);
  if (h.cBlocks < needed) throw bad('cBlocks', `${h.cBlocks} blocks of ${h.cbBlock} bytes cannot hold cbDisk ${h.cbDisk}`);
  // More blocks than cbDisk needs is allowed (VirtualBox's vdiValidateHeader and qemu's
  // vdi_open only ask cbBlock × cBlocks >= cbDisk); an interrupted resize leaves that.
  if (h.cBlocksAllocated > h.cBlocks) throw bad('cBlocksAllocated', `${h.cBlocksAllocated} is more than cBlocks ${h.cBlocks}`);
  if (h.offBlocks < VDI_PREHEADER_SIZE + h.cbHeader) {
    throw bad('offBlocks', `${h.offBlocks} overlaps the header (which ends at ${VDI_PREHEADER_SIZE + h.cbHeader})`);
  }
  const mapEnd = h.offBlocks + h.cBlocks * VDI_MAP_ENTRY_SIZE;
  if (mapEnd > fileSize) throw bad('offBlocks', `${h.offBlocks} + ${h.cBlocks} map entries reaches past the end of the ${fileSize}-byte file`);
  if (h.offData < mapEnd) throw bad('offData', `${h.offData} overlaps the block map (which ends at ${mapEnd})`);
  if (h.offData > fileSize) throw bad('offData', `${h.offData} is past the end of the ${fileSize}-byte file`);
  if ((h.type === VdiImageType.DIFF || h.type === VdiImageType.UNDO) && h.uuidLinkage === NULL_UUID) {
    throw bad('uuidLinkage', `is null in a ${VDI_TYPE_NAMES[h.type]} image, so it names no parent`);
  }
}

/** The header VirtualBox writes for a new image (VDI.cpp vdiInitHeader): 400 bytes, 1 MiB-aligned offsets. */
export function newHeader(opts: { cbDisk: number; type: number; cbBlock?: number; uuidLinkage?: string; uuidParentModify?: string }): VdiHeader {
  const cbBlock = opts.cbBlock ?? VDI_DEFAULT_BLOCK_SIZE;
  const cBlocks = Math.ceil(opts.cbDisk / cbBlock);
  const offBlocks = alignUp(VDI_PREHEADER_SIZE + VDI_HEADER1PLUS_SIZE, VDI_DATA_ALIGN);
  const offData = alignUp(offBlocks + cBlocks * VDI_MAP_ENTRY_SIZE, VDI_DATA_ALIGN);
  const geometry = (): VdiGeometry => ({ cylinders: 0, heads: 0, sectors: 0, sectorSize: VDI_SECTOR_SIZE });
  return {
    banner: VDI_BANNER,
    signature: VDI_SIGNATURE,
    version: VDI_VERSION_1_1,
    cbHeader: VDI_HEADER1PLUS_SIZE,
    type: opts.type,
    flags: 0,
    comment: '',
    offBlocks,
    offData,
    legacyGeometry: geometry(),
    cbDisk: opts.cbDisk,
    cbBlock,
    cbBlockExtra: 0,
    cBlocks,
    cBlocksAllocated: 0,
    uuidCreate: newUuid(),
    uuidModify: newUuid(),
    uuidLinkage: opts.uuidLinkage ?? NULL_UUID,
    uuidParentModify: opts.uuidParentModify ?? NULL_UUID,
    lchsGeometry: geometry(),
  };
}

// ---- The block map ----

/*
 * The VDI block map (VDICore.h: `paBlocks`, one uint32 VDIIMAGEBLOCKPOINTER per
 * block at offBlocks): entry i names the data block holding virtual block i, or is
 * VDI_IMAGE_BLOCK_FREE / VDI_IMAGE_BLOCK_ZERO. Data block n lives at
 * `offData + n × (cbBlockExtra + cbBlock)`, its cbBlockExtra service bytes first.
 */
/** Most blocks vdisk loads a map for: 2^25 entries (128 MiB of map; 32 TiB at 1 MiB blocks). */
export const VDI_MAX_BLOCKS = 2 ** 25;

/** True when a map entry names a data block (VDICore.h IS_VDI_IMAGE_BLOCK_ALLOCATED). */
export function isAllocated(entry: number): boolean {
  return entry < VDI_BLOCK_ZERO;
}

/** Bytes one data block takes in the file. */
export function blockStride(h: VdiHeader): number {
  return h.cbBlockExtra + h.cbBlock;
}

/** Read the block map (bounded: validateHeader has checked it lies inside the file). */
export async function readBlockMap(storage: Storage, h: VdiHeader): Promise<Uint32Array> {
  if (h.cBlocks > VDI_MAX_BLOCKS) {
    throw new VdiskError('E_UNSUPPORTED', `${storage.name}: cBlocks ${h.cBlocks} is more than the ${VDI_MAX_BLOCKS} blocks vdisk handles`);
  }
  const raw = Buffer.alloc(h.cBlocks * VDI_MAP_ENTRY_SIZE);
  await storage.read(raw, h.offBlocks);
  const map = new Uint32Array(h.cBlocks);
  for (let i = 0; i < h.cBlocks; i++) map[i] = raw.readUInt32LE(i * VDI_MAP_ENTRY_SIZE);
  return map;
}

/**
 * Entries `first` .. `first + count - 1` of `map` as bytes (for writing at offBlocks +
 * first × 4), in a buffer of at least `bytes` (the rest zero).
 */
export function encodeMapEntries(map: Uint32Array, first = 0, count = map.length - first, bytes = count * VDI_MAP_ENTRY_SIZE): Buffer {
  const raw = Buffer.alloc(Math.max(bytes, count * VDI_MAP_ENTRY_SIZE));
  for (let k = 0; k < count; k++) raw.writeUInt32LE(map[first + k]! >>> 0, k * VDI_MAP_ENTRY_SIZE);
  return raw;
}

/** One map entry as bytes, for writing at offBlocks + i × 4. */
export function encodeMapEntry(entry: number): Buffer {
  const b = Buffer.alloc(VDI_MAP_ENTRY_SIZE);
  b.writeUInt32LE(entry >>> 0, 0);
  return b;
}

/** What a walk over the block map found. */
export interface BlockMapScan {
  /** Entries naming a data block. */
  mapped: number;
  /** owner[n] = the virtual block whose data is data block n, or -1 (size cBlocks). */
  owner: Int32Array;
  /** One past the highest data block in use. */
  nextSlot: number;
  /** Whole data blocks the file holds past offData. */
  slotsInFile: number;
  /** Entries past cBlocks or past EOF (`corrupt`; the image cannot be opened). */
  pointsNowhere: CheckProblem[];
  /** Data blocks named by two entries (`corrupt`; readable, but not safely writable). */
  duplicates: CheckProblem[];
}

/** Walk the block map and find entries that point nowhere or at a block another entry uses. */
export function scanBlockMap(h: VdiHeader, map: Uint32Array, fileSize: number, name: string): BlockMapScan {
  const stride = blockStride(h);
  const slotsInFile = fileSize > h.offData ? Math.floor((fileSize - h.offData) / stride) : 0;
  const owner = new Int32Array(h.cBlocks).fill(-1);
  const pointsNowhere: CheckProblem[] = [];
  const duplicates: CheckProblem[] = [];
  let mapped = 0;
  let nextSlot = 0;
  for (let i = 0; i < map.length; i++) {
    const e = map[i]!;
    if (!isAllocated(e)) continue;
    const at = h.offBlocks + i * VDI_MAP_ENTRY_SIZE;
    if (e >= h.cBlocks) {
      pointsNowhere.push({ severity: 'corrupt', offset: at, message: `${name}: block map entry ${i} names data block ${e}, past cBlocks ${h.cBlocks}` });
      continue;
    }
    if (e >= slotsInFile) {
      pointsNowhere.push({ severity: 'corrupt', offset: at, message: `${name}: block map entry ${i} names data block ${e} at ${h.offData + e * stride}, past the end of the ${fileSize}-byte file` });
      continue;
    }
    const prev = owner[e]!;
    if (prev >= 0) {
      duplicates.push({ severity: 'corrupt', offset: at, message: `${name}: block map entries ${prev} and ${i} both name data block ${e}` });
      continue;
    }
    owner[e] = i;
    mapped++;
    if (e + 1 > nextSlot) nextSlot = e + 1;
  }
  return { mapped, owner, nextSlot, slotsInFile, pointsNowhere, duplicates };
}
