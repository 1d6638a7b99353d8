/**
 * qcow2 resize, compact, rebase and commit, judged by qemu-img: `check` clean,
 * `compare` equal to a raw reference (or qemu's own reading), `info` showing the new
 * size and backing file. Images made by vdisk and by qemu-img, with small clusters so
 * the L1 table and refcount blocks grow.
 */
import { copyFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { open } from '../../../src/formats/registry.js';
import { commit } from '../../../src/ops/commit.js';
import { compact } from '../../../src/ops/compact.js';
import { create } from '../../../src/ops/create.js';
import { rebase } from '../../../src/ops/rebase.js';
import { resize } from '../../../src/ops/resize.js';
import { itWith, qemuInfo, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const K = 1024;
const M = 1024 * K;
let dir = '';
beforeAll(async () => {
  dir = await tempDir('vdisk-qcow2-maintain-');
});

/** qemu-img check exits 0 (nothing found). */
async function qemuClean(f: string): Promise<void> {
  const r = await run('qemu-img', ['check', '-f', 'qcow2', f]);
  expect(r.code, `${f}: ${r.stdout}${r.stderr}`).toBe(0);
}

/** Write `pieces` into the image and into the raw reference `ref` (of `size` bytes). */
async function fill(path: string, ref: string, pieces: Array<[number, Buffer]>, size: number): Promise<void> {
  const img = await open(path);
  for (const [off, d] of pieces) await img.write(d, off);
  await img.close();
  const b = Buffer.alloc(size);
  for (const [off, d] of pieces) d.copy(b, off);
  await writeFile(ref, b);
}

async function rawResize(ref: string, size: number): Promise<void> {
  await runOk('qemu-img', ['resize', '-f', 'raw', ...(size < (await stat(ref)).size ? ['--shrink'] : []), ref, String(size)]);
}

describe('qcow2 resize', () => {
  for (const cs of ['512', '65536']) {
    itWith(['qemu-img'], `grows (the L1 table moves) and shrinks a vdisk image with ${cs}-byte clusters`, async () => {
      const p = join(dir, `r${cs}.qcow2`);
      const ref = join(dir, `r${cs}.raw`);
      await (await create(p, { format: 'qcow2', size: '4M', options: { cluster_size: cs } })).close();
      await fill(p, ref, [[0, patternBytes(64 * K, 1)], [3 * M + 512, patternBytes(3 * 512, 2)], [4 * M - 4 * K, patternBytes(4 * K, 3)]], 4 * M);
      await resize(p, '40M');
      expect((await qemuInfo(p, 'qcow2'))['virtual-size']).toBe(40 * M);
      await rawResize(ref, 40 * M);
      await qemuClean(p);
      expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
      await fill(p, join(dir, 'unused.raw'), [[39 * M, patternBytes(8 * K, 4)]], 0);
      const r = await open(ref);
      await r.write(patternBytes(8 * K, 4), 39 * M);
      await r.close();
      expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
      // Shrink to a size that ends inside a cluster, then grow: the cut bytes read as zeros.
      await resize(p, 3 * M + 1024, { shrink: true });
      await rawResize(ref, 3 * M + 1024);
      await qemuClean(p);
      expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
      await resize(p, '8M');
      await rawResize(ref, 8 * M);
      await qemuClean(p);
      expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
    });
  }

  itWith(['qemu-img', 'qemu-io'], 'resizes an image qemu-img made (compressed, zero and data clusters)', async () => {
    const p = join(dir, 'q.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '6M']);
    for (const c of ['write -P 1 0 100k', 'write -z 200k 64k', 'write -c -P 2 1M 64k', 'write -P 3 5M 1M']) await runOk('qemu-io', ['-f', 'qcow2', '-c', c, p]);
    const ref = join(dir, 'q.raw');
    await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', p, ref]);
    await resize(p, '1G');
    await rawResize(ref, 1024 * M);
    await qemuClean(p);
    expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
    await resize(p, 1 * M + 4 * K, { shrink: true });
    await rawResize(ref, 1 * M + 4 * K);
    await qemuClean(p);
    expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
  });
});

describe('qcow2 resize over a larger backing file', () => {
  itWith(['qemu-img', 'qemu-io'], 'growing a child smaller than its base shows zeros in the new part, not the base (as qemu does)', async () => {
    const base = join(dir, 'big-base.qcow2');
    const top = join(dir, 'small-top.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 8M', base]);
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '3M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 9 1M 64k', top]);
    const ref = join(dir, 'small-top.raw');
    await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', top, ref]);
    const theirs = join(dir, 'small-top-qemu.qcow2');
    await copyFile(top, theirs);
    await resize(top, '10M');
    await runOk('qemu-img', ['resize', '-f', 'qcow2', theirs, '10M']);
    await rawResize(ref, 10 * M);
    await qemuClean(top);
    expect(await qemuSame(top, 'qcow2', ref, 'raw')).toBe(true);
    expect(await qemuSame(top, 'qcow2', theirs, 'qcow2')).toBe(true);
  });
});

describe('qcow2 compact', () => {
  itWith(['qemu-img', 'qemu-io'], 'releases zeroed clusters, moves the last ones down and cuts the file', async () => {
    for (const cs of ['512', '65536']) {
      const p = join(dir, `c${cs}.qcow2`);
      await (await create(p, { format: 'qcow2', size: '16M', options: { cluster_size: cs } })).close();
      const img = await open(p);
      await img.write(patternBytes(4 * M, 10), 0);
      await img.write(patternBytes(2 * M, 12), 8 * M);
      await img.write(Buffer.alloc(4 * M), 0);
      await img.write(patternBytes(4 * K, 11), 12 * M);
      await img.write(Buffer.alloc(M), 9 * M);
      await img.close();
      const ref = join(dir, `c${cs}.raw`);
      await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', p, ref]);
      const before = (await stat(p)).size;
      const r = await compact(p);
      expect(r.sizeBefore).toBe(before);
      expect(r.releasedBlocks).toBeGreaterThan(0);
      expect(r.sizeAfter).toBeLessThan(before / 2);
      expect((await stat(p)).size).toBe(r.sizeAfter);
      await qemuClean(p);
      expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
      // Written again after compacting: still clean.
      const again = await open(p);
      await again.write(patternBytes(M, 13), 14 * M);
      await again.close();
      await qemuClean(p);
    }
  });

  itWith(['qemu-img', 'qemu-io'], 'compacts an image qemu-img made, and one with leaked clusters', async () => {
    const p = join(dir, 'cq.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '8M']);
    for (const c of ['write -P 1 0 1M', 'write -P 0 2M 1M', 'write -c -P 2 4M 64k', 'write -P 3 7M 1M', 'write -z 0 512k']) await runOk('qemu-io', ['-f', 'qcow2', '-c', c, p]);
    const ref = join(dir, 'cq.raw');
    await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', p, ref]);
    const r = await compact(p);
    expect(r.sizeAfter).toBeLessThan(r.sizeBefore);
    await qemuClean(p);
    expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
  });
});

describe('qcow2 compact moves metadata', () => {
  itWith(['qemu-img'], 'a refcount table that grew to the end of the file, and its refcount blocks, move down into the holes', async () => {
    // 512-byte clusters: one refcount table cluster covers 8 MiB of file, so 9 MiB of data moves it to the end.
    const p = join(dir, 'meta.qcow2');
    await (await create(p, { format: 'qcow2', size: '16M', options: { cluster_size: '512' } })).close();
    const img = await open(p);
    await img.write(patternBytes(9 * M, 20), 0);
    await img.write(patternBytes(512 * K, 21), 12 * M);
    await img.write(Buffer.alloc(9 * M - 64 * K), 64 * K);
    await img.close();
    const ref = join(dir, 'meta.raw');
    await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', p, ref]);
    const r = await compact(p);
    expect(r.sizeAfter).toBeLessThan(r.sizeBefore / 4);
    await qemuClean(p);
    expect(await qemuSame(p, 'qcow2', ref, 'raw')).toBe(true);
    const again = await open(p);
    await again.write(patternBytes(M, 22), 14 * M);
    await again.close();
    await qemuClean(p);
  });
});

describe('qcow2 chains: rebase and commit', () => {
  itWith(['qemu-img'], 'rebase keeps content and records the new backing file and format; -u changes only the link', async () => {
    const a = join(dir, 'a.qcow2');
    const b = join(dir, 'b.vhd');
    const top = join(dir, 'top-r.qcow2');
    await (await create(a, { format: 'qcow2', size: '4M' })).close();
    await fill(a, join(dir, 'a.raw'), [[0, patternBytes(4 * M, 7)]], 4 * M);
    await (await create(b, { format: 'vhd', size: '4M', options: { subformat: 'dynamic' } })).close();
    await fill(b, join(dir, 'b.raw'), [[M, patternBytes(M, 8)]], 4 * M);
    await (await create(top, { format: 'qcow2', backing: a })).close();
    const t = await open(top);
    await t.write(patternBytes(512, 9), 2 * M);
    const before = Buffer.alloc(4 * M);
    await t.read(before, 0);
    await t.close();
    const expected = join(dir, 'top-r.raw');
    await writeFile(expected, before);
    const r = await rebase(top, b);
    expect(r.copied).toBeGreaterThan(0);
    const info = await qemuInfo(top, 'qcow2');
    expect(info['backing-filename']).toBe('b.vhd');
    expect(info['backing-filename-format']).toBe('vpc');
    await qemuClean(top);
    expect(await qemuSame(top, 'qcow2', expected, 'raw')).toBe(true);
    await rebase(top, a, { unsafe: true });
    const u = await qemuInfo(top, 'qcow2');
    expect(u['backing-filename']).toBe('a.qcow2');
    expect(u['backing-filename-format']).toBe('qcow2');
    await qemuClean(top);
    // Standing alone: content copied in, no backing file left.
    await rebase(top, b);
    await rebase(top, undefined);
    expect((await qemuInfo(top, 'qcow2'))['backing-filename']).toBeUndefined();
    await qemuClean(top);
    expect(await qemuSame(top, 'qcow2', expected, 'raw')).toBe(true);
  });

  itWith(['qemu-img', 'qemu-io'], 'commit merges a qcow2 child into its qcow2 parent (qemu-made chain)', async () => {
    const base = join(dir, 'base-c.qcow2');
    const top = join(dir, 'top-c.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 2M', base]);
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    for (const c of ['write -P 2 1049600 1536', 'write -P 3 6M 1M', 'write -z 0 64k', 'write -c -P 4 3M 64k']) await runOk('qemu-io', ['-f', 'qcow2', '-c', c, top]);
    const ref = join(dir, 'commit.raw');
    await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', top, ref]);
    const keep = join(dir, 'top-keep.qcow2');
    await copyFile(top, keep);
    const res = await commit(top);
    expect(res.bytes).toBeGreaterThan(M);
    await qemuClean(base);
    await qemuClean(top);
    expect(await qemuSame(base, 'qcow2', ref, 'raw')).toBe(true);
    expect(await qemuSame(top, 'qcow2', ref, 'raw')).toBe(true);
    const map = JSON.parse(await runOk('qemu-img', ['map', '--output=json', '-f', 'qcow2', top])) as Array<{ depth: number; data: boolean }>;
    expect(map.filter((m) => m.depth === 0 && m.data)).toEqual([]);
  });
});
