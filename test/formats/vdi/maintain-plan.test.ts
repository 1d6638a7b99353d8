/** The growth strategies of a VDI resize, as planned before anything is written (maintain.ts). */
import { describe, expect, it } from 'vitest';
import { VdiImageType, newHeader } from '../../../src/formats/vdi/layout.js';
import { planGrowth } from '../../../src/formats/vdi/maintain.js';

const MiB = 1024 * 1024;

/** Data block numbers 0..n-1 in use, by virtual blocks 0..n-1. */
function used(n: number): { owner: Int32Array; nextSlot: number } {
  return { owner: Int32Array.from({ length: n }, (_, i) => i), nextSlot: n };
}

describe('planGrowth', () => {
  it('1. new entries that fit before offData: the map stays, nothing moves', () => {
    const h = newHeader({ cbDisk: 8 * MiB, type: VdiImageType.NORMAL });
    const p = planGrowth(h, 16, used(8), false);
    expect(p).toMatchObject({ mapAt: h.offBlocks, shift: 0, toMove: 0, fits: true, count: 8 });
  });

  it('2. a full map with room before it: the new map goes between the header and the old map', () => {
    const h = { ...newHeader({ cbDisk: 8 * MiB, type: VdiImageType.NORMAL }), offBlocks: 64 * 1024 };
    h.offData = h.offBlocks + h.cBlocks * 4;
    const p = planGrowth(h, 1024, used(8), false);
    expect(p.mapAt).toBeLessThan(h.offBlocks);
    expect(p).toMatchObject({ shift: 0, fits: true });
  });

  it('3. a full map with free data block numbers: the first data blocks move to the end for the map', () => {
    const h = newHeader({ cbDisk: 8 * MiB, type: VdiImageType.NORMAL });
    h.offBlocks = 512; // right after the header: no room before the map
    h.offData = h.offBlocks + h.cBlocks * 4;
    const half = { owner: Int32Array.from({ length: 8 }, (_, i) => (i < 4 ? i : -1)), nextSlot: 4 };
    const p = planGrowth(h, 64, half, false);
    expect(p.shift).toBeGreaterThan(0);
    expect(p.toMove).toBeGreaterThan(0);
    expect(p.firstDest).toBe(Math.max(4, p.shift));
    expect(p.fits).toBe(true);
  });

  it('no free data block number and no slack: the plan does not fit (resize relays the image out)', () => {
    const h = newHeader({ cbDisk: 8 * MiB, type: VdiImageType.NORMAL });
    h.offBlocks = 512; // right after the header: no room before the map
    h.offData = h.offBlocks + h.cBlocks * 4;
    expect(planGrowth(h, 64, used(8), false).fits).toBe(false);
  });
});
