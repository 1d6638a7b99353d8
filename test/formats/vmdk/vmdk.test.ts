/** VMDK driver behaviour on images held in memory: layouts, identity, bad input. */
import { deflateRawSync, deflateSync, inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import type { DiskImage } from '../../../src/device/block-device.js';
import { expectCode } from '../../helpers/errors.js';
import { openLocation } from '../../../src/formats/registry.js';
import { formatDescriptor, parseDescriptor } from '../../../src/formats/vmdk/descriptor.js';
import { decodeMarker, decodeSparseHeader, encodeSparseHeader, GRAIN_MARKER_HEADER, SECTOR } from '../../../src/formats/vmdk/layout.js';
import { VmdkImage, vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { patternBytes } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;

async function make(name: string, size: number, options: Record<string, string> = {}, loc = new MemoryLocation(name)): Promise<{ loc: MemoryLocation; dev: DiskImage }> {
  const dev = await vmdkDriver.create(loc, { size, options });
  return { loc, dev };
}

function bytesOf(loc: MemoryLocation, name: string): Buffer {
  return (loc.files.get(name) as MemoryStorage).snapshot();
}

/** A folder holding one descriptor file plus the given extent files. */
function folderWith(descriptor: string, files: Record<string, Buffer> = {}): MemoryLocation {
  const loc = new MemoryLocation('d.vmdk');
  loc.files.set('d.vmdk', new MemoryStorage(Buffer.from(descriptor), { name: 'd.vmdk' }));
  for (const [n, b] of Object.entries(files)) loc.files.set(n, new MemoryStorage(b, { name: n }));
  return loc;
}

const DESC = (createType: string, extents: string, extra = ''): string =>
  `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="${createType}"\n${extra}\n# Extent description\n${extents}\n\n#DDB\nddb.adapterType = "ide"\n`;

describe('header and descriptor encodings', () => {
  it('round-trips a sparse header', () => {
    const h = decodeSparseHeader(encodeSparseHeader({
      version: 3, flags: 0x30001, capacity: 123456, grainSize: 128, descriptorOffset: 1, descriptorSize: 20, numGTEsPerGT: 512,
      rgdOffset: 0, gdOffset: 0, gdAtEnd: true, overHead: 128, uncleanShutdown: false, compressAlgorithm: 1, newlinesIntact: true,
    }), 'x');
    expect(h).toMatchObject({ version: 3, flags: 0x30001, capacity: 123456, gdAtEnd: true, overHead: 128, compressAlgorithm: 1, newlinesIntact: true });
  });

  it('parses every field and keeps unknown ddb keys through a rewrite', () => {
    const text = DESC('twoGbMaxExtentFlat', 'RW 4194304 FLAT "a-f001.vmdk" 0\nRDONLY 100 FLAT "a-f002.vmdk" 7\nNOACCESS 8 ZERO', 'parentFileNameHint="p.vmdk"\nisNativeSnapshot="no"') +
      'ddb.geometry.cylinders = "10"\nddb.virtualHWVersion = "7"\nddb.uuid = "60 00 c2 9a"\nddb.toolsVersion = "1"\nddb.vendorThing = "keep me"\n';
    const d = parseDescriptor(text, 'x');
    expect(d.cid).toBe(0x12345678);
    expect(d.extents).toEqual([
      { access: 'RW', sectors: 4194304, type: 'FLAT', file: 'a-f001.vmdk', offset: 0 },
      { access: 'RDONLY', sectors: 100, type: 'FLAT', file: 'a-f002.vmdk', offset: 7 },
      { access: 'NOACCESS', sectors: 8, type: 'ZERO', offset: 0 },
    ]);
    expect(d.parentFileNameHint).toBe('p.vmdk');
    const again = parseDescriptor(formatDescriptor(d), 'x');
    expect(again.ddb.get('ddb.vendorThing')).toBe('keep me');
    expect(again.headerKeys.get('isNativeSnapshot')).toBe('no');
    expect(again).toEqual(d);
  });

  it('rejects malformed descriptors naming the field', () => {
    expect(() => parseDescriptor('version=1\nCID=zz\ncreateType="monolithicSparse"\nRW 1 SPARSE "a"', 'x')).toThrow(/CID/);
    expect(() => parseDescriptor('version=1\ncreateType="monolithicSparse"\n', 'x')).toThrow(/no extents/);
    expect(() => parseDescriptor('version=1\ncreateType="x"\nRW 1 BOGUS "a"', 'x')).toThrow(/BOGUS/);
    expect(() => parseDescriptor('x'.repeat(1024 * 1024 + 1), 'x')).toThrow(/over/);
  });
});

describe('monolithicSparse', () => {
  it('writes grains, reads them back, reports extents and keeps the redundant GD in step', async () => {
    const { loc, dev } = await make('a.vmdk', 8 * MiB);
    const data = patternBytes(100_000, 3);
    await dev.write(data, 70_000);
    const got = Buffer.alloc(100_000);
    await dev.read(got, 70_000);
    expect(got.equals(data)).toBe(true);
    const ext = await listExtents(dev);
    expect(ext).toEqual([
      { offset: 0, length: 65536, kind: 'hole', depth: 0 },
      { offset: 65536, length: 2 * 65536, kind: 'data', depth: 0 },
      { offset: 3 * 65536, length: 8 * MiB - 3 * 65536, kind: 'hole', depth: 0 },
    ]);
    await dev.close();
    const result = await vmdkDriver.check!(await loc.open('a.vmdk'), loc, { readOnly: true, openParent: () => Promise.reject(new Error('no')) });
    expect(result.problems).toEqual([]);
    expect(result.allocatedClusters).toBe(2);
    // Redundant and primary GT hold the same entries.
    const file = bytesOf(loc, 'a.vmdk');
    const h = decodeSparseHeader(file, 'a');
    const gt = file.readUInt32LE(h.gdOffset * SECTOR);
    const rgt = file.readUInt32LE(h.rgdOffset * SECTOR);
    expect(file.subarray(gt * SECTOR, gt * SECTOR + 16).equals(file.subarray(rgt * SECTOR, rgt * SECTOR + 16))).toBe(true);
    expect(file.readUInt32LE(gt * SECTOR + 4)).toBeGreaterThanOrEqual(h.overHead);
  });

  it('writeZeroes clears allocated grains and leaves holes unallocated', async () => {
    const { dev } = await make('w.vmdk', MiB);
    await dev.write(patternBytes(65536, 1), 65536);
    await dev.writeZeroes(65536 + 1000, 512 * 1024);
    const got = Buffer.alloc(2 * 65536);
    await dev.read(got, 65536);
    expect(got.subarray(0, 1000).equals(patternBytes(1000, 1))).toBe(true);
    expect(got.subarray(1000).every((b) => b === 0)).toBe(true);
    expect((await listExtents(dev)).map((e) => [e.offset, e.kind])).toEqual([[0, 'hole'], [65536, 'data'], [131072, 'hole']]);
    await dev.close();
  });

  it('changes its CID on the first write only, keeping unknown ddb keys', async () => {
    const { loc, dev } = await make('c.vmdk', MiB);
    await dev.close();
    const file = bytesOf(loc, 'c.vmdk');
    const text = file.subarray(SECTOR, 21 * SECTOR).toString('latin1').replace('ddb.toolsVersion', 'ddb.vendor.extra = "x1"\nddb.toolsVersion');
    Buffer.from(text.padEnd(20 * SECTOR, '\0'), 'latin1').copy(file, SECTOR);
    loc.files.set('c.vmdk', new MemoryStorage(file, { name: 'c.vmdk' }));
    const img = (await openLocation(loc)) as VmdkImage;
    const before = img.cid;
    await img.write(Buffer.alloc(512, 1), 0);
    const after = img.cid;
    await img.write(Buffer.alloc(512, 2), 512);
    expect(after).not.toBe(before);
    expect(img.cid).toBe(after);
    await img.close();
    const re = (await openLocation(loc, { readOnly: true })) as VmdkImage;
    expect(re.cid).toBe(after);
    expect(re.descriptor.ddb.get('ddb.vendor.extra')).toBe('x1');
    await re.close();
  });

  it('reads a zeroed-grain GTE (1) as zeros and maps it as zero', async () => {
    const { loc, dev } = await make('z.vmdk', MiB);
    await dev.write(Buffer.alloc(65536, 9), 0);
    await dev.close();
    const file = bytesOf(loc, 'z.vmdk');
    const h = decodeSparseHeader(file, 'z');
    const gt = file.readUInt32LE(h.gdOffset * SECTOR);
    file.writeUInt32LE(1, gt * SECTOR);
    loc.files.set('z.vmdk', new MemoryStorage(file, { name: 'z.vmdk' }));
    const img = await openLocation(loc, { readOnly: true });
    const buf = Buffer.alloc(65536, 0xff);
    await img.read(buf, 0);
    expect(buf.every((b) => b === 0)).toBe(true);
    expect((await listExtents(img))[0]).toMatchObject({ kind: 'zero', length: 65536 });
    await img.close();
  });

  it('check reports entries into metadata, redundant GD disagreement and leaks', async () => {
    const { loc, dev } = await make('k.vmdk', MiB);
    await dev.write(Buffer.alloc(65536, 9), 0);
    await dev.write(Buffer.alloc(65536, 8), 65536);
    await dev.close();
    const file = bytesOf(loc, 'k.vmdk');
    const h = decodeSparseHeader(file, 'k');
    const gt = file.readUInt32LE(h.gdOffset * SECTOR);
    const rgt = file.readUInt32LE(h.rgdOffset * SECTOR);
    file.writeUInt32LE(5, gt * SECTOR); // grain 0 into the descriptor
    file.writeUInt32LE(file.readUInt32LE(rgt * SECTOR + 4) + 128, rgt * SECTOR + 4); // redundant copy disagrees
    const damaged = new MemoryStorage(Buffer.concat([file, Buffer.alloc(65536)]), { name: 'k.vmdk' }); // and a leaked grain
    loc.files.set('k.vmdk', damaged);
    const r = await vmdkDriver.check!(await loc.open('k.vmdk'), loc, { readOnly: true, openParent: () => Promise.reject(new Error('no')) });
    const msgs = r.problems.map((p) => `${p.severity}: ${p.message}`).join('\n');
    expect(msgs).toMatch(/corrupt: .*points into the metadata/);
    expect(msgs).toMatch(/corrupt: .*redundant copy says/);
    expect(msgs).toMatch(/leak: /);
    const img = await openLocation(loc, { readOnly: true });
    await expectCode(img.read(Buffer.alloc(512), 0), 'E_CORRUPT', /grain 0 .*metadata/);
    await img.close();
  });
});

describe('hostile sparse headers', () => {
  async function withHeader(edit: (file: Buffer) => void): Promise<MemoryLocation> {
    const { loc, dev } = await make('h.vmdk', MiB);
    await dev.write(Buffer.alloc(65536, 1), 0);
    await dev.close();
    const file = bytesOf(loc, 'h.vmdk');
    edit(file);
    loc.files.set('h.vmdk', new MemoryStorage(file, { name: 'h.vmdk' }));
    return loc;
  }

  it('names the field: grainSize 0 or huge, numGTEsPerGT 0, gdOffset past EOF, GT past EOF, capacity out of range', async () => {
    await expectCode(openLocation(await withHeader((f) => f.writeBigUInt64LE(0n, 20))), 'E_CORRUPT', /grainSize 0/);
    await expectCode(openLocation(await withHeader((f) => f.writeBigUInt64LE(1n << 40n, 20))), 'E_CORRUPT', /grainSize/);
    await expectCode(openLocation(await withHeader((f) => f.writeUInt32LE(0, 44))), 'E_CORRUPT', /numGTEsPerGT/);
    await expectCode(openLocation(await withHeader((f) => f.writeBigUInt64LE(1n << 30n, 56))), 'E_CORRUPT', /gdOffset/);
    await expectCode(openLocation(await withHeader((f) => f.writeBigUInt64LE(1n << 62n, 12))), 'E_CORRUPT', /capacity/);
    await expectCode(openLocation(await withHeader((f) => f.writeUInt32LE(5, 0x1c))), 'E_CORRUPT', /descriptor/i);
    const loc = await withHeader((f) => {
      const h = decodeSparseHeader(f, 'h');
      f.writeUInt32LE(0x7ffffff0, h.gdOffset * SECTOR); // GT 0 far past EOF
    });
    const img = await openLocation(loc, { readOnly: true });
    await expectCode(img.read(Buffer.alloc(512), 0), 'E_CORRUPT', /grain directory entry 0/);
    await img.close();
  });

  it('the refusal carries the file, the field (the spec\'s name), its offset and the value read', async () => {
    const refusal = async (edit: (file: Buffer) => void): Promise<unknown> =>
      openLocation(await withHeader(edit)).then(
        (img) => img.close().then(() => undefined),
        (e: unknown) => e,
      );
    expect(await refusal((f) => f.writeBigUInt64LE(0n, 20))).toMatchObject({ code: 'E_CORRUPT', file: 'h.vmdk', field: 'grainSize', offset: 20, value: 0 });
    expect(await refusal((f) => f.writeUInt32LE(0, 44))).toMatchObject({ code: 'E_CORRUPT', file: 'h.vmdk', field: 'numGTEsPerGT', offset: 44, value: 0 });
    expect(await refusal((f) => f.writeBigUInt64LE(1n << 50n, 12))).toMatchObject({ code: 'E_CORRUPT', file: 'h.vmdk', field: 'capacity', offset: 12, value: 2 ** 50 });
    expect(await refusal((f) => f.writeBigUInt64LE(1n << 63n, 28))).toMatchObject({ code: 'E_CORRUPT', file: 'h.vmdk', field: 'descriptorOffset', offset: 28, value: String(1n << 63n) });
  });

  it('check -r leaks gives back leaked space at the end of the file', async () => {
    const { loc, dev } = await make('l.vmdk', MiB);
    await dev.write(Buffer.alloc(65536, 1), 0);
    await dev.close();
    const file = bytesOf(loc, 'l.vmdk');
    loc.files.set('l.vmdk', new MemoryStorage(Buffer.concat([file, Buffer.alloc(3 * 65536, 7)]), { name: 'l.vmdk' }));
    const opts = { openParent: () => Promise.reject(new Error('none')) };
    const r = await vmdkDriver.check!(await loc.open('l.vmdk'), loc, { ...opts, readOnly: false, repair: 'leaks' });
    expect(r.problems).toMatchObject([{ severity: 'leak', repaired: true }]);
    expect(loc.files.get('l.vmdk')!.size).toBe(file.length);
    const again = await vmdkDriver.check!(await loc.open('l.vmdk'), loc, { ...opts, readOnly: true });
    expect(again.problems).toEqual([]);
  });
});

describe('descriptors with separate extents', () => {
  it('reads uneven FLAT extents, offsets and ZERO extents end to end', async () => {
    const a = patternBytes(100 * SECTOR, 1);
    const b = patternBytes(50 * SECTOR, 2);
    const loc = folderWith(DESC('twoGbMaxExtentFlat', 'RW 37 FLAT "x-f001.vmdk" 0\nRW 8 ZERO\nRW 40 FLAT "x-f002.vmdk" 10'), { 'x-f001.vmdk': a, 'x-f002.vmdk': b });
    const img = await openLocation(loc, { readOnly: true });
    expect(img.size).toBe(85 * SECTOR);
    const all = Buffer.alloc(img.size);
    await img.read(all, 0);
    expect(all.subarray(0, 37 * SECTOR).equals(a.subarray(0, 37 * SECTOR))).toBe(true);
    expect(all.subarray(37 * SECTOR, 45 * SECTOR).every((x) => x === 0)).toBe(true);
    expect(all.subarray(45 * SECTOR).equals(b.subarray(10 * SECTOR, 50 * SECTOR))).toBe(true);
    expect((await listExtents(img)).map((e) => e.kind)).toEqual(['data', 'zero', 'data']);
    await img.close();
  });

  it('refuses a sparse extent file listed twice', async () => {
    const { loc, dev } = await make('t.vmdk', MiB, { subformat: 'twoGbMaxExtentSparse' });
    await dev.close();
    const text = bytesOf(loc, 't.vmdk').toString('latin1').replace(/(RW 2048 SPARSE "t-s001.vmdk")/, '$1\n$1');
    loc.files.set('t.vmdk', new MemoryStorage(Buffer.from(text), { name: 't.vmdk' }));
    await expectCode(openLocation(loc, { readOnly: true }), 'E_CORRUPT', /listed twice/);
  });

  it('reads createType vmfs with a -flat extent', async () => {
    const flat = patternBytes(64 * SECTOR, 5);
    const loc = folderWith(DESC('vmfs', 'RW 64 VMFS "d-flat.vmdk"'), { 'd-flat.vmdk': flat });
    const img = await openLocation(loc, { readOnly: true });
    const got = Buffer.alloc(64 * SECTOR);
    await img.read(got, 0);
    expect(got.equals(flat)).toBe(true);
    await img.close();
  });

  it('refuses absolute and climbing extent names (CVE-2022-47951 class)', async () => {
    for (const name of ['/etc/passwd', '../secret.img', 'a/../../b', 'C:\\\\Windows\\\\x', '..\\\\up']) {
      const loc = folderWith(DESC('monolithicFlat', `RW 8 FLAT "${name}" 0`));
      await expectCode(openLocation(loc, { readOnly: true }), 'E_PATH', /extent file/);
    }
  });

  it('names unsupported create and extent types', async () => {
    await expectCode(openLocation(folderWith(DESC('vmfsSparse', 'RW 8 VMFSSPARSE "d-delta.vmdk"')), { readOnly: true }), 'E_UNSUPPORTED', /vmfsSparse/);
    await expectCode(openLocation(folderWith(DESC('seSparse', 'RW 8 SESPARSE "d-sesparse.vmdk"')), { readOnly: true }), 'E_UNSUPPORTED', /seSparse/);
    await expectCode(openLocation(folderWith(DESC('fullDevice', 'RW 8 FLAT "/dev/sda" 0')), { readOnly: true }), 'E_UNSUPPORTED', /fullDevice/);
  });

  it('refuses extents longer than a sparse extent\'s capacity and descriptors over 1 MiB', async () => {
    const { loc, dev } = await make('s.vmdk', MiB, { subformat: 'twoGbMaxExtentSparse' });
    await dev.close();
    const text = bytesOf(loc, 's.vmdk').toString('latin1').replace('RW 2048 SPARSE', 'RW 4096 SPARSE');
    loc.files.set('s.vmdk', new MemoryStorage(Buffer.from(text), { name: 's.vmdk' }));
    await expectCode(openLocation(loc, { readOnly: true }), 'E_CORRUPT', /capacity/);
    const big = folderWith(DESC('monolithicFlat', 'RW 8 FLAT "x" 0') + `#${' '.repeat(1024 * 1024)}\n`);
    await expectCode(openLocation(big, { readOnly: true, format: 'vmdk' }), 'E_CORRUPT', /descriptor/);
  });

  it('opens and writes one piece of a split disk by itself', async () => {
    const { loc, dev } = await make('p.vmdk', MiB, { subformat: 'twoGbMaxExtentSparse' });
    await dev.close();
    const piece = await openLocation(loc.at('p-s001.vmdk'));
    expect(piece.size).toBe(MiB);
    await piece.write(Buffer.alloc(512, 4), 4096);
    await piece.close();
    const whole = await openLocation(loc, { readOnly: true });
    const got = Buffer.alloc(512);
    await whole.read(got, 4096);
    expect(got.every((b) => b === 4)).toBe(true);
    await whole.close();
  });

  it('creates twoGbMaxExtent extents of 4192256 sectors', async () => {
    const { loc, dev } = await make('big.vmdk', 4192256 * SECTOR + MiB, { subformat: 'twoGbMaxExtentSparse' });
    await dev.write(Buffer.alloc(4096, 3), 4192256 * SECTOR - 2048);
    await dev.close();
    const d = parseDescriptor(bytesOf(loc, 'big.vmdk').toString('latin1'), 'big');
    expect(d.extents.map((e) => [e.sectors, e.file])).toEqual([
      [4192256, 'big-s001.vmdk'],
      [2048, 'big-s002.vmdk'],
    ]);
    const img = await openLocation(loc, { readOnly: true });
    const got = Buffer.alloc(4096);
    await img.read(got, 4192256 * SECTOR - 2048);
    expect(got.every((b) => b === 3)).toBe(true);
    await img.close();
  });
});

describe('streamOptimized', () => {
  it('is written in order only, and reads back after closing', async () => {
    const { loc, dev } = await make('so.vmdk', 4 * MiB, { subformat: 'streamOptimized' });
    await dev.write(patternBytes(70_000, 1), 1000);
    await expectCode(dev.write(Buffer.alloc(512), 0), 'E_UNSUPPORTED', /in order/);
    await dev.write(patternBytes(512, 2), 3 * MiB);
    await expectCode(dev.read(Buffer.alloc(512), 0), 'E_UNSUPPORTED');
    await dev.close();
    const img = await openLocation(loc, { readOnly: true });
    const got = Buffer.alloc(70_000);
    await img.read(got, 1000);
    expect(got.equals(patternBytes(70_000, 1))).toBe(true);
    const tail = Buffer.alloc(512);
    await img.read(tail, 3 * MiB);
    expect(tail.equals(patternBytes(512, 2))).toBe(true);
    expect((await listExtents(img)).filter((e) => e.kind === 'data').length).toBe(2);
    await img.close();
  });

  it('tolerates raw deflate (no zlib header) on read', async () => {
    const data = Buffer.alloc(65536).fill('vmdk grain ');
    const { loc, dev } = await make('r.vmdk', MiB, { subformat: 'streamOptimized' });
    await dev.write(data, 0);
    await dev.close();
    const file = bytesOf(loc, 'r.vmdk');
    const grainAt = 128 * SECTOR;
    const m = decodeMarker(file.subarray(grainAt), 'r');
    // Swap the zlib stream for a raw deflate stream of the same grain (smaller: no header, no checksum).
    const raw = deflateRawSync(inflateSync(file.subarray(grainAt + GRAIN_MARKER_HEADER, grainAt + GRAIN_MARKER_HEADER + m.size)));
    expect(raw.length).toBeLessThan(m.size);
    file.writeUInt32LE(raw.length, grainAt + 8);
    raw.copy(file, grainAt + GRAIN_MARKER_HEADER);
    loc.files.set('r.vmdk', new MemoryStorage(file, { name: 'r.vmdk' }));
    const img = await openLocation(loc, { readOnly: true });
    const got = Buffer.alloc(65536);
    await img.read(got, 0);
    expect(got.equals(data)).toBe(true);
    await img.close();
  });

  it('stops inflating at one grain and bounds the compressed size', async () => {
    const { loc, dev } = await make('b.vmdk', MiB, { subformat: 'streamOptimized' });
    await dev.write(patternBytes(65536, 4), 0);
    await dev.close();
    const file = bytesOf(loc, 'b.vmdk');
    const grainAt = 128 * SECTOR;
    expect(decodeMarker(file.subarray(grainAt), 'b').val).toBe(0);
    // A grain that inflates to two grains' worth of bytes, in place of the real one.
    const bomb = deflateSync(Buffer.alloc(2 * 65536, 1), { level: 9 });
    const evil = Buffer.from(file);
    evil.writeUInt32LE(bomb.length, grainAt + 8);
    bomb.copy(evil, grainAt + GRAIN_MARKER_HEADER);
    loc.files.set('b.vmdk', new MemoryStorage(evil, { name: 'b.vmdk' }));
    let img = await openLocation(loc, { readOnly: true });
    await expectCode(img.read(Buffer.alloc(512), 0), 'E_CORRUPT', /past one grain/);
    await img.close();
    const huge = Buffer.from(file);
    huge.writeUInt32LE(0x7fffffff, grainAt + 8);
    loc.files.set('b.vmdk', new MemoryStorage(huge, { name: 'b.vmdk' }));
    img = await openLocation(loc, { readOnly: true });
    await expectCode(img.read(Buffer.alloc(512), 0), 'E_CORRUPT', /bound/);
    await img.close();
  });
});

describe('delta links', () => {
  it('checks parentCID against the parent and falls through to it', async () => {
    const loc = new MemoryLocation('p.vmdk');
    const parent = await vmdkDriver.create(loc, { size: MiB, options: {} });
    await parent.write(Buffer.alloc(MiB, 0x11), 0);
    await parent.close();
    const pro = await openLocation(loc.at('p.vmdk') as MemoryLocation, { readOnly: true });
    const child = await vmdkDriver.create(loc.at('c.vmdk'), { size: MiB, options: {}, parent: pro, parentRef: 'p.vmdk' });
    await child.write(Buffer.alloc(1000, 0x22), 100);
    await child.close();
    const c = await openLocation(loc.at('c.vmdk'), { readOnly: true });
    const got = Buffer.alloc(2048);
    await c.read(got, 0);
    expect(got.subarray(0, 100).every((b) => b === 0x11)).toBe(true);
    expect(got.subarray(100, 1100).every((b) => b === 0x22)).toBe(true);
    expect(got.subarray(1100).every((b) => b === 0x11)).toBe(true);
    const ext = await listExtents(c);
    expect(ext[0]).toMatchObject({ kind: 'data', depth: 0, length: 65536 });
    expect(ext[1]).toMatchObject({ kind: 'data', depth: 1 });
    expect((await c.info()).backingFilename).toBe('p.vmdk');
    await c.close();
    // Writing the parent changes its CID: the child no longer matches.
    const p2 = await openLocation(loc.at('p.vmdk'));
    await p2.write(Buffer.alloc(512, 0x33), 0);
    await p2.close();
    await expectCode(openLocation(loc.at('c.vmdk'), { readOnly: true }), 'E_CHAIN', /parentCID/);
  });

  it('confines parentFileNameHint to the folder', async () => {
    const { loc, dev } = await make('h.vmdk', MiB);
    await dev.close();
    const file = bytesOf(loc, 'h.vmdk');
    const text = file.subarray(SECTOR, 21 * SECTOR).toString('latin1').replace('createType="monolithicSparse"', 'createType="monolithicSparse"\nparentFileNameHint="../../etc/p.vmdk"');
    Buffer.from(text.padEnd(20 * SECTOR, '\0').slice(0, 20 * SECTOR), 'latin1').copy(file, SECTOR);
    loc.files.set('h.vmdk', new MemoryStorage(file, { name: 'h.vmdk' }));
    await expectCode(openLocation(loc, { readOnly: true }), 'E_PATH');
  });
});
