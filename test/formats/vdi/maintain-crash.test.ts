/**
 * Crash safety of resize, compact and commit on VDI: a fault at every write (whole
 * or torn, surviving in order or only up to the last flush) must leave an image that
 * opens with the old or the new size and content, that `check` finds clean or with
 * only leaks (unmapped blocks, a cBlocksAllocated ahead of the map), and that the next writable
 * open settles to clean. qemu-img check judges a sample of the settled images.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { VdiImageType, decodeHeader } from '../../../src/formats/vdi/layout.js';
import { checkVdi } from '../../../src/formats/vdi/index.js';
import { commit } from '../../../src/ops/commit.js';
import { resize } from '../../../src/ops/resize.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { findTool, run } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { MiB, bytesOf, createIn, memFolder, openIn, readAll, smallVdi } from './util.js';

const KiB = 1024;

async function filesOf(loc: MemoryLocation): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) {
    const b = Buffer.alloc(s.size);
    await s.read(b, 0);
    out.set(n, b);
  }
  return out;
}

function folderOf(files: Map<string, Buffer>): MemoryLocation {
  const folder = new MemoryLocation('unused');
  for (const [n, b] of files) folder.files.set(n, new MemoryStorage(Buffer.from(b), { name: n }));
  return folder;
}

async function viewOf(files: Map<string, Buffer>, name: string): Promise<Buffer> {
  const img = await openLocation(folderOf(files).at(name), { readOnly: true });
  try {
    return await readAll(img);
  } finally {
    await img.close();
  }
}

/** check finds nothing but leaks (unmapped blocks, a cBlocksAllocated ahead of the map). */
async function leakOnly(folder: MemoryLocation, name: string): Promise<void> {
  const r = await checkVdi(folder.files.get(name)!, folder.at(name), {});
  expect(r.problems.filter((p) => p.severity !== 'leak')).toEqual([]);
}

const settledSamples: Array<{ name: string; bytes: Buffer }> = [];

interface OpSweep {
  files: Map<string, Buffer>;
  name: string;
  op: (img: DiskImage) => Promise<void>;
  /** Content after the op (the old content is read from `files`). */
  expected: Buffer;
  /** Crash at flushes too (crashSweep's `flushes`). */
  flushes?: boolean;
}

/** Sweep a crash over every write of `op` on image `name`. */
async function opSweep(o: OpSweep): Promise<number> {
  const before = await viewOf(o.files, o.name);
  let n = 0;
  return crashSweep({
    initial: o.files,
    name: o.name,
    flushes: o.flushes,
    workload: async (loc, progress) => {
      const img = await openLocation(loc.at(o.name));
      await o.op(img);
      await img.close();
      progress.flushedSteps = 1;
    },
    verify: async (files, progress) => {
      const folder = folderOf(files);
      const got = await viewOf(files, o.name);
      if (progress.flushedSteps === 1 || got.length !== before.length) {
        expect(got.length, 'size').toBe(o.expected.length);
        expect(got.equals(o.expected), 'new content').toBe(true);
      } else {
        expect(got.equals(before), 'old content').toBe(true);
      }
      await leakOnly(folder, o.name);
      const rw = await openLocation(folder.at(o.name));
      expect((await readAll(rw)).equals(got), 'content after settling').toBe(true);
      await rw.close();
      const r = await checkVdi(folder.files.get(o.name)!, folder.at(o.name), {});
      expect(r.problems).toEqual([]);
      if (n++ % 7 === 0) {
        const s = folder.files.get(o.name)!;
        const b = Buffer.alloc(s.size);
        await s.read(b, 0);
        // qemu reads only standalone images with 1 MiB blocks.
        if (!folder.files.has('base.vdi') && decodeHeader(b, o.name).cbBlock === MiB) settledSamples.push({ name: o.name, bytes: b });
      }
    },
  });
}

/** A qemu-layout image (map at 512, data at 1024) of 16 blocks of 4 KiB, `used` of them allocated (data block i holds virtual block 15-i). */
function qemuLike(used: number): Buffer {
  const entries: Record<number, number> = {};
  for (let i = 0; i < used; i++) entries[15 - i] = i;
  return smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries });
}

function withTail(content: Buffer, size: number): Buffer {
  const b = Buffer.alloc(size);
  content.copy(b, 0, 0, Math.min(size, content.length));
  return b;
}

describe('vdi resize and compact crash safety', async () => {
  const dir = await tempDir('vdisk-vdi-mcrash-');

  it('grow in place: every crash leaves the old or the new size', async () => {
    const f = memFolder();
    const img = await createIn(f, 'g.vdi', 3 * MiB + 512 * KiB);
    await img.write(patternBytes(MiB, 1), 0);
    await img.write(patternBytes(512 * KiB, 2), 3 * MiB);
    await img.close();
    const files = await filesOf(f);
    const writes = await opSweep({ files, name: 'g.vdi', op: (i) => resize(i, 8 * MiB).then(() => undefined), expected: withTail(await viewOf(files, 'g.vdi'), 8 * MiB) });
    expect(writes).toBeGreaterThanOrEqual(3); // tail zeroing, map entries, header
  }, 120_000);

  it('grow over the first data blocks (qemu layout): moves, new map, header', async () => {
    const f = memFolder();
    f.files.set('q.vdi', new MemoryStorage(qemuLike(6), { name: 'q.vdi' }));
    const files = await filesOf(f);
    const writes = await opSweep({ files, name: 'q.vdi', op: (i) => resize(i, 16 * MiB).then(() => undefined), expected: withTail(await viewOf(files, 'q.vdi'), 16 * MiB) });
    expect(writes).toBeGreaterThanOrEqual(10); // 4 blocks moved (data + entry each) for 16 KiB of map, map, header
  }, 120_000);

  it('grow of a full qemu-layout image: cBlocks raised into the slack first, then moves, new map, header', async () => {
    const f = memFolder();
    f.files.set('full.vdi', new MemoryStorage(qemuLike(16), { name: 'full.vdi' }));
    const files = await filesOf(f);
    const writes = await opSweep({ files, name: 'full.vdi', op: (i) => resize(i, 2 * MiB).then(() => undefined), expected: withTail(await viewOf(files, 'full.vdi'), 2 * MiB) });
    expect(writes).toBeGreaterThanOrEqual(6); // slack entries, header, 1 move (data + entry), map, header
  }, 120_000);

  for (const type of ['dynamic', 'fixed'] as const) {
    it(`grow of a full ${type} image whose map fills its space exactly: rewritten into a temp file renamed over it, then grown in place`, async () => {
      // 128 blocks of 4 KiB, all allocated: the map fills its sector (512..1024), every data block number is used.
      const entries: Record<number, number> = {};
      for (let i = 0; i < 128; i++) entries[i] = 127 - i;
      const bytes = smallVdi({ cbDisk: 128 * 4 * KiB, cbBlock: 4 * KiB, entries, tweak: (h) => void (type === 'fixed' && (h.type = VdiImageType.FIXED)) });
      const files = new Map([['tight.vdi', bytes]]);
      const old = await viewOf(files, 'tight.vdi');
      const writes = await opSweep({ files, name: 'tight.vdi', flushes: true, op: (i) => resize(i, 2 * MiB).then(() => undefined), expected: withTail(old, 2 * MiB) });
      console.log(`vdi tight ${type} grow: ${writes} crash points`);
      // temp file: create, head, header, map, data, flush, rename; then the in-place grow.
      expect(writes).toBeGreaterThanOrEqual(9);
    }, 120_000);
  }

  it('grow of a fixed image (new blocks preallocated)', async () => {
    const f = memFolder();
    const img = await createIn(f, 'f.vdi', 2 * MiB, { fixed: true });
    await img.write(patternBytes(2 * MiB, 3), 0);
    await img.close();
    const files = await filesOf(f);
    await opSweep({ files, name: 'f.vdi', op: (i) => resize(i, 4 * MiB).then(() => undefined), expected: withTail(await viewOf(files, 'f.vdi'), 4 * MiB) });
  }, 120_000);

  it('shrink: new size first (cBlocks kept), blocks past the end released, last blocks moved down, cBlocks last', async () => {
    const f = memFolder();
    const entries: Record<number, number> = {};
    [3, 14, 1, 12, 9, 5].forEach((b, slot) => (entries[b] = slot));
    f.files.set('s.vdi', new MemoryStorage(smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries }), { name: 's.vdi' }));
    const files = await filesOf(f);
    const cut = 40 * KiB + 512; // inside block 10
    const writes = await opSweep({
      files,
      name: 's.vdi',
      op: (i) => resize(i, cut, { shrink: true }).then(() => undefined),
      expected: (await viewOf(files, 's.vdi')).subarray(0, cut),
    });
    expect(writes).toBeGreaterThanOrEqual(5);
  }, 120_000);

  it('grow of a differencing child over a bigger parent (the partial last block gets its own zeros)', async () => {
    const f = memFolder();
    const base = await createIn(f, 'base.vdi', 4 * MiB);
    await base.write(patternBytes(4 * MiB, 4), 0);
    await base.close();
    const parent = await openIn(f, 'base.vdi', { readOnly: true });
    const child = await createIn(f, 'child.vdi', MiB + 512 * KiB, { parent });
    await child.write(patternBytes(4096, 5), 0);
    await child.close();
    await parent.close();
    const files = await filesOf(f);
    await opSweep({ files, name: 'child.vdi', op: (i) => resize(i, 3 * MiB).then(() => undefined), expected: withTail(await viewOf(files, 'child.vdi'), 3 * MiB) });
  }, 120_000);

  it('compact of a base image: zero blocks released, the last blocks moved into the holes, file truncated', async () => {
    const f = memFolder();
    const entries: Record<number, number> = {};
    [0, 2, 3, 7, 8, 11, 15].forEach((b, slot) => (entries[b] = slot));
    const zeroBlocks = new Set([2, 7, 8]);
    f.files.set('c.vdi', new MemoryStorage(smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries, fill: (b) => (zeroBlocks.has(b) ? 0 : b + 1) }), { name: 'c.vdi' }));
    const files = await filesOf(f);
    const writes = await opSweep({ files, name: 'c.vdi', op: async (i) => void (await i.compact!()), expected: await viewOf(files, 'c.vdi') });
    expect(writes).toBeGreaterThanOrEqual(8); // 3 entries, 2 moves (data + entry), header, truncate
  }, 120_000);

  it('compact of a differencing image: ZERO over parent data, FREE over parent holes', async () => {
    const f = memFolder();
    const base = await createIn(f, 'base.vdi', 4 * MiB);
    await base.write(patternBytes(MiB, 6), 0);
    await base.close();
    const parent = await openIn(f, 'base.vdi', { readOnly: true });
    const child = await createIn(f, 'child.vdi', 4 * MiB, { parent });
    await child.write(Buffer.alloc(MiB), 0);
    await child.write(Buffer.alloc(MiB), 2 * MiB);
    await child.write(patternBytes(MiB, 7), 3 * MiB);
    await child.close();
    await parent.close();
    const files = await filesOf(f);
    await opSweep({ files, name: 'child.vdi', op: async (i) => void (await i.compact!()), expected: await viewOf(files, 'child.vdi') });
  }, 120_000);

  it('qemu-img check passes on a sample of the settled images', async () => {
    if (!findTool('qemu-img')) return;
    expect(settledSamples.length).toBeGreaterThan(3);
    for (const [i, s] of settledSamples.entries()) {
      const p = join(dir, `s${i}-${s.name}`);
      await writeFile(p, s.bytes);
      const r = await run('qemu-img', ['check', '-f', 'vdi', p]);
      expect(r.code, `${p}: ${r.stdout}${r.stderr}`).toBe(0);
    }
  });
});


/** commit through the real code (commit with an open parent) on a memory folder. */
async function commitIn(loc: MemoryLocation): Promise<void> {
  const c = await openLocation(loc.at('child.vdi'));
  try {
    const p = await openLocation(loc.at('base.vdi'));
    try {
      await commit(c, { parent: p });
    } finally {
      await p.close();
    }
  } finally {
    await c.close();
  }
}

describe('vdi commit crash safety', () => {
  /**
   * commit (open child and parent) on a memory folder: the child's own ranges are written into the
   * parent, the parent is flushed, the child is re-linked to the parent's new
   * uuidModify, then its blocks are discarded. Every crash must leave the child
   * showing its guest content, and every byte of the parent either its old or the
   * child's value. (test/ops/commit-crash.test.ts sweeps VHD and VMDK the same way.)
   */
  it('a fault at every write of a commit leaves the child whole and the parent old-or-new per byte', async () => {
    const f = memFolder();
    const base = await createIn(f, 'base.vdi', 4 * MiB);
    await base.write(patternBytes(2 * MiB, 8), 0);
    await base.close();
    const parent = await openIn(f, 'base.vdi', { readOnly: true });
    const child = await createIn(f, 'child.vdi', 4 * MiB, { parent });
    await child.write(patternBytes(3 * 512, 9), MiB + 1024);
    await child.write(patternBytes(MiB, 10), 3 * MiB);
    await child.writeZeroes(0, MiB);
    await child.close();
    await parent.close();
    const files = await filesOf(f);
    const childView = await viewOf(files, 'child.vdi');
    const parentOld = await viewOf(files, 'base.vdi');
    const writes = await crashSweep({
      initial: files,
      name: 'child.vdi',
      workload: async (loc, progress) => {
        await commitIn(loc);
        progress.flushedSteps = 1;
      },
      verify: async (got, progress) => {
        const folder = folderOf(got);
        expect((await viewOf(got, 'child.vdi')).equals(childView), 'child view').toBe(true);
        const pv = await viewOf(got, 'base.vdi');
        for (let at = 0; at < pv.length; at += 4096) {
          const piece = pv.subarray(at, at + 4096);
          if (piece.equals(parentOld.subarray(at, at + 4096)) || piece.equals(childView.subarray(at, at + 4096))) continue;
          for (let i = at; i < at + piece.length; i++) if (pv[i] !== parentOld[i] && pv[i] !== childView[i]) throw new Error(`parent byte ${i} is ${pv[i]}, neither old nor the child's`);
        }
        if (progress.flushedSteps === 1) expect(pv.equals(childView), 'parent after commit').toBe(true);
        await leakOnly(folder, 'child.vdi');
        await leakOnly(folder, 'base.vdi');
      },
    });
    expect(writes).toBeGreaterThanOrEqual(8);
    // Run to the end: the child then holds no blocks of its own and its file is just header and map.
    const done = folderOf(files);
    await commitIn(done);
    const c = await openIn(done, 'child.vdi', { readOnly: true });
    for await (const e of c.extents()) expect(e.depth).toBeGreaterThan(0);
    expect((await readAll(c)).equals(childView)).toBe(true);
    await c.close();
    const h = decodeHeader(await bytesOf(done, 'child.vdi'), 'child.vdi');
    expect([h.cBlocksAllocated, done.files.get('child.vdi')!.size]).toEqual([0, h.offData]);
    // Linked to the parent as it is now: no "modified after" warning.
    expect(h.uuidParentModify).toBe(decodeHeader(await bytesOf(done, 'base.vdi'), 'base.vdi').uuidModify);
    const again = await openIn(done, 'child.vdi', { readOnly: true });
    expect((await again.info()).warnings).toBeUndefined();
    await again.close();
  }, 120_000);
});
