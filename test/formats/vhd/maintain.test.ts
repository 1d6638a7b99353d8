/**
 * VHD maintenance judged by others: after resize, compact and rebase, qemu-img reads
 * the expected size and content, vhdiinfo parses the headers (including a BAT that
 * grew and a header that moved), vhdimount (libvhdi) reads the same bytes as vdisk,
 * and vdisk's own check finds nothing.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readImageFile as readAll } from '../../helpers/read.js';
import { open } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { readParentRefs, readVhdMeta } from '../../../src/formats/vhd/layout.js';
import { compact } from '../../../src/ops/compact.js';
import { create } from '../../../src/ops/create.js';
import { rebase } from '../../../src/ops/rebase.js';
import { resize } from '../../../src/ops/resize.js';
import { FileLocation } from '../../../src/storage/location.js';
import { FileStorage } from '../../../src/storage/file.js';
import { itWith, qemuInfo, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { editFooter, locatorsPastBat } from './helpers.js';

const dir = await tempDir('vdisk-vhd-maintain-');
const MiB = 1024 * 1024;
/** vhdimount needs FUSE; where /dev/fuse is missing (some containers) its checks are left out, saying so. */
const HAVE_FUSE = existsSync('/dev/fuse');
const FUSE = HAVE_FUSE ? ['vhdimount', 'umount'] : [];

/** vdisk's check of a VHD file: every problem message (none expected). */
async function checkProblems(file: string): Promise<string[]> {
  const storage = await FileStorage.open(file, { readOnly: true });
  const loc = new FileLocation(file);
  try {
    const r = await vhdDriver.check!(storage, loc, { readOnly: true, openParent: (n) => open(n, { readOnly: true }) });
    return r.problems.map((p) => `${p.severity}: ${p.message}`);
  } finally {
    await storage.close();
  }
}

/** The path in a VHD's W2ku (absolute) parent locator. */
async function w2kuPath(file: string): Promise<string | undefined> {
  const storage = await FileStorage.open(file, { readOnly: true });
  try {
    const { refs } = await readParentRefs(storage, (await readVhdMeta(storage)).header!);
    return refs.find((r) => r.platform === 'W2ku')?.ref;
  } finally {
    await storage.close();
  }
}

/** vhdiinfo's output (it exits non-zero on a file it cannot parse). */
async function vhdiinfo(file: string): Promise<string> {
  return runOk('vhdiinfo', [file]);
}

/** The last layer of `file` as libvhdi reads it. */
async function libvhdiBytes(file: string, layer: string): Promise<Buffer> {
  const mnt = join(dir, `mnt-${Date.now()}`);
  await mkdir(mnt, { recursive: true });
  const mounted = await run('vhdimount', [file, mnt]);
  expect(mounted.code, mounted.stderr).toBe(0);
  try {
    return await readFile(join(mnt, layer));
  } finally {
    await run('umount', [mnt]);
  }
}

/** libvhdi must read `expected` as `layer` of `file` (skipped, with a note, without FUSE). */
async function expectLibvhdi(file: string, layer: string, expected: Buffer): Promise<void> {
  if (!HAVE_FUSE) {
    console.warn(`vhdimount check of ${file} left out: no /dev/fuse`);
    return;
  }
  expect((await libvhdiBytes(file, layer)).equals(expected)).toBe(true);
}

/** Everything an outside reader can say about a standalone VHD: size, content, headers. */
async function judge(file: string, expected: Buffer): Promise<void> {
  expect((await qemuInfo(file, 'vpc'))['virtual-size']).toBe(expected.length);
  const ref = `${file}.expected.raw`;
  await writeFile(ref, expected);
  expect(await qemuSame(file, 'vpc', ref, 'raw')).toBe(true);
  expect(await vhdiinfo(file)).toContain(`(${expected.length} bytes)`);
  expect((await readAll(file)).equals(expected)).toBe(true);
  expect(await checkProblems(file)).toEqual([]);
}

describe('VHD resize and compact, as qemu-img, vhdiinfo and vhdimount see them', () => {
  itWith(['qemu-img', 'vhdiinfo', ...FUSE], 'dynamic: grow past the BAT sector, compact, shrink', async () => {
    const f = join(dir, 'dyn.vhd');
    // 64 KiB blocks: 8 MiB needs 128 entries, exactly one BAT sector; 16 MiB needs two.
    await (await create(f, { format: 'vhd', size: 8 * MiB, options: { block_size: '64K' } })).close();
    let expected = Buffer.alloc(8 * MiB);
    const pieces: Array<[number, Buffer]> = [
      [0, patternBytes(200 * 1024, 1)],
      [5 * MiB, patternBytes(64 * 1024, 2)],
      [8 * MiB - 4096, patternBytes(4096, 3)],
    ];
    const img = await open(f);
    for (const [off, data] of pieces) {
      await img.write(data, off);
      data.copy(expected, off);
    }
    await img.close();

    await resize(f, '16M');
    const grown = Buffer.alloc(16 * MiB);
    expected.copy(grown);
    expected = grown;
    await judge(f, expected);
    expect(await vhdiinfo(f)).toContain('Dynamic');
    await expectLibvhdi(f, 'vhdi1', expected);

    // Zero the first blocks (they were moved to the end by the BAT growth) and compact.
    const w = await open(f);
    await w.write(Buffer.alloc(192 * 1024), 0);
    await w.close();
    expected.fill(0, 0, 192 * 1024);
    const before = (await stat(f)).size;
    const r = await compact(f);
    expect(r.releasedBlocks).toBe(3);
    expect(r.sizeAfter).toBe((await stat(f)).size);
    expect(before - r.sizeAfter).toBeGreaterThanOrEqual(3 * (64 * 1024 + 512));
    await judge(f, expected);
    await expectLibvhdi(f, 'vhdi1', expected);

    const s = await stat(f);
    await resize(f, '6M', { shrink: true });
    expect((await stat(f)).size).toBeLessThan(s.size);
    await judge(f, expected.subarray(0, 6 * MiB));
    await expectLibvhdi(f, 'vhdi1', expected.subarray(0, 6 * MiB));
    // Growing again shows zeros where the cut-off data was.
    await resize(f, '8M');
    const regrown = Buffer.alloc(8 * MiB);
    expected.copy(regrown, 0, 0, 6 * MiB);
    await judge(f, regrown);
  });

  itWith(['qemu-img', 'vhdiinfo', ...FUSE], 'fixed: grow and shrink move the footer', async () => {
    const f = join(dir, 'fixed.vhd');
    await (await create(f, { format: 'vhd', size: 4 * MiB, options: { subformat: 'fixed' } })).close();
    const expected = Buffer.alloc(12 * MiB);
    const img = await open(f);
    await img.write(patternBytes(4 * MiB, 4), 0);
    await img.close();
    patternBytes(4 * MiB, 4).copy(expected);
    await resize(f, '12M');
    expect((await stat(f)).size).toBe(12 * MiB + 512);
    await judge(f, expected);
    expect(await vhdiinfo(f)).toContain('Fixed');
    await resize(f, '3M', { shrink: true });
    expect((await stat(f)).size).toBe(3 * MiB + 512);
    await judge(f, expected.subarray(0, 3 * MiB));
    await expectLibvhdi(f, 'vhdi1', expected.subarray(0, 3 * MiB));
  });
});

describe('VHD rebase, as vhdiinfo and qemu-img see it', () => {
  itWith(['qemu-img', 'qemu-io', 'vhdiinfo', ...FUSE], 'a new parent is named in the moved header; removing the parent makes a dynamic disk', async () => {
    const a = join(dir, 'ra.vhd');
    const b = join(dir, 'rb-longer-name.vhd');
    const top = join(dir, 'rtop.vhd');
    for (const [p, seed] of [[a, 5], [b, 6]] as const) {
      const img = await create(p, { format: 'vhd', size: 8 * MiB });
      await img.write(patternBytes(3 * MiB, seed), MiB);
      await img.close();
    }
    const c = await create(top, { format: 'vhd', backing: a });
    await c.write(patternBytes(2 * MiB, 7), 6 * MiB); // one whole block of its own
    await c.close();
    const view = await readAll(top);

    const sizeBefore = (await stat(top)).size;
    await rebase(top, b);
    expect((await readAll(top)).equals(view)).toBe(true);
    // The new header is back at offset 512 and its locators in the old locators' space:
    // the file grew only by the blocks rebase copied in (2 MiB + bitmap each).
    const bytes = await readFile(top);
    expect(bytes.toString('latin1', 512, 520)).toBe('cxsparse');
    expect((bytes.length - sizeBefore) % (2 * MiB + 512)).toBe(0);
    const info = await vhdiinfo(top);
    expect(info).toContain('Differential');
    expect(info).toContain('Parent filename\t\t: rb-longer-name.vhd');
    const parentId = /\tIdentifier\s+: (\S+)/.exec(await vhdiinfo(b))?.[1];
    expect(parentId).toMatch(/^[0-9a-f-]{36}$/);
    expect(/Parent identifier\s+: (\S+)/.exec(info)?.[1]).toBe(parentId);
    expect(await checkProblems(top)).toEqual([]);
    const ours = await open(top, { readOnly: true });
    expect((await ours.info()).backingFilename).toBe('.\\rb-longer-name.vhd');
    await ours.close();
    // Re-linking with the stored W2ru spelling (as commit does) keeps a right absolute W2ku path.
    const again = await open(top);
    const parentB = await open(b, { readOnly: true });
    await again.setBacking!(parentB, '.\\rb-longer-name.vhd');
    await again.close();
    await parentB.close();
    expect(await w2kuPath(top)).toBe(join(dir, 'rb-longer-name.vhd'));
    expect((await readAll(top)).equals(view)).toBe(true);

    await rebase(top, undefined);
    const detached = await vhdiinfo(top);
    expect(detached).toContain('Dynamic');
    expect(detached).not.toContain('Parent filename');
    await judge(top, view);
    await expectLibvhdi(top, 'vhdi1', view);
    // qemu appends new blocks after the BAT or the last block: nothing of ours may lie there.
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5c 2m 64k', top]);
    view.fill(0x5c, 2 * MiB, 2 * MiB + 64 * 1024);
    expect(await checkProblems(top)).toEqual([]);
    expect((await readAll(top)).equals(view)).toBe(true);
  });
});

describe('VHD parent locators stay where qemu does not append', () => {
  itWith(['qemu-io', 'vhdiinfo'], 'a parent path too long for the old locator space: the BAT moves behind the new locators; qemu writes after it', async () => {
    const deep = join(dir, ...Array.from({ length: 3 }, (_, i) => `${String(i).repeat(100)}`));
    await mkdir(deep, { recursive: true });
    const a = join(dir, 'la.vhd');
    const b = join(deep, 'lb.vhd');
    for (const [p, seed] of [[a, 51], [b, 51]] as const) {
      const img = await create(p, { format: 'vhd', size: 8 * MiB });
      await img.write(patternBytes(4 * MiB, seed), 0);
      await img.close();
    }
    const top = join(dir, 'ltop.vhd');
    const c = await create(top, { format: 'vhd', backing: a });
    await c.close();
    const before = await readFile(top);
    const tableBefore = before.readUInt32BE(512 + 20);
    // Same content, so the link alone changes (the W2ku path is over 300 characters: 600+ bytes).
    await rebase(top, b, { unsafe: true });
    const after = await readFile(top);
    expect(after.toString('latin1', 512, 520)).toBe('cxsparse');
    expect(after.readUInt32BE(512 + 20)).toBeGreaterThan(tableBefore);
    expect(locatorsPastBat(after)).toEqual([]);
    expect(await w2kuPath(top)).toBe(b);
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x33 0 64k', top]);
    expect(await checkProblems(top)).toEqual([]);
    const all = await readAll(top);
    expect(all.subarray(0, 64 * 1024).every((x) => x === 0x33)).toBe(true);
    expect(all.subarray(2 * MiB, 4 * MiB).equals(patternBytes(4 * MiB, 51).subarray(2 * MiB))).toBe(true);
    const info = await vhdiinfo(top);
    expect(info).toContain('Parent filename\t\t: lb.vhd');
    const parentId = /\tIdentifier\s+: (\S+)/.exec(await vhdiinfo(b))?.[1];
    expect(/Parent identifier\s+: (\S+)/.exec(info)?.[1]).toBe(parentId);
  });
});

describe('VHD maintenance of images others made, and of chains', () => {
  itWith(['qemu-img', 'qemu-io', 'vhdiinfo'], 'a dynamic VHD made by qemu-img grows past its BAT sector and compacts; qemu reads it', async () => {
    const f = join(dir, 'q.vhd');
    // force_size=on: qemu writes creator "qem2" and an exact current_size.
    await runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'force_size=on', f, '64M']);
    for (const cmd of ['write -P 0x11 0 1m', 'write -P 0x22 2m 2m', 'write -P 0 2m 2m', 'write -P 0x33 63m 1m']) await runOk('qemu-io', ['-f', 'vpc', '-c', cmd, f]);
    // The expected disk as a sparse raw file (no 300 MiB buffers in memory).
    const ref = `${f}.raw`;
    await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', f, ref]);
    await runOk('qemu-img', ['resize', '-q', '-f', 'raw', ref, '300M']);
    const same = async (): Promise<void> => {
      expect((await qemuInfo(f, 'vpc'))['virtual-size']).toBe(300 * MiB);
      expect(await qemuSame(f, 'vpc', ref, 'raw')).toBe(true);
      expect(await vhdiinfo(f)).toContain(`(${300 * MiB} bytes)`);
      expect(await checkProblems(f)).toEqual([]);
    };
    // 64 MiB / 2 MiB = 32 entries; 300 MiB needs 150, more than one BAT sector.
    await resize(f, '300M');
    await same();
    const r = await compact(f);
    expect(r.releasedBlocks).toBe(1);
    expect(r.sizeAfter).toBeLessThan(r.sizeBefore);
    await same();
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x44 250m 4k', f]);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 250m 4k', ref]);
    await same();
    const img = await open(f, { readOnly: true });
    const piece = Buffer.alloc(4096);
    await img.read(piece, 250 * MiB);
    await img.close();
    expect(piece.every((x) => x === 0x44)).toBe(true);
  });

  itWith(['vhdiinfo'], 'a differencing child grows past its BAT sector: the parent link survives the moved locators', async () => {
    const base = join(dir, 'g-base.vhd');
    const child = join(dir, 'g-child.vhd');
    const b = await create(base, { format: 'vhd', size: 8 * MiB, options: { block_size: '64K' } });
    await b.write(patternBytes(8 * MiB, 31), 0);
    await b.close();
    const c = await create(child, { format: 'vhd', backing: base, options: { block_size: '64K' } });
    await c.write(patternBytes(100 * 1024, 32), 3 * MiB);
    await c.close();
    const view = await readAll(child);
    await resize(child, '12M');
    const expected = Buffer.alloc(12 * MiB);
    view.copy(expected);
    expect((await readAll(child)).equals(expected)).toBe(true);
    expect(await checkProblems(child)).toEqual([]);
    const info = await vhdiinfo(child);
    expect(info).toContain('Parent filename\t\t: g-base.vhd');
    expect(info).toContain(`(${12 * MiB} bytes)`);
    // Shrinking below the parent is refused; the child is unchanged.
    const bytes = await readFile(child);
    await expect(resize(child, '4M', { shrink: true })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining("parent's size") });
    expect((await readFile(child)).equals(bytes)).toBe(true);
  });

  it('refusals leave the file unchanged: damaged trailing footer, size without CHS geometry for a "vpc " creator', async () => {
    const f = join(dir, 'refuse.vhd');
    await (await create(f, { format: 'vhd', size: 8 * MiB })).close();
    const w = await open(f);
    await w.write(patternBytes(4096, 40), 0);
    await w.close();
    const good = await readFile(f);
    // The trailing footer's checksum broken: the image opens from the copy at 0, but is not resized or compacted.
    const broken = Buffer.from(good);
    broken[broken.length - 512 + 70]! ^= 0xff;
    await writeFile(f, broken);
    await expect(resize(f, '16M')).rejects.toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('trailing footer') });
    await expect(compact(f)).rejects.toMatchObject({ code: 'E_CORRUPT' });
    expect((await readFile(f)).equals(broken)).toBe(true);

    // A Virtual PC image: readers take the size from CHS geometry, so only sizes with an exact CHS geometry can be set.
    const vpc = editFooter(good, (ft) => {
      ft.creatorApplication = 'vpc ';
    });
    await writeFile(f, vpc);
    // 65537 sectors is prime and over 65535: no cylinders x heads x sectors product is exact.
    await expect(resize(f, 65537 * 512)).rejects.toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringContaining('CHS geometry') });
    expect((await readFile(f)).equals(vpc)).toBe(true);
    // 1040 cylinders x 16 heads x 63 sectors is a CHS size: accepted, and read back by CHS.
    const chs = 1040 * 16 * 63 * 512;
    await resize(f, chs);
    const img = await open(f, { readOnly: true });
    expect(img.size).toBe(chs);
    await img.close();
    expect(await checkProblems(f)).toEqual([]);
  });
});
