/**
 * Crash sweeps over resize and compact of monolithicSparse disks: a crash at every
 * write (whole or torn, ordered or power-loss) leaves a disk that opens with the old
 * or the new size, holds the same guest content, and that check finds at worst leaks
 * (or a redundant table lagging the primary, as an interrupted write leaves).
 */
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { patternBytes } from '../../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GRAIN = 64 * KiB;
const noParent = (): Promise<never> => Promise.reject(new Error('no parent'));

/** A new monolithicSparse disk of `size` bytes with `fill` applied, as initial files. */
async function initial(size: number, fill: (img: DiskImage) => Promise<void>): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation('d.vmdk');
  const img = await vmdkDriver.create(loc, { size, options: {} });
  await fill(img);
  await img.close();
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) out.set(n, (s as MemoryStorage).snapshot());
  return out;
}

/** Open the surviving files, check them and return the disk (read-only). */
async function survivor(files: Map<string, Buffer>): Promise<DiskImage> {
  const loc = new MemoryLocation('d.vmdk');
  for (const [n, b] of files) loc.files.set(n, new MemoryStorage(b, { name: n }));
  const r = await vmdkDriver.check!(await loc.open('d.vmdk'), loc, { readOnly: true, openParent: noParent });
  const bad = r.problems.filter((p) => p.severity === 'corrupt' || (p.severity === 'warning' && !/lags the primary/.test(p.message)));
  expect(bad.map((p) => p.message)).toEqual([]);
  return openLocation(loc, { readOnly: true });
}

/** Bytes the disk reads at `ranges`, each compared with `want` (a function of the offset). */
async function expectContent(img: DiskImage, ranges: Array<[number, number]>, want: (off: number, len: number) => Buffer): Promise<void> {
  for (const [off, len] of ranges) {
    const got = Buffer.alloc(len);
    await img.read(got, off);
    if (!got.equals(want(off, len))) throw new Error(`content differs in ${off}+${len}`);
  }
}

describe('vmdk maintenance crash sweeps (monolithicSparse)', () => {
  const OLD = 2 * MiB;
  const DATA = patternBytes(OLD, 21);
  /** Guest content: the pattern, with two grains zeroed. */
  const content = Buffer.from(DATA);
  content.fill(0, 3 * GRAIN, 5 * GRAIN);
  const fillPattern = async (img: DiskImage): Promise<void> => {
    await img.write(DATA, 0);
    await img.write(Buffer.alloc(2 * GRAIN), 3 * GRAIN);
  };

  for (const [label, NEW] of [
    ['grows in place', 64 * MiB],
    ['grows past 4 GiB, relocating the grain directories', 5 * 1024 * MiB],
  ] as const) {
    it(`resize ${label}: old or new size, same content`, async () => {
      const files = await initial(OLD, fillPattern);
      const points = await crashSweep({
        initial: files,
        name: 'd.vmdk',
        workload: async (loc, progress) => {
          const img = await openLocation(loc);
          await img.resize!(NEW);
          progress.flushedSteps = 1;
          await img.close();
        },
        verify: async (survived, progress) => {
          const img = await survivor(survived);
          try {
            expect([OLD, NEW]).toContain(img.size);
            if (progress.flushedSteps === 1) expect(img.size).toBe(NEW);
            await expectContent(img, [[0, OLD]], (o, l) => content.subarray(o, o + l));
            if (img.size === NEW) await expectContent(img, [[OLD, MiB], [NEW - MiB, MiB]], (_o, l) => Buffer.alloc(l));
          } finally {
            await img.close();
          }
        },
      });
      expect(points).toBeGreaterThanOrEqual(4);
    });
  }

  it('resize shrinks (cutting grains, packing the file): old or new size, same content below the cut', async () => {
    // The end of the disk is written first, so the kept grains lie after the cut ones in the file and must move.
    const tail = patternBytes(512 * KiB, 22);
    const head = patternBytes(5 * GRAIN, 23);
    const files = await initial(2 * MiB, async (img) => {
      await img.write(tail, 1536 * KiB);
      await img.write(head, 0);
    });
    const full = Buffer.alloc(2 * MiB);
    head.copy(full, 0);
    tail.copy(full, 1536 * KiB);
    const NEW = 4 * GRAIN + 3 * 512;
    const points = await crashSweep({
      initial: files,
      name: 'd.vmdk',
      workload: async (loc, progress) => {
        const img = await openLocation(loc);
        await img.resize!(NEW);
        progress.flushedSteps = 1;
        await img.close();
      },
      verify: async (survived, progress) => {
        const img = await survivor(survived);
        try {
          expect([2 * MiB, NEW]).toContain(img.size);
          if (progress.flushedSteps === 1) expect(img.size).toBe(NEW);
          await expectContent(img, [[0, img.size]], (o, l) => full.subarray(o, o + l));
        } finally {
          await img.close();
        }
      },
    });
    expect(points).toBeGreaterThan(4);
  });

  it('compact (zero grains released, last grains moved into holes): content never changes', async () => {
    // Data grains, then zeroed ones in the middle, so packing has grains to move down.
    const files = await initial(OLD, fillPattern);
    const points = await crashSweep({
      initial: files,
      name: 'd.vmdk',
      workload: async (loc, progress) => {
        const img = await openLocation(loc);
        const r = await img.compact!();
        expect(r.releasedBlocks).toBe(2);
        expect(r.sizeAfter).toBeLessThan(r.sizeBefore);
        progress.flushedSteps = 1;
        await img.close();
      },
      verify: async (survived) => {
        const img = await survivor(survived);
        try {
          expect(img.size).toBe(OLD);
          await expectContent(img, [[0, OLD]], (o, l) => content.subarray(o, o + l));
        } finally {
          await img.close();
        }
      },
    });
    expect(points).toBeGreaterThan(10);
  });
});
