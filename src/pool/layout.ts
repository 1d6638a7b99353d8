/**
 * LVM2's binary structures on a physical volume, as LVM2 2.03 lays them out
 * (lib/label/label.h, lib/format_text/layout.h): the label in one of the first four
 * sectors, the pv_header that follows it, and the mda_header at the start of each
 * metadata area. Every structure is a typed decode/encode pair; all integers are
 * little-endian.
 */
import { crc32 } from 'node:zlib';
import { VdiskError } from '../errors.js';

export const SECTOR = 512;
/** LVM2 looks for the label in sectors 0..3 and writes it to sector 1. */
export const LABEL_SCAN_SECTORS = 4;
export const LABEL_SECTOR = 1;
export const LABEL_ID = 'LABELONE';
export const LABEL_TYPE = 'LVM2 001';
/** Size of label_header; the pv_header follows at this offset in the sector. */
export const LABEL_HEADER_SIZE = 32;
/** LVM2 ids are 32 characters; written with dashes 6-4-4-4-4-4-6. */
export const ID_LEN = 32;
export const MDA_MAGIC = ' LVM2 x[5A%r0N*>';
export const MDA_HEADER_SIZE = 512;
export const MDA_VERSION = 1;
/** pv_header_extension version LVM2 2.03 writes, and its "PV is in a VG" flag. */
export const PV_EXT_VERSION = 2;
export const PV_EXT_USED = 1;
/** Where LVM2 puts the first metadata area, and its default data start (1 MiB). */
export const MDA_OFFSET = 4096;
export const DEFAULT_PE_START = 1 << 20;
const RAW_LOCN_SIZE = 24;
const RAW_LOCN_START = 40;
/** raw_locn slots in a 512-byte header (LVM2 uses 0 = committed, 1 = precommitted). */
const MAX_RAW_LOCNS = Math.floor((MDA_HEADER_SIZE - RAW_LOCN_START) / RAW_LOCN_SIZE);
/** An mda_header's raw_locn flag for a slot LVM2 must ignore. */
export const RAW_LOCN_IGNORED = 1;

/** LVM2's CRC-32: the zlib polynomial seeded with 0xf597a6cf and no final xor. */
export function lvmCrc(data: Uint8Array, seed = 0xf597a6cf): number {
  return (crc32(data, (seed ^ 0xffffffff) >>> 0) ^ 0xffffffff) >>> 0;
}

/** A disk_locn: byte offset and size (0 = to the end of the device for a data area). */
export interface DiskLocn {
  offset: number;
  size: number;
}

/** label_header plus pv_header and its extension: everything in the label sector. */
export interface PvLabel {
  /** Sector the label sits in (0..3). */
  sector: number;
  /** The PV uuid, 32 characters without dashes. */
  uuid: string;
  /** Device size in bytes as the PV records it. */
  deviceSize: number;
  dataAreas: DiskLocn[];
  metadataAreas: DiskLocn[];
  /** pv_header_extension version (0 when absent) and flags. */
  extVersion: number;
  extFlags: number;
  bootloaderAreas: DiskLocn[];
}

function u64(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new VdiskError('E_CORRUPT', `${what}: value ${v} is too large`);
  return Number(v);
}

/** Read a zero-terminated disk_locn list starting at `at`; returns the list and the offset after its terminator. */
function readLocns(buf: Buffer, at: number, what: string): [DiskLocn[], number] {
  const out: DiskLocn[] = [];
  for (;;) {
    if (at + 16 > buf.length) throw new VdiskError('E_CORRUPT', `${what}: area list runs past the label sector`);
    const offset = u64(buf, at, what);
    const size = u64(buf, at + 8, what);
    at += 16;
    if (offset === 0) return [out, at];
    out.push({ offset, size });
  }
}

function writeLocns(buf: Buffer, at: number, list: readonly DiskLocn[]): number {
  for (const l of [...list, { offset: 0, size: 0 }]) {
    buf.writeBigUInt64LE(BigInt(l.offset), at);
    buf.writeBigUInt64LE(BigInt(l.size), at + 8);
    at += 16;
  }
  return at;
}

/** True when `sector` (512 bytes) starts with an LVM2 label id. */
export function hasLabelId(sector: Buffer): boolean {
  return sector.subarray(0, 8).toString('latin1') === LABEL_ID;
}

/** Decode the label sector found at `sectorNo`; E_CORRUPT on a bad CRC or field. */
export function decodeLabel(sector: Buffer, sectorNo: number, what: string): PvLabel {
  if (!hasLabelId(sector)) throw new VdiskError('E_FORMAT', `${what}: no LVM2 label`);
  const recorded = u64(sector, 8, what);
  if (recorded !== sectorNo) throw new VdiskError('E_CORRUPT', `${what}: label in sector ${sectorNo} says it is in sector ${recorded}`);
  const crc = sector.readUInt32LE(16);
  if (lvmCrc(sector.subarray(20, SECTOR)) !== crc) throw new VdiskError('E_CORRUPT', `${what}: LVM2 label checksum mismatch`);
  const contentOffset = sector.readUInt32LE(20);
  if (contentOffset !== LABEL_HEADER_SIZE) throw new VdiskError('E_CORRUPT', `${what}: label content offset ${contentOffset} (expected 32)`);
  const type = sector.subarray(24, 32).toString('latin1');
  if (type !== LABEL_TYPE) throw new VdiskError('E_UNSUPPORTED', `${what}: label type "${type}" (only ${LABEL_TYPE} PVs are read)`);
  const p = LABEL_HEADER_SIZE;
  const uuid = sector.subarray(p, p + ID_LEN).toString('latin1');
  if (!/^[A-Za-z0-9!#]{32}$/.test(uuid)) throw new VdiskError('E_CORRUPT', `${what}: PV uuid holds characters LVM2 never writes`);
  const deviceSize = u64(sector, p + 32, what);
  const [dataAreas, afterData] = readLocns(sector, p + 40, what);
  const [metadataAreas, afterMeta] = readLocns(sector, afterData, what);
  let extVersion = 0;
  let extFlags = 0;
  let bootloaderAreas: DiskLocn[] = [];
  if (afterMeta + 8 <= SECTOR) {
    extVersion = sector.readUInt32LE(afterMeta);
    extFlags = sector.readUInt32LE(afterMeta + 4);
    if (extVersion > 0) [bootloaderAreas] = readLocns(sector, afterMeta + 8, what);
  }
  return { sector: sectorNo, uuid, deviceSize, dataAreas, metadataAreas, extVersion, extFlags, bootloaderAreas };
}

/** Encode a label sector (512 bytes) with its CRC. */
export function encodeLabel(l: PvLabel): Buffer {
  const b = Buffer.alloc(SECTOR);
  b.write(LABEL_ID, 0, 'latin1');
  b.writeBigUInt64LE(BigInt(l.sector), 8);
  b.writeUInt32LE(LABEL_HEADER_SIZE, 20);
  b.write(LABEL_TYPE, 24, 'latin1');
  const p = LABEL_HEADER_SIZE;
  if (l.uuid.length !== ID_LEN) throw new VdiskError('E_USAGE', `PV uuid must be ${ID_LEN} characters`);
  b.write(l.uuid, p, 'latin1');
  b.writeBigUInt64LE(BigInt(l.deviceSize), p + 32);
  let at = writeLocns(b, p + 40, l.dataAreas);
  at = writeLocns(b, at, l.metadataAreas);
  b.writeUInt32LE(l.extVersion, at);
  b.writeUInt32LE(l.extFlags, at + 4);
  writeLocns(b, at + 8, l.bootloaderAreas);
  b.writeUInt32LE(lvmCrc(b.subarray(20, SECTOR)), 16);
  return b;
}

/** One raw_locn: where a metadata text sits, relative to the mda start. */
export interface RawLocn {
  offset: number;
  size: number;
  checksum: number;
  flags: number;
}

/** An mda_header. `locns[0]` is the committed text, `locns[1]` the precommitted one. */
export interface MdaHeader {
  /** Absolute byte offset of this metadata area on the device. */
  start: number;
  /** Size of the area in bytes, header included. */
  size: number;
  locns: RawLocn[];
}

/** Decode an mda_header; E_CORRUPT on a bad checksum, magic, version or field. */
export function decodeMdaHeader(b: Buffer, expectStart: number, what: string): MdaHeader {
  if (b.length < MDA_HEADER_SIZE) throw new VdiskError('E_CORRUPT', `${what}: metadata area header is cut short`);
  if (lvmCrc(b.subarray(4, MDA_HEADER_SIZE)) !== b.readUInt32LE(0)) throw new VdiskError('E_CORRUPT', `${what}: metadata area header checksum mismatch`);
  if (b.subarray(4, 20).toString('latin1') !== MDA_MAGIC) throw new VdiskError('E_CORRUPT', `${what}: metadata area header has the wrong magic`);
  const version = b.readUInt32LE(20);
  if (version !== MDA_VERSION) throw new VdiskError('E_UNSUPPORTED', `${what}: metadata area header version ${version}`);
  const start = u64(b, 24, what);
  const size = u64(b, 32, what);
  if (start !== expectStart) throw new VdiskError('E_CORRUPT', `${what}: metadata area header says it starts at ${start}, not ${expectStart}`);
  const locns: RawLocn[] = [];
  for (let i = 0; i < MAX_RAW_LOCNS; i++) {
    const at = RAW_LOCN_START + i * RAW_LOCN_SIZE;
    const offset = u64(b, at, what);
    const len = u64(b, at + 8, what);
    const checksum = b.readUInt32LE(at + 16);
    const flags = b.readUInt32LE(at + 20);
    // Slot 0 may be empty (a PV not in a VG); the list ends at the first empty slot after it.
    if (offset === 0 && len === 0 && i > 0) break;
    locns.push({ offset, size: len, checksum, flags });
    if (offset === 0 && len === 0) break;
  }
  return { start, size, locns };
}

/** Encode an mda_header (512 bytes) with its checksum; empty slots are written as zeros. */
export function encodeMdaHeader(h: MdaHeader): Buffer {
  const b = Buffer.alloc(MDA_HEADER_SIZE);
  b.write(MDA_MAGIC, 4, 'latin1');
  b.writeUInt32LE(MDA_VERSION, 20);
  b.writeBigUInt64LE(BigInt(h.start), 24);
  b.writeBigUInt64LE(BigInt(h.size), 32);
  if (h.locns.length > MAX_RAW_LOCNS - 1) throw new VdiskError('E_USAGE', 'too many raw_locn slots');
  h.locns.forEach((l, i) => {
    const at = RAW_LOCN_START + i * RAW_LOCN_SIZE;
    b.writeBigUInt64LE(BigInt(l.offset), at);
    b.writeBigUInt64LE(BigInt(l.size), at + 8);
    b.writeUInt32LE(l.checksum >>> 0, at + 16);
    b.writeUInt32LE(l.flags >>> 0, at + 20);
  });
  b.writeUInt32LE(lvmCrc(b.subarray(4, MDA_HEADER_SIZE)), 0);
  return b;
}

/** An LVM2 id with dashes (6-4-4-4-4-4-6), as the text metadata writes it. */
export function formatId(raw: string): string {
  return [raw.slice(0, 6), raw.slice(6, 10), raw.slice(10, 14), raw.slice(14, 18), raw.slice(18, 22), raw.slice(22, 26), raw.slice(26)].join('-');
}

/** The 32 characters of an id written with dashes; E_CORRUPT when it is not one. */
export function parseId(text: string, what: string): string {
  const raw = text.replace(/-/g, '');
  if (!/^[A-Za-z0-9!#]{32}$/.test(raw)) throw new VdiskError('E_CORRUPT', `${what}: "${text.slice(0, 64)}" is not an LVM2 id`);
  return raw;
}

const ID_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** A fresh random id (the 62 characters LVM2's id_create draws from). */
export function newId(random: (n: number) => Buffer): string {
  const bytes = random(ID_LEN * 2);
  let out = '';
  // 248 = 4 x 62: dropping bytes above it keeps the draw even; 64 bytes are plenty for 32.
  for (let i = 0; i < bytes.length && out.length < ID_LEN; i++) if (bytes[i]! < 248) out += ID_CHARS[bytes[i]! % 62];
  while (out.length < ID_LEN) out += ID_CHARS[random(1)[0]! % 62];
  return out;
}
