/**
 * VDI resize, compact and setBacking: layouts (map grown in place, before the old
 * map, over the first data blocks), fixed images, geometry, differencing images,
 * refusals that leave the bytes unchanged.
 */
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { expectCode } from '../../helpers/errors.js';
import { rawDriver } from '../../../src/formats/raw/index.js';
import { VDI_BLOCK_FREE, VDI_BLOCK_ZERO, VdiImageType, decodeHeader, encodeHeader } from '../../../src/formats/vdi/layout.js';
import { checkVdi } from '../../../src/formats/vdi/index.js';
import { resize } from '../../../src/ops/resize.js';
import type { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { patternBytes } from '../../helpers/tmp.js';
import { MiB, bytesOf, createIn, memFolder, openIn, putFile, readAll, smallVdi } from './util.js';

const KiB = 1024;

/** check must find nothing at all. */
async function expectClean(folder: MemoryLocation, name: string): Promise<void> {
  const r = await checkVdi(folder.files.get(name)!, folder.at(name), {});
  expect(r.problems).toEqual([]);
}

function header(file: Buffer) {
  return decodeHeader(file, 'x');
}

function entry(file: Buffer, block: number): number {
  return file.readUInt32LE(header(file).offBlocks + block * 4);
}

/** A qemu-layout image (map at 512, data right after it) of 16 blocks of 4 KiB with `used` data blocks. */
function qemuLike(used: number): Buffer {
  const entries: Record<number, number> = {};
  for (let i = 0; i < used; i++) entries[15 - i] = i; // virtual block 15-i lives in data block i
  return smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries });
}

async function withImage<T>(folder: MemoryLocation, name: string, fn: (img: DiskImage) => Promise<T>): Promise<T> {
  const img = await openIn(folder, name);
  try {
    return await fn(img);
  } finally {
    await img.close();
  }
}

describe('vdi resize', () => {
  it('grows in place when the map has room, keeping offsets; the new space reads zeros and takes writes', async () => {
    const f = memFolder();
    const img = await createIn(f, 'a.vdi', 4 * MiB);
    const data = patternBytes(3 * MiB, 1);
    await img.write(data, 512 * KiB);
    await img.close();
    const before = header(await bytesOf(f, 'a.vdi'));
    await withImage(f, 'a.vdi', (i) => resize(i, '+60M'));
    const file = await bytesOf(f, 'a.vdi');
    const h = header(file);
    expect([h.cbDisk, h.cBlocks, h.offBlocks, h.offData]).toEqual([64 * MiB, 64, before.offBlocks, before.offData]);
    for (let i = 4; i < 64; i++) expect(entry(file, i)).toBe(VDI_BLOCK_FREE);
    await expectClean(f, 'a.vdi');
    await withImage(f, 'a.vdi', async (i) => {
      const all = await readAll(i);
      expect(all.subarray(512 * KiB, 512 * KiB + 3 * MiB).equals(data)).toBe(true);
      expect(all.subarray(4 * MiB).every((b) => b === 0)).toBe(true);
      await i.write(patternBytes(4096, 2), 63 * MiB);
    });
    await withImage(f, 'a.vdi', async (i) => {
      const b = Buffer.alloc(4096);
      await i.read(b, 63 * MiB);
      expect(b.equals(patternBytes(4096, 2))).toBe(true);
    });
    await expectClean(f, 'a.vdi');
  });

  it('grows past the room of a qemu-layout map by moving the first data blocks to the end, renumbered under a new offData', async () => {
    const f = memFolder();
    putFile(f, 'q.vdi', qemuLike(5));
    const expected = await withImage(f, 'q.vdi', readAll);
    const old = header(await bytesOf(f, 'q.vdi'));
    expect([old.offBlocks, old.offData]).toEqual([512, 1024]);
    await withImage(f, 'q.vdi', (i) => resize(i, 1 * MiB)); // 256 entries: 1 KiB of map
    const file = await bytesOf(f, 'q.vdi');
    const h = header(file);
    expect(h.cBlocks).toBe(256);
    expect(h.offBlocks).toBe(1024); // right after the old map
    expect(h.offData).toBe(1024 + 4 * KiB); // one data block taken over
    expect(h.cBlocksAllocated).toBe(5);
    expect(file.length).toBe(h.offData + 5 * 4 * KiB);
    await expectClean(f, 'q.vdi');
    await withImage(f, 'q.vdi', async (i) => {
      const all = await readAll(i);
      expect(all.subarray(0, 64 * KiB).equals(expected)).toBe(true);
      expect(all.subarray(64 * KiB).every((b) => b === 0)).toBe(true);
      await i.write(patternBytes(8192, 3), 1 * MiB - 8192);
    });
    await expectClean(f, 'q.vdi');
  });

  it('puts the new map before the old one when that space is free, moving no data', async () => {
    const f = memFolder();
    const file = smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries: { 0: 0, 7: 1 }, tweak: (h) => { h.offBlocks = 8 * KiB; h.offData = 8 * KiB + 512; } });
    putFile(f, 'b.vdi', file);
    const expected = await withImage(f, 'b.vdi', readAll);
    await withImage(f, 'b.vdi', (i) => resize(i, 1 * MiB));
    const h = header(await bytesOf(f, 'b.vdi'));
    expect([h.offBlocks, h.offData, h.cBlocks]).toEqual([512, 8 * KiB + 512, 256]);
    await expectClean(f, 'b.vdi');
    const all = await withImage(f, 'b.vdi', readAll);
    expect(all.subarray(0, 64 * KiB).equals(expected)).toBe(true);
  });

  it('grows a full image by first raising cBlocks into the map\'s slack (size unchanged), so the first block has somewhere to go', async () => {
    const f = memFolder();
    putFile(f, 'full.vdi', qemuLike(16));
    const expected = await withImage(f, 'full.vdi', readAll);
    await withImage(f, 'full.vdi', (i) => resize(i, 1 * MiB));
    const file = await bytesOf(f, 'full.vdi');
    const h = header(file);
    // The map (256 entries) starts after the raised one (128 entries from 512) and takes one block.
    expect([h.cBlocks, h.cBlocksAllocated, h.offBlocks, h.offData]).toEqual([256, 16, 1024, 1024 + 4 * KiB]);
    expect(file.length).toBe(h.offData + 16 * 4 * KiB);
    await expectClean(f, 'full.vdi');
    const all = await withImage(f, 'full.vdi', readAll);
    expect(all.subarray(0, 64 * KiB).equals(expected)).toBe(true);
    expect(all.subarray(64 * KiB).every((b) => b === 0)).toBe(true);
  });

  it('moves whole blocks with their cbBlockExtra service bytes, and compacts them', async () => {
    const f = memFolder();
    const entries: Record<number, number> = {};
    [4, 0, 9, 13, 2].forEach((b, slot) => (entries[b] = slot));
    const file = smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries, fill: (b) => (b === 9 ? 0 : 0x40 + b), tweak: (h) => (h.cbBlockExtra = 512) });
    putFile(f, 'x.vdi', file);
    const expected = await withImage(f, 'x.vdi', readAll);
    await withImage(f, 'x.vdi', (i) => resize(i, 2 * MiB));
    let h = header(await bytesOf(f, 'x.vdi'));
    expect([h.cBlocks, h.cbBlockExtra, h.offData]).toEqual([512, 512, 1024 + (4 * KiB + 512)]); // 2 KiB of map from 1024: one 4.5 KiB block taken over
    await expectClean(f, 'x.vdi');
    let all = await withImage(f, 'x.vdi', readAll);
    expect(all.subarray(0, 64 * KiB).equals(expected)).toBe(true);
    const r = await withImage(f, 'x.vdi', (i) => i.compact!());
    expect(r.releasedBlocks).toBe(1); // block 9 holds zeros
    const after = await bytesOf(f, 'x.vdi');
    h = header(after);
    expect(after.length).toBe(h.offData + 4 * (4 * KiB + 512));
    all = await withImage(f, 'x.vdi', readAll);
    expect(all.subarray(0, 64 * KiB).equals(expected)).toBe(true);
    expect(all.subarray(64 * KiB).every((b) => b === 0)).toBe(true);
    await expectClean(f, 'x.vdi');
  });

  it('grows a full image whose map fills its space exactly by rewriting it with room for the map (temp file renamed over it)', async () => {
    const f = memFolder();
    const entries: Record<number, number> = {};
    for (let i = 0; i < 128; i++) entries[i] = 127 - i;
    putFile(f, 'tight.vdi', smallVdi({ cbDisk: 128 * 4 * KiB, cbBlock: 4 * KiB, entries }));
    const before = await bytesOf(f, 'tight.vdi');
    expect(header(before).offData).toBe(1024);
    const content = await withImage(f, 'tight.vdi', readAll);
    const calls: Array<[number, number]> = [];
    await withImage(f, 'tight.vdi', (i) => resize(i, 2 * MiB, { onProgress: (d, t) => calls.push([d, t]) }));
    const file = await bytesOf(f, 'tight.vdi');
    const h = header(file);
    // The map stays at 512 with room up to the next MiB; data blocks keep their numbers.
    expect([h.cbDisk, h.cBlocks, h.cBlocksAllocated, h.offBlocks, h.offData]).toEqual([2 * MiB, 512, 128, 512, MiB]);
    for (let i = 0; i < 128; i++) expect(entry(file, i)).toBe(127 - i);
    for (let i = 128; i < 512; i++) expect(entry(file, i)).toBe(VDI_BLOCK_FREE);
    expect(file.length).toBe(MiB + 128 * 4 * KiB);
    expect([...f.files.keys()]).toEqual(['tight.vdi']);
    // Progress: the data area copied, then done.
    expect(calls.at(-1)).toEqual([128 * 4 * KiB, 128 * 4 * KiB]);
    await expectClean(f, 'tight.vdi');
    const all = await withImage(f, 'tight.vdi', readAll);
    expect(all.subarray(0, 512 * KiB).equals(content)).toBe(true);
    expect(all.subarray(512 * KiB).every((b) => b === 0)).toBe(true);
    // The next grow has room in place: no rewrite.
    await withImage(f, 'tight.vdi', (i) => resize(i, 4 * MiB));
    expect(header(await bytesOf(f, 'tight.vdi')).offData).toBe(MiB);
    await expectClean(f, 'tight.vdi');
  });

  it('an image left with more cBlocks than its size needs (an interrupted grow) reads, shrinks back and grows', async () => {
    const f = memFolder();
    const file = smallVdi({ cbDisk: 40 * KiB, cbBlock: 4 * KiB, entries: { 0: 0, 9: 1, 12: 2 }, tweak: (h) => { h.cBlocks = 16; } }); // block 12 is past the size: invisible, dropped on grow
    putFile(f, 'over.vdi', file);
    const expected = await withImage(f, 'over.vdi', readAll);
    expect(expected.length).toBe(40 * KiB);
    await expectClean(f, 'over.vdi');
    await withImage(f, 'over.vdi', (i) => resize(i, 80 * KiB));
    const h = header(await bytesOf(f, 'over.vdi'));
    expect([h.cbDisk, h.cBlocks]).toEqual([80 * KiB, 20]);
    const all = await withImage(f, 'over.vdi', readAll);
    expect(all.subarray(0, 40 * KiB).equals(expected)).toBe(true);
    expect(all.subarray(40 * KiB).every((b) => b === 0)).toBe(true);
    await expectClean(f, 'over.vdi');
  });

  it('shrinks: blocks past the end are released, data blocks stay dense, the file is shorter; a later grow reads zeros past the cut', async () => {
    const f = memFolder();
    const img = await createIn(f, 's.vdi', 8 * MiB);
    const data = patternBytes(8 * MiB, 4);
    await img.write(data, 0);
    await img.close();
    const cut = 3 * MiB + 4096; // inside block 3
    await withImage(f, 's.vdi', (i) => expectCode(resize(i, cut), 'E_USAGE', '--shrink'));
    await withImage(f, 's.vdi', (i) => resize(i, cut, { shrink: true }));
    const file = await bytesOf(f, 's.vdi');
    const h = header(file);
    expect([h.cbDisk, h.cBlocks, h.cBlocksAllocated]).toEqual([cut, 4, 4]);
    expect(file.length).toBe(h.offData + 4 * MiB);
    await expectClean(f, 's.vdi');
    expect((await withImage(f, 's.vdi', readAll)).equals(data.subarray(0, cut))).toBe(true);
    await withImage(f, 's.vdi', (i) => resize(i, 8 * MiB));
    const all = await withImage(f, 's.vdi', readAll);
    expect(all.subarray(0, cut).equals(data.subarray(0, cut))).toBe(true);
    expect(all.subarray(cut).every((b) => b === 0)).toBe(true);
    await expectClean(f, 's.vdi');
  });

  it('grows and shrinks a fixed image: blocks preallocated or cut, geometry follows', async () => {
    const f = memFolder();
    const img = await createIn(f, 'f.vdi', 4 * MiB, { fixed: true });
    await img.write(patternBytes(4 * MiB, 5), 0);
    await img.close();
    // Give it a geometry as VirtualBox would have set it.
    const raw = await bytesOf(f, 'f.vdi');
    const h0 = header(raw);
    h0.lchsGeometry = { cylinders: 8, heads: 16, sectors: 63, sectorSize: 512 };
    h0.legacyGeometry = { cylinders: 8, heads: 16, sectors: 63, sectorSize: 512 };
    encodeHeader(h0, raw).copy(raw, 0);
    putFile(f, 'f.vdi', raw);
    await withImage(f, 'f.vdi', (i) => resize(i, 64 * MiB));
    let file = await bytesOf(f, 'f.vdi');
    let h = header(file);
    expect(h.type).toBe(VdiImageType.FIXED);
    expect([h.cBlocks, h.cBlocksAllocated, file.length]).toEqual([64, 64, h.offData + 64 * MiB]);
    expect(h.lchsGeometry).toEqual({ cylinders: 130, heads: 16, sectors: 63, sectorSize: 512 });
    expect(h.legacyGeometry.cylinders).toBe(130);
    for (let i = 0; i < 64; i++) expect(entry(file, i)).toBe(i);
    await expectClean(f, 'f.vdi');
    let all = await withImage(f, 'f.vdi', readAll);
    expect(all.subarray(0, 4 * MiB).equals(patternBytes(4 * MiB, 5))).toBe(true);
    expect(all.subarray(4 * MiB).every((b) => b === 0)).toBe(true);
    await withImage(f, 'f.vdi', (i) => resize(i, 2 * MiB, { shrink: true }));
    file = await bytesOf(f, 'f.vdi');
    h = header(file);
    expect([h.cBlocks, h.cBlocksAllocated, file.length, h.lchsGeometry?.cylinders]).toEqual([2, 2, h.offData + 2 * MiB, 4]);
    all = await withImage(f, 'f.vdi', readAll);
    expect(all.equals(patternBytes(4 * MiB, 5).subarray(0, 2 * MiB))).toBe(true);
    await expectClean(f, 'f.vdi');
  });

  it('a differencing child grown over a bigger parent reads zeros in the new space, not the parent', async () => {
    const f = memFolder();
    const base = await createIn(f, 'base.vdi', 4 * MiB);
    await base.write(patternBytes(4 * MiB, 6), 0);
    await base.close();
    const parent = await openIn(f, 'base.vdi', { readOnly: true });
    const child = await createIn(f, 'child.vdi', 2 * MiB + 512 * KiB, { parent });
    await child.close();
    const before = await withImage(f, 'child.vdi', readAll);
    expect(before.equals(patternBytes(4 * MiB, 6).subarray(0, 2 * MiB + 512 * KiB))).toBe(true);
    await withImage(f, 'child.vdi', (i) => resize(i, 4 * MiB));
    const after = await withImage(f, 'child.vdi', readAll);
    expect(after.subarray(0, before.length).equals(before)).toBe(true);
    expect(after.subarray(before.length).every((b) => b === 0)).toBe(true);
    const file = await bytesOf(f, 'child.vdi');
    expect(entry(file, 3)).toBe(VDI_BLOCK_ZERO);
    await expectClean(f, 'child.vdi');
  });
});

describe('vdi resize refusals leave the bytes unchanged', () => {
  it('too many blocks, below a parent, read-only', async () => {
    const f = memFolder();
    const base = await createIn(f, 'base.vdi', 4 * MiB);
    await base.close();
    const parent = await openIn(f, 'base.vdi', { readOnly: true });
    await (await createIn(f, 'child.vdi', 4 * MiB, { parent })).close();
    await parent.close();
    const before = await bytesOf(f, 'child.vdi');
    await withImage(f, 'child.vdi', (i) => expectCode(resize(i, '40T'), 'E_UNSUPPORTED', 'cBlocks'));
    await withImage(f, 'child.vdi', (i) => expectCode(resize(i, '2M', { shrink: true }), 'E_USAGE', "parent's size"));
    const ro = await openIn(f, 'child.vdi', { readOnly: true });
    await expectCode(ro.resize!(8 * MiB), 'E_READONLY');
    await expectCode(ro.compact!(), 'E_READONLY');
    await ro.close();
    expect((await bytesOf(f, 'child.vdi')).equals(before)).toBe(true);
  });
});

describe('vdi compact', () => {
  it('releases zero blocks (FREE), reclaims blocks no entry names and shortens the file', async () => {
    const f = memFolder();
    // Data blocks 0..3; block 1 (virtual 2) all zeros; data block 4 leaked.
    const file = smallVdi({ cbDisk: 64 * KiB, cbBlock: 4 * KiB, entries: { 1: 0, 2: 1, 5: 2, 9: 3 }, fill: (b) => (b === 2 ? 0 : b + 1) });
    const leaked = Buffer.concat([file, Buffer.alloc(4 * KiB, 0xee)]);
    putFile(f, 'c.vdi', leaked);
    const ro = await openIn(f, 'c.vdi', { readOnly: true });
    const expected = await readAll(ro);
    await ro.close();
    const r = await withImage(f, 'c.vdi', async (i) => {
      // The writable open already gave the leaked block back (the settle step compact shares).
      expect((await bytesOf(f, 'c.vdi')).length).toBe(file.length);
      return i.compact!();
    });
    expect(r).toEqual({ releasedBlocks: 1, sizeBefore: file.length, sizeAfter: header(leaked).offData + 3 * 4 * KiB });
    const after = await bytesOf(f, 'c.vdi');
    expect(after.length).toBe(r.sizeAfter);
    expect(entry(after, 2)).toBe(VDI_BLOCK_FREE);
    expect(header(after).cBlocksAllocated).toBe(3);
    expect((await withImage(f, 'c.vdi', readAll)).equals(expected)).toBe(true);
    await expectClean(f, 'c.vdi');
  });

  it('in a differencing image a zero block over parent data becomes ZERO, one over a parent hole FREE; uuidModify is kept', async () => {
    const f = memFolder();
    const base = await createIn(f, 'base.vdi', 4 * MiB);
    await base.write(patternBytes(MiB, 7), 0); // parent has data in block 0 only
    await base.close();
    const parent = await openIn(f, 'base.vdi', { readOnly: true });
    const child = await createIn(f, 'child.vdi', 4 * MiB, { parent });
    await child.write(Buffer.alloc(MiB), 0); // zeros over parent data
    await child.write(Buffer.alloc(MiB), 2 * MiB); // zeros over a parent hole
    await child.write(patternBytes(MiB, 8), 3 * MiB);
    await child.close();
    const expected = await withImage(f, 'child.vdi', readAll);
    const modify = header(await bytesOf(f, 'child.vdi')).uuidModify;
    const r = await withImage(f, 'child.vdi', (i) => i.compact!());
    expect(r.releasedBlocks).toBe(2);
    const file = await bytesOf(f, 'child.vdi');
    expect([entry(file, 0), entry(file, 2), entry(file, 3)]).toEqual([VDI_BLOCK_ZERO, VDI_BLOCK_FREE, 0]);
    expect(header(file).uuidModify).toBe(modify);
    expect(file.length).toBe(header(file).offData + MiB);
    expect((await withImage(f, 'child.vdi', readAll)).equals(expected)).toBe(true);
    await expectClean(f, 'child.vdi');
  });

  it('refuses a fixed image', async () => {
    const f = memFolder();
    await (await createIn(f, 'fx.vdi', MiB, { fixed: true })).close();
    await withImage(f, 'fx.vdi', (i) => expectCode(i.compact!(), 'E_UNSUPPORTED', 'fixed'));
  });
});

describe('vdi setBacking', () => {
  it('re-links a child by uuid, and undefined makes it a normal standalone image', async () => {
    const f = memFolder();
    const a = await createIn(f, 'a.vdi', 2 * MiB);
    await a.write(patternBytes(2 * MiB, 9), 0);
    await a.close();
    const b = await createIn(f, 'b.vdi', 2 * MiB);
    await b.write(patternBytes(MiB, 10), MiB);
    await b.close();
    const pa = await openIn(f, 'a.vdi', { readOnly: true });
    const child = await createIn(f, 'c.vdi', 2 * MiB, { parent: pa });
    await child.write(patternBytes(512, 11), 0);
    await child.close();
    const pb = await openIn(f, 'b.vdi', { readOnly: true });
    await withImage(f, 'c.vdi', (i) => i.setBacking!(pb, 'b.vdi'));
    const hb = header(await bytesOf(f, 'b.vdi'));
    let h = header(await bytesOf(f, 'c.vdi'));
    expect([h.type, h.uuidLinkage, h.uuidParentModify]).toEqual([VdiImageType.DIFF, hb.uuidCreate, hb.uuidModify]);
    await withImage(f, 'c.vdi', async (i) => {
      expect(i.backing?.filename).toBe('b.vdi');
      const all = await readAll(i);
      expect(all.subarray(0, 512).equals(patternBytes(512, 11))).toBe(true);
      expect(all.subarray(MiB).equals(patternBytes(MiB, 10))).toBe(true);
    });
    // Refusals: a non-VDI parent, a parent elsewhere, a loop.
    const rawImg = await rawDriver.open(new MemoryStorage(Buffer.alloc(MiB), { name: 'r.img' }), f.at('r.img'), { readOnly: true, openParent: () => Promise.reject(new Error('none')) });
    const before = await bytesOf(f, 'c.vdi');
    await withImage(f, 'c.vdi', (i) => expectCode(i.setBacking!(rawImg, 'r.img'), 'E_UNSUPPORTED', 'raw'));
    await (await createIn(f, 'sub/d.vdi', 2 * MiB)).close();
    const elsewhere = await openIn(f, 'sub/d.vdi', { readOnly: true });
    await withImage(f, 'c.vdi', (i) => expectCode(i.setBacking!(elsewhere, 'sub/d.vdi'), 'E_UNSUPPORTED', 'another folder'));
    await elsewhere.close();
    const self = await openIn(f, 'c.vdi', { readOnly: true });
    await withImage(f, 'b.vdi', (i) => expectCode(i.setBacking!(self, 'c.vdi'), 'E_CHAIN', 'loop'));
    await self.close();
    expect((await bytesOf(f, 'c.vdi')).equals(before)).toBe(true);
    await withImage(f, 'c.vdi', (i) => i.setBacking!(undefined, undefined));
    h = header(await bytesOf(f, 'c.vdi'));
    expect([h.type, h.uuidLinkage, h.uuidParentModify]).toEqual([VdiImageType.NORMAL, '00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000']);
    await withImage(f, 'c.vdi', async (i) => {
      expect(i.backing).toBeUndefined();
      const all = await readAll(i);
      expect(all.subarray(0, 512).equals(patternBytes(512, 11))).toBe(true);
      // Block 0 was allocated over a, so it holds a's bytes after the write; the rest is gone with the parent.
      expect(all.subarray(512, MiB).equals(patternBytes(2 * MiB, 9).subarray(512, MiB))).toBe(true);
      expect(all.subarray(MiB).every((x) => x === 0)).toBe(true);
    });
    await pa.close();
    await pb.close();
    await rawImg.close();
  });
});
