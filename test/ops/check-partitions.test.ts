/**
 * `vdisk check` looks at the partition table on the virtual disk too: a GPT made by
 * sgdisk in a raw file is damaged (grown, backup header CRC broken, truncated), then
 * checked as raw and as VHD/VDI/VMDK converted by qemu-img. The report names the
 * field and exits as documented in src/ops/check.ts; `-r all` repairs it and sgdisk -v
 * (on the disk qemu-img reads back out of the image) finds no problems. Runs the built CLI.
 */
import { open as openFile, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { type CheckReport, check } from '../../src/ops/check.js';
import { checkExitCode, formatCheckHuman } from '../../src/cli/human.js';
import { itWith, run, runOk } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { sgdiskVerify } from '../partitions/helpers.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const SECTORS = SIZE / 512;

async function vdisk(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('node', [VDISK_BIN, ...args]);
}

/** A 32 MiB raw disk with a GPT by sgdisk: esp 4 MiB, root 8 MiB, data up to 24 MiB (free space after). */
async function gptDisk(path: string): Promise<void> {
  await rm(path, { force: true });
  await runOk('truncate', ['-s', String(SIZE), path]);
  await runOk('sgdisk', ['-n1:2048:+4M', '-t1:ef00', '-c1:esp', '-n2:0:+8M', '-c2:root', '-n3:0:+12M', '-c3:data', path]);
}

async function xorByte(path: string, offset: number): Promise<void> {
  const fh = await openFile(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

interface Damage {
  id: string;
  apply(path: string): Promise<void>;
  /** Exit code of `vdisk check` before repair. */
  exit: number;
  /** Messages the report must hold (each names the field). */
  messages: RegExp[];
}

const DAMAGES: Damage[] = [
  {
    id: 'grown by 8 MiB (backup GPT no longer at the end)',
    apply: (p) => truncate(p, SIZE + 8 * MiB),
    exit: 3,
    messages: [
      new RegExp(`^backup GPT header is at sector ${SECTORS - 1}, not at the last sector ${SECTORS + 16384 - 1} \\(AlternateLBA\\)`),
      /^GPT protective MBR: SizeInLBA is \d+, not \d+/,
    ],
  },
  {
    id: 'backup header CRC broken',
    // A byte of the backup header's DiskGUID (header offset 56): the stored HeaderCRC32 no longer matches.
    apply: (p) => xorByte(p, SIZE - 512 + 56),
    exit: 2,
    messages: [new RegExp(`^backup GPT header \\(sector ${SECTORS - 1}\\): HeaderCRC32 is 0x[0-9a-f]{8}, the header's CRC-32 is 0x[0-9a-f]{8}`)],
  },
  {
    id: 'truncated by 4 MiB (backup GPT cut off, partitions still inside)',
    apply: (p) => truncate(p, SIZE - 4 * MiB),
    exit: 2,
    messages: [/^backup GPT header \(sector \d+\): no "EFI PART" signature \(Signature\)/],
  },
];

interface Target {
  id: string;
  ext: string;
  /** qemu-img convert -O … arguments; undefined: check the raw file itself. */
  qemu?: string[];
  /** qemu-img can check the container (vdi, vmdk). */
  qemuChecks?: boolean;
}

const TARGETS: Target[] = [
  { id: 'raw', ext: 'raw' },
  // qemu's VHD creator "qemu" rounds the size by CHS unless force_size is on.
  { id: 'vhd', ext: 'vhd', qemu: ['-O', 'vpc', '-o', 'subformat=dynamic,force_size=on'] },
  { id: 'vdi', ext: 'vdi', qemu: ['-O', 'vdi'], qemuChecks: true },
  { id: 'vmdk', ext: 'vmdk', qemu: ['-O', 'vmdk'], qemuChecks: true },
];

describe('vdisk check reports and repairs the partition table inside any image', async () => {
  const dir = await tempDir('vdisk-check-parts-');

  for (const damage of DAMAGES) {
    for (const t of TARGETS) {
      itWith(['sgdisk', 'qemu-img'], `${t.id}, ${damage.id}: exit ${damage.exit} naming the field; -r all → sgdisk -v clean`, async () => {
        const raw = join(dir, `${t.id}-src.raw`);
        await gptDisk(raw);
        await damage.apply(raw);
        if (!t.qemu) expect((await sgdiskVerify(raw)).clean).toBe(false); // sgdisk agrees the disk is damaged
        let img = raw;
        if (t.qemu) {
          img = join(dir, `d.${t.ext}`);
          await rm(img, { force: true });
          await runOk('qemu-img', ['convert', '-f', 'raw', ...t.qemu, raw, img]);
        }

        const before = await vdisk('check', '--output', 'json', img);
        expect(before.code, before.stdout + before.stderr).toBe(damage.exit);
        const report = JSON.parse(before.stdout) as CheckReport;
        expect(report['partition-table']).toBe('gpt');
        const parts = report.problems.filter((p) => p.scope === 'partitions');
        for (const m of damage.messages) expect(parts.map((p) => p.message), JSON.stringify(parts)).toContainEqual(expect.stringMatching(m));
        // Offsets of partition problems are on the virtual disk, never mistaken for file offsets.
        for (const p of parts) expect(p.offset).toBeUndefined();
        expect(parts.every((p) => p.diskOffset === undefined || p.diskOffset < SIZE + 8 * MiB)).toBe(true);
        if (damage.exit === 3) expect(report['partition-warnings']).toBe(parts.length);
        expect(formatCheckHuman(report)).toMatch(/(ERROR|Warning) partition table: .*\(at disk offset \d+\)/);

        const repair = await vdisk('check', '-r', 'all', '--output', 'json', img);
        expect(repair.code, repair.stdout + repair.stderr).toBe(0);
        const repaired = JSON.parse(repair.stdout) as CheckReport;
        expect(repaired.problems.filter((p) => p.scope === 'partitions').every((p) => p.repaired)).toBe(true);
        const fixed = (sev: string): number => repaired.problems.filter((p) => p.scope === 'partitions' && p.severity === sev).length;
        expect(formatCheckHuman(repaired)).toMatch(new RegExp(`^ {4}${fixed('corrupt')} corruptions$`, 'm'));
        if (fixed('warning')) expect(formatCheckHuman(repaired)).toMatch(new RegExp(`^ {4}${fixed('warning')} partition table warnings$`, 'm'));
        expect(repaired['corruptions-fixed'] ?? 0).toBe(fixed('corrupt'));
        expect(checkExitCode(await check(img))).toBe(0);

        // The judge: sgdisk on the disk as qemu-img reads it out of the image.
        let disk = img;
        if (t.qemu) {
          disk = join(dir, `${t.id}-back.raw`);
          await rm(disk, { force: true });
          await runOk('qemu-img', ['convert', '-O', 'raw', img, disk]);
          if (t.qemuChecks) expect((await run('qemu-img', ['check', img])).code).toBe(0);
        }
        const v = await sgdiskVerify(disk);
        expect(v.output).toMatch(/No problems found/);
        expect(v.clean, v.output).toBe(true);
        expect(await runOk('sgdisk', ['-p', disk])).toMatch(/\n\s+3\s+\d+\s+\d+\s+12\.0 MiB\s+8300\s+data/);
      });
    }
  }

  itWith(['sgdisk'], 'a cut partition is reported (out of disk, exit 2) and -r all refuses to move the backup over it', async () => {
    const raw = join(dir, 'cut.raw');
    await gptDisk(raw);
    await truncate(raw, 20 * MiB); // partition 3 (12-24 MiB) now ends past the disk
    const r = await vdisk('check', '--output', 'json', raw);
    expect(r.code).toBe(2);
    const messages = (JSON.parse(r.stdout) as CheckReport).problems.map((p) => p.message);
    expect(messages).toContainEqual(expect.stringMatching(/^partition 3: .*(EndingLBA|past the last)/));
    const fix = await vdisk('check', '-r', 'all', '--output', 'json', raw);
    expect(fix.code).toBe(2);
    expect((JSON.parse(fix.stdout) as CheckReport).problems.map((p) => p.message)).toContainEqual(expect.stringMatching(/^GPT repair failed: .*partition 3/));
  });

  itWith(['sfdisk', 'qemu-img'], 'overlapping MBR partitions (as sfdisk -V sees them), raw and in a VDI: exit 2 naming both; -r all leaves them alone', async () => {
    const raw = join(dir, 'overlap.raw');
    await rm(raw, { force: true });
    await runOk('truncate', ['-s', String(16 * MiB), raw]);
    await run('sh', ['-c', 'printf "label: dos\\nstart=2048, size=4M, type=83\\nstart=10240, size=4M, type=83\\n" | sfdisk -q "$0"', raw]);
    // Entry 2's StartingLBA (MBR byte 446 + 16 + 8) moved back into partition 1: 6144.
    const fh = await openFile(raw, 'r+');
    await fh.write(Buffer.from([0x00, 0x18, 0x00, 0x00]), 0, 4, 446 + 16 + 8);
    await fh.close();
    const sf = await run('sfdisk', ['-V', raw]);
    expect(sf.stdout + sf.stderr).toMatch(/Partition 1: overlaps partition 2/);
    const vdi = join(dir, 'overlap.vdi');
    await rm(vdi, { force: true });
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', raw, vdi]);
    for (const img of [raw, vdi]) {
      const r = await vdisk('check', '--output', 'json', img);
      expect(r.code).toBe(2);
      const report = JSON.parse(r.stdout) as CheckReport;
      expect(report['partition-table']).toBe('mbr');
      expect(report.problems).toContainEqual({ severity: 'corrupt', scope: 'partitions', message: 'partitions 1 and 2 overlap: sectors 6144-10239 belong to both', diskOffset: 6144 * 512 });
      expect((await vdisk('check', '-r', 'all', img)).code).toBe(2);
    }
  });

  itWith(['sgdisk'], 'a raw disk without a partition table has nothing to check: exit 63 as qemu-img', async () => {
    const raw = join(dir, 'blank.raw');
    await runOk('truncate', ['-s', String(SIZE), raw]);
    const r = await vdisk('check', raw);
    expect(r.code).toBe(63);
    expect(r.stderr).toMatch(/does not support checks/);
  });
});
