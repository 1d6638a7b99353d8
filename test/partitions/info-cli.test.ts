/**
 * `vdisk info` shows the partition table (human and JSON) as sfdisk sees it, and
 * still prints what it could read when the table is damaged. Runs the built CLI.
 */
import { open as openFile } from 'node:fs/promises';
import { describe, expect } from 'vitest';
import type { ImageInfoReport } from '../../src/ops/info.js';
import type { GptTable } from '../../src/partitions/index.js';
import { itWith, run } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { blankImage, nodeIndex, sfdiskImage, sfdiskJson } from './helpers.js';

async function vdisk(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('node', [VDISK_BIN, ...args]);
}

async function overwrite(path: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await openFile(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

describe('vdisk info with partitions', async () => {
  const dir = await tempDir('vdisk-parts-cli-');
  const script = 'label: gpt\nsize=2M, type=uefi, name="EFI"\nsize=3M, type=linux, name="root", attrs="LegacyBIOSBootable"\n';

  itWith(['sfdisk'], '--output json has a partitions field matching sfdisk --json', async () => {
    const path = await sfdiskImage(dir, 'json.img', 8, script);
    const r = await vdisk('info', '--output', 'json', path);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as ImageInfoReport;
    const t = report.partitions as GptTable;
    const sf = await sfdiskJson(path);
    expect(t.scheme).toBe('gpt');
    expect(t.diskGuid).toBe(sf.id);
    expect(t.partitions.map((p) => [p.index, p.start, p.sectors, p.typeGuid, p.name, p.flags.join(' ')])).toEqual(
      sf.partitions.map((p) => [nodeIndex(p.node), p.start, p.size, p.type, p.name, p.attrs ?? '']),
    );
    expect(report['virtual-size']).toBe(8 * 1024 * 1024);
  });

  itWith(['sfdisk'], 'human output lists scheme, disk GUID and one row per partition after the header facts', async () => {
    const path = await sfdiskImage(dir, 'human.img', 8, script);
    const sf = await sfdiskJson(path);
    const r = await vdisk('info', path);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.slice(0, 2)).toEqual([`image: ${path}`, 'file format: raw']);
    const at = lines.indexOf('partition table: gpt');
    expect(at).toBeGreaterThan(2);
    expect(lines[at + 1]).toBe(`    disk GUID: ${sf.id}`);
    expect(lines[at + 3]!.trim().split(/\s{2,}/)).toEqual(['Number', 'Start', 'Sectors', 'Size', 'Type', 'Name', 'Flags']);
    const rows = lines.slice(at + 4).map((l) => l.trim().split(/\s{2,}/));
    expect(rows).toEqual([
      ['1', '2048', '4096', '2 MiB', 'EFI System', 'EFI'],
      ['2', '6144', '6144', '3 MiB', 'Linux filesystem', 'root', 'LegacyBIOSBootable'],
    ]);
  });

  itWith(['sfdisk'], 'a damaged table is still shown with its problems, and info exits 0', async () => {
    const path = await sfdiskImage(dir, 'damaged.img', 8, script);
    await overwrite(path, 512 + 20, Buffer.from([1])); // Reserved byte: primary HeaderCRC32 no longer matches
    await overwrite(path, (8 * 2048 - 1) * 512, Buffer.alloc(512)); // backup header gone
    const r = await vdisk('info', path);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^partition problem: primary GPT header \(sector 1\): HeaderCRC32 is 0x[0-9a-f]{8}/m);
    expect(r.stdout).toMatch(/^partition problem: backup GPT header \(sector 16383\): no "EFI PART" signature \(Signature\)$/m);
    expect(r.stdout).toMatch(/^\s+2\s+6144\s+6144\s+3 MiB\s+Linux filesystem\s+root/m);
    const json = JSON.parse((await vdisk('info', '--output', 'json', path)).stdout) as ImageInfoReport;
    expect(json.partitions?.problems.length).toBe(2);
  });

  itWith([], 'a disk without a partition table gets no partitions field', async () => {
    const path = await blankImage(dir, 'blank.img', 1);
    const report = JSON.parse((await vdisk('info', '--output', 'json', path)).stdout) as ImageInfoReport;
    expect(report.partitions).toBeUndefined();
    expect((await vdisk('info', path)).stdout).not.toMatch(/partition/);
  });
});
