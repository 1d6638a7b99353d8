/**
 * Keeping a GPT right, judged by sgdisk -v: a grown disk's backup GPT is moved to
 * the new end, a damaged backup is rebuilt from the primary and a damaged primary
 * from the backup, and checkPartitions reports what it saw and what it repaired.
 */
import { open as openFile, readFile, truncate } from 'node:fs/promises';
import { describe, expect } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { checkPartitions, minimumDiskSize, moveBackupGptToEnd, readPartitions, repairBackupGpt } from '../../src/partitions/index.js';
import type { GptTable } from '../../src/partitions/index.js';
import { itWith, runOk } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { sfdiskImage, sfdiskJson, sgdiskPrint, sgdiskVerify } from './helpers.js';

const SCRIPT = 'label: gpt\nsize=4M, type=uefi, name="esp"\nsize=8M, type=linux, name="root"\ntype=swap, name="swap"\n';
const MiB = 1024 * 1024;

async function withDisk<T>(path: string, fn: (d: Awaited<ReturnType<typeof open>>) => Promise<T>): Promise<T> {
  const img = await open(path);
  try {
    return await fn(img);
  } finally {
    await img.close();
  }
}

async function flipByte(path: string, offset: number): Promise<void> {
  const fh = await openFile(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] = b[0]! ^ 0x5a;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

describe('GPT repair and relocation', async () => {
  const dir = await tempDir('vdisk-parts-repair-');

  itWith(['sfdisk', 'sgdisk'], 'after a grow, the backup GPT is reported, moved to the new end, and sgdisk -v is clean', async () => {
    const path = await sfdiskImage(dir, 'grow.img', 24, SCRIPT);
    const before = await sfdiskJson(path);
    await truncate(path, 40 * MiB);
    expect((await sgdiskVerify(path)).clean).toBe(false); // sgdisk agrees something is off
    const problems = await withDisk(path, (d) => checkPartitions(d));
    expect(problems.map((p) => p.message)).toEqual([
      'GPT protective MBR: SizeInLBA is 49151, not 81919 (the whole disk after sector 0)',
      'backup GPT header is at sector 49151, not at the last sector 81919 (AlternateLBA); the disk was probably resized',
    ]);
    const moved = await withDisk(path, (d) => moveBackupGptToEnd(d));
    expect(moved).toEqual({ backupLba: 81919, backupEntriesLba: 81919 - 32, lastUsableLba: 81919 - 33, previousBackupLba: 49151 });
    const v = await sgdiskVerify(path);
    expect(v.output).toMatch(/No problems found/);
    expect(v.clean).toBe(true);
    const sg = await sgdiskPrint(path);
    expect(sg.last).toBe(81919 - 33);
    // The protective MBR covers the grown disk, as sfdisk sees it.
    expect((await runOk('sfdisk', ['-d', '--label-nested', 'dos', path])).match(/start=\s*1, size=\s*(\d+), type=ee/)?.[1]).toBe('81919');
    const t = (await withDisk(path, (d) => readPartitions(d))) as GptTable;
    expect(t.problems).toEqual([]);
    expect(t.partitions.map((p) => [p.start, p.sectors, p.name])).toEqual(before.partitions.map((p) => [p.start, p.size, p.name]));
    // The stale header in what is now usable space was wiped.
    const old = (await readFile(path)).subarray(49151 * 512, 49151 * 512 + 8).toString('latin1');
    expect(old).not.toBe('EFI PART');
  });

  itWith(['sfdisk', 'sgdisk'], 'check -r all after a grow moves the backup and marks the problem repaired', async () => {
    const path = await sfdiskImage(dir, 'grow2.img', 16, SCRIPT);
    await truncate(path, 20 * MiB);
    const problems = await withDisk(path, (d) => checkPartitions(d, { repair: 'all' }));
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.every((p) => p.repaired === true)).toBe(true);
    expect((await sgdiskVerify(path)).clean).toBe(true);
    expect(await withDisk(path, (d) => checkPartitions(d))).toEqual([]);
  });

  itWith(['sfdisk', 'sgdisk'], 'a shrink that would cut a partition is refused; minimumDiskSize says how far one may go', async () => {
    const path = await sfdiskImage(dir, 'shrink.img', 32, 'label: gpt\nsize=4M, type=linux\nsize=8M, type=linux\n');
    const min = await withDisk(path, async (d) => minimumDiskSize(await readPartitions(d)));
    // Partition 2 ends at sector 26623 (sfdisk aligns at 1 MiB); 33 sectors of backup follow.
    expect(min).toBe((26624 + 33) * 512);
    await truncate(path, 13 * MiB);
    await expect(withDisk(path, (d) => moveBackupGptToEnd(d))).rejects.toMatchObject({ code: 'E_BOUNDS', message: expect.stringMatching(/partition 2 ends at sector 26623, past the new LastUsableLBA/) });
    await truncate(path, min);
    await withDisk(path, (d) => moveBackupGptToEnd(d));
    expect((await sgdiskVerify(path)).clean).toBe(true);
  });

  itWith(['sfdisk', 'sgdisk'], 'a damaged backup header is reported naming HeaderCRC32 and rebuilt from the primary', async () => {
    const path = await sfdiskImage(dir, 'bad-backup.img', 16, SCRIPT);
    const last = 16 * 2048 - 1;
    await flipByte(path, last * 512 + 60); // inside DiskGUID
    expect((await sgdiskVerify(path)).clean).toBe(false);
    const problems = await withDisk(path, (d) => checkPartitions(d));
    expect(problems).toContainEqual(expect.objectContaining({ severity: 'corrupt', message: expect.stringMatching(/^backup GPT header \(sector 32767\): HeaderCRC32 is 0x[0-9a-f]{8}/) }));
    await withDisk(path, (d) => repairBackupGpt(d));
    expect((await sgdiskVerify(path)).clean).toBe(true);
  });

  itWith(['sfdisk', 'sgdisk'], 'a damaged primary entry array is reported naming PartitionEntryArrayCRC32, read from the backup, and rebuilt with -r all', async () => {
    const path = await sfdiskImage(dir, 'bad-primary.img', 16, SCRIPT);
    const before = await sfdiskJson(path);
    await flipByte(path, 2 * 512 + 128 + 56); // name of entry 2 in the primary array
    const t = (await withDisk(path, (d) => readPartitions(d))) as GptTable;
    expect(t.source).toBe('backup');
    expect(t.problems.map((p) => p.message)).toContainEqual(expect.stringMatching(/^primary GPT header \(sector 1\): PartitionEntryArrayCRC32 is 0x/));
    expect(t.partitions.map((p) => p.name)).toEqual(before.partitions.map((p) => p.name));
    const problems = await withDisk(path, (d) => checkPartitions(d, { repair: 'all' }));
    expect(problems.find((p) => /PartitionEntryArrayCRC32/.test(p.message))?.repaired).toBe(true);
    expect((await sgdiskVerify(path)).clean).toBe(true);
    expect(await sfdiskJson(path)).toEqual(before);
  });

  itWith(['sfdisk'], 'a read-only device is checked but never written', async () => {
    const path = await sfdiskImage(dir, 'ro.img', 16, SCRIPT);
    await truncate(path, 17 * MiB);
    const img = await open(path, { readOnly: true });
    try {
      const problems = await checkPartitions(img, { repair: 'all' });
      expect(problems.some((p) => p.repaired)).toBe(false);
      await expect(moveBackupGptToEnd(img)).rejects.toMatchObject({ code: 'E_READONLY' });
    } finally {
      await img.close();
    }
  });
});
