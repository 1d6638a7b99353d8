/**
 * `resize -p` and ResizeOptions.onProgress: the work a resize does (blocks moved out
 * of a growing BAT's way, bytes zeroed, extent files written) is reported as it goes,
 * never backwards, and ends at 100%.
 */
import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { create } from '../../src/ops/create.js';
import { resize } from '../../src/ops/resize.js';
import { itWith, qemuInfo, qemuSame, run } from '../helpers/oracle.js';
import { VDISK_BIN, patternBytes, tempDir } from '../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir = '';
beforeAll(async () => {
  dir = await tempDir('vdisk-resize-progress-');
});

/** A dynamic VHD of 8 MiB with 64 KiB blocks (its BAT fills one sector) whose first 4 blocks hold data; returns its content. */
async function vhdWithBlocksAfterBat(path: string): Promise<Buffer> {
  await (await create(path, { format: 'vhd', size: 8 * MiB, options: { block_size: '64K' } })).close();
  const content = Buffer.alloc(8 * MiB);
  const data = patternBytes(200 * KiB, 7);
  data.copy(content, 0);
  const img = await open(path);
  await img.write(data, 0);
  await img.close();
  return content;
}

/** Calls must never go backwards and the last one must have done = total. */
function expectMonotoneToEnd(calls: Array<[number, number]>): void {
  expect(calls.length).toBeGreaterThan(1);
  for (let i = 1; i < calls.length; i++) expect(calls[i]![0]).toBeGreaterThanOrEqual(calls[i - 1]![0]);
  for (const [d, t] of calls) expect(d).toBeLessThanOrEqual(t);
  const [done, total] = calls.at(-1)!;
  expect(done).toBe(total);
}

describe('resize progress', () => {
  it('VHD BAT growth: the callback counts the moved blocks (3 × (bitmap + 64 KiB)), non-decreasing, ending at total', async () => {
    const f = join(dir, 'lib.vhd');
    const content = await vhdWithBlocksAfterBat(f);
    const calls: Array<[number, number]> = [];
    // 3 GiB of 64 KiB blocks: 49152 BAT entries (192 KiB), over the first three blocks after the old BAT.
    await resize(f, '3G', { onProgress: (d, t) => calls.push([d, t]) });
    expectMonotoneToEnd(calls);
    expect(calls.at(-1)![1]).toBe(3 * (64 * KiB + 512));
    expect(calls.map((c) => c[0])).toEqual([1, 2, 3, 3].map((k) => k * (64 * KiB + 512)));
    const img = await open(f, { readOnly: true });
    try {
      expect(img.size).toBe(3 * 1024 * MiB);
      const got = Buffer.alloc(8 * MiB);
      await img.read(got, 0);
      expect(got.equals(content)).toBe(true);
    } finally {
      await img.close();
    }
  });

  it('VDI growth over the first data block and a VMDK flat grow report their work too', async () => {
    // VDI: a qemu-layout image (map right before the data) whose map must grow over data block 0.
    const vdi = join(dir, 'lib.vdi');
    await run('qemu-img', ['create', '-q', '-f', 'vdi', vdi, '128M']);
    const w = await open(vdi);
    await w.write(patternBytes(3 * MiB, 8), 0);
    await w.close();
    const calls: Array<[number, number]> = [];
    await resize(vdi, '+1G', { onProgress: (d, t) => calls.push([d, t]) });
    expectMonotoneToEnd(calls);
    expect(calls.at(-1)![1]).toBe(MiB);

    const flat = join(dir, 'flat.vmdk');
    await (await create(flat, { format: 'vmdk', size: 1 * MiB, options: { subformat: 'monolithicFlat' } })).close();
    // A flat file longer than the extent (as an interrupted shrink leaves) gets its tail zeroed: that is the work.
    await writeFile(join(dir, 'flat-flat.vmdk'), Buffer.alloc(3 * MiB, 0x5a));
    const vcalls: Array<[number, number]> = [];
    await resize(flat, '4M', { onProgress: (d, t) => vcalls.push([d, t]) });
    expectMonotoneToEnd(vcalls);
    expect(vcalls.at(-1)![1]).toBe(2 * MiB);
    const img = await open(flat, { readOnly: true });
    try {
      const got = Buffer.alloc(4 * MiB);
      await img.read(got, 0);
      expect(got.subarray(0, MiB).every((b) => b === 0x5a)).toBe(true);
      expect(got.subarray(MiB).every((b) => b === 0)).toBe(true);
    } finally {
      await img.close();
    }
  });

  itWith(['qemu-img'], 'vdisk resize -p prints percentage lines (not a terminal) ending at 100%; qemu-img agrees on the result', async () => {
    const f = join(dir, 'cli.vhd');
    const content = await vhdWithBlocksAfterBat(f);
    const r = await run(process.execPath, [VDISK_BIN, 'resize', '-p', f, '3G']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Image resized from 8 MiB to 3 GiB/);
    const lines = r.stderr.trim().split('\n');
    expect(lines.length).toBeGreaterThan(2);
    expect(lines.every((l) => /^resize: \d+%$/.test(l))).toBe(true);
    const pcts = lines.map((l) => Number(/(\d+)%/.exec(l)![1]));
    for (let i = 1; i < pcts.length; i++) expect(pcts[i]).toBeGreaterThan(pcts[i - 1]!);
    expect(lines.at(-1)).toBe('resize: 100%');
    expect(lines).toEqual(['resize: 33%', 'resize: 66%', 'resize: 100%']);
    expect((await qemuInfo(f, 'vpc'))['virtual-size']).toBe(3 * 1024 * MiB);
    const ref = join(dir, 'cli.expected.raw');
    await writeFile(ref, content);
    await truncate(ref, 3 * 1024 * MiB);
    expect(await qemuSame(f, 'vpc', ref, 'raw')).toBe(true);
  });

  it('without -p nothing is printed on stderr', async () => {
    const f = join(dir, 'quiet.vhd');
    await vhdWithBlocksAfterBat(f);
    const r = await run(process.execPath, [VDISK_BIN, 'resize', f, '16M']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  });
});
