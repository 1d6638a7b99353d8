/**
 * Random reads, writes and zeroing at any alignment, checked against a plain buffer
 * holding what the disk should contain, for each VHD type; plus sector bitmaps as
 * Hyper-V leaves them (clear bits read as zeros, whatever the data area holds).
 */
import { describe, expect, it } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { rng } from '../../helpers/fuzz.js';
import { patternBytes } from '../../helpers/tmp.js';
import { folder, smallImage, snapshot } from './helpers.js';

const SIZE = 256 * 1024;

describe('VHD against a reference model', () => {
  for (const kind of ['dynamic', 'differencing', 'fixed'] as const) {
    it(`${kind}: 300 random unaligned writes, zeroings and reads match the model, also after reopening`, async () => {
      const files = await smallImage(kind, SIZE);
      const loc = folder(files);
      // The model starts as what the seed image holds.
      const first = await openLocation(loc, { readOnly: true });
      const model = Buffer.alloc(SIZE);
      await first.read(model, 0);
      await first.close();
      const img = await openLocation(loc);
      const rand = rng(kind.length);
      for (let op = 0; op < 300; op++) {
        const off = Math.floor(rand() * SIZE);
        const len = Math.min(SIZE - off, 1 + Math.floor(rand() * (rand() < 0.2 ? 40000 : 3000)));
        const r = rand();
        if (r < 0.5) {
          const data = patternBytes(len, op + 1);
          await img.write(data, off);
          data.copy(model, off);
        } else if (r < 0.6) {
          await img.writeZeroes(off, len);
          model.fill(0, off, off + len);
        } else {
          const got = Buffer.alloc(len);
          await img.read(got, off);
          expect(got.equals(model.subarray(off, off + len)), `op ${op}: read ${off}+${len}`).toBe(true);
        }
      }
      const ext = await listExtents(img);
      expect(ext.reduce((n, e) => n + e.length, 0)).toBe(SIZE);
      await img.close();
      const again = await openLocation(folder(snapshot(loc)), { readOnly: true });
      const all = Buffer.alloc(SIZE);
      await again.read(all, 0);
      await again.close();
      expect(all.equals(model)).toBe(true);
      const storage = await loc.open('img.vhd');
      const r = await vhdDriver.check!(storage, loc, { readOnly: true, openParent: (n) => openLocation(loc.at(n), { readOnly: true }) });
      expect(r.problems).toEqual([]);
    });
  }

  it('a dynamic block with some bitmap bits clear reads zeros there (as Hyper-V writes them), whatever the data area holds', async () => {
    const loc = folder(new Map());
    const img = await vhdDriver.create(loc.at('img.vhd'), { size: 64 * 1024, options: { block_size: '4K' } });
    await img.write(Buffer.alloc(4096, 0x77), 4096); // block 1, all bits set
    await img.close();
    const bytes = snapshot(loc).get('img.vhd')!;
    const entry = bytes.readUInt32BE(1536 + 4);
    const bitmapAt = entry * 512;
    bytes[bitmapAt] = 0b10100000; // sectors 0 and 2 in use, the rest of the block not
    const loc2 = folder(new Map([['img.vhd', bytes]]));
    const ro = await openLocation(loc2);
    const got = Buffer.alloc(4096);
    await ro.read(got, 4096);
    const want = Buffer.alloc(4096);
    want.fill(0x77, 0, 512);
    want.fill(0x77, 1024, 1536);
    expect(got.equals(want)).toBe(true);
    expect(await listExtents(ro, 4096, 4096)).toEqual([
      { offset: 4096, length: 512, kind: 'data', depth: 0 },
      { offset: 4608, length: 512, kind: 'hole', depth: 0 },
      { offset: 5120, length: 512, kind: 'data', depth: 0 },
      { offset: 5632, length: 2560, kind: 'hole', depth: 0 },
    ]);
    // A write into a clear sector sets its bit.
    await ro.write(Buffer.alloc(512, 0x11), 4096 + 1536);
    await ro.close();
    const back = await openLocation(folder(snapshot(loc2)), { readOnly: true });
    await back.read(got, 4096);
    want.fill(0x11, 1536, 2048);
    expect(got.equals(want)).toBe(true);
    await back.close();
  });
});
