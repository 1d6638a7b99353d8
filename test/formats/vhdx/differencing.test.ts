/**
 * Differencing VHDX (HasParent): qemu cannot open them, so a child is laid out here
 * by the specification (2.5: BAT with a sector bitmap entry after every chunk; a
 * sector bitmap block whose bit per logical sector says "here"), over a parent vdisk
 * wrote (judged by qemu-img earlier). Reads fall through to the parent per block and
 * per sector, `extents` counts depth, the parent is found by relative_path (or
 * absolute_win32_path) and confined, and its DataWriteGuid must match
 * parent_linkage. vhdiinfo, libvhdi's reader, accepts the child as differential.
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { open } from '../../../src/formats/registry.js';
import { writeNewVhdx } from '../../../src/formats/vhdx/create.js';
import type { VhdxImage } from '../../../src/formats/vhdx/image.js';
import {
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  SB_BLOCK_PRESENT,
  VHDX_PARENT_LOCATOR_TYPE,
  bitmapEntryIndex,
  encodeBatEntry,
  payloadEntryIndex,
} from '../../../src/formats/vhdx/layout.js';
import { commit } from '../../../src/ops/commit.js';
import { create } from '../../../src/ops/create.js';
import { rebase } from '../../../src/ops/rebase.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { itWith, run } from '../../helpers/oracle.js';
import { readAll } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
let dir = '';
let parentData: Buffer;
let parentGuid = '';

beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-diff-');
  const p = await create(join(dir, 'parent.vhdx'), { format: 'vhdx', size: SIZE, options: { block_size: '1M' } });
  parentData = patternBytes(SIZE, 77);
  await p.write(parentData, 0);
  await p.close();
  const ro = (await open(join(dir, 'parent.vhdx'), { readOnly: true })) as VhdxImage;
  parentGuid = ro.dataWriteGuid;
  await ro.close();
});

/** Write a child named `name` whose locator holds `entries`; returns the guest bytes it must read as. */
async function child(name: string, entries: Record<string, string>): Promise<Buffer> {
  const s = new MemoryStorage(undefined, { name });
  await writeNewVhdx(s, { size: SIZE, fixed: false, blockSize: MiB, logSize: MiB, logicalSectorSize: 512, physicalSectorSize: 4096, parentLocator: { locatorType: VHDX_PARENT_LOCATOR_TYPE, entries } });
  const file = Buffer.alloc(s.size);
  await s.read(file, 0);
  // This layout (create.ts): BAT at 3 MiB; then a sector bitmap block at 4 MiB, block 0 at 5 MiB, block 1 at 6 MiB.
  const batAt = 3 * MiB;
  const chunkRatio = (2 ** 23 * 512) / MiB;
  const bitmap = Buffer.alloc(MiB);
  // Block 1: its first 8 sectors and sector 100 are here; the rest comes from the parent.
  const base = (1 * MiB) / 512;
  for (const sct of [0, 1, 2, 3, 4, 5, 6, 7, 100]) bitmap[(base + sct) >> 3]! |= 1 << ((base + sct) & 7);
  const block0 = patternBytes(MiB, 5);
  const block1 = patternBytes(MiB, 6);
  encodeBatEntry(file, batAt + bitmapEntryIndex(0, chunkRatio) * 8, SB_BLOCK_PRESENT, 4 * MiB);
  encodeBatEntry(file, batAt + payloadEntryIndex(0, chunkRatio) * 8, PAYLOAD_BLOCK_FULLY_PRESENT, 5 * MiB);
  encodeBatEntry(file, batAt + payloadEntryIndex(1, chunkRatio) * 8, PAYLOAD_BLOCK_PARTIALLY_PRESENT, 6 * MiB);
  encodeBatEntry(file, batAt + payloadEntryIndex(3, chunkRatio) * 8, PAYLOAD_BLOCK_ZERO, 0);
  await writeFile(join(dir, name), Buffer.concat([file, bitmap, block0, block1]));
  const want = Buffer.from(parentData);
  block0.copy(want, 0);
  block1.copy(want, MiB, 0, 8 * 512);
  block1.copy(want, MiB + 100 * 512, 100 * 512, 101 * 512);
  want.fill(0, 3 * MiB, 4 * MiB);
  return want;
}

describe('differencing VHDX', () => {
  it('reads through to the parent per block and per sector, with depth in extents', async () => {
    const want = await child('child.vhdx', { parent_linkage: `{${parentGuid}}`, relative_path: '.\\parent.vhdx', absolute_win32_path: 'C:\\nowhere\\parent.vhdx' });
    const img = await open(join(dir, 'child.vhdx'), { readOnly: true });
    try {
      expect((await readAll(img)).equals(want)).toBe(true);
      const ext = await listExtents(img, 0, 4 * MiB);
      expect(ext[0]).toEqual({ offset: 0, length: MiB + 8 * 512, kind: 'data', depth: 0 });
      expect(ext[1]).toMatchObject({ offset: MiB + 8 * 512, kind: 'data', depth: 1 });
      expect(ext).toContainEqual({ offset: MiB + 100 * 512, length: 512, kind: 'data', depth: 0 });
      expect(ext).toContainEqual({ offset: 3 * MiB, length: MiB, kind: 'zero', depth: 0 });
      const info = await img.info();
      expect(info.backingFilename).toBe('.\\parent.vhdx');
      expect(info.formatSpecific).toMatchObject({ type: 'differencing', 'has-parent': true });
    } finally {
      await img.close();
    }
  });

  it('finds the parent by absolute_win32_path when it is the only path (resolved inside the folder)', async () => {
    const want = await child('child-abs.vhdx', { parent_linkage: `{${parentGuid}}`, absolute_win32_path: 'parent.vhdx' });
    const img = await open(join(dir, 'child-abs.vhdx'), { readOnly: true });
    try {
      expect((await readAll(img)).equals(want)).toBe(true);
    } finally {
      await img.close();
    }
  });

  it('refuses a parent outside the folder, a missing one, and one whose DataWriteGuid does not match', async () => {
    await child('esc.vhdx', { parent_linkage: `{${parentGuid}}`, relative_path: '..\\..\\..\\etc\\passwd' });
    await expect(open(join(dir, 'esc.vhdx'), { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH' });
    await child('abs-esc.vhdx', { parent_linkage: `{${parentGuid}}`, absolute_win32_path: '/etc/passwd' });
    await expect(open(join(dir, 'abs-esc.vhdx'), { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH' });
    await child('missing.vhdx', { parent_linkage: `{${parentGuid}}`, relative_path: 'nothere.vhdx' });
    await expect(open(join(dir, 'missing.vhdx'), { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN' });
    await child('wrong.vhdx', { parent_linkage: '{00000000-1111-2222-3333-444444444444}', relative_path: 'parent.vhdx' });
    await expect(open(join(dir, 'wrong.vhdx'), { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN' });
    await child('nolink.vhdx', { relative_path: 'parent.vhdx' });
    await expect(open(join(dir, 'nolink.vhdx'), { readOnly: true })).rejects.toMatchObject({ code: 'E_CORRUPT' });
    // info on a broken chain still works without the parent.
    const img = await open(join(dir, 'missing.vhdx'), { readOnly: true, noBacking: true });
    await img.close();
  });

  itWith(['vhdiinfo'], 'vhdiinfo reads the child as a differencing VHDX', async () => {
    await child('child-v.vhdx', { parent_linkage: `{${parentGuid}}`, relative_path: '.\\parent.vhdx' });
    const r = await run('vhdiinfo', [join(dir, 'child-v.vhdx')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Disk type\s*: Differential/);
    expect(r.stdout).toContain(`(${SIZE} bytes)`);
    // libvhdi 20210425 prints "Parent identifier: 00000000-…" and no parent name for this child; it reads no more of the locator.
    expect((await readFile(join(dir, 'child-v.vhdx'))).length).toBe(7 * MiB);
  });

  it('create -b and writes: partial sectors merge with the parent, new blocks are partially present, zeroes hide the parent', async () => {
    const f = join(dir, 'new-child.vhdx');
    const img = await create(f, { format: 'vhdx', backing: join(dir, 'parent.vhdx'), options: { block_size: '1M' } });
    const model = Buffer.from(parentData);
    const steps: Array<[number, number, boolean]> = [
      [100, 3000, false],
      [MiB - 700, 1400, false],
      [3 * MiB, 2 * MiB + 512, false],
      [3 * MiB + 4096, 8192, true],
      [7 * MiB + 5, 10, false],
      [6 * MiB, MiB, true],
    ];
    try {
      expect(img.size).toBe(SIZE);
      for (const [k, [off, len, zero]] of steps.entries()) {
        if (zero) {
          await img.writeZeroes(off, len);
          model.fill(0, off, off + len);
        } else {
          const d = patternBytes(len, 200 + k);
          await img.write(d, off);
          d.copy(model, off);
        }
        if (k === 2) await img.flush();
      }
      expect((await readAll(img)).equals(model)).toBe(true);
    } finally {
      await img.close();
    }
    const ro = await open(f, { readOnly: true });
    try {
      expect((await readAll(ro)).equals(model)).toBe(true);
      expect(ro.backing?.filename).toBe(join(dir, 'parent.vhdx'));
      const ext = await listExtents(ro, 0, MiB);
      // Bytes 100..3100 written: sectors 0-6 are the child's (merged with the parent's bytes around them).
      expect(ext[0]).toEqual({ offset: 0, length: 7 * 512, kind: 'data', depth: 0 });
      expect(ext[1]).toMatchObject({ offset: 7 * 512, kind: 'data', depth: 1 });
    } finally {
      await ro.close();
    }
    // The parent is untouched (its DataWriteGuid still links it) and vhdiinfo reads the child.
    const again = (await open(join(dir, 'parent.vhdx'), { readOnly: true })) as VhdxImage;
    expect(again.dataWriteGuid).toBe(parentGuid);
    await again.close();
  });

  itWith(['qemu-img'], 'commit merges a child into its parent (qemu-img check and compare on the parent), relinking through parent_linkage2; rebase -u relinks', async () => {
    await copyFile(join(dir, 'parent.vhdx'), join(dir, 'base.vhdx'));
    const f = join(dir, 'top.vhdx');
    const img = await create(f, { format: 'vhdx', backing: join(dir, 'base.vhdx'), options: { block_size: '1M' } });
    const model = Buffer.from(parentData);
    const d = patternBytes(2 * MiB + 1000, 91);
    await img.write(d, MiB + 300);
    d.copy(model, MiB + 300);
    await img.writeZeroes(6 * MiB, MiB);
    model.fill(0, 6 * MiB, 7 * MiB);
    await img.close();
    const r = await commit(f);
    expect(r.bytes).toBeGreaterThan(0);
    // The parent holds the child's view, judged by qemu.
    const c = await run('qemu-img', ['check', '-f', 'vhdx', join(dir, 'base.vhdx')]);
    expect(c.code, c.stdout + c.stderr).toBe(0);
    await writeFile(join(dir, 'model.raw'), model);
    expect((await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', join(dir, 'base.vhdx'), join(dir, 'model.raw')])).code).toBe(0);
    // The child still opens (its locator names the parent's new DataWriteGuid), reads the same, and holds no blocks of its own.
    const top = await open(f, { readOnly: true });
    try {
      expect((await readAll(top)).equals(model)).toBe(true);
      expect((await listExtents(top)).every((e) => e.depth === 1)).toBe(true);
    } finally {
      await top.close();
    }
    // rebase -u onto a copy of the parent under another name: the link follows.
    await copyFile(join(dir, 'base.vhdx'), join(dir, 'base2.vhdx'));
    await rebase(f, join(dir, 'base2.vhdx'), { unsafe: true });
    const moved = await open(f, { readOnly: true });
    try {
      expect(moved.backing?.filename).toBe(join(dir, 'base2.vhdx'));
      expect((await moved.info()).backingFilename).toBe('.\\base2.vhdx');
      expect((await readAll(moved)).equals(model)).toBe(true);
    } finally {
      await moved.close();
    }
  });
});
