/**
 * Differencing VHDs: per-sector fall-through, extents through the chain, parent
 * locators (new and legacy), unique-id check, confinement, loops and depth.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import type { DiskImage } from '../../../src/device/block-device.js';
import { MAX_CHAIN_DEPTH, open, openLocation } from '../../../src/formats/registry.js';
import { VhdImage, vhdDriver } from '../../../src/formats/vhd/index.js';
import { PLATFORM, decodeDynamicHeader, encodeDynamicHeader } from '../../../src/formats/vhd/layout.js';
import { create } from '../../../src/ops/create.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const dir = await tempDir('vdisk-vhd-chain-');
const MiB = 1024 * 1024;

async function makeBase(file: string, size = 8 * MiB, fill = 4 * MiB): Promise<Buffer> {
  const data = patternBytes(fill, 7);
  const img = await create(file, { format: 'vhd', size });
  await img.write(data, 0);
  await img.close();
  return data;
}

async function read(img: DiskImage, off: number, len: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  await img.read(b, off);
  return b;
}

/** Rewrite the dynamic header of `file` (at offset 512) through `fn`. */
async function editHeader(file: string, fn: (h: ReturnType<typeof decodeDynamicHeader>['header'], bytes: Buffer) => void): Promise<void> {
  const bytes = await readFile(file);
  const { header } = decodeDynamicHeader(bytes.subarray(512, 1536));
  fn(header, bytes);
  encodeDynamicHeader(header).copy(bytes, 512);
  await writeFile(file, bytes);
}

describe('differencing VHD', () => {
  it('falls through to the parent per sector; a write sets only its own sectors', async () => {
    const base = join(dir, 'fall-base.vhd');
    const child = join(dir, 'fall-child.vhd');
    const parentData = await makeBase(base);
    const c = await create(child, { format: 'vhd', backing: base });
    const one = Buffer.alloc(512, 0xcc);
    await c.write(one, 2 * MiB + 1024); // allocates block 1 in the child
    const odd = Buffer.alloc(100, 0xdd);
    await c.write(odd, 3 * MiB + 3000); // unaligned: the rest of its sector comes from the parent
    await c.close();

    const img = await open(child, { readOnly: true });
    const got = await read(img, 2 * MiB, 4096);
    const want = Buffer.from(parentData.subarray(2 * MiB, 2 * MiB + 4096));
    one.copy(want, 1024);
    expect(got.equals(want)).toBe(true);
    const got2 = await read(img, 3 * MiB + 2560, 1024);
    const want2 = Buffer.from(parentData.subarray(3 * MiB + 2560, 3 * MiB + 3584));
    odd.copy(want2, 440);
    expect(got2.equals(want2)).toBe(true);
    // Bitmap: exactly sector 2 and the two sectors bytes 3000..3100 of the second MiB touch are set.
    const vhd = img as VhdImage;
    expect(vhd.allocatedBlocks()).toBe(1);
    const ext = await listExtents(img, 2 * MiB, 2 * MiB);
    expect(ext).toEqual([
      { offset: 2 * MiB, length: 1024, kind: 'data', depth: 1 },
      { offset: 2 * MiB + 1024, length: 512, kind: 'data', depth: 0 },
      { offset: 2 * MiB + 1536, length: MiB + 2560 - 1536, kind: 'data', depth: 1 },
      { offset: 3 * MiB + 2560, length: 1024, kind: 'data', depth: 0 },
      { offset: 3 * MiB + 3584, length: MiB - 3584, kind: 'data', depth: 1 },
    ]);
    // Past the parent's data the parent's holes show through one level down.
    expect(await listExtents(img, 4 * MiB, 4 * MiB)).toEqual([{ offset: 4 * MiB, length: 4 * MiB, kind: 'hole', depth: 1 }]);
    await img.close();
    // The parent was only read.
    const b = await open(base, { readOnly: true });
    expect((await read(b, 2 * MiB, 4096)).equals(parentData.subarray(2 * MiB, 2 * MiB + 4096))).toBe(true);
    await b.close();
  });

  it('a parent with a different unique id is refused (E_CHAIN)', async () => {
    const base = join(dir, 'uuid-base.vhd');
    const child = join(dir, 'uuid-child.vhd');
    await makeBase(base);
    const c = await create(child, { format: 'vhd', backing: base });
    await c.close();
    await makeBase(join(dir, 'uuid-other.vhd'));
    await rename(join(dir, 'uuid-other.vhd'), base);
    await expect(open(child, { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN', message: expect.stringContaining('parent_unique_id') });
    const r = await vhdDriver.check!(...(await checkArgs(child)));
    expect(r.problems.some((p) => p.severity === 'corrupt' && p.message.includes('parent_unique_id'))).toBe(true);
  });

  it('a parent outside the child\'s folder is refused unless that folder is allowed', async () => {
    await mkdir(join(dir, 'a'), { recursive: true });
    await mkdir(join(dir, 'b'), { recursive: true });
    const base = join(dir, 'a', 'base.vhd');
    const child = join(dir, 'b', 'child.vhd');
    await makeBase(base);
    const c = await create(child, { format: 'vhd', backing: base, allowPaths: [join(dir, 'a')] });
    await c.close();
    await expect(open(child, { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH' });
    const ok = await open(child, { readOnly: true, allowPaths: [join(dir, 'a')] });
    expect(ok.backing?.filename).toBe(base);
    const info = await ok.info();
    expect(info.backingFilename).toBe('.\\..\\a\\base.vhd');
    await ok.close();
  });

  it('reads legacy Wi2r, Wi2k, MacX and Mac alias locators', async () => {
    const base = join(dir, 'legacy-base.vhd');
    const parentData = await makeBase(base);
    const cases: Array<[number, (abs: string) => Buffer]> = [
      [PLATFORM.Wi2r, () => Buffer.from('.\\legacy-base.vhd', 'latin1')],
      [PLATFORM.Wi2k, (abs) => Buffer.from(`${abs}\0`, 'latin1')],
      [PLATFORM.MacX, (abs) => Buffer.from(`file://localhost${abs.split('/').map(encodeURIComponent).join('/')}`, 'utf8')],
      [
        PLATFORM.Mac,
        () => {
          const alias = Buffer.alloc(150);
          alias[50] = 'legacy-base.vhd'.length;
          alias.write('legacy-base.vhd', 51, 'latin1');
          return alias;
        },
      ],
    ];
    for (const [code, make] of cases) {
      const child = join(dir, `legacy-${code.toString(16)}.vhd`);
      const c = await create(child, { format: 'vhd', backing: base });
      await c.close();
      await editHeader(child, (h, bytes) => {
        const l = h.parentLocators[0]!;
        const data = make(base);
        expect(data.length).toBeLessThanOrEqual(512);
        bytes.fill(0, l.platformDataOffset, l.platformDataOffset + 512);
        data.copy(bytes, l.platformDataOffset);
        h.parentLocators[0] = { ...l, platformCode: code, platformDataLength: data.length };
        h.parentLocators[1] = { platformCode: 0, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 };
        h.parentUnicodeName = '';
      });
      const img = await open(child, { readOnly: true });
      expect(img.backing?.filename).toBe(base);
      expect((await read(img, 0, 4096)).equals(parentData.subarray(0, 4096))).toBe(true);
      await img.close();
    }
  });

  it('a parent loop is refused (E_CHAIN)', async () => {
    const a = join(dir, 'loop-a.vhd');
    const b = join(dir, 'loop-b.vhd');
    await makeBase(a);
    const cb = await create(b, { format: 'vhd', backing: a });
    await cb.close();
    // Replace a by a child of b: a → b → a.
    const a2 = join(dir, 'loop-a2.vhd');
    const ca = await create(a2, { format: 'vhd', backing: b });
    await ca.close();
    await rename(a2, a);
    await expect(open(b, { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN', message: expect.stringContaining('loops') });
  });

  it(`follows chains up to ${MAX_CHAIN_DEPTH} images and refuses deeper ones`, async () => {
    const loc = new MemoryLocation('img0.vhd');
    const base = await vhdDriver.create(loc.at('img0.vhd'), { size: 64 * 1024, options: { block_size: '4K' } });
    await base.write(Buffer.alloc(512, 1), 0);
    await base.close();
    for (let i = 1; i <= MAX_CHAIN_DEPTH; i++) {
      const parent = await openLocation(loc.at(`img${i - 1}.vhd`), { readOnly: true, noBacking: true });
      const child = await vhdDriver.create(loc.at(`img${i}.vhd`), { size: 64 * 1024, options: {}, parent, parentRef: `img${i - 1}.vhd` });
      await child.write(Buffer.alloc(512, i + 1), i * 512);
      await child.close();
    }
    const deepest = await openLocation(loc.at(`img${MAX_CHAIN_DEPTH - 1}.vhd`), { readOnly: true });
    const b = await read(deepest, 0, MAX_CHAIN_DEPTH * 512);
    for (let i = 0; i < MAX_CHAIN_DEPTH; i++) expect(b[i * 512]).toBe(i + 1);
    const ext = await listExtents(deepest, 0, 512);
    expect(ext).toEqual([{ offset: 0, length: 512, kind: 'data', depth: MAX_CHAIN_DEPTH - 1 }]);
    await deepest.close();
    await expect(openLocation(loc.at(`img${MAX_CHAIN_DEPTH}.vhd`), { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN' });
  });

  it('opens without the parent when asked (noBacking) and still names it', async () => {
    const base = join(dir, 'nb-base.vhd');
    const child = join(dir, 'nb-child.vhd');
    await makeBase(base);
    const c = await create(child, { format: 'vhd', backing: base });
    await c.close();
    await rename(base, join(dir, 'nb-gone.vhd'));
    await expect(open(child, { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN', message: expect.stringContaining('not found') });
    const img = await open(child, { readOnly: true, noBacking: true });
    const info = await img.info();
    expect(info.backingFilename).toBe('.\\nb-base.vhd');
    expect(info.formatSpecific?.type).toBe('differencing');
    await img.close();
  });

  it('refuses -b with a non-VHD parent and a fixed differencing disk', async () => {
    const rawParent = join(dir, 'p.raw');
    await writeFile(rawParent, Buffer.alloc(MiB));
    await expect(create(join(dir, 'x1.vhd'), { format: 'vhd', backing: rawParent })).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    const base = join(dir, 'fx-base.vhd');
    await makeBase(base);
    await expect(create(join(dir, 'x2.vhd'), { format: 'vhd', backing: base, options: { subformat: 'fixed' } })).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});

async function checkArgs(file: string): Promise<Parameters<NonNullable<typeof vhdDriver.check>>> {
  const { FileStorage } = await import('../../../src/storage/file.js');
  const { FileLocation } = await import('../../../src/storage/location.js');
  const storage = await FileStorage.open(file, { readOnly: true });
  const location = new FileLocation(file);
  return [storage, location, { readOnly: true, openParent: (name: string) => open(name, { readOnly: true }) }];
}
