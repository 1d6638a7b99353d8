/**
 * GUID Partition Table: the header (at LBA 1 and a backup at the last LBA), the
 * partition entry arrays, their CRC-32s, type GUIDs, UTF-16LE names and attribute
 * bits. Layout: UEFI Specification 2.10, §5.3 "GUID Partition Table (GPT) Disk
 * Layout" (Table 5-5 header, Table 5-6 entry, Table 5-7 attributes).
 */
import { createRequire } from 'node:module';
import type CRC32Lib from 'crc-32';
import type { BlockDevice } from '../device/block-device.js';
import type { CheckProblem } from '../device/check.js';
import { VdiskError } from '../errors.js';
import type { GptHeaderInfo, GptPartition } from './types.js';

/** "EFI PART" (UEFI Table 5-5 Signature). */
export const GPT_SIGNATURE = 'EFI PART';
/** Revision 1.0 (UEFI Table 5-5 Revision), the only one defined. */
export const GPT_REVISION = 0x00010000;
/** HeaderSize of every header written to date (UEFI Table 5-5: 92). */
export const GPT_HEADER_SIZE = 92;
/** The smallest SizeOfPartitionEntry (UEFI §5.3.2: 128 × 2^n). */
export const GPT_MIN_ENTRY_SIZE = 128;
/** Entries in a table made by every common tool (UEFI §5.3.2 requires room for at least 16 KiB). */
export const GPT_DEFAULT_ENTRY_COUNT = 128;
/** Bytes of PartitionName: 36 UTF-16LE code units (UEFI Table 5-6). */
export const GPT_NAME_BYTES = 72;
/**
 * Largest entry array vdisk reads (1 MiB: 8192 entries of 128 bytes, 64 times the
 * usual table), so a hostile count × size cannot make us allocate or read gigabytes.
 */
export const GPT_MAX_ENTRY_ARRAY_BYTES = 1024 * 1024;
/** Largest SizeOfPartitionEntry vdisk accepts. */
export const GPT_MAX_ENTRY_SIZE = 4096;

/** Header field offsets (UEFI Table 5-5). */
const H = {
  signature: 0,
  revision: 8,
  headerSize: 12,
  headerCrc32: 16,
  reserved: 20,
  myLba: 24,
  alternateLba: 32,
  firstUsableLba: 40,
  lastUsableLba: 48,
  diskGuid: 56,
  partitionEntryLba: 72,
  numberOfPartitionEntries: 80,
  sizeOfPartitionEntry: 84,
  partitionEntryArrayCrc32: 88,
} as const;

/** Entry field offsets (UEFI Table 5-6). */
const E = {
  partitionTypeGuid: 0,
  uniquePartitionGuid: 16,
  startingLba: 32,
  endingLba: 40,
  attributes: 48,
  partitionName: 56,
} as const;

/** Attribute bits with names (UEFI Table 5-7), spelled as sfdisk spells them. */
const ATTRIBUTE_BITS: ReadonlyArray<[number, string]> = [
  [0, 'RequiredPartition'],
  [1, 'NoBlockIOProtocol'],
  [2, 'LegacyBIOSBootable'],
];
/** Bits 48-63 belong to the partition type (UEFI Table 5-7). */
const TYPE_SPECIFIC_FIRST_BIT = 48;

/** The crc-32 package, loaded on the first GPT (start-up of unrelated commands stays short). */
let crcLib: typeof CRC32Lib | undefined;

/** CRC-32 (IEEE 802.3, the one UEFI Appendix and zlib use) as an unsigned number. */
export function crc32(data: Uint8Array): number {
  crcLib ??= createRequire(import.meta.url)('crc-32') as typeof CRC32Lib;
  return crcLib.buf(data) >>> 0;
}

/** Format 16 bytes of a GUID stored in EFI mixed-endian order (UEFI Appendix A) as text. */
export function decodeGuid(b: Uint8Array, at = 0): string {
  const hex = (i: number): string => b[at + i]!.toString(16).padStart(2, '0');
  const part = (idx: number[]): string => idx.map(hex).join('');
  return `${part([3, 2, 1, 0])}-${part([5, 4])}-${part([7, 6])}-${part([8, 9])}-${part([10, 11, 12, 13, 14, 15])}`.toUpperCase();
}

/** Store a textual GUID into 16 bytes at `at` in EFI mixed-endian order; E_USAGE when malformed. */
export function encodeGuid(guid: string, b: Uint8Array, at = 0): void {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(guid);
  if (!m) throw new VdiskError('E_USAGE', `"${guid}" is not a GUID`);
  const bytes = (s: string): number[] => s.match(/../g)!.map((x) => parseInt(x, 16));
  const out = [...bytes(m[1]!).reverse(), ...bytes(m[2]!).reverse(), ...bytes(m[3]!).reverse(), ...bytes(m[4]!), ...bytes(m[5]!)];
  b.set(out, at);
}

/** The all-zero GUID: an unused entry (UEFI Table 5-6). */
export const GUID_UNUSED = '00000000-0000-0000-0000-000000000000';

/** A decoded GPT header (UEFI Table 5-5). */
export interface GptHeader {
  signature: string;
  revision: number;
  headerSize: number;
  headerCrc32: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  partitionEntryLba: number;
  numberOfPartitionEntries: number;
  sizeOfPartitionEntry: number;
  partitionEntryArrayCrc32: number;
}

function u64(v: DataView, at: number): number {
  const x = v.getBigUint64(at, true);
  // Past 2^53 no disk is that large; keep it a number that fails every bounds check.
  return x > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(x);
}

/** Decode a GPT header from the start of `sector`. */
export function decodeGptHeader(sector: Uint8Array): GptHeader {
  const v = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  return {
    signature: Buffer.from(sector.subarray(H.signature, H.signature + 8)).toString('latin1'),
    revision: v.getUint32(H.revision, true),
    headerSize: v.getUint32(H.headerSize, true),
    headerCrc32: v.getUint32(H.headerCrc32, true),
    myLba: u64(v, H.myLba),
    alternateLba: u64(v, H.alternateLba),
    firstUsableLba: u64(v, H.firstUsableLba),
    lastUsableLba: u64(v, H.lastUsableLba),
    diskGuid: decodeGuid(sector, H.diskGuid),
    partitionEntryLba: u64(v, H.partitionEntryLba),
    numberOfPartitionEntries: v.getUint32(H.numberOfPartitionEntries, true),
    sizeOfPartitionEntry: v.getUint32(H.sizeOfPartitionEntry, true),
    partitionEntryArrayCrc32: v.getUint32(H.partitionEntryArrayCrc32, true),
  };
}

/**
 * Encode a header into a fresh `sectorSize`-byte sector (reserved bytes zero) with
 * HeaderCRC32 computed over its first HeaderSize bytes, as UEFI §5.3.2 requires.
 */
export function encodeGptHeader(h: Omit<GptHeader, 'headerCrc32' | 'signature'>, sectorSize: number): Uint8Array {
  const s = new Uint8Array(sectorSize);
  const v = new DataView(s.buffer);
  s.set(Buffer.from(GPT_SIGNATURE, 'latin1'), H.signature);
  v.setUint32(H.revision, h.revision, true);
  v.setUint32(H.headerSize, h.headerSize, true);
  v.setBigUint64(H.myLba, BigInt(h.myLba), true);
  v.setBigUint64(H.alternateLba, BigInt(h.alternateLba), true);
  v.setBigUint64(H.firstUsableLba, BigInt(h.firstUsableLba), true);
  v.setBigUint64(H.lastUsableLba, BigInt(h.lastUsableLba), true);
  encodeGuid(h.diskGuid, s, H.diskGuid);
  v.setBigUint64(H.partitionEntryLba, BigInt(h.partitionEntryLba), true);
  v.setUint32(H.numberOfPartitionEntries, h.numberOfPartitionEntries, true);
  v.setUint32(H.sizeOfPartitionEntry, h.sizeOfPartitionEntry, true);
  v.setUint32(H.partitionEntryArrayCrc32, h.partitionEntryArrayCrc32, true);
  v.setUint32(H.headerCrc32, headerCrc(s, h.headerSize), true);
  return s;
}

/** CRC-32 of the first `headerSize` bytes of `sector` with the HeaderCRC32 field taken as zero. */
export function headerCrc(sector: Uint8Array, headerSize: number): number {
  const copy = Uint8Array.from(sector.subarray(0, headerSize));
  copy.fill(0, H.headerCrc32, H.headerCrc32 + 4);
  return crc32(copy);
}

/** A decoded partition entry (UEFI Table 5-6). */
export interface GptEntry {
  partitionTypeGuid: string;
  uniquePartitionGuid: string;
  startingLba: number;
  endingLba: number;
  /** The 64-bit Attributes field. */
  attributes: bigint;
  partitionName: string;
}

/** Decode the entry at `at` in an entry array. */
export function decodeGptEntry(b: Uint8Array, at: number): GptEntry {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const nameBytes = Buffer.from(b.buffer, b.byteOffset + at + E.partitionName, GPT_NAME_BYTES);
  let name = nameBytes.toString('utf16le');
  const nul = name.indexOf('\0');
  if (nul >= 0) name = name.slice(0, nul);
  return {
    partitionTypeGuid: decodeGuid(b, at + E.partitionTypeGuid),
    uniquePartitionGuid: decodeGuid(b, at + E.uniquePartitionGuid),
    startingLba: u64(v, at + E.startingLba),
    endingLba: u64(v, at + E.endingLba),
    attributes: v.getBigUint64(at + E.attributes, true),
    partitionName: name,
  };
}

/** Encode an entry into `b` at `at` (the 128 bytes UEFI defines; bytes past them are left alone). */
export function encodeGptEntry(e: GptEntry, b: Uint8Array, at: number): void {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  encodeGuid(e.partitionTypeGuid, b, at + E.partitionTypeGuid);
  encodeGuid(e.uniquePartitionGuid, b, at + E.uniquePartitionGuid);
  v.setBigUint64(at + E.startingLba, BigInt(e.startingLba), true);
  v.setBigUint64(at + E.endingLba, BigInt(e.endingLba), true);
  v.setBigUint64(at + E.attributes, e.attributes, true);
  const name = Buffer.from(e.partitionName, 'utf16le');
  if (name.length > GPT_NAME_BYTES) throw new VdiskError('E_USAGE', `partition name "${e.partitionName}" is longer than 36 UTF-16 code units (PartitionName)`);
  b.fill(0, at + E.partitionName, at + E.partitionName + GPT_NAME_BYTES);
  b.set(name, at + E.partitionName);
}

/**
 * Attribute bits by name, spelled as sfdisk spells them: `RequiredPartition`,
 * `NoBlockIOProtocol`, `LegacyBIOSBootable`, one `GUID:N,M` for the set type-specific
 * bits 48-63, and `bit:N` for any set reserved bit.
 */
export function attributeFlags(attributes: bigint): string[] {
  const out: string[] = [];
  const typeBits: number[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (((attributes >> BigInt(bit)) & 1n) === 0n) continue;
    const named = ATTRIBUTE_BITS.find(([b]) => b === bit);
    if (named) out.push(named[1]);
    else if (bit >= TYPE_SPECIFIC_FIRST_BIT) typeBits.push(bit);
    else out.push(`bit:${bit}`);
  }
  if (typeBits.length > 0) out.push(`GUID:${typeBits.join(',')}`);
  return out;
}

/** Well-known partition type GUIDs, named as util-linux names them (`sfdisk -T --label gpt`). */
const GPT_TYPE_NAMES: ReadonlyMap<string, string> = new Map([
  ['C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'EFI System'],
  ['024DEE41-33E7-11D3-9D69-0008C781F39F', 'MBR partition scheme'],
  ['21686148-6449-6E6F-744E-656564454649', 'BIOS boot'],
  ['E3C9E316-0B5C-4DB8-817D-F92DF00215AE', 'Microsoft reserved'],
  ['EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', 'Microsoft basic data'],
  ['5808C8AA-7E8F-42E0-85D2-E1E90434CFB3', 'Microsoft LDM metadata'],
  ['AF9B60A0-1431-4F62-BC68-3311714A69AD', 'Microsoft LDM data'],
  ['DE94BBA4-06D1-4D40-A16A-BFD50179D6AC', 'Windows recovery environment'],
  ['E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D', 'Microsoft Storage Spaces'],
  ['0657FD6D-A4AB-43C4-84E5-0933C84B4F4F', 'Linux swap'],
  ['0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'Linux filesystem'],
  ['3B8F8425-20E0-4F3B-907F-1A25A76F98E8', 'Linux server data'],
  ['44479540-F297-41B2-9AF7-D131D5F0458A', 'Linux root (x86)'],
  ['4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709', 'Linux root (x86-64)'],
  ['B921B045-1DF0-41C3-AF44-4C6F280D3FAE', 'Linux root (ARM-64)'],
  ['69DAD710-2CE4-4E3C-B16C-21A1D49ABED3', 'Linux root (ARM)'],
  ['8DA63339-0007-60C0-C436-083AC8230908', 'Linux reserved'],
  ['933AC7E1-2EB4-4F13-B844-0E14E2AEF915', 'Linux home'],
  ['A19D880F-05FC-4D3B-A006-743F0F84911E', 'Linux RAID'],
  ['E6D6D379-F507-44C2-A23C-238F2A3DF928', 'Linux LVM'],
  ['4D21B016-B534-45C2-A9FB-5C16E091FD2D', 'Linux variable data'],
  ['7EC6F557-3BC5-4ACA-B293-16EF5DF639D1', 'Linux temporary data'],
  ['BC13C2FF-59E6-4262-A352-B275FD6F7172', 'Linux extended boot'],
  ['8484680C-9521-48C6-9C11-B0720656F69E', 'Linux /usr (x86-64)'],
  ['516E7CB4-6ECF-11D6-8FF8-00022D09712B', 'FreeBSD data'],
  ['83BD6B9D-7F41-11DC-BE0B-001560B84F0F', 'FreeBSD boot'],
  ['516E7CB5-6ECF-11D6-8FF8-00022D09712B', 'FreeBSD swap'],
  ['516E7CB6-6ECF-11D6-8FF8-00022D09712B', 'FreeBSD UFS'],
  ['516E7CBA-6ECF-11D6-8FF8-00022D09712B', 'FreeBSD ZFS'],
  ['48465300-0000-11AA-AA11-00306543ECAC', 'Apple HFS/HFS+'],
  ['7C3457EF-0000-11AA-AA11-00306543ECAC', 'Apple APFS'],
  ['426F6F74-0000-11AA-AA11-00306543ECAC', 'Apple boot'],
  ['6A898CC3-1DD2-11B2-99A6-080020736631', 'Solaris /usr & Apple ZFS'],
  ['49F48D5A-B10E-11DC-B99B-0019D1879648', 'NetBSD FFS'],
  ['824CC7A0-36A8-11E3-890A-952519AD3F61', 'OpenBSD data'],
  ['FE3A2A5D-4F32-41A7-B725-ACCC3285A309', 'ChromeOS kernel'],
  ['3CB8E202-3B7E-47DD-8A3C-7FF2A13CFCEC', 'ChromeOS root fs'],
  ['AA31E02A-400F-11DB-9590-000C2911D1B8', 'VMware VMFS'],
  ['9D275380-40AD-11DB-BF97-000C2911D1B8', 'VMware Diagnostic'],
  ['4FBD7E29-9D25-41B8-AFD0-062C0CEFF05D', 'Ceph OSD'],
]);

/** The util-linux name of a GPT partition type GUID ("unknown" when not well known). */
export function gptTypeName(typeGuid: string): string {
  return GPT_TYPE_NAMES.get(typeGuid.toUpperCase()) ?? 'unknown';
}

/** Every GPT type vdisk names (for tests and listings). */
export function gptTypeNames(): ReadonlyMap<string, string> {
  return GPT_TYPE_NAMES;
}

/** A header read from disk with what we found out about it. */
export interface GptCopy {
  header: GptHeader;
  info: GptHeaderInfo;
  /** The raw entry array (only when the header's array fields were sane enough to read it). */
  entries?: Uint8Array;
}

function infoOf(h: GptHeader, lba: number, headerCrcOk: boolean): GptHeaderInfo {
  return {
    lba,
    revision: `${h.revision >>> 16}.${h.revision & 0xffff}`,
    headerSize: h.headerSize,
    myLba: h.myLba,
    alternateLba: h.alternateLba,
    firstUsableLba: h.firstUsableLba,
    lastUsableLba: h.lastUsableLba,
    diskGuid: h.diskGuid,
    partitionEntryLba: h.partitionEntryLba,
    numberOfPartitionEntries: h.numberOfPartitionEntries,
    sizeOfPartitionEntry: h.sizeOfPartitionEntry,
    headerCrcOk,
    entriesCrcOk: false,
    valid: false,
  };
}

/** Sectors an entry array of `count` × `size` bytes occupies. */
export function entryArraySectors(count: number, size: number, sectorSize: number): number {
  return Math.ceil((count * size) / sectorSize);
}

/**
 * Read and validate the GPT header at `lba` (`which` names it in messages) and, when
 * its array fields are in range, its entry array. Every problem found is pushed to
 * `problems` naming the field; returns undefined when there is no GPT signature.
 */
export async function readGptCopy(device: BlockDevice, lba: number, which: 'primary' | 'backup', problems: CheckProblem[]): Promise<GptCopy | undefined> {
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  if (lba < 1 || lba >= diskSectors) return undefined;
  const sector = new Uint8Array(ss);
  await device.read(sector, lba * ss);
  const h = decodeGptHeader(sector);
  if (h.signature !== GPT_SIGNATURE) return undefined;
  const at = lba * ss;
  const bad = (field: string, why: string, severity: CheckProblem['severity'] = 'corrupt'): void => {
    problems.push({ severity, message: `${which} GPT header (sector ${lba}): ${field} ${why}`, offset: at });
  };
  let fieldsOk = true;
  let headerCrcOk = false;
  if (h.headerSize < GPT_HEADER_SIZE || h.headerSize > ss) {
    bad('HeaderSize', `is ${h.headerSize}, not between ${GPT_HEADER_SIZE} and the ${ss}-byte sector`);
    fieldsOk = false;
  } else {
    headerCrcOk = headerCrc(sector, h.headerSize) === h.headerCrc32;
    if (!headerCrcOk) bad('HeaderCRC32', `is 0x${h.headerCrc32.toString(16).padStart(8, '0')}, the header's CRC-32 is 0x${headerCrc(sector, h.headerSize).toString(16).padStart(8, '0')}`);
  }
  const info = infoOf(h, lba, headerCrcOk);
  if (h.revision !== GPT_REVISION) bad('Revision', `is 0x${h.revision.toString(16)}, not 0x00010000`, 'warning');
  if (h.myLba !== lba) {
    bad('MyLBA', `is ${h.myLba}, but the header was found at sector ${lba}`);
    fieldsOk = false;
  }
  if (h.alternateLba >= diskSectors || h.alternateLba === 0) {
    bad('AlternateLBA', `is ${h.alternateLba}, outside the ${diskSectors}-sector disk`);
  }
  if (h.firstUsableLba > h.lastUsableLba || h.firstUsableLba < 2) {
    bad('FirstUsableLBA/LastUsableLBA', `${h.firstUsableLba}-${h.lastUsableLba} is not a range of sectors after the header`);
    fieldsOk = false;
  } else if (h.lastUsableLba >= diskSectors) {
    // What a shrink leaves behind: the table itself is intact, moving the backup fixes it.
    bad('LastUsableLBA', `is ${h.lastUsableLba}, past the end of the ${diskSectors}-sector disk`);
  }
  // Entry array: sane size, inside the disk, outside the usable area.
  let arrayOk = true;
  const size = h.sizeOfPartitionEntry;
  if (size < GPT_MIN_ENTRY_SIZE || size > GPT_MAX_ENTRY_SIZE || size % GPT_MIN_ENTRY_SIZE !== 0 || (size & (size - 1)) !== 0) {
    bad('SizeOfPartitionEntry', `is ${size}, not 128 × 2^n up to ${GPT_MAX_ENTRY_SIZE}`);
    arrayOk = false;
  }
  const count = h.numberOfPartitionEntries;
  if (arrayOk && count * size > GPT_MAX_ENTRY_ARRAY_BYTES) {
    bad('NumberOfPartitionEntries', `is ${count}: ${count} × ${size}-byte entries exceed the ${GPT_MAX_ENTRY_ARRAY_BYTES}-byte limit`);
    arrayOk = false;
  }
  if (arrayOk) {
    const sectors = entryArraySectors(count, size, ss);
    const first = h.partitionEntryLba;
    const last = first + sectors - 1;
    if (first < 2 || first + sectors > diskSectors) {
      bad('PartitionEntryLBA', `${first} with ${sectors} sectors of entries lies outside the ${diskSectors}-sector disk`);
      arrayOk = false;
    } else if (fieldsOk && sectors > 0) {
      const clash = which === 'primary' ? last >= h.firstUsableLba : first <= h.lastUsableLba;
      if (clash) {
        const field = which === 'primary' ? 'NumberOfPartitionEntries' : 'PartitionEntryLBA';
        bad(field, `puts the entry array (sectors ${first}-${last}) inside the usable area ${h.firstUsableLba}-${h.lastUsableLba}`);
        arrayOk = false;
      }
    }
  }
  const copy: GptCopy = { header: h, info };
  if (arrayOk) {
    const entries = new Uint8Array(entryArraySectors(count, size, ss) * ss);
    if (entries.length > 0) await device.read(entries, h.partitionEntryLba * ss);
    copy.entries = entries;
    info.entriesCrcOk = crc32(entries.subarray(0, count * size)) === h.partitionEntryArrayCrc32;
    if (!info.entriesCrcOk) {
      problems.push({
        severity: 'corrupt',
        message: `${which} GPT header (sector ${lba}): PartitionEntryArrayCRC32 is 0x${h.partitionEntryArrayCrc32.toString(16).padStart(8, '0')}, the entry array at sector ${h.partitionEntryLba} has CRC-32 0x${crc32(entries.subarray(0, count * size)).toString(16).padStart(8, '0')}`,
        offset: h.partitionEntryLba * ss,
      });
    }
  }
  info.valid = headerCrcOk && fieldsOk && arrayOk && info.entriesCrcOk;
  return copy;
}

/** Decode the non-empty entries of a copy's array into partitions. */
export function gptPartitions(copy: GptCopy, sectorSize: number): GptPartition[] {
  const out: GptPartition[] = [];
  const { entries, header } = copy;
  if (!entries) return out;
  for (let i = 0; i < header.numberOfPartitionEntries; i++) {
    const e = decodeGptEntry(entries, i * header.sizeOfPartitionEntry);
    if (e.partitionTypeGuid === GUID_UNUSED) continue;
    const sectors = e.endingLba >= e.startingLba ? e.endingLba - e.startingLba + 1 : 0;
    out.push({
      index: i + 1,
      start: e.startingLba,
      sectors,
      offset: e.startingLba * sectorSize,
      length: sectors * sectorSize,
      typeGuid: e.partitionTypeGuid,
      typeName: gptTypeName(e.partitionTypeGuid),
      guid: e.uniquePartitionGuid,
      name: e.partitionName,
      attributes: `0x${e.attributes.toString(16).padStart(16, '0')}`,
      flags: attributeFlags(e.attributes),
    });
  }
  return out;
}
