/** Crash sweep over sparse VMDK writes: every crash point leaves an image that opens, checks clean and keeps flushed data. */
import { describe, expect, it } from 'vitest';
import { openLocation } from '../../../src/formats/registry.js';
import { vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { patternBytes } from '../../helpers/tmp.js';

const SIZE = 1024 * 1024;
/** Steps: a whole grain, a partial new grain, an overwrite in an allocated grain, a write over three grains. */
const STEPS: Array<[number, Buffer]> = [
  [0, patternBytes(65536, 1)],
  [70_000, patternBytes(1000, 2)],
  [100, patternBytes(512, 3)],
  [200_000, patternBytes(150_000, 4)],
];

/** What the parent of the delta case holds. */
const PARENT_DATA = patternBytes(SIZE, 99);

async function initialFiles(subformat: string): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation('d.vmdk');
  if (subformat === 'delta') {
    const p = await vmdkDriver.create(loc.at('p.vmdk'), { size: SIZE, options: {} });
    await p.write(PARENT_DATA, 0);
    await p.close();
    const parent = await openLocation(loc.at('p.vmdk'), { readOnly: true });
    const dev = await vmdkDriver.create(loc, { size: SIZE, options: {}, parent, parentRef: 'p.vmdk' });
    await dev.close();
  } else {
    const dev = await vmdkDriver.create(loc, { size: SIZE, options: { subformat } });
    await dev.close();
  }
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) out.set(n, (s as MemoryStorage).snapshot());
  return out;
}

const noParent = (): Promise<never> => Promise.reject(new Error('no parent'));

describe('crash sweep', () => {
  for (const subformat of ['monolithicSparse', 'twoGbMaxExtentSparse', 'delta']) {
    it(`${subformat}: every crash point leaves an openable, consistent image with flushed writes`, async () => {
      const initial = await initialFiles(subformat);
      const points = await crashSweep({
        initial,
        name: 'd.vmdk',
        workload: async (loc, progress) => {
          const img = await openLocation(loc);
          for (const [off, data] of STEPS) {
            await img.write(data, off);
            await img.flush();
            progress.flushedSteps++;
          }
          await img.close();
        },
        verify: async (files, progress) => {
          const loc = new MemoryLocation('d.vmdk');
          for (const [n, b] of files) loc.files.set(n, new MemoryStorage(b, { name: n }));
          const r = await vmdkDriver.check!(await loc.open('d.vmdk'), loc, { readOnly: true, openParent: noParent });
          const bad = r.problems.filter((p) => p.severity === 'corrupt');
          expect(bad.map((p) => p.message)).toEqual([]);
          const img = await openLocation(loc, { readOnly: true });
          const got = Buffer.alloc(SIZE);
          await img.read(got, 0);
          await img.close();
          // Model: flushed steps applied; bytes touched by later steps may hold either.
          const want = subformat === 'delta' ? Buffer.from(PARENT_DATA) : Buffer.alloc(SIZE);
          const loose = new Uint8Array(SIZE);
          STEPS.forEach(([off, data], i) => {
            if (i < progress.flushedSteps) data.copy(want, off);
            else loose.fill(1, off, off + data.length);
          });
          for (let i = 0; i < SIZE; i++) {
            if (!loose[i] && got[i] !== want[i]) throw new Error(`byte ${i} is ${got[i]}, expected ${want[i]} after ${progress.flushedSteps} flushed steps`);
          }
        },
      });
      expect(points).toBeGreaterThan(8);
    });
  }
});
