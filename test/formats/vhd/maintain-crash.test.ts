/**
 * Crash safety of VHD resize and compact: a fault at every write (clean and torn,
 * ordered and power-loss) leaves an image that opens with either the old or the new
 * size, holds the guest content it had (zeros where it grew), has nothing worse than
 * leaks in `check`, and can finish the operation when it is run again.
 */
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { crashSweep } from '../../helpers/crash.js';
import { patternBytes } from '../../helpers/tmp.js';
import { decodeDynamicHeader } from '../../../src/formats/vhd/layout.js';
import { folder, locatorsAfterBat, locatorsPastBat, smallImage, snapshot } from './helpers.js';

const K = 1024;

/** Apply `edit` to the image of a memory folder and return the files after it. */
async function edited(files: Map<string, Buffer>, edit: (img: DiskImage) => Promise<void>): Promise<Map<string, Buffer>> {
  const loc = folder(files);
  const img = await openLocation(loc);
  await edit(img);
  await img.close();
  return snapshot(loc);
}

async function readAll(loc: MemoryLocation): Promise<Buffer> {
  const img = await openLocation(loc, { readOnly: true });
  const all = Buffer.alloc(img.size);
  await img.read(all, 0);
  await img.close();
  return all;
}

/**
 * Problems `check` finds that are worse than leaks (a footer copy that differs from
 * the trailing one is a warning both readers survive). With `midway`, also a header
 * or locators left at the end of the file by an interrupted rewrite (a warning:
 * vdisk reads the image; running the operation again or check -r all moves them).
 */
async function seriousProblems(loc: MemoryLocation, midway = false): Promise<string[]> {
  const storage = await loc.open('img.vhd');
  const r = await vhdDriver.check!(storage, loc, { readOnly: true, openParent: (n) => openLocation(loc.at(n), { readOnly: true }) });
  const tolerated = midway ? /differs from the trailing footer|where qemu appends/ : /differs from the trailing footer/;
  return r.problems.filter((p) => p.severity === 'corrupt' || (p.severity === 'warning' && !tolerated.test(p.message))).map((p) => p.message);
}

/**
 * Sweep `op` over `initial`: after a crash the image holds `before` cut or padded
 * with zeros to its size, which is the old or the new one; running `op` again
 * reaches `newSize` with the same content.
 */
async function sweep(initial: Map<string, Buffer>, op: (img: DiskImage, loc: MemoryLocation) => Promise<void>, newSize: number, verifyMore?: (loc: MemoryLocation) => Promise<void>): Promise<number> {
  const before = await readAll(folder(initial));
  const expectAt = (size: number): Buffer => {
    const b = Buffer.alloc(size);
    before.copy(b, 0, 0, Math.min(size, before.length));
    return b;
  };
  let sawOld = false;
  let sawNew = false;
  const writes = await crashSweep({
    initial,
    name: 'img.vhd',
    workload: async (loc) => {
      const img = await openLocation(loc);
      await op(img, loc);
      await img.close();
    },
    verify: async (files) => {
      const loc = folder(files);
      const all = await readAll(loc);
      expect([before.length, newSize]).toContain(all.length);
      if (all.length === newSize) sawNew = true;
      if (all.length === before.length) sawOld = true;
      expect(all.equals(expectAt(all.length)), 'guest content changed').toBe(true);
      expect(await seriousProblems(loc, true)).toEqual([]);
      await verifyMore?.(loc);
      // Running the operation again finishes it.
      const img = await openLocation(loc);
      await op(img, loc);
      await img.close();
      const done = await readAll(loc);
      expect(done.equals(expectAt(newSize))).toBe(true);
      expect(await seriousProblems(loc)).toEqual([]);
    },
  });
  // The first crash point always leaves the old image; shrinking flips the size before its last writes.
  expect(sawOld).toBe(true);
  if (newSize < before.length) expect(sawNew).toBe(true);
  return writes;
}

describe('VHD resize crash safety', () => {
  it('fixed: grow and shrink', async () => {
    const initial = await smallImage('fixed');
    expect(await sweep(initial, (img) => img.resize!(96 * K), 96 * K)).toBeGreaterThanOrEqual(3);
    expect(await sweep(initial, (img) => img.resize!(32 * K), 32 * K)).toBeGreaterThanOrEqual(3);
  });

  it('dynamic: grow inside the BAT sector, and shrink to a size that ends inside a block', async () => {
    const initial = await smallImage('dynamic');
    await sweep(initial, (img) => img.resize!(256 * K), 256 * K);
    // 18.5 KiB: block 4 is cut in the middle; the bytes past the end are zeroed for a later grow.
    await sweep(initial, (img) => img.resize!(18 * K + 512), 18 * K + 512);
  });

  it('dynamic: grow past the BAT sector moves the first blocks out of the way', async () => {
    const initial = await smallImage('dynamic');
    const writes = await sweep(initial, (img) => img.resize!(1024 * K), 1024 * K);
    expect(writes).toBeGreaterThanOrEqual(7);
  });

  it('dynamic without blocks: the BAT grows past its sector at the end of the file (the footer moves out of its way first)', async () => {
    const loc = new MemoryLocation('img.vhd');
    const img = await vhdDriver.create(loc, { size: 64 * K, options: { block_size: '4K' } });
    await img.close();
    await sweep(snapshot(loc), (i) => i.resize!(1024 * K), 1024 * K);
  });

  it('differencing: grow past the BAT sector moves blocks; the locators before the BAT stay', async () => {
    const initial = await smallImage('differencing');
    expect(locatorsPastBat(initial.get('img.vhd')!)).toEqual([]);
    await sweep(initial, (img) => img.resize!(1024 * K), 1024 * K);
    expect(locatorsPastBat((await edited(initial, (img) => img.resize!(1024 * K))).get('img.vhd')!)).toEqual([]);
  });

  it('differencing with the locators after the BAT (as Hyper-V writes): growing moves the BAT to the end behind them', async () => {
    const initial = await smallImage('differencing');
    initial.set('img.vhd', locatorsAfterBat(initial.get('img.vhd')!));
    expect(await seriousProblems(folder(initial))).toEqual([]);
    expect(locatorsPastBat(initial.get('img.vhd')!)).toHaveLength(2);
    await sweep(initial, (img) => img.resize!(1024 * K), 1024 * K);
    const done = (await edited(initial, (img) => img.resize!(1024 * K))).get('img.vhd')!;
    expect(locatorsPastBat(done)).toEqual([]);
    // The header is back at offset 512; the BAT now lies after the blocks.
    expect(done.toString('latin1', 512, 520)).toBe('cxsparse');
    const { header } = decodeDynamicHeader(done.subarray(512, 1536));
    const blocks: number[] = [];
    for (let i = 0; i < header.maxTableEntries; i++) {
      const e = done.readUInt32BE(header.tableOffset + i * 4);
      if (e !== 0xffffffff) blocks.push(e * 512);
    }
    expect(blocks.length).toBeGreaterThan(0);
    expect(Math.max(...blocks)).toBeLessThan(header.tableOffset);
  });
});

describe('VHD compact crash safety', () => {
  it('dynamic: zeroed blocks are released and the last blocks move into the holes', async () => {
    const initial = await edited(await smallImage('dynamic'), async (img) => {
      await img.write(Buffer.alloc(4 * K), 0);
      await img.write(patternBytes(4 * K, 8), 60 * K);
    });
    const writes = await sweep(initial, async (img) => {
      const r = await img.compact!();
      expect(r.sizeAfter).toBeLessThanOrEqual(r.sizeBefore);
    }, 64 * K);
    expect(writes).toBeGreaterThan(3);
  });

  it('differencing: blocks equal to the parent are released, others kept', async () => {
    const initial = await edited(await smallImage('differencing'), async (img) => {
      const parentBytes = Buffer.alloc(4 * K);
      await img.backing!.read(parentBytes, 8 * K);
      await img.write(parentBytes, 8 * K);
      await img.write(Buffer.alloc(4 * K), 40 * K);
      await img.write(patternBytes(4 * K, 9), 56 * K);
    });
    await sweep(initial, async (img) => {
      await img.compact!();
    }, 64 * K);
  });
});

describe('VHD parent link change crash safety', () => {
  /** A differencing image over base.vhd, and other.vhd: same content as base, another unique id. */
  async function twoParents(): Promise<Map<string, Buffer>> {
    const files = await smallImage('differencing');
    const loc = folder(files);
    const base = await openLocation(loc.at('base.vhd'), { readOnly: true });
    const all = Buffer.alloc(base.size);
    await base.read(all, 0);
    await base.close();
    const other = await vhdDriver.create(loc.at('other.vhd'), { size: all.length, options: { block_size: '4K' } });
    await other.write(all, 0);
    await other.close();
    return snapshot(loc);
  }

  /** The parent the image opens with: base or other, matched by unique id (the open checks it). */
  async function parentName(loc: MemoryLocation): Promise<string | undefined> {
    const img = await openLocation(loc, { readOnly: true });
    const name = img.backing?.filename;
    await img.close();
    return name;
  }

  it('re-pointing at another parent: the old link or the new one, never neither', async () => {
    const initial = await twoParents();
    const seen = new Set<string | undefined>();
    await sweep(initial, async (img, loc) => {
      const other = await openLocation(loc.at('other.vhd'), { readOnly: true });
      await img.setBacking!(other, 'other.vhd');
    }, 64 * K, async (loc) => {
      seen.add(await parentName(loc));
    });
    expect([...seen].sort()).toEqual(['base.vhd', 'other.vhd']);
  });

  it('a new parent whose name does not fit the old locator space: the BAT moves behind the new locators', async () => {
    const long = `${'o'.repeat(300)}.vhd`;
    const files = await twoParents();
    files.set(long, files.get('other.vhd')!);
    const relink = async (img: DiskImage, loc: MemoryLocation): Promise<void> => {
      const other = await openLocation(loc.at(long), { readOnly: true });
      await img.setBacking!(other, long);
    };
    const seen = new Set<string | undefined>();
    await sweep(files, relink, 64 * K, async (loc) => {
      seen.add(await parentName(loc));
    });
    expect([...seen].sort()).toEqual(['base.vhd', long]);
    const done = (await edited(files, (img) => relink(img, folder(files)))).get('img.vhd')!;
    expect(locatorsPastBat(done)).toEqual([]);
    expect(done.toString('latin1', 512, 520)).toBe('cxsparse');
  });

  it('removing the parent (after its data was copied in): differencing or dynamic, same content', async () => {
    const initial = await edited(await smallImage('differencing'), async (img) => {
      const all = Buffer.alloc(img.size);
      await img.read(all, 0);
      await img.write(all, 0);
    });
    const seen = new Set<string | undefined>();
    await sweep(initial, async (img) => {
      await img.setBacking!(undefined, undefined);
    }, 64 * K, async (loc) => {
      seen.add(await parentName(loc));
    });
    expect([...seen].sort()).toEqual(['base.vhd', undefined]);
  });
});

describe('VHD compact results', () => {
  it('releases exactly the blocks that read the same without them, and gives back leaked spans', async () => {
    // Differencing: block 2 holds the parent's own bytes, block 10 zeros over the parent's zeros, block 14 new data.
    const diff = await edited(await smallImage('differencing'), async (img) => {
      const parentBytes = Buffer.alloc(4 * K);
      await img.backing!.read(parentBytes, 8 * K);
      await img.write(parentBytes, 8 * K);
      await img.write(Buffer.alloc(4 * K), 40 * K);
      await img.write(patternBytes(4 * K, 9), 56 * K);
    });
    const loc = folder(diff);
    const before = await readAll(loc);
    const img = await openLocation(loc);
    const r = await img.compact!();
    await img.close();
    expect(r.releasedBlocks).toBe(2);
    expect(r.sizeBefore - r.sizeAfter).toBe(2 * (4 * K + 512));
    expect((await readAll(loc)).equals(before)).toBe(true);

    // Dynamic: a block whose BAT entry was lost (as a crash before the entry leaves it) is leaked space.
    const files = await smallImage('dynamic');
    const bytes = Buffer.from(files.get('img.vhd')!);
    const batAt = 1536;
    const lost = bytes.readUInt32BE(batAt); // block 0, the first one written
    expect(lost).not.toBe(0xffffffff);
    bytes.writeUInt32BE(0xffffffff, batAt);
    files.set('img.vhd', bytes);
    const leaky = folder(files);
    expect((await seriousProblems(leaky)).length).toBe(0);
    const storage = await leaky.open('img.vhd');
    const leaks = (await vhdDriver.check!(storage, leaky, { readOnly: true, openParent: (n) => openLocation(leaky.at(n), { readOnly: true }) })).problems;
    expect(leaks.map((p) => p.severity)).toEqual(['leak']);
    const content = await readAll(leaky);
    const d = await openLocation(leaky);
    const rd = await d.compact!();
    await d.close();
    expect(rd.releasedBlocks).toBe(0);
    expect(rd.sizeBefore - rd.sizeAfter).toBe(4 * K + 512);
    expect((await readAll(leaky)).equals(content)).toBe(true);
    const after = await leaky.open('img.vhd');
    expect((await vhdDriver.check!(after, leaky, { readOnly: true, openParent: (n) => openLocation(leaky.at(n), { readOnly: true }) })).problems).toEqual([]);
  });
});

describe('VHD discard', () => {
  it('releases whole blocks (parent or zeros show through) and leaves partial ones', async () => {
    for (const kind of ['dynamic', 'differencing'] as const) {
      const loc = folder(await smallImage(kind));
      const parent = kind === 'differencing' ? await readAll(folder(await smallImage(kind)).at('base.vhd') as MemoryLocation) : Buffer.alloc(64 * K);
      const before = await readAll(loc);
      const img = await openLocation(loc);
      const allocated = async (): Promise<number> => ((await img.info()).formatSpecific!['allocated-blocks'] as number);
      const n0 = await allocated();
      // 16 KiB - 512 .. 36 KiB: blocks 4 to 8 are whole, block 3 only partly covered.
      await img.discard(16 * K - 512, 20 * K + 512);
      expect(await allocated()).toBeLessThan(n0);
      await img.close();
      const after = await readAll(loc);
      const expected = Buffer.from(before);
      parent.copy(expected, 16 * K, 16 * K, 36 * K);
      expect(after.equals(expected)).toBe(true);
      expect(await seriousProblems(loc)).toEqual([]);
    }
  });
});

describe('VHD metadata where other writers append', () => {
  it('check warns about locators after the BAT and every block, and -r all moves them below the BAT', async () => {
    // A fresh child in the layout Hyper-V (and vdisk before) writes: no block after the locators.
    const loc0 = folder(await smallImage('dynamic'));
    const base = await openLocation(loc0, { readOnly: true });
    const child = await vhdDriver.create(loc0.at('child.vhd'), { size: base.size, options: { block_size: '4K' }, parent: base, parentRef: 'img.vhd' });
    await child.close();
    await base.close();
    const files = snapshot(loc0);
    files.set('child.vhd', locatorsAfterBat(files.get('child.vhd')!));
    const loc = folder(files, 'child.vhd');
    expect(locatorsPastBat(files.get('child.vhd')!)).toHaveLength(2);
    const check = async (repair?: 'all'): Promise<string[]> => {
      const storage = await loc.open('child.vhd');
      const r = await vhdDriver.check!(storage, loc, { readOnly: false, ...(repair ? { repair } : {}), openParent: (n) => openLocation(loc.at(n), { readOnly: true }) });
      await storage.close();
      return r.problems.map((p) => `${p.severity}${p.repaired ? ' (repaired)' : ''}: ${p.message}`);
    };
    const found = await check();
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^warning: child\.vhd: parent locator 0 \(offset \d+\), parent locator 1 \(offset \d+\) lies after the BAT and every block, where qemu appends/);
    expect((await check('all'))[0]).toMatch(/^warning \(repaired\)/);
    expect(await check()).toEqual([]);
    const after = snapshot(loc).get('child.vhd')!;
    expect(locatorsPastBat(after)).toEqual([]);
    const img = await openLocation(loc, { readOnly: true });
    expect(img.backing?.filename).toBe('img.vhd');
    await img.close();
  });
});
