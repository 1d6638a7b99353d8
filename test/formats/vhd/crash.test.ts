/**
 * Crash safety of VHD writes: a fault at every single write of a workload (clean and
 * torn, ordered and power-loss) leaves an image that opens, has no corruption in
 * `check`, returns every write flushed before the crash, and takes new writes.
 */
import { describe, expect, it } from 'vitest';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { FaultPlan, FaultStorage } from '../../../src/storage/fault.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { patternBytes } from '../../helpers/tmp.js';

const SIZE = 64 * 1024;

/** Disjoint writes: new blocks, unaligned edges, a second write into an allocated block, a run over three blocks. */
const STEPS: Array<[number, number]> = [
  [0, 512],
  [8192, 4096],
  [4096 + 100, 1000],
  [1536, 512],
  [20000, 6000],
  [12288 + 1024, 512],
];

function stepData(i: number): Buffer {
  return patternBytes(STEPS[i]![1], 100 + i);
}

/** Build the starting files: a dynamic image, or a parent with data and an empty differencing child. */
async function initialFiles(differencing: boolean): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation('img.vhd');
  if (differencing) {
    const base = await vhdDriver.create(loc.at('base.vhd'), { size: SIZE, options: { block_size: '4K' } });
    await base.write(patternBytes(SIZE, 5), 0);
    await base.close();
    const parent = await openLocation(loc.at('base.vhd'), { readOnly: true });
    const child = await vhdDriver.create(loc.at('img.vhd'), { size: SIZE, options: { block_size: '4K' }, parent, parentRef: 'base.vhd' });
    await child.close();
  } else {
    const img = await vhdDriver.create(loc.at('img.vhd'), { size: SIZE, options: { block_size: '4K' } });
    await img.close();
  }
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) out.set(n, (s as MemoryStorage).snapshot());
  return out;
}

function memoryFolder(files: Map<string, Buffer>): MemoryLocation {
  const m = new Map<string, MemoryStorage>();
  for (const [n, b] of files) m.set(n, new MemoryStorage(b, { name: n }));
  return new MemoryLocation('img.vhd', m);
}

async function sweep(differencing: boolean): Promise<number> {
  const initial = await initialFiles(differencing);
  const below = differencing ? patternBytes(SIZE, 5) : Buffer.alloc(SIZE);
  return crashSweep({
    initial,
    name: 'img.vhd',
    workload: async (loc, progress) => {
      const img = await openLocation(loc);
      for (let i = 0; i < STEPS.length; i++) {
        await img.write(stepData(i), STEPS[i]![0]);
        await img.flush();
        progress.flushedSteps = i + 1;
      }
      await img.close();
    },
    verify: async (files, progress) => {
      const loc = memoryFolder(files);
      const img = await openLocation(loc, { readOnly: true });
      const all = Buffer.alloc(SIZE);
      await img.read(all, 0);
      await img.close();
      for (let i = 0; i < progress.flushedSteps; i++) {
        const [off, len] = STEPS[i]!;
        expect(all.subarray(off, off + len).equals(stepData(i)), `step ${i} flushed but lost`).toBe(true);
      }
      // Sectors no step touched still read as before.
      const touched = new Uint8Array(SIZE);
      for (const [off, len] of STEPS) touched.fill(1, Math.floor(off / 512) * 512, Math.ceil((off + len) / 512) * 512);
      for (let s = 0; s < SIZE; s += 512) {
        if (!touched[s]) expect(all.subarray(s, s + 512).equals(below.subarray(s, s + 512)), `untouched sector ${s / 512} changed`).toBe(true);
      }
      const storage = await loc.open('img.vhd');
      const result = await vhdDriver.check!(storage, loc, { readOnly: true, openParent: (n) => openLocation(loc.at(n), { readOnly: true }) });
      const corrupt = result.problems.filter((p) => p.severity !== 'leak');
      expect(corrupt, corrupt.map((p) => p.message).join('; ')).toEqual([]);
      // The survivor takes new writes and keeps them.
      const again = await openLocation(loc);
      const extra = patternBytes(4096, 77);
      await again.write(extra, SIZE - 4096);
      await again.close();
      const back = await openLocation(loc, { readOnly: true });
      const tail = Buffer.alloc(4096);
      await back.read(tail, SIZE - 4096);
      await back.close();
      expect(tail.equals(extra)).toBe(true);
    },
  });
}

describe('VHD crash safety', () => {
  it('dynamic: every crash point leaves a consistent image with all flushed writes', async () => {
    const writes = await sweep(false);
    expect(writes).toBeGreaterThan(STEPS.length * 2);
  });

  it('differencing: every crash point leaves a consistent image with all flushed writes', async () => {
    const writes = await sweep(true);
    expect(writes).toBeGreaterThan(STEPS.length * 2);
  });

  it('a single failed write (an I/O error the caller survives) leaves the image usable and consistent', async () => {
    for (const differencing of [false, true]) {
      const initial = await initialFiles(differencing);
      const below = differencing ? patternBytes(SIZE, 5) : Buffer.alloc(SIZE);
      for (let at = 1; at <= 30; at++) {
        const plan = new FaultPlan(at, 'half', false);
        const files = new Map<string, FaultStorage>();
        for (const [n, b] of initial) files.set(n, new FaultStorage(b, plan, n));
        const loc = new MemoryLocation('img.vhd', files);
        const img = await openLocation(loc);
        const failed = new Set<number>();
        for (let i = 0; i < STEPS.length; i++) {
          await img.write(stepData(i), STEPS[i]![0]).catch(() => failed.add(i));
        }
        await img.close();
        const out = new Map<string, Buffer>();
        for (const [n, s] of files) out.set(n, s.afterCrash('ordered'));
        const check = memoryFolder(out);
        const ro = await openLocation(check, { readOnly: true });
        const all = Buffer.alloc(SIZE);
        await ro.read(all, 0);
        await ro.close();
        for (let i = 0; i < STEPS.length; i++) {
          const [off, len] = STEPS[i]!;
          if (!failed.has(i)) expect(all.subarray(off, off + len).equals(stepData(i)), `fault at ${at}: step ${i} lost`).toBe(true);
        }
        expect(all.subarray(SIZE - 4096).equals(below.subarray(SIZE - 4096))).toBe(true);
        const storage = await check.open('img.vhd');
        const r = await vhdDriver.check!(storage, check, { readOnly: true, openParent: (n) => openLocation(check.at(n), { readOnly: true }) });
        expect(r.problems.filter((p) => p.severity !== 'leak')).toEqual([]);
      }
    }
  });
});
