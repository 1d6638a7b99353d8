/**
 * readPartitions: find the partition table on a BlockDevice (GPT, MBR or none),
 * decode it and list every problem found on the way, naming the field. A damaged
 * table never throws: what could be read is returned with its problems, so `info`
 * can still show it. Only I/O errors from the device propagate.
 */
import type { BlockDevice } from '../device/block-device.js';
import type { CheckProblem } from '../device/check.js';
import { type GptCopy, gptPartitions, readGptCopy } from './gpt.js';
import { type BootRecord, MBR_ENTRY_SIZE, MBR_PARTITION_TABLE_OFFSET, MBR_TYPE_GPT_PROTECTIVE, decodeBootRecord, looksLikePartitionTable, protectiveSizeLba, pureProtectiveEntry, readMbr } from './mbr.js';
import type { GptTable, MbrPartition, PartitionCommon, PartitionSpan, PartitionTable } from './types.js';

/** LBA of the primary GPT header (UEFI 2.10 §5.3.1). */
export const GPT_PRIMARY_HEADER_LBA = 1;

/**
 * Read and decode the MBR or GPT partition table of `device` (an image, a chain, a
 * pool volume), with every problem found, each naming the field.
 *
 * @example
 * ```ts
 * import { create, readPartitions } from 'vdisk';
 *
 * const disk = await create('disk.raw', { format: 'raw', size: '8M' });
 * const mbr = Buffer.alloc(512);
 * mbr.writeUInt8(0x83, 446 + 4); // partition 1: Linux
 * mbr.writeUInt32LE(2048, 446 + 8); // first sector
 * mbr.writeUInt32LE(8192, 446 + 12); // sectors
 * mbr.writeUInt16LE(0xaa55, 510);
 * await disk.write(mbr, 0);
 * const table = await readPartitions(disk);
 * if (table.scheme === 'mbr') console.log(table.partitions[0].offset, table.partitions[0].length); // 1048576 4194304
 * await disk.close();
 * ```
 */
export async function readPartitions(device: BlockDevice): Promise<PartitionTable> {
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  if (diskSectors < 1) return { scheme: 'none', sectorSize: ss, diskSectors, problems: [] };
  const lba0 = new Uint8Array(ss);
  await device.read(lba0, 0);
  const mbr = decodeBootRecord(lba0);
  const isMbr = looksLikePartitionTable(mbr);
  const protective = isMbr && mbr.entries.some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE);

  // A real MBR without a 0xEE entry wins over a stale GPT (as Linux reads it without force_gpt).
  const mbrInUse = isMbr && mbr.entries.some((e) => e.type !== 0 && e.sizeLba !== 0);
  if (protective || !mbrInUse) {
    const gpt = await readGpt(device, protective ? mbr : undefined);
    if (gpt) return gpt;
  }
  if (protective) {
    return {
      scheme: 'none',
      sectorSize: ss,
      diskSectors,
      problems: [{ severity: 'corrupt', message: 'protective MBR (OSType 0xEE) found, but neither the primary nor the backup GPT header has the "EFI PART" signature', offset: 0 }],
    };
  }
  if (!isMbr) return { scheme: 'none', sectorSize: ss, diskSectors, problems: [] };
  const table = await readMbr(device, mbr);
  checkBounds(table.partitions, diskSectors, table.problems, undefined);
  // Logicals sit inside the extended container on purpose; compare like with like.
  checkOverlaps(table.partitions.filter((p) => p.kind !== 'logical'), table.problems);
  checkOverlaps(table.partitions.filter((p) => p.kind === 'logical'), table.problems);
  return table;
}

/** Read the GPT, or undefined when neither header has the GPT signature. */
async function readGpt(device: BlockDevice, protectiveMbr: BootRecord | undefined): Promise<GptTable | undefined> {
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  const lastLba = diskSectors - 1;
  const problems: CheckProblem[] = [];
  const primary = await readGptCopy(device, GPT_PRIMARY_HEADER_LBA, 'primary', problems);
  // The backup lives where the primary says; after a grow that is no longer the end.
  let backupLba = lastLba;
  const claimed = primary?.header.alternateLba;
  if (primary?.info.headerCrcOk && claimed !== undefined && claimed > GPT_PRIMARY_HEADER_LBA && claimed < diskSectors) backupLba = claimed;
  let backup = await readGptCopy(device, backupLba, 'backup', problems);
  if (!backup && backupLba !== lastLba) {
    backupLba = lastLba;
    backup = await readGptCopy(device, backupLba, 'backup', problems);
  }
  if (!primary && !backup) return undefined;

  if (!primary) problems.push({ severity: 'corrupt', message: `primary GPT header (sector 1): no "EFI PART" signature (Signature); using the backup`, offset: ss });
  if (!backup) problems.push({ severity: 'corrupt', message: `backup GPT header (sector ${backupLba}): no "EFI PART" signature (Signature)`, offset: backupLba * ss });
  if (!protectiveMbr) problems.push({ severity: 'warning', message: 'sector 0 holds no protective MBR (no OSType 0xEE entry with boot signature 0x55AA)', offset: 0 });
  const pmbr = protectiveMbr && pureProtectiveEntry(protectiveMbr);
  if (pmbr && pmbr.entry.sizeLba !== protectiveSizeLba(diskSectors)) {
    problems.push({
      severity: 'warning',
      message: `GPT protective MBR: SizeInLBA is ${pmbr.entry.sizeLba}, not ${protectiveSizeLba(diskSectors)} (the whole disk after sector 0)`,
      offset: MBR_PARTITION_TABLE_OFFSET + pmbr.slot * MBR_ENTRY_SIZE,
    });
  }
  if (backup && backup.info.lba !== lastLba) {
    problems.push({
      severity: 'warning',
      message: `backup GPT header is at sector ${backup.info.lba}, not at the last sector ${lastLba} (AlternateLBA); the disk was probably resized`,
      offset: backup.info.lba * ss,
    });
  }
  if (primary?.info.headerCrcOk && backup && primary.header.alternateLba !== backup.info.lba) {
    problems.push({ severity: 'corrupt', message: `primary GPT header (sector 1): AlternateLBA is ${primary.header.alternateLba}, but the backup header is at sector ${backup.info.lba}`, offset: ss });
  }
  if (primary?.info.valid && backup?.info.valid) compareCopies(primary, backup, problems, ss);
  if (primary?.info.valid && backup?.info.valid && backup.header.alternateLba !== GPT_PRIMARY_HEADER_LBA) {
    problems.push({ severity: 'corrupt', message: `backup GPT header (sector ${backup.info.lba}): AlternateLBA is ${backup.header.alternateLba}, not 1`, offset: backup.info.lba * ss });
  }

  // Take partitions from the best copy: intact primary, intact backup, then whatever decodes.
  const ranked = [primary, backup].filter((c): c is GptCopy => c !== undefined);
  const best = ranked.find((c) => c.info.valid) ?? ranked.find((c) => c.entries !== undefined) ?? ranked[0]!;
  const source = best === primary ? 'primary' : 'backup';
  const h = best.header;
  const partitions = gptPartitions(best, ss);
  const table: GptTable = {
    scheme: 'gpt',
    sectorSize: ss,
    diskSectors,
    diskGuid: h.diskGuid,
    firstUsableLba: h.firstUsableLba,
    lastUsableLba: h.lastUsableLba,
    numberOfPartitionEntries: h.numberOfPartitionEntries,
    sizeOfPartitionEntry: h.sizeOfPartitionEntry,
    source,
    protectiveMbr: protectiveMbr !== undefined,
    partitions,
    problems,
  };
  if (primary) table.primary = primary.info;
  if (backup) table.backup = backup.info;
  checkBounds(partitions, diskSectors, problems, { first: h.firstUsableLba, last: h.lastUsableLba });
  checkOverlaps(partitions, problems);
  return table;
}

/** Primary and backup must describe the same table (UEFI §5.3.2: the backup is a copy). */
function compareCopies(p: GptCopy, b: GptCopy, problems: CheckProblem[], ss: number): void {
  const fields = ['diskGuid', 'firstUsableLba', 'lastUsableLba', 'numberOfPartitionEntries', 'sizeOfPartitionEntry', 'partitionEntryArrayCrc32'] as const;
  const names: Record<(typeof fields)[number], string> = {
    diskGuid: 'DiskGUID',
    firstUsableLba: 'FirstUsableLBA',
    lastUsableLba: 'LastUsableLBA',
    numberOfPartitionEntries: 'NumberOfPartitionEntries',
    sizeOfPartitionEntry: 'SizeOfPartitionEntry',
    partitionEntryArrayCrc32: 'PartitionEntryArrayCRC32',
  };
  for (const f of fields) {
    if (p.header[f] !== b.header[f]) {
      const show = (x: string | number): string => (f === 'partitionEntryArrayCrc32' ? `0x${Number(x).toString(16).padStart(8, '0')}` : String(x));
      problems.push({
        severity: 'corrupt',
        message: `primary and backup GPT disagree on ${names[f]}: ${show(p.header[f])} (primary) vs ${show(b.header[f])} (backup)`,
        offset: b.info.lba * ss,
      });
    }
  }
}

/** Partitions must be non-empty and lie inside the disk (and the GPT usable area). */
function checkBounds(parts: readonly PartitionCommon[], diskSectors: number, problems: CheckProblem[], usable: { first: number; last: number } | undefined): void {
  for (const p of parts) {
    const end = p.start + p.sectors; // exclusive
    if (p.sectors === 0) {
      problems.push({ severity: 'corrupt', message: `partition ${p.index}: ends before it starts (EndingLBA < StartingLBA)`, offset: p.offset });
    } else if (end > diskSectors) {
      problems.push({
        severity: 'corrupt',
        message: `partition ${p.index}: sectors ${p.start}-${end - 1} run past the end of the ${diskSectors}-sector disk (${usable ? 'EndingLBA' : 'SizeInLBA'})`,
        offset: p.offset,
      });
    } else if (usable && (p.start < usable.first || end - 1 > usable.last)) {
      problems.push({
        severity: 'corrupt',
        message: `partition ${p.index}: sectors ${p.start}-${end - 1} are outside the usable area ${usable.first}-${usable.last} (StartingLBA/EndingLBA)`,
        offset: p.offset,
      });
    } else if (!usable && p.start === 0) {
      problems.push({ severity: 'corrupt', message: `partition ${p.index}: starts at sector 0, over the MBR itself (StartingLBA)`, offset: 0 });
    }
  }
}

/** No two partitions may share a sector. */
function checkOverlaps(parts: readonly PartitionCommon[], problems: CheckProblem[]): void {
  const sorted = parts.filter((p) => p.sectors > 0).sort((a, b) => a.start - b.start || a.index - b.index);
  let reach: PartitionCommon | undefined; // the partition reaching furthest so far
  for (const p of sorted) {
    if (reach && p.start < reach.start + reach.sectors) {
      problems.push({
        severity: 'corrupt',
        message: `partitions ${reach.index} and ${p.index} overlap: sectors ${p.start}-${Math.min(reach.start + reach.sectors, p.start + p.sectors) - 1} belong to both`,
        offset: p.offset,
      });
    }
    if (!reach || p.start + p.sectors > reach.start + reach.sectors) reach = p;
  }
}

/** The partitions of a table as labelled byte ranges, for drawing over a map of the disk. */
export function partitionSpans(table: PartitionTable): PartitionSpan[] {
  if (table.scheme === 'none') return [];
  if (table.scheme === 'gpt') {
    return table.partitions.map((p) => ({ index: p.index, offset: p.offset, length: p.length, label: p.name || p.typeName, typeName: p.typeName, kind: 'gpt' }));
  }
  return table.partitions.map((p: MbrPartition) => ({ index: p.index, offset: p.offset, length: p.length, label: p.typeName, typeName: p.typeName, kind: p.kind }));
}
