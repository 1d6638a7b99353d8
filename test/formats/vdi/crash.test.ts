/**
 * Crash safety: a fault at every write of a workload (allocations, partial blocks
 * over a parent, whole-block zeroing that moves the last data block, discard) must
 * leave an image that opens, has no corruption by `check`, holds every flushed step,
 * and is clean after the next writable open.
 */
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { checkVdi, vdiDriver } from '../../../src/formats/vdi/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crashSweep } from '../../helpers/crash.js';
import { findTool, run } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { MiB, readAll } from './util.js';

type Step = { run: (img: DiskImage) => Promise<void>; apply: (m: Buffer) => void; range: [number, number] };

const write = (off: number, len: number, seed: number): Step => {
  const d = patternBytes(len, seed);
  return { run: (img) => img.write(d, off), apply: (m) => void d.copy(m, off), range: [off, off + len] };
};
const zeroes = (off: number, len: number): Step => ({ run: (img) => img.writeZeroes(off, len), apply: (m) => void m.fill(0, off, off + len), range: [off, off + len] });

/** Model contents after each number of completed steps. */
function models(start: Buffer, steps: Step[]): Buffer[] {
  const out = [Buffer.from(start)];
  for (const s of steps) {
    const m = Buffer.from(out[out.length - 1]!);
    s.apply(m);
    out.push(m);
  }
  return out;
}

async function filesOf(loc: MemoryLocation): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) {
    const b = Buffer.alloc(s.size);
    await s.read(b, 0);
    out.set(n, b);
  }
  return out;
}

async function sweep(initial: Map<string, Buffer>, name: string, start: Buffer, steps: Step[], settled?: Buffer[]): Promise<number> {
  const model = models(start, steps);
  return crashSweep({
    initial,
    name,
    workload: async (loc, progress) => {
      const img = await openLocation(loc.at(name));
      for (const s of steps) {
        await s.run(img);
        await img.flush();
        progress.flushedSteps++;
      }
      await img.close();
    },
    verify: async (files, progress) => {
      const folder = new MemoryLocation(name);
      for (const [n, b] of files) folder.files.set(n, new MemoryStorage(b, { name: n }));
      const f = progress.flushedSteps;
      const before = model[f]!;
      const after = model[Math.min(f + 1, steps.length)]!;
      const [lo, hi] = f < steps.length ? steps[f]!.range : [0, 0];
      const ro = await openLocation(folder.at(name), { readOnly: true });
      const got = await readAll(ro);
      await ro.close();
      expect(got.subarray(0, lo).equals(before.subarray(0, lo)), 'bytes before the step in progress').toBe(true);
      expect(got.subarray(hi).equals(before.subarray(hi)), 'bytes after the step in progress').toBe(true);
      for (let i = lo; i < hi; i++) {
        if (got[i] !== before[i] && got[i] !== after[i]) throw new Error(`byte ${i} is ${got[i]}, neither before (${before[i]}) nor after (${after[i]})`);
      }
      const storage = folder.files.get(name)!;
      const r1 = await checkVdi(storage, folder.at(name), {});
      // Only leaks: cBlocksAllocated is never behind the map (qemu would allocate over a block).
      expect(r1.problems.filter((p) => p.severity !== 'leak')).toEqual([]);
      // The next writable open settles whatever the crash left (count, leaks).
      const rw = await openLocation(folder.at(name));
      expect((await readAll(rw)).equals(got)).toBe(true);
      await rw.close();
      const r2 = await checkVdi(storage, folder.at(name), {});
      expect(r2.problems).toEqual([]);
      if (settled) {
        const b = Buffer.alloc(storage.size);
        await storage.read(b, 0);
        settled.push(b);
      }
    },
  });
}

describe('vdi crash safety', async () => {
  const dir = await tempDir('vdisk-vdi-crash-');
  it('survives a fault at every write of a base-image workload', async () => {
    const loc = new MemoryLocation('a.vdi');
    const img = await vdiDriver.create(loc, { size: 4 * MiB, options: {} });
    await img.close();
    const steps = [
      write(100, 4096, 1), // allocate block 0 (partial)
      write(2 * MiB, MiB, 2), // allocate block 2 (whole)
      write(MiB - 256, 512, 3), // block 0 in place, allocate block 1
      zeroes(0, MiB), // release block 0: block 1's data moves into its place
      write(3 * MiB + 5, 1000, 4), // allocate block 3
      { run: (i: DiskImage) => i.discard(2 * MiB, MiB), apply: (m: Buffer) => void m.fill(0, 2 * MiB, 3 * MiB), range: [2 * MiB, 3 * MiB] as [number, number] },
      write(2 * MiB + 512, 512, 5),
    ];
    const settled: Buffer[] = [];
    const writes = await sweep(await filesOf(loc), 'a.vdi', Buffer.alloc(4 * MiB), steps, settled);
    expect(writes).toBeGreaterThanOrEqual(15);
    // qemu judges a sample of the images the crashes left, once settled by a writable open.
    if (findTool('qemu-img')) {
      const pick = settled.filter((_, i) => i % Math.ceil(settled.length / 12) === 0);
      for (const [i, b] of pick.entries()) {
        const f = join(dir, `c${i}.vdi`);
        await writeFile(f, b);
        const r = await run('qemu-img', ['check', '-f', 'vdi', f]);
        expect(r.code, `${f}: ${r.stdout}${r.stderr}`).toBe(0);
      }
    }
  }, 120_000);

  it('survives a fault at every write of a differencing-image workload', async () => {
    const loc = new MemoryLocation('base.vdi');
    const base = await vdiDriver.create(loc, { size: 3 * MiB, options: {} });
    const start = patternBytes(3 * MiB, 77);
    start.fill(0, 2 * MiB);
    await base.write(start.subarray(0, 2 * MiB), 0);
    await base.close();
    const parent = await openLocation(loc.at('base.vdi'), { readOnly: true });
    const child = await vdiDriver.create(loc.at('child.vdi'), { size: 3 * MiB, options: {}, parent });
    await child.close();
    const steps = [
      write(4096, 512, 1), // partial block over parent data: the rest comes from the parent
      zeroes(MiB, MiB), // ZERO over parent data
      write(2 * MiB + 100, 100, 2),
      zeroes(0, MiB), // release the first data block
    ];
    const writes = await sweep(await filesOf(loc), 'child.vdi', start, steps);
    expect(writes).toBeGreaterThanOrEqual(8);
  }, 120_000);
});
