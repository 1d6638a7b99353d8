import { describe, expect, it } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { isVdiskError } from '../../../src/errors.js';
import { expectCode } from '../../helpers/errors.js';
import { VdiImage, checkVdi, vdiDriver } from '../../../src/formats/vdi/index.js';
import {
  VDI_BLOCK_FREE,
  VDI_BLOCK_ZERO,
  VdiField,
  decodeHeader,
  encodeHeader,
  newHeader,
  validateHeader,
} from '../../../src/formats/vdi/layout.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { patternBytes } from '../../helpers/tmp.js';
import { MiB, bytesOf, createIn, memFolder, openIn, putFile, readAll, smallVdi } from './util.js';

function mapEntry(file: Buffer, block: number): number {
  const h = decodeHeader(file, 'x');
  return file.readUInt32LE(h.offBlocks + block * 4);
}

describe('vdi header', () => {
  it('round-trips through encode/decode in both header sizes', () => {
    const h = newHeader({ cbDisk: 5 * MiB + 512, type: 4, uuidLinkage: '12345678-9abc-4def-8123-456789abcdef', uuidParentModify: 'fedcba98-7654-4321-8fed-cba987654321' });
    h.comment = 'hello';
    const b = encodeHeader(h);
    expect(b.length).toBe(0x48 + 400);
    expect(b.readUInt32LE(0x40)).toBe(0xbeda107f);
    expect(b.readUInt32LE(0x44)).toBe(0x00010001);
    // RTUUID stores the first three fields little-endian.
    expect(b.subarray(VdiField.uuidLinkage, VdiField.uuidLinkage + 4).toString('hex')).toBe('78563412');
    expect(decodeHeader(b, 'x')).toEqual(h);
    expect(h.offBlocks).toBe(MiB);
    expect(h.offData).toBe(2 * MiB);
    expect(h.cBlocks).toBe(6);
    const q = { ...h, cbHeader: 384 };
    delete q.lchsGeometry;
    const qb = encodeHeader(q);
    expect(qb.length).toBe(0x48 + 384);
    expect(decodeHeader(Buffer.concat([qb, Buffer.alloc(128)]), 'x')).toEqual(q);
  });

  it('rejects each bad field with an error naming it', () => {
    const base = newHeader({ cbDisk: 4 * MiB, type: 1 });
    const file = 3 * MiB;
    const bad = (f: (h: typeof base) => void, field: string): void => {
      const h = { ...base };
      f(h);
      let err: unknown;
      try {
        validateHeader(h, file, 'img');
      } catch (e) {
        err = e;
      }
      expect(isVdiskError(err, 'E_CORRUPT'), field).toBe(true);
      expect((err as Error).message).toContain(field);
    };
    bad((h) => (h.cbBlock = 0), 'cbBlock');
    bad((h) => (h.cbBlock = 3 * 512), 'cbBlock');
    bad((h) => (h.cbBlockExtra = 3), 'cbBlockExtra');
    bad((h) => (h.cBlocks = 3), 'cBlocks');
    bad((h) => (h.cbDisk = 0), 'cbDisk');
    bad((h) => (h.type = 7), 'u32Type');
    bad((h) => (h.offBlocks = 100), 'offBlocks');
    bad((h) => (h.offBlocks = file), 'offBlocks');
    bad((h) => (h.offData = MiB), 'offData');
    bad((h) => (h.offData = file + 512), 'offData');
    bad((h) => (h.cBlocksAllocated = 5), 'cBlocksAllocated');
    bad((h) => (h.cbHeader = file), 'cbHeader');
    bad((h) => (h.type = 4), 'uuidLinkage');
    expect(() => validateHeader(base, file, 'img')).not.toThrow();
    // More map entries than the size needs is valid (VirtualBox and qemu only ask for enough).
    expect(() => validateHeader({ ...base, cBlocks: 5 }, file, 'img')).not.toThrow();
  });

  it('rejects a bad signature, version and a too small cbHeader', async () => {
    const f = smallVdi({ cbDisk: 64 * 1024, cbBlock: 4096, entries: { 0: 0 } });
    const sig = Buffer.from(f);
    sig.writeUInt32LE(0xbeda1070, 0x40);
    expect(() => decodeHeader(sig, 'x')).toThrow(/u32Signature/);
    expect(await vdiDriver.probe(new MemoryStorage(sig))).toBe(false);
    expect(await vdiDriver.probe(new MemoryStorage(f))).toBe(true);
    const ver = Buffer.from(f);
    ver.writeUInt32LE(0x00010002, 0x44);
    expect(() => decodeHeader(ver, 'x')).toThrow(/u32Version/);
    const small = Buffer.from(f);
    small.writeUInt32LE(383, 0x48);
    expect(() => decodeHeader(small, 'x')).toThrow(/cbHeader/);
  });
});

describe('vdi images', () => {
  it('writes and reads back unaligned data in a dynamic image, across reopen', async () => {
    const folder = memFolder();
    const img = await createIn(folder, 'a.vdi', 5 * MiB + 512);
    expect(img.size).toBe(5 * MiB + 512);
    const model = Buffer.alloc(img.size);
    const writes: Array<[number, number]> = [
      [0, 4096],
      [MiB - 100, 300],
      [3 * MiB + 17, 2 * MiB - 17 + 512 - 1],
      [2 * MiB, MiB],
    ];
    let seed = 1;
    for (const [off, len] of writes) {
      const data = patternBytes(len, seed++);
      await img.write(data, off);
      data.copy(model, off);
    }
    expect((await readAll(img)).equals(model)).toBe(true);
    await img.close();
    const file = await bytesOf(folder, 'a.vdi');
    const h = decodeHeader(file, 'a');
    expect(h.cBlocksAllocated).toBe(6);
    expect(file.length).toBe(h.offData + 6 * MiB);
    const again = await openIn(folder, 'a.vdi', { readOnly: true });
    expect(again.format).toBe('vdi');
    expect((await readAll(again)).equals(model)).toBe(true);
    expect((await checkVdi(folder.files.get('a.vdi')!, folder.at('a.vdi'), {})).problems).toEqual([]);
  });

  it('creates fixed images fully allocated, like VirtualBox', async () => {
    const folder = memFolder();
    const img = await createIn(folder, 'f.vdi', 3 * MiB, { fixed: true });
    await img.write(patternBytes(1000, 3), 1234);
    await img.writeZeroes(MiB, MiB);
    await img.close();
    const file = await bytesOf(folder, 'f.vdi');
    const h = decodeHeader(file, 'f');
    expect(h.type).toBe(2);
    expect(h.cbHeader).toBe(400);
    expect([h.offBlocks, h.offData]).toEqual([MiB, 2 * MiB]);
    expect(h.cBlocksAllocated).toBe(3);
    expect(file.length).toBe(2 * MiB + 3 * MiB);
    expect([0, 1, 2].map((i) => mapEntry(file, i))).toEqual([0, 1, 2]);
    expect(file.subarray(2 * MiB + 1234, 2 * MiB + 2234).equals(patternBytes(1000, 3))).toBe(true);
    // qemu-img's spelling works too.
    const q = await vdiDriver.create(folder.at('s.vdi'), { size: MiB, options: { static: 'on' } });
    await q.close();
    expect(decodeHeader(await bytesOf(folder, 's.vdi'), 's').type).toBe(2);
  });

  it('writeZeroes over whole blocks marks them ZERO without writing data, and keeps data blocks dense', async () => {
    const folder = memFolder();
    const img = await createIn(folder, 'z.vdi', 4 * MiB);
    for (let b = 0; b < 4; b++) await img.write(patternBytes(MiB, 10 + b), b * MiB);
    await img.writeZeroes(MiB, MiB); // block 1: its data block is refilled by the last one
    await img.writeZeroes(2 * MiB + 512, 512); // partial: data stays allocated
    await img.flush();
    let file = await bytesOf(folder, 'z.vdi');
    const h = decodeHeader(file, 'z');
    expect(mapEntry(file, 1)).toBe(VDI_BLOCK_ZERO);
    expect(h.cBlocksAllocated).toBe(3);
    expect(file.length).toBe(h.offData + 3 * MiB);
    expect(mapEntry(file, 3)).toBe(1);
    const expected = Buffer.concat([patternBytes(MiB, 10), Buffer.alloc(MiB), patternBytes(MiB, 12), patternBytes(MiB, 13)]);
    expected.fill(0, 2 * MiB + 512, 2 * MiB + 1024);
    expect((await readAll(img)).equals(expected)).toBe(true);
    expect(await listExtents(img)).toEqual([
      { offset: 0, length: MiB, kind: 'data', depth: 0 },
      { offset: MiB, length: MiB, kind: 'zero', depth: 0 },
      { offset: 2 * MiB, length: 2 * MiB, kind: 'data', depth: 0 },
    ]);
    // A free block zeroed costs nothing.
    const fresh = await createIn(folder, 'y.vdi', 2 * MiB);
    await fresh.writeZeroes(0, 2 * MiB);
    await fresh.close();
    file = await bytesOf(folder, 'y.vdi');
    expect([mapEntry(file, 0), mapEntry(file, 1)]).toEqual([VDI_BLOCK_ZERO, VDI_BLOCK_ZERO]);
    expect(file.length).toBe(decodeHeader(file, 'y').offData);
    await img.discard(0, MiB);
    expect(mapEntry(await bytesOf(folder, 'z.vdi'), 0)).toBe(VDI_BLOCK_FREE);
    await img.close();
    expect((await checkVdi(folder.files.get('z.vdi')!, folder.at('z.vdi'), {})).problems).toEqual([]);
  });

  it('reads other block sizes and cbBlockExtra from the header', async () => {
    const folder = memFolder();
    const file = smallVdi({ cbDisk: 40 * 1024, cbBlock: 8192, entries: { 0: 2, 2: 0, 3: VDI_BLOCK_ZERO, 4: 1 }, tweak: (h) => (h.cbBlockExtra = 512) });
    putFile(folder, 'e.vdi', file);
    const img = await openIn(folder, 'e.vdi');
    const got = await readAll(img);
    const want = Buffer.alloc(40 * 1024);
    want.fill(1, 0, 8192);
    want.fill(3, 16384, 24576);
    want.fill(5, 32768, 40960);
    expect(got.equals(want)).toBe(true);
    // A write into a new block lands after the three in use, behind its extra bytes.
    await img.write(Buffer.alloc(100, 0xab), 8192 + 50);
    await img.close();
    const after = await bytesOf(folder, 'e.vdi');
    const h = decodeHeader(after, 'e');
    expect(mapEntry(after, 1)).toBe(3);
    expect(after.length).toBe(h.offData + 4 * (8192 + 512));
    expect(after.subarray(h.offData + 3 * 8704 + 512 + 50, h.offData + 3 * 8704 + 512 + 150).equals(Buffer.alloc(100, 0xab))).toBe(true);
  });

  it('reports uuids, parent, block size, allocation and header variant in info', async () => {
    const folder = memFolder();
    const base = await createIn(folder, 'base.vdi', 2 * MiB);
    await base.write(Buffer.alloc(512, 1), 0);
    await base.close();
    const parent = await openIn(folder, 'base.vdi', { readOnly: true });
    const child = await createIn(folder, 'child.vdi', 2 * MiB, { parent });
    await child.close();
    const img = await openIn(folder, 'child.vdi', { readOnly: true });
    const i = await img.info();
    const bh = decodeHeader(await bytesOf(folder, 'base.vdi'), 'b');
    expect(i.clusterSize).toBe(MiB);
    expect(i.backingFilename).toBe('base.vdi');
    expect(i.formatSpecific).toMatchObject({
      'image-type': 'diff',
      'header-size': 400,
      'block-size': MiB,
      'allocated-blocks': 0,
      'parent-uuid': bh.uuidCreate,
      'parent-modification-uuid': bh.uuidModify,
    });
    expect(i.warnings).toBeUndefined();
    expect(img.backing?.format).toBe('vdi');
    await img.close();
  });
});

describe('vdi differencing images', () => {
  async function family(): Promise<{ folder: ReturnType<typeof memFolder>; model: Buffer }> {
    const folder = memFolder();
    const base = await createIn(folder, 'base.vdi', 3 * MiB);
    const model = Buffer.alloc(3 * MiB);
    const p = patternBytes(3 * MiB, 7);
    await base.write(p.subarray(0, 2 * MiB), 0);
    p.copy(model, 0, 0, 2 * MiB);
    await base.close();
    const parent = await openIn(folder, 'base.vdi', { readOnly: true });
    const child = await createIn(folder, 'child.vdi', 3 * MiB, { parent });
    const w = patternBytes(1000, 99);
    await child.write(w, MiB + 500); // partial block over parent data
    w.copy(model, MiB + 500);
    await child.write(w, 2 * MiB + 4096); // partial block over a parent hole
    w.copy(model, 2 * MiB + 4096);
    await child.writeZeroes(0, MiB); // ZERO masks the parent
    model.fill(0, 0, MiB);
    await child.close();
    return { folder, model };
  }

  it('finds the parent by uuid in the folder and reads through it', async () => {
    const { folder, model } = await family();
    putFile(folder, 'other.vdi', smallVdi({ cbDisk: 8192, cbBlock: 4096, entries: {} }));
    putFile(folder, 'junk.bin', Buffer.alloc(100, 7));
    const img = await openIn(folder, 'child.vdi');
    expect((await readAll(img)).equals(model)).toBe(true);
    expect(await listExtents(img)).toEqual([
      { offset: 0, length: MiB, kind: 'zero', depth: 0 },
      { offset: MiB, length: 2 * MiB, kind: 'data', depth: 0 },
    ]);
    // Writing a whole block of the child leaves the parent alone.
    await img.write(Buffer.alloc(MiB, 0x42), 0);
    await img.close();
    const base = await openIn(folder, 'base.vdi', { readOnly: true });
    expect((await readAll(base)).subarray(0, MiB).equals(patternBytes(3 * MiB, 7).subarray(0, MiB))).toBe(true);
    await base.close();
  });

  it('shows parent data at depth 1 in extents', async () => {
    const folder = memFolder();
    const base = await createIn(folder, 'base.vdi', 3 * MiB);
    await base.write(Buffer.alloc(MiB, 1), MiB);
    await base.close();
    const child = await createIn(folder, 'c.vdi', 3 * MiB, { parent: await openIn(folder, 'base.vdi', { readOnly: true }) });
    await child.write(Buffer.alloc(512, 2), 2 * MiB);
    expect(await listExtents(child)).toEqual([
      { offset: 0, length: MiB, kind: 'hole', depth: 1 },
      { offset: MiB, length: MiB, kind: 'data', depth: 1 },
      { offset: 2 * MiB, length: MiB, kind: 'data', depth: 0 },
    ]);
    await child.close();
  });

  it('follows a chain of two differencing images by uuid', async () => {
    const { folder, model } = await family();
    const child = await openIn(folder, 'child.vdi', { readOnly: true });
    const grand = await createIn(folder, 'grand.vdi', 3 * MiB, { parent: child });
    await grand.write(Buffer.alloc(512, 0xee), 2 * MiB + 512);
    model.fill(0xee, 2 * MiB + 512, 2 * MiB + 1024);
    await grand.close();
    const img = await openIn(folder, 'grand.vdi', { readOnly: true });
    expect(img.backing?.backing?.filename).toBe('base.vdi');
    expect((await readAll(img)).equals(model)).toBe(true);
    const ext = await listExtents(img, MiB, MiB);
    expect(ext).toEqual([{ offset: MiB, length: MiB, kind: 'data', depth: 1 }]);
    await img.close();
  });

  it('takes an explicit parent, reads undo images like differencing ones', async () => {
    const { folder, model } = await family();
    const file = await bytesOf(folder, 'child.vdi');
    file.writeUInt32LE(3, VdiField.u32Type); // VDI_IMAGE_TYPE_UNDO
    putFile(folder, 'undo.vdi', file);
    folder.files.delete('child.vdi');
    const undo = await openIn(folder, 'undo.vdi', { readOnly: true });
    expect((await readAll(undo)).equals(model)).toBe(true);
    await undo.close();
    // Move the parent away: only an explicit parent helps.
    const parentFile = await bytesOf(folder, 'base.vdi');
    folder.files.delete('base.vdi');
    await expectCode(openIn(folder, 'undo.vdi', { readOnly: true }), 'E_CHAIN', 'uuidLinkage');
    const elsewhere = memFolder();
    putFile(elsewhere, 'p.vdi', parentFile);
    const parent = await openIn(elsewhere, 'p.vdi', { readOnly: true });
    const img = await openIn(folder, 'undo.vdi', { readOnly: true, parent });
    expect((await readAll(img)).equals(model)).toBe(true);
    await img.close();
    await parent.close();
    // Without its parent a differencing image opens for writing (to re-link it), but
    // refuses writes that need the parent's data; whole blocks need none.
    const alone = await openIn(folder, 'undo.vdi', { noBacking: true });
    await alone.discard(MiB, MiB); // block 1 now falls through to the missing parent
    await expectCode(alone.write(Buffer.alloc(512, 1), MiB + 512), 'E_CHAIN', 'partial write');
    await alone.write(Buffer.alloc(512, 1), 512); // block 0 is ZERO: no parent needed
    await expectCode(alone.compact!(), 'E_CHAIN', 'compact');
    await alone.close();
  });

  it('refuses uuid loops and self links', async () => {
    const { folder } = await family();
    // Make the parent a differencing image of its own child: base → child → base.
    const base = await bytesOf(folder, 'base.vdi');
    const child = decodeHeader(await bytesOf(folder, 'child.vdi'), 'c');
    const bh = decodeHeader(base, 'b');
    bh.type = 4;
    bh.uuidLinkage = child.uuidCreate;
    bh.uuidParentModify = child.uuidModify;
    encodeHeader(bh).copy(base, 0);
    putFile(folder, 'base.vdi', base);
    await expectCode(openIn(folder, 'child.vdi', { readOnly: true }), 'E_CHAIN', 'loop');
    bh.uuidLinkage = bh.uuidCreate;
    encodeHeader(bh).copy(base, 0);
    putFile(folder, 'base.vdi', base);
    await expectCode(openIn(folder, 'base.vdi', { readOnly: true }), 'E_CHAIN', 'uuidLinkage');
  });

  it('warns when the parent changed after the child was made', async () => {
    const { folder } = await family();
    const base = await openIn(folder, 'base.vdi');
    await base.write(Buffer.alloc(512, 9), 0); // a new uuidModify, as VirtualBox does
    await base.close();
    const img = await openIn(folder, 'child.vdi', { readOnly: true });
    expect((await img.info()).warnings?.join('\n')).toMatch(/modified after/);
    await img.close();
  });

  it('needs a VDI parent to link to', async () => {
    const folder = memFolder();
    const raw = memFolder();
    putFile(raw, 'r.img', Buffer.alloc(MiB));
    const parent = await openIn(raw, 'r.img', { readOnly: true });
    await expectCode(createIn(folder, 'c.vdi', MiB, { parent }), 'E_UNSUPPORTED', 'VDI');
    await parent.close();
  });
});

describe('vdi check', () => {
  const sample = (): Buffer => smallVdi({ cbDisk: 32 * 1024, cbBlock: 4096, entries: { 0: 0, 1: 1, 5: 2 } });
  const run = async (file: Buffer, repair?: 'leaks') => {
    const s = new MemoryStorage(file, { name: 'c.vdi' });
    const r = await checkVdi(s, memFolder().at('c.vdi'), repair ? { repair } : {});
    return { r, s };
  };

  it('passes a clean image', async () => {
    const { r } = await run(sample());
    expect(r.problems).toEqual([]);
    expect([r.allocatedClusters, r.totalClusters]).toEqual([3, 8]);
  });

  it('finds two entries naming the same block, entries past EOF and past cBlocks', async () => {
    const f = sample();
    const h = decodeHeader(f, 'c');
    f.writeUInt32LE(1, h.offBlocks + 3 * 4);
    f.writeUInt32LE(7, h.offBlocks + 4 * 4);
    f.writeUInt32LE(100, h.offBlocks + 6 * 4);
    const { r } = await run(f);
    const msgs = r.problems.filter((p) => p.severity === 'corrupt').map((p) => p.message);
    expect(msgs.some((m) => /entries 1 and 3 both name data block 1/.test(m))).toBe(true);
    expect(msgs.some((m) => /entry 4 names data block 7 .*past the end/.test(m))).toBe(true);
    expect(msgs.some((m) => /entry 6 names data block 100, past cBlocks/.test(m))).toBe(true);
    // Open refuses what points nowhere; duplicates open read-only only.
    const folder = memFolder();
    putFile(folder, 'bad.vdi', f);
    await expectCode(openIn(folder, 'bad.vdi', { readOnly: true }), 'E_CORRUPT', 'block map entry');
    const dup = sample();
    dup.writeUInt32LE(1, h.offBlocks + 3 * 4);
    putFile(folder, 'dup.vdi', dup);
    await expectCode(openIn(folder, 'dup.vdi'), 'E_CORRUPT', 'both name');
    const ro = await openIn(folder, 'dup.vdi', { readOnly: true });
    expect((await readAll(ro)).subarray(3 * 4096, 4 * 4096).equals(Buffer.alloc(4096, 2))).toBe(true);
  });

  it('finds an allocated-count mismatch and leaks, and repairs them', async () => {
    const f = sample();
    const h = decodeHeader(f, 'c');
    expect(h.cBlocksAllocated).toBe(3);
    f.writeUInt32LE(VDI_BLOCK_FREE, h.offBlocks + 1 * 4); // data block 1 is now a leak in the middle
    const { r, s } = await run(Buffer.concat([f, Buffer.alloc(100, 1)]), 'leaks');
    // A count ahead of the map is a leak too (the interrupted-allocation state).
    expect(r.problems.map((p) => [p.severity, p.repaired])).toEqual([
      ['leak', true],
      ['leak', true],
    ]);
    expect(r.problems[1]!.message).toMatch(/1 data blocks and 100 bytes/);
    const after = await run(s.snapshot());
    expect(after.r.problems).toEqual([]);
    const fixed = s.snapshot();
    expect(fixed.length).toBe(h.offData + 2 * 4096);
    expect(mapEntry(fixed, 5)).toBe(1);
    const folder = memFolder();
    putFile(folder, 'c.vdi', fixed);
    const img = await openIn(folder, 'c.vdi', { readOnly: true });
    const want = Buffer.alloc(32 * 1024);
    want.fill(1, 0, 4096);
    want.fill(6, 5 * 4096, 6 * 4096);
    expect((await readAll(img)).equals(want)).toBe(true);
    // A count behind the map (no VDI writer leaves that) is a warning, repaired too.
    const behind = sample();
    behind.writeUInt32LE(1, VdiField.cBlocksAllocated);
    const b = await run(behind, 'leaks');
    expect(b.r.problems.map((p) => [p.severity, p.repaired])).toEqual([['warning', true]]);
    expect(decodeHeader(b.s.snapshot(), 'b').cBlocksAllocated).toBe(3);
  });

  it('is the driver check', async () => {
    expect(vdiDriver.check).toBeDefined();
    const img = await createIn(memFolder(), 'x.vdi', MiB);
    expect(img).toBeInstanceOf(VdiImage);
    await img.close();
  });
});
