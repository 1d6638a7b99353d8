/**
 * MBR (DOS) partition tables: the 512-byte master boot record with four primary
 * entries, and the chain of extended boot records (EBRs) that holds logical
 * partitions inside an extended partition.
 *
 * Layout references: UEFI 2.10 §5.2.1 "Legacy Master Boot Record" (Table 5-1, 5-2);
 * the EBR chain follows the de-facto IBM PC DOS 3.3 convention that Linux
 * (block/partitions/msdos.c) and util-linux (libfdisk) read.
 */
import type { BlockDevice } from '../device/block-device.js';
import type { CheckProblem } from '../device/check.js';
import type { Chs, MbrPartition, MbrTable } from './types.js';

/** Byte offset of the 32-bit disk signature (UEFI Table 5-1 UniqueMBRDiskSignature). */
export const MBR_DISK_SIGNATURE_OFFSET = 440;
/** Byte offset of the first of the four 16-byte partition records (UEFI Table 5-1). */
export const MBR_PARTITION_TABLE_OFFSET = 446;
/** Size of one partition record (UEFI Table 5-2). */
export const MBR_ENTRY_SIZE = 16;
/** Number of partition records in an MBR or EBR. */
export const MBR_ENTRY_COUNT = 4;
/** Offset of the boot signature 0x55 0xAA (UEFI Table 5-1). */
export const MBR_BOOT_SIGNATURE_OFFSET = 510;
/** The boot signature, read little-endian. */
export const MBR_BOOT_SIGNATURE = 0xaa55;
/** Status byte of an active (bootable) partition (UEFI Table 5-2 BootIndicator). */
export const MBR_STATUS_ACTIVE = 0x80;
/** OSType of the GPT protective partition (UEFI §5.2.3). */
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
/** OSTypes that mark an extended partition (DOS CHS, Windows LBA, Linux). */
export const MBR_EXTENDED_TYPES: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);
/** Longest EBR chain we follow; Linux and libfdisk stop far earlier in practice. */
export const MAX_LOGICAL_PARTITIONS = 256;

/** One 16-byte partition record, decoded (UEFI Table 5-2). */
export interface MbrEntry {
  /** BootIndicator: 0x80 active, 0x00 inactive. */
  status: number;
  startChs: Chs;
  /** OSType. */
  type: number;
  endChs: Chs;
  /** StartingLBA (relative to the EBR or extended partition inside a chain). */
  startLba: number;
  /** SizeInLBA. */
  sizeLba: number;
}

function decodeChs(b: Uint8Array, at: number): Chs {
  const head = b[at]!;
  const sec = b[at + 1]!;
  const cyl = b[at + 2]!;
  return { head, sector: sec & 0x3f, cylinder: ((sec & 0xc0) << 2) | cyl };
}

function encodeChs(chs: Chs, b: Uint8Array, at: number): void {
  b[at] = chs.head & 0xff;
  b[at + 1] = (chs.sector & 0x3f) | ((chs.cylinder >> 2) & 0xc0);
  b[at + 2] = chs.cylinder & 0xff;
}

/** Decode the partition record at `at` in `sector`. */
export function decodeMbrEntry(sector: Uint8Array, at: number): MbrEntry {
  const v = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  return {
    status: sector[at]!,
    startChs: decodeChs(sector, at + 1),
    type: sector[at + 4]!,
    endChs: decodeChs(sector, at + 5),
    startLba: v.getUint32(at + 8, true),
    sizeLba: v.getUint32(at + 12, true),
  };
}

/** Encode a partition record into `sector` at `at`. */
export function encodeMbrEntry(e: MbrEntry, sector: Uint8Array, at: number): void {
  const v = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  sector[at] = e.status;
  encodeChs(e.startChs, sector, at + 1);
  sector[at + 4] = e.type;
  encodeChs(e.endChs, sector, at + 5);
  v.setUint32(at + 8, e.startLba, true);
  v.setUint32(at + 12, e.sizeLba, true);
}

/** The decoded boot-record fields vdisk cares about (MBR or EBR). */
export interface BootRecord {
  diskSignature: number;
  entries: MbrEntry[];
  /** True when bytes 510-511 are 0x55 0xAA. */
  bootSignatureOk: boolean;
}

/** Decode an MBR or EBR sector (the first 512 bytes of `sector`). */
export function decodeBootRecord(sector: Uint8Array): BootRecord {
  const v = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  const entries: MbrEntry[] = [];
  for (let i = 0; i < MBR_ENTRY_COUNT; i++) entries.push(decodeMbrEntry(sector, MBR_PARTITION_TABLE_OFFSET + i * MBR_ENTRY_SIZE));
  return {
    diskSignature: v.getUint32(MBR_DISK_SIGNATURE_OFFSET, true),
    entries,
    bootSignatureOk: v.getUint16(MBR_BOOT_SIGNATURE_OFFSET, true) === MBR_BOOT_SIGNATURE,
  };
}

/** Encode the table part of a boot record into `sector`, leaving the boot code (bytes 0-439) as it is. */
export function encodeBootRecord(r: BootRecord, sector: Uint8Array): void {
  const v = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  v.setUint32(MBR_DISK_SIGNATURE_OFFSET, r.diskSignature, true);
  for (let i = 0; i < MBR_ENTRY_COUNT; i++) {
    const e = r.entries[i];
    const at = MBR_PARTITION_TABLE_OFFSET + i * MBR_ENTRY_SIZE;
    if (e) encodeMbrEntry(e, sector, at);
    else sector.fill(0, at, at + MBR_ENTRY_SIZE);
  }
  v.setUint16(MBR_BOOT_SIGNATURE_OFFSET, r.bootSignatureOk ? MBR_BOOT_SIGNATURE : 0, true);
}

/** The largest SizeInLBA an MBR entry can hold. */
export const MBR_MAX_SIZE_LBA = 0xffffffff;

/**
 * The 0xEE entry of a pure protective MBR (one used entry, OSType 0xEE, StartingLBA 1)
 * and its index, or undefined for a hybrid or no protective MBR (UEFI §5.2.3).
 */
export function pureProtectiveEntry(r: BootRecord): { entry: MbrEntry; slot: number } | undefined {
  const used = r.entries.map((entry, slot) => ({ entry, slot })).filter(({ entry }) => entry.type !== 0 || entry.sizeLba !== 0);
  const only = used.length === 1 ? used[0] : undefined;
  return only && only.entry.type === MBR_TYPE_GPT_PROTECTIVE && only.entry.startLba === 1 ? only : undefined;
}

/** SizeInLBA a protective 0xEE entry must have on a disk of `diskSectors` (UEFI Table 5-4). */
export function protectiveSizeLba(diskSectors: number): number {
  return Math.min(diskSectors - 1, MBR_MAX_SIZE_LBA);
}

/** True when the record's entries look like a partition table (status bytes 0x00/0x80 only). */
export function looksLikePartitionTable(r: BootRecord): boolean {
  return r.bootSignatureOk && r.entries.every((e) => e.status === 0 || e.status === MBR_STATUS_ACTIVE);
}

/** Well-known MBR partition types, named as util-linux fdisk names them (`sfdisk -T --label dos`). */
const MBR_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [0x00, 'Empty'],
  [0x01, 'FAT12'],
  [0x04, 'FAT16 <32M'],
  [0x05, 'Extended'],
  [0x06, 'FAT16'],
  [0x07, 'HPFS/NTFS/exFAT'],
  [0x0b, 'W95 FAT32'],
  [0x0c, 'W95 FAT32 (LBA)'],
  [0x0e, 'W95 FAT16 (LBA)'],
  [0x0f, "W95 Ext'd (LBA)"],
  [0x11, 'Hidden FAT12'],
  [0x12, 'Compaq diagnostics'],
  [0x14, 'Hidden FAT16 <32M'],
  [0x16, 'Hidden FAT16'],
  [0x17, 'Hidden HPFS/NTFS'],
  [0x1b, 'Hidden W95 FAT32'],
  [0x1c, 'Hidden W95 FAT32 (LBA)'],
  [0x1e, 'Hidden W95 FAT16 (LBA)'],
  [0x27, 'Hidden NTFS WinRE'],
  [0x39, 'Plan 9'],
  [0x42, 'SFS'],
  [0x63, 'GNU HURD or SysV'],
  [0x81, 'Minix / old Linux'],
  [0x82, 'Linux swap / Solaris'],
  [0x83, 'Linux'],
  [0x84, 'OS/2 hidden or Intel hibernation'],
  [0x85, 'Linux extended'],
  [0x86, 'NTFS volume set'],
  [0x87, 'NTFS volume set'],
  [0x8e, 'Linux LVM'],
  [0xa0, 'IBM Thinkpad hibernation'],
  [0xa5, 'FreeBSD'],
  [0xa6, 'OpenBSD'],
  [0xa8, 'Darwin UFS'],
  [0xa9, 'NetBSD'],
  [0xab, 'Darwin boot'],
  [0xaf, 'HFS / HFS+'],
  [0xbe, 'Solaris boot'],
  [0xbf, 'Solaris'],
  [0xda, 'Non-FS data'],
  [0xde, 'Dell Utility'],
  [0xea, 'Linux extended boot'],
  [0xeb, 'BeOS fs'],
  [0xee, 'GPT'],
  [0xef, 'EFI (FAT-12/16/32)'],
  [0xfb, 'VMware VMFS'],
  [0xfc, 'VMware VMKCORE'],
  [0xfd, 'Linux raid autodetect'],
]);

/** The fdisk name of an MBR partition type byte ("unknown (0xNN)" when not well known). */
export function mbrTypeName(type: number): string {
  return MBR_TYPE_NAMES.get(type) ?? `unknown (0x${type.toString(16).padStart(2, '0')})`;
}

/** Every MBR type vdisk names (for tests and listings). */
export function mbrTypeNames(): ReadonlyMap<number, string> {
  return MBR_TYPE_NAMES;
}

function partitionOf(
  kind: MbrPartition['kind'],
  index: number,
  e: MbrEntry,
  start: number,
  sectorSize: number,
  entryOffset: number,
): MbrPartition {
  return {
    index,
    kind,
    start,
    sectors: e.sizeLba,
    offset: start * sectorSize,
    length: e.sizeLba * sectorSize,
    type: e.type,
    typeHex: e.type.toString(16),
    typeName: mbrTypeName(e.type),
    status: e.status,
    bootable: e.status === MBR_STATUS_ACTIVE,
    chsStart: e.startChs,
    chsEnd: e.endChs,
    entryOffset,
  };
}

/**
 * Walk the EBR chain of the extended partition `ext`, appending logical partitions to
 * `out` and problems (loops, links outside the extended partition or the disk) to
 * `problems`. Never follows more than {@link MAX_LOGICAL_PARTITIONS} links.
 */
async function readLogicals(
  device: BlockDevice,
  ext: MbrPartition,
  diskSectors: number,
  out: MbrPartition[],
  problems: CheckProblem[],
): Promise<void> {
  const ss = device.sectorSize;
  const extEnd = ext.start + ext.sectors;
  const seen = new Set<number>();
  const sector = new Uint8Array(ss);
  let ebrLba = ext.start;
  let index = 5;
  for (let hops = 0; ; hops++) {
    if (hops >= MAX_LOGICAL_PARTITIONS) {
      problems.push({ severity: 'corrupt', message: `extended partition ${ext.index}: EBR chain longer than ${MAX_LOGICAL_PARTITIONS} links; stopped reading`, offset: ebrLba * ss });
      return;
    }
    if (seen.has(ebrLba)) {
      problems.push({ severity: 'corrupt', message: `extended partition ${ext.index}: EBR chain loops back to sector ${ebrLba} (next-EBR StartingLBA)`, offset: ebrLba * ss });
      return;
    }
    if (ebrLba >= diskSectors || ebrLba < ext.start || ebrLba >= extEnd) {
      problems.push({
        severity: 'corrupt',
        message: `extended partition ${ext.index}: EBR at sector ${ebrLba} lies outside the ${ebrLba >= diskSectors ? `${diskSectors}-sector disk` : `extended partition (sectors ${ext.start}-${extEnd - 1})`} (next-EBR StartingLBA)`,
        offset: ebrLba < diskSectors ? ebrLba * ss : undefined,
      });
      return;
    }
    seen.add(ebrLba);
    await device.read(sector, ebrLba * ss);
    const ebr = decodeBootRecord(sector);
    if (!ebr.bootSignatureOk) {
      problems.push({ severity: 'corrupt', message: `EBR at sector ${ebrLba}: boot signature is not 0x55AA`, offset: ebrLba * ss + MBR_BOOT_SIGNATURE_OFFSET });
      return;
    }
    let next: MbrEntry | undefined;
    for (let i = 0; i < MBR_ENTRY_COUNT; i++) {
      const e = ebr.entries[i]!;
      if (e.type === 0 || e.sizeLba === 0) continue;
      const entryOffset = ebrLba * ss + MBR_PARTITION_TABLE_OFFSET + i * MBR_ENTRY_SIZE;
      if (MBR_EXTENDED_TYPES.has(e.type)) {
        if (!next) next = e;
        continue;
      }
      // A logical partition's StartingLBA is relative to its own EBR.
      const p = partitionOf('logical', index++, e, ebrLba + e.startLba, ss, entryOffset);
      if (p.start < ext.start || p.start + p.sectors > extEnd) {
        problems.push({
          severity: 'corrupt',
          message: `partition ${p.index}: sectors ${p.start}-${p.start + p.sectors - 1} are not inside extended partition ${ext.index} (sectors ${ext.start}-${extEnd - 1}) (StartingLBA/SizeInLBA)`,
          offset: entryOffset,
        });
      }
      out.push(p);
    }
    // The link to the next EBR is relative to the start of the extended partition.
    if (!next) return;
    ebrLba = ext.start + next.startLba;
  }
}

/**
 * Read the MBR partition table of `device` from the boot record already read from
 * LBA 0. Problems are collected, never thrown; only I/O errors propagate.
 */
export async function readMbr(device: BlockDevice, record: BootRecord): Promise<MbrTable> {
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  const problems: CheckProblem[] = [];
  const partitions: MbrPartition[] = [];
  const extended: MbrPartition[] = [];
  for (let i = 0; i < MBR_ENTRY_COUNT; i++) {
    const e = record.entries[i]!;
    if (e.type === 0 || e.sizeLba === 0) continue;
    const entryOffset = MBR_PARTITION_TABLE_OFFSET + i * MBR_ENTRY_SIZE;
    const kind = MBR_EXTENDED_TYPES.has(e.type) ? 'extended' : 'primary';
    const p = partitionOf(kind, i + 1, e, e.startLba, ss, entryOffset);
    partitions.push(p);
    if (kind === 'extended') extended.push(p);
  }
  if (extended.length > 1) {
    problems.push({ severity: 'corrupt', message: `MBR has ${extended.length} extended partitions; only the first (${extended[0]!.index}) is read (OSType)`, offset: extended[1]!.entryOffset });
  }
  const ext = extended[0];
  if (ext) await readLogicals(device, ext, diskSectors, partitions, problems);
  const table: MbrTable = {
    scheme: 'mbr',
    sectorSize: ss,
    diskSectors,
    diskId: `0x${record.diskSignature.toString(16).padStart(8, '0')}`,
    partitions,
    problems,
  };
  return table;
}
