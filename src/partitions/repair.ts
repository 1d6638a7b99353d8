/**
 * Keeping a GPT right: check a device's partition table, rebuild a damaged GPT copy
 * from the intact one, and move the backup GPT to the end of a resized disk.
 *
 * Writes are ordered so a crash at any point leaves at least one intact copy: a copy
 * is written entries first, then header, each flushed; the copy being rebuilt is
 * complete before the intact one is touched, and an intact copy about to be
 * overwritten in place is never the only one left (test/partitions/crash.test.ts).
 */
import type { BlockDevice } from '../device/block-device.js';
import type { CheckProblem, DriverCheckOptions } from '../device/check.js';
import { VdiskError } from '../errors.js';
import { type GptCopy, type GptHeader, GPT_REVISION, encodeGptHeader, entryArraySectors, gptPartitions, readGptCopy } from './gpt.js';
import { decodeBootRecord, encodeBootRecord, looksLikePartitionTable, protectiveSizeLba, pureProtectiveEntry } from './mbr.js';
import { GPT_PRIMARY_HEADER_LBA, readPartitions } from './read.js';
import type { PartitionTable } from './types.js';

/** LBA of the primary entry array as every tool writes it (UEFI 2.10 §5.3.1). */
export const GPT_PRIMARY_ENTRIES_LBA = 2;

/** What a GPT rewrite did. */
export interface GptRewrite {
  /** Where the backup header now lives. */
  backupLba: number;
  /** Where the backup entry array now starts. */
  backupEntriesLba: number;
  /** LastUsableLBA after the rewrite. */
  lastUsableLba: number;
  /** Where the backup header was before (undefined when there was none). */
  previousBackupLba?: number;
}

interface Copies {
  primary?: GptCopy;
  backup?: GptCopy;
}

function deviceName(device: BlockDevice): string {
  const named = device as BlockDevice & { filename?: unknown };
  return typeof named.filename === 'string' ? named.filename : 'disk';
}

/** Read both GPT copies the way readPartitions finds them. */
async function readCopies(device: BlockDevice): Promise<Copies> {
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  const scratch: CheckProblem[] = [];
  const out: Copies = {};
  const primary = await readGptCopy(device, GPT_PRIMARY_HEADER_LBA, 'primary', scratch);
  if (primary) out.primary = primary;
  const claimed = primary?.info.headerCrcOk ? primary.header.alternateLba : undefined;
  let backup = claimed !== undefined && claimed > GPT_PRIMARY_HEADER_LBA && claimed < diskSectors ? await readGptCopy(device, claimed, 'backup', scratch) : undefined;
  if (!backup && diskSectors > 2) backup = await readGptCopy(device, diskSectors - 1, 'backup', scratch);
  if (backup) out.backup = backup;
  return out;
}

/** Write `entries` and then a header built from `from` with the given placement. */
async function writeCopy(device: BlockDevice, from: GptHeader, entries: Uint8Array, place: { myLba: number; alternateLba: number; partitionEntryLba: number; lastUsableLba: number }): Promise<void> {
  const ss = device.sectorSize;
  const header = encodeGptHeader(
    {
      revision: GPT_REVISION,
      headerSize: from.headerSize,
      myLba: place.myLba,
      alternateLba: place.alternateLba,
      firstUsableLba: from.firstUsableLba,
      lastUsableLba: place.lastUsableLba,
      diskGuid: from.diskGuid,
      partitionEntryLba: place.partitionEntryLba,
      numberOfPartitionEntries: from.numberOfPartitionEntries,
      sizeOfPartitionEntry: from.sizeOfPartitionEntry,
      partitionEntryArrayCrc32: from.partitionEntryArrayCrc32,
    },
    ss,
  );
  if (entries.length > 0) await device.write(entries, place.partitionEntryLba * ss);
  await device.flush();
  await device.write(header, place.myLba * ss);
  await device.flush();
}

function requireWritable(device: BlockDevice, what: string): void {
  if (device.readOnly) throw new VdiskError('E_READONLY', `${deviceName(device)}: opened read-only; cannot ${what}`);
}

/**
 * Rewrite the backup GPT (entry array, then header at the primary's AlternateLBA)
 * from an intact primary. E_CORRUPT when the primary is not intact or names a
 * backup place that would overlap the usable area.
 */
export async function repairBackupGpt(device: BlockDevice): Promise<GptRewrite> {
  requireWritable(device, 'rewrite the backup GPT');
  const name = deviceName(device);
  const { primary, backup } = await readCopies(device);
  if (!primary?.info.valid || !primary.entries) throw new VdiskError('E_CORRUPT', `${name}: the primary GPT is not intact; cannot rebuild the backup from it`);
  const h = primary.header;
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  const entriesLba = h.alternateLba - entryArraySectors(h.numberOfPartitionEntries, h.sizeOfPartitionEntry, ss);
  if (h.alternateLba >= diskSectors || entriesLba <= h.lastUsableLba) {
    throw new VdiskError('E_CORRUPT', `${name}: primary GPT AlternateLBA ${h.alternateLba} leaves no room for the backup after LastUsableLBA ${h.lastUsableLba}`);
  }
  await writeCopy(device, h, primary.entries, { myLba: h.alternateLba, alternateLba: GPT_PRIMARY_HEADER_LBA, partitionEntryLba: entriesLba, lastUsableLba: h.lastUsableLba });
  const out: GptRewrite = { backupLba: h.alternateLba, backupEntriesLba: entriesLba, lastUsableLba: h.lastUsableLba };
  if (backup) out.previousBackupLba = backup.info.lba;
  return out;
}

/**
 * Rewrite the primary GPT (entries at LBA 2, header at LBA 1) from an intact backup.
 * E_CORRUPT when the backup is not intact or its entries would not fit before FirstUsableLBA.
 */
export async function repairPrimaryGpt(device: BlockDevice): Promise<void> {
  requireWritable(device, 'rewrite the primary GPT');
  const name = deviceName(device);
  const { backup } = await readCopies(device);
  if (!backup?.info.valid || !backup.entries) throw new VdiskError('E_CORRUPT', `${name}: the backup GPT is not intact; cannot rebuild the primary from it`);
  const h = backup.header;
  const sectors = entryArraySectors(h.numberOfPartitionEntries, h.sizeOfPartitionEntry, device.sectorSize);
  if (GPT_PRIMARY_ENTRIES_LBA + sectors > h.firstUsableLba) {
    throw new VdiskError('E_CORRUPT', `${name}: backup GPT entry array (${sectors} sectors) does not fit before FirstUsableLBA ${h.firstUsableLba}`);
  }
  await writeCopy(device, h, backup.entries, { myLba: GPT_PRIMARY_HEADER_LBA, alternateLba: backup.info.lba, partitionEntryLba: GPT_PRIMARY_ENTRIES_LBA, lastUsableLba: h.lastUsableLba });
}

/**
 * Move the backup GPT to the end of the disk (after a resize): write the entry array
 * and header at the last sectors, set LastUsableLBA just before them, point the
 * primary's AlternateLBA there, and wipe the old backup header if it is now inside
 * the usable area. Uses the primary when intact, else the backup. E_BOUNDS when a
 * partition would end past the new LastUsableLBA (the disk was shrunk too far).
 */
export async function moveBackupGptToEnd(device: BlockDevice): Promise<GptRewrite> {
  requireWritable(device, 'move the backup GPT');
  const name = deviceName(device);
  const { primary, backup } = await readCopies(device);
  const source = primary?.info.valid ? primary : backup?.info.valid ? backup : undefined;
  if (!source?.entries) throw new VdiskError('E_CORRUPT', `${name}: neither GPT copy is intact; cannot move the backup GPT`);
  const h = source.header;
  const ss = device.sectorSize;
  const diskSectors = Math.floor(device.size / ss);
  const backupLba = diskSectors - 1;
  const entriesLba = backupLba - entryArraySectors(h.numberOfPartitionEntries, h.sizeOfPartitionEntry, ss);
  const lastUsableLba = entriesLba - 1;
  if (lastUsableLba < h.firstUsableLba) throw new VdiskError('E_BOUNDS', `${name}: the ${diskSectors}-sector disk is too small for a GPT with FirstUsableLBA ${h.firstUsableLba}`);
  for (const p of gptPartitions(source, ss)) {
    if (p.start + p.sectors - 1 > lastUsableLba) {
      throw new VdiskError('E_BOUNDS', `${name}: partition ${p.index} ends at sector ${p.start + p.sectors - 1}, past the new LastUsableLBA ${lastUsableLba}`);
    }
  }
  const primarySectors = entryArraySectors(h.numberOfPartitionEntries, h.sizeOfPartitionEntry, ss);
  if (source !== primary && GPT_PRIMARY_ENTRIES_LBA + primarySectors > h.firstUsableLba) {
    throw new VdiskError('E_CORRUPT', `${name}: backup GPT entry array (${primarySectors} sectors) does not fit before FirstUsableLBA ${h.firstUsableLba}`);
  }
  const previousBackupLba = backup?.info.lba;
  const moved = { ...h, lastUsableLba };
  const writeBackup = (): Promise<void> => writeCopy(device, moved, source.entries!, { myLba: backupLba, alternateLba: GPT_PRIMARY_HEADER_LBA, partitionEntryLba: entriesLba, lastUsableLba });
  if (source === primary) {
    // New backup first: until the primary points at it, the old layout stays whole.
    await writeBackup();
    await writeCopy(device, moved, new Uint8Array(0), { myLba: GPT_PRIMARY_HEADER_LBA, alternateLba: backupLba, partitionEntryLba: h.partitionEntryLba, lastUsableLba });
  } else {
    // The backup is the only good copy and may be overwritten in place: rebuild the primary first.
    await writeCopy(device, moved, source.entries, { myLba: GPT_PRIMARY_HEADER_LBA, alternateLba: backupLba, partitionEntryLba: GPT_PRIMARY_ENTRIES_LBA, lastUsableLba });
    await writeBackup();
  }
  await updateProtectiveMbr(device);
  // A stale backup header left in what is now usable space would confuse tools that scan for one.
  if (previousBackupLba !== undefined && previousBackupLba !== backupLba && previousBackupLba > h.lastUsableLba && previousBackupLba < entriesLba) {
    await device.write(new Uint8Array(ss), previousBackupLba * ss);
    await device.flush();
  }
  const out: GptRewrite = { backupLba, backupEntriesLba: entriesLba, lastUsableLba };
  if (previousBackupLba !== undefined) out.previousBackupLba = previousBackupLba;
  return out;
}

/**
 * Make a pure protective MBR's 0xEE entry cover the whole disk again (SizeInLBA =
 * min(sectors − 1, 0xFFFFFFFF), UEFI §5.2.3), as after a resize. Hybrid MBRs and boot
 * code are left alone. Returns true when it wrote sector 0.
 */
export async function updateProtectiveMbr(device: BlockDevice): Promise<boolean> {
  requireWritable(device, 'update the protective MBR');
  const ss = device.sectorSize;
  const sector = new Uint8Array(ss);
  await device.read(sector, 0);
  const record = decodeBootRecord(sector);
  const pmbr = looksLikePartitionTable(record) ? pureProtectiveEntry(record) : undefined;
  const want = protectiveSizeLba(Math.floor(device.size / ss));
  if (!pmbr || pmbr.entry.sizeLba === want) return false;
  record.entries[pmbr.slot] = { ...pmbr.entry, sizeLba: want };
  encodeBootRecord(record, sector);
  await device.write(sector, 0);
  await device.flush();
  return true;
}

/**
 * Bytes a disk must keep so no partition is cut and, for GPT, the backup entry array
 * and header still fit after the last partition: the floor for a shrinking resize.
 */
export function minimumDiskSize(table: PartitionTable): number {
  if (table.scheme === 'none') return 0;
  const ss = table.sectorSize;
  const lastSector = table.partitions.reduce((m, p) => Math.max(m, p.start + p.sectors), 0);
  if (table.scheme === 'mbr') return lastSector * ss;
  const backupSectors = entryArraySectors(table.numberOfPartitionEntries, table.sizeOfPartitionEntry, ss) + 1;
  return (Math.max(lastSector, table.firstUsableLba) + backupSectors) * ss;
}

/**
 * Check the partition table of `device` and return its problems in `CheckProblem`
 * form. With `repair: 'all'` on a writable device, a damaged, disagreeing or
 * misplaced GPT copy is rebuilt from the intact one (the primary wins) and the
 * problems it cured come back with `repaired: true`.
 */
export async function checkPartitions(device: BlockDevice, opts: DriverCheckOptions = {}): Promise<CheckProblem[]> {
  const before = await readPartitions(device);
  const problems = before.problems.map((p) => ({ ...p }));
  if (opts.repair !== 'all' || before.scheme !== 'gpt' || problems.length === 0 || device.readOnly) return problems;
  const lastLba = before.diskSectors - 1;
  const { primary, backup } = before;
  const gptCopyProblem = problems.some((p) => /GPT header|GPT disagree|backup GPT|AlternateLBA/.test(p.message));
  const pmbrProblem = problems.some((p) => /protective MBR: SizeInLBA/.test(p.message));
  if (!gptCopyProblem && !pmbrProblem) return problems;
  try {
    if (gptCopyProblem && primary?.valid) {
      if (primary.alternateLba !== lastLba || (backup && backup.lba !== lastLba)) await moveBackupGptToEnd(device);
      else await repairBackupGpt(device);
    } else if (gptCopyProblem && backup?.valid) {
      await repairPrimaryGpt(device);
      if (backup.lba !== lastLba) await moveBackupGptToEnd(device);
    }
    if (pmbrProblem) await updateProtectiveMbr(device);
  } catch (err) {
    if (!(err instanceof VdiskError)) throw err;
    problems.push({ severity: 'corrupt', message: `GPT repair failed: ${err.message}` });
    return problems;
  }
  const after = await readPartitions(device);
  const remaining = new Set(after.problems.map((p) => p.message));
  for (const p of problems) if (!remaining.has(p.message)) p.repaired = true;
  const known = new Set(problems.map((p) => p.message));
  for (const p of after.problems) if (!known.has(p.message)) problems.push({ ...p });
  return problems;
}
