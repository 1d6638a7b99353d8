/**
 * The typed, JSON-friendly descriptions `readPartitions` returns. Sector numbers are
 * in the device's logical sectors (as sfdisk/sgdisk print them); `offset`/`length`
 * give the same place in bytes.
 */
import type { CheckProblem } from '../device/check.js';

/** A cylinder/head/sector address as stored in an MBR entry. */
export interface Chs {
  cylinder: number;
  head: number;
  sector: number;
}

/** What every partition has, whatever the scheme. */
export interface PartitionCommon {
  /** Number as Linux names it: 1-4 primaries / GPT slot + 1, 5+ logicals. */
  index: number;
  /** First sector. */
  start: number;
  /** Length in sectors. */
  sectors: number;
  /** First byte (start × sector size). */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** Human name of the partition type ("Linux filesystem", "W95 FAT32 (LBA)", ...). */
  typeName: string;
}

/** One MBR partition: a primary entry, the extended container, or a logical partition. */
export interface MbrPartition extends PartitionCommon {
  kind: 'primary' | 'extended' | 'logical';
  /** Partition type byte (0x83 Linux, 0x07 NTFS, 0x05 extended, ...). */
  type: number;
  /** Type as sfdisk prints it: lowercase hex without 0x ("83", "c"). */
  typeHex: string;
  /** The status byte (0x80 = active). */
  status: number;
  /** Active (bootable) flag. */
  bootable: boolean;
  chsStart: Chs;
  chsEnd: Chs;
  /** Byte offset of the 16-byte entry on the device. */
  entryOffset: number;
}

/** An MBR (DOS) partition table. */
export interface MbrTable {
  scheme: 'mbr';
  sectorSize: number;
  /** Sectors on the device. */
  diskSectors: number;
  /** Disk signature at byte 440, as sfdisk's label-id ("0x12345678"). */
  diskId: string;
  /** Primaries (1-4, empty slots left out), the extended container and logicals (5+), in index order. */
  partitions: MbrPartition[];
  /** What is wrong with the table, naming the field. */
  problems: CheckProblem[];
}

/** One GPT header as read from the disk (UEFI 2.10 §5.3.2). */
export interface GptHeaderInfo {
  /** Where this copy was read (MyLBA as found, not as claimed). */
  lba: number;
  revision: string;
  headerSize: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  partitionEntryLba: number;
  numberOfPartitionEntries: number;
  sizeOfPartitionEntry: number;
  /** True when HeaderCRC32 matches. */
  headerCrcOk: boolean;
  /** True when PartitionEntryArrayCRC32 matches the array read at partitionEntryLba. */
  entriesCrcOk: boolean;
  /** True when header and entry array are both intact and their fields in range. */
  valid: boolean;
}

/** One GPT partition entry (UEFI 2.10 §5.3.3). */
export interface GptPartition extends PartitionCommon {
  /** PartitionTypeGUID in canonical form (uppercase, as sgdisk prints). */
  typeGuid: string;
  /** UniquePartitionGUID. */
  guid: string;
  /** PartitionName (UTF-16LE, up to 36 code units). */
  name: string;
  /** The 64-bit Attributes field as hex ("0x1000000000000004"). */
  attributes: string;
  /** Attribute bits by name, as sfdisk prints them ("RequiredPartition", "LegacyBIOSBootable", "GUID:60"). */
  flags: string[];
}

/** A GPT partition table. */
export interface GptTable {
  scheme: 'gpt';
  sectorSize: number;
  diskSectors: number;
  diskGuid: string;
  firstUsableLba: number;
  lastUsableLba: number;
  numberOfPartitionEntries: number;
  sizeOfPartitionEntry: number;
  /** Which copy the partitions were taken from. */
  source: 'primary' | 'backup';
  primary?: GptHeaderInfo;
  backup?: GptHeaderInfo;
  /** True when LBA 0 holds an MBR with a 0xEE (GPT protective) entry. */
  protectiveMbr: boolean;
  /** Non-empty entries, in slot order. */
  partitions: GptPartition[];
  problems: CheckProblem[];
}

/** No partition table found (or one too damaged to recognise). */
export interface NoPartitionTable {
  scheme: 'none';
  sectorSize: number;
  diskSectors: number;
  problems: CheckProblem[];
}

/** What `readPartitions` returns. */
export type PartitionTable = MbrTable | GptTable | NoPartitionTable;

/** A partition as a byte range with a label: what a map picture draws. */
export interface PartitionSpan {
  index: number;
  /** First byte on the device. */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** GPT partition name, or the type name when there is none. */
  label: string;
  typeName: string;
  /** `extended` containers enclose logical partitions; draw them as an outline. */
  kind: 'primary' | 'extended' | 'logical' | 'gpt';
}
