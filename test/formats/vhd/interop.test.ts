/**
 * VHD interop: images qemu-img makes read byte-identical to qemu-img's own raw
 * conversion; images we make and write are judged by qemu-img compare and vhdiinfo.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readImageFile as readAll } from '../../helpers/read.js';
import { listExtents } from '../../../src/device/base.js';
import { open } from '../../../src/formats/registry.js';
import { create } from '../../../src/ops/create.js';
import { itWith, qemuInfo, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, patternBytes, tempDir } from '../../helpers/tmp.js';
import { locatorsAfterBat, locatorsPastBat } from './helpers.js';

const dir = await tempDir('vdisk-vhd-interop-');
const MiB = 1024 * 1024;

/** Read a whole image through vdisk. */
describe('VHD images written by qemu-img', () => {
  const cases: Array<[string, string[]]> = [
    ['dynamic', []],
    ['dynamic force_size', ['-o', 'force_size=on']],
    ['fixed', ['-o', 'subformat=fixed']],
    ['fixed force_size', ['-o', 'subformat=fixed,force_size=on']],
  ];
  for (const [label, opts] of cases) {
    itWith(['qemu-img', 'qemu-io'], `${label}: reads byte-identical to qemu-img convert -O raw`, async () => {
      const f = join(dir, `q-${label.replace(/ /g, '-')}.vhd`);
      const raw = `${f}.raw`;
      await runOk('qemu-img', ['create', '-q', '-f', 'vpc', ...opts, f, '20M']);
      // Data in the first block, across a block boundary (2 MiB), a single sector, and the last sector.
      for (const cmd of ['write -P 0x11 0 64k', 'write -P 0x22 2032k 32k', 'write -P 0x33 7m 512', 'write -P 0x44 9m 1m']) {
        await runOk('qemu-io', ['-f', 'vpc', '-c', cmd, f]);
      }
      await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', f, raw]);
      const expected = await readFile(raw);
      const img = await open(f, { readOnly: true });
      expect(img.format).toBe('vhd');
      expect(img.size).toBe(expected.length);
      await img.close();
      const ours = await readAll(f);
      expect(ours.equals(expected)).toBe(true);
      expect(expected.subarray(9 * MiB, 9 * MiB + 16).every((b) => b === 0x44)).toBe(true);
    });
  }

  itWith(['qemu-img', 'qemu-io'], 'extents of a qemu dynamic image: allocated blocks are data, the rest holes', async () => {
    const f = join(dir, 'q-map.vhd');
    await runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'force_size=on', f, '16M']);
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5a 4m 4k', f]);
    const img = await open(f, { readOnly: true });
    const ext = await listExtents(img);
    await img.close();
    expect(ext).toEqual([
      { offset: 0, length: 4 * MiB, kind: 'hole', depth: 0 },
      { offset: 4 * MiB, length: 2 * MiB, kind: 'data', depth: 0 },
      { offset: 6 * MiB, length: 10 * MiB, kind: 'hole', depth: 0 },
    ]);
  });
});

describe('VHD images vdisk writes', () => {
  const layouts: Array<[string, Record<string, string>, number]> = [
    ['dynamic', {}, 20 * MiB + 3 * 512],
    ['dynamic 512K blocks', { block_size: '512K' }, 9 * MiB],
    ['fixed', { subformat: 'fixed' }, 20 * MiB + 7 * 512],
    ['fixed azure', { azure: 'on' }, 12 * MiB],
  ];
  for (const [label, options, size] of layouts) {
    itWith(['qemu-img', 'vhdiinfo'], `${label}: qemu-img compare matches the expected raw; vhdiinfo reads it`, async () => {
      const f = join(dir, `v-${label.replace(/ /g, '-')}.vhd`);
      const raw = `${f}.raw`;
      const expected = Buffer.alloc(size);
      const img = await create(f, { format: 'vhd', size, options });
      const writes: Array<[number, number, number]> = [
        [0, 4096, 1],
        [2 * MiB - 1000, 3000, 2], // unaligned, across a block boundary
        [5 * MiB + 512, 512, 3],
        [size - 1536, 1536, 4], // the last sectors
        [3 * MiB, MiB + 4096, 5],
      ];
      for (const [off, len, seed] of writes) {
        const data = patternBytes(len, seed);
        await img.write(data, off);
        data.copy(expected, off);
      }
      await img.writeZeroes(3 * MiB + 4096, 8192);
      expected.fill(0, 3 * MiB + 4096, 3 * MiB + 4096 + 8192);
      await img.close();
      const { writeFile } = await import('node:fs/promises');
      await writeFile(raw, expected);
      // Plain qemu-img, as a user runs it: the geometry we write makes qemu size the image right.
      const cmp = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', f, raw]);
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
      expect(cmp.code).toBe(0);
      expect((await qemuInfo(f, 'vpc'))['virtual-size']).toBe(size);
      const info = await runOk('vhdiinfo', [f]);
      expect(info).toContain(`(${size} bytes)`);
      expect((await readAll(f)).equals(expected)).toBe(true);
    });
  }

  itWith(['qemu-img'], 'a CHS-exact size needs no qemu option: qemu reads our current_size by geometry alike', async () => {
    // 17 sectors * 4 heads * 600 cylinders: the spec's CHS multiplies out exactly.
    const size = 17 * 4 * 600 * 512;
    const f = join(dir, 'v-chs.vhd');
    const img = await create(f, { format: 'vhd', size });
    await img.write(patternBytes(65536, 9), 65536);
    await img.close();
    const info = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', '-f', 'vpc', f])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(size);
  });

  itWith(['qemu-img', 'qemu-io', 'vhdiinfo'], 'differencing child: vhdiinfo names the parent; blocks written whole read back in qemu', async () => {
    const base = join(dir, 'base.vhd');
    const child = join(dir, 'child.vhd');
    const b = await create(base, { format: 'vhd', size: 8 * MiB });
    await b.write(Buffer.alloc(4 * MiB, 0xaa), 0);
    await b.close();
    const c = await create(child, { format: 'vhd', backing: base });
    await c.write(Buffer.alloc(2 * MiB, 0xbb), 2 * MiB); // a whole block: every bit set
    await c.write(Buffer.alloc(512, 0xcc), 4 * MiB + 512); // one sector of a new block
    await c.close();
    const info = await runOk('vhdiinfo', [child]);
    expect(info).toContain('Differential');
    expect(info).toContain('Parent filename\t\t: base.vhd');
    const baseInfo = await runOk('vhdiinfo', [base]);
    const id = /Identifier\t\t: (\S+)/.exec(baseInfo)?.[1];
    expect(info).toContain(`Parent identifier\t: ${id}`);
    // qemu ignores the parent but reads the child's own block data.
    const q = await run('qemu-io', ['-r', '-f', 'vpc', '-c', 'read -P 0xbb 2m 2m', '-c', 'read -P 0xcc 4194816 512', child]);
    expect(q.stdout).not.toContain('Pattern verification failed');
    expect(q.code).toBe(0);
    // Through vdisk the chain reads: parent below, child's sectors on top.
    const all = await readAll(child);
    expect(all[0]).toBe(0xaa);
    expect(all[2 * MiB]).toBe(0xbb);
    expect(all[4 * MiB]).toBe(0);
    expect(all[4 * MiB + 512]).toBe(0xcc);
  });

  itWith(['qemu-io', 'vhdiinfo'], 'differencing child written by qemu-io: its new block lands after the BAT, not on our parent locators', async () => {
    const base = join(dir, 'qw-base.vhd');
    const child = join(dir, 'qw-child.vhd');
    const b = await create(base, { format: 'vhd', size: 8 * MiB });
    await b.write(patternBytes(4 * MiB, 41), 0);
    await b.close();
    const c = await create(child, { format: 'vhd', backing: base });
    await c.close();
    // qemu opens the child on its own (it ignores the parent) and appends block 0.
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x33 0 64k', child]);
    const report = await runOk('node', [VDISK_BIN, 'check', child]);
    expect(report).toContain('No errors');
    const all = await readAll(child);
    // qemu sets every bitmap bit of a block it allocates: block 0 hides the parent (zeros after 64k).
    expect(all.subarray(0, 64 * 1024).every((x) => x === 0x33)).toBe(true);
    expect(all.subarray(64 * 1024, 2 * MiB).every((x) => x === 0)).toBe(true);
    // Block 1 is not in the child: the parent's data reads through the locators.
    expect(all.subarray(2 * MiB, 4 * MiB).equals(patternBytes(4 * MiB, 41).subarray(2 * MiB))).toBe(true);
    expect(all.subarray(4 * MiB).every((x) => x === 0)).toBe(true);
    const info = await runOk('vhdiinfo', [child]);
    expect(info).toContain('Differential');
    expect(info).toContain('Parent filename\t\t: qw-base.vhd');
    const img = await open(child, { readOnly: true });
    expect((await img.info()).backingFilename).toBe('.\\qw-base.vhd');
    await img.close();
  });

  itWith(['qemu-io', 'vhdiinfo'], 'a child whose locators qemu already overwrote (locators after the BAT): opens by parent name, check names the damage, rebase -u repairs it', async () => {
    const base = join(dir, 'qd-base.vhd');
    const child = join(dir, 'qd-child.vhd');
    const b = await create(base, { format: 'vhd', size: 8 * MiB });
    await b.write(patternBytes(4 * MiB, 42), 0);
    await b.close();
    const c = await create(child, { format: 'vhd', backing: base });
    await c.close();
    // The layout vdisk used to write (and Hyper-V writes): locators after the BAT.
    await writeFile(child, locatorsAfterBat(await readFile(child)));
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x33 0 64k', child]);
    const checked = await run('node', [VDISK_BIN, 'check', child]);
    expect(checked.code).not.toBe(0);
    expect(checked.stdout + checked.stderr).toMatch(/parent locator 0 \(W2ru, offset \d+\) lies under the block of BAT entry 0 .*qemu appends new blocks/);
    // The block is qemu's data; the parent is still found by the header's parent name.
    const all = await readAll(child);
    expect(all.subarray(0, 64 * 1024).every((x) => x === 0x33)).toBe(true);
    expect(all.subarray(2 * MiB, 4 * MiB).equals(patternBytes(4 * MiB, 42).subarray(2 * MiB))).toBe(true);
    // Naming the parent again writes new locators below the BAT; then all is clean.
    await runOk('node', [VDISK_BIN, 'rebase', '-u', '-b', 'qd-base.vhd', child], { cwd: dir });
    expect(await runOk('node', [VDISK_BIN, 'check', child])).toContain('No errors');
    expect(locatorsPastBat(await readFile(child))).toEqual([]);
    expect((await readAll(child)).equals(all)).toBe(true);
    expect(await runOk('vhdiinfo', [child])).toContain('Parent filename\t\t: qd-base.vhd');
  });

  // vhdimount needs FUSE; without /dev/fuse (some containers) the test is skipped, saying so.
  (existsSync('/dev/fuse') ? itWith : (_t: readonly string[], name: string) => it.skip(`${name} [needs /dev/fuse]`, () => undefined))(['vhdimount', 'umount'], 'differencing chain as libvhdi mounts it: whole child blocks and untouched blocks match ours', async () => {
    const base = join(dir, 'm-base.vhd');
    const child = join(dir, 'm-child.vhd');
    const mnt = join(dir, 'mnt');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(mnt, { recursive: true });
    const b = await create(base, { format: 'vhd', size: 8 * MiB });
    await b.write(patternBytes(6 * MiB, 21), 0);
    await b.close();
    const c = await create(child, { format: 'vhd', backing: base });
    await c.write(patternBytes(2 * MiB, 22), 2 * MiB); // block 1 whole
    await c.write(patternBytes(2 * MiB, 23), 6 * MiB); // block 3 whole, over the parent's hole
    await c.close();
    const mounted = await run('vhdimount', [child, mnt]);
    expect(mounted.code, mounted.stderr).toBe(0);
    try {
      const theirs = await readFile(join(mnt, 'vhdi2'));
      const ours = await readAll(child);
      expect(theirs.length).toBe(ours.length);
      // Every block is either whole in the child or absent from it, where libvhdi is reliable.
      expect(theirs.equals(ours)).toBe(true);
      expect(ours.subarray(0, 2 * MiB).equals(patternBytes(6 * MiB, 21).subarray(0, 2 * MiB))).toBe(true);
    } finally {
      await run('umount', [mnt]);
    }
  });
});
