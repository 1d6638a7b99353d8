/**
 * Crash safety of VHDX writes: a fault (torn or not, in order or as a power loss) at
 * every write of a workload that allocates blocks (BAT sectors through the log),
 * overwrites and zeroes must leave an image that opens, reads every flushed step,
 * (crashes at flushes too), and after replay passes our check and `qemu-img check` (qemu replaying a copy
 * itself with `check -r all` reads the same bytes we read).
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdxDriver } from '../../../src/formats/vhdx/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { findTool, run, runOk } from '../../helpers/oracle.js';
import { readAll } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const K = 1024;
const MiB = 1024 * K;
type Step = { run: (img: DiskImage) => Promise<void>; apply: (m: Buffer) => void; range: [number, number] };
const write = (off: number, len: number, seed: number): Step => {
  const d = patternBytes(len, seed);
  return { run: (img) => img.write(d, off), apply: (m) => void d.copy(m, off), range: [off, off + len] };
};
const zeroes = (off: number, len: number): Step => ({ run: (img) => img.writeZeroes(off, len), apply: (m) => void m.fill(0, off, off + len), range: [off, off + len] });

describe('VHDX crash safety', async () => {
  const dir = await tempDir('vdisk-vhdx-crash-');
  it('survives a fault at every write (new blocks, BAT through the log, overwrites, zeroes)', async () => {
    const size = 6 * MiB;
    const loc = new MemoryLocation('a.vhdx');
    const img = await vhdxDriver.create(loc, { size, options: { block_size: '1M' } });
    await img.close();
    const s0 = loc.files.get('a.vhdx')!;
    const b0 = Buffer.alloc(s0.size);
    await s0.read(b0, 0);
    const initial = new Map([['a.vhdx', b0]]);
    const steps = [write(100, 3000, 1), write(2 * MiB - 512, 1024, 2), zeroes(2 * MiB - 256, 100 * K), write(200, 512, 4), write(5 * MiB + 4 * K, 8 * K, 5), write(4 * MiB, 40 * K, 6)];
    const model = [Buffer.alloc(size)];
    for (const s of steps) {
      const m = Buffer.from(model[model.length - 1]!);
      s.apply(m);
      model.push(m);
    }
    const sample: Array<{ file: Buffer; want: Buffer }> = [];
    let n = 0;
    const writes = await crashSweep({
      initial,
      name: 'a.vhdx',
      flushes: true,
      workload: async (l, progress) => {
        const w = await openLocation(l.at('a.vhdx'));
        for (const s of steps) {
          await s.run(w);
          await w.flush();
          progress.flushedSteps++;
        }
        await w.close();
      },
      verify: async (files, progress) => {
        const folder = new MemoryLocation('a.vhdx');
        for (const [name, b] of files) folder.files.set(name, new MemoryStorage(b, { name }));
        const f = progress.flushedSteps;
        const before = model[f]!;
        const after = model[Math.min(f + 1, steps.length)]!;
        const [lo, hi] = f < steps.length ? steps[f]!.range : [0, 0];
        const ro = await openLocation(folder.at('a.vhdx'), { readOnly: true });
        const got = await readAll(ro);
        await ro.close();
        expect(got.subarray(0, lo).equals(before.subarray(0, lo)), 'bytes before the step in progress').toBe(true);
        expect(got.subarray(hi).equals(before.subarray(hi)), 'bytes after the step in progress').toBe(true);
        for (let i = lo; i < hi; i++) if (got[i] !== before[i] && got[i] !== after[i]) throw new Error(`byte ${i} is neither before nor after`);
        if (n++ % 13 === 0) sample.push({ file: Buffer.from(files.get('a.vhdx')!), want: got });
        // A writable open replays what the log holds; then nothing is corrupt.
        const rw = await openLocation(folder.at('a.vhdx'));
        await rw.close();
        const r = await vhdxDriver.check!(folder.files.get('a.vhdx')!, folder.at('a.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('unused')) });
        expect(r.problems.filter((p) => p.severity === 'corrupt')).toEqual([]);
      },
    });
    expect(writes).toBeGreaterThan(20);
    expect(sample.length).toBeGreaterThan(5);
    if (findTool('qemu-img')) {
      for (const [i, s] of sample.entries()) {
        const f = join(dir, `c${i}.vhdx`);
        await writeFile(f, s.file);
        const c = join(dir, `c${i}-qemu.vhdx`);
        await copyFile(f, c);
        const r = await run('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', c]);
        expect(r.code, `${c}: ${r.stdout}${r.stderr}`).toBe(0);
        const r2 = await run('qemu-img', ['check', '-f', 'vhdx', c]);
        expect(r2.code, `${c}: ${r2.stdout}${r2.stderr}`).toBe(0);
        await runOk('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', c, `${c}.raw`]);
        expect((await readFile(`${c}.raw`)).equals(s.want), `${c}: qemu reads what we read`).toBe(true);
      }
    }
  }, 600_000);

  it('survives a fault at every write of a resize (grow moving a partial last block, then shrink)', async () => {
    const loc = new MemoryLocation('r.vhdx');
    const img = await vhdxDriver.create(loc, { size: 2 * MiB + 512 * K, options: { block_size: '1M' } });
    const data = patternBytes(2 * MiB + 512 * K, 8);
    await img.write(data, 0);
    await img.close();
    const s0 = loc.files.get('r.vhdx')!;
    const b0 = Buffer.alloc(s0.size);
    await s0.read(b0, 0);
    const sizes = [2 * MiB + 512 * K, 5 * MiB, 1 * MiB + 4 * K];
    const content = (size: number): Buffer => {
      const m = Buffer.alloc(size);
      data.copy(m, 0, 0, Math.min(size, data.length));
      return m;
    };
    const writes = await crashSweep({
      initial: new Map([['r.vhdx', b0]]),
      name: 'r.vhdx',
      flushes: true,
      workload: async (l, progress) => {
        const w = await openLocation(l.at('r.vhdx'));
        for (const size of sizes.slice(1)) {
          await w.resize!(size);
          await w.flush();
          progress.flushedSteps++;
        }
        await w.close();
      },
      verify: async (files, progress) => {
        const folder = new MemoryLocation('r.vhdx');
        for (const [name, b] of files) folder.files.set(name, new MemoryStorage(b, { name }));
        const ro = await openLocation(folder.at('r.vhdx'), { readOnly: true });
        const got = await readAll(ro);
        await ro.close();
        // The size (and content) of the step done, or of the one in progress; the shrunk-off part of the first reads as zeros after a later grow.
        const ok = [sizes[progress.flushedSteps]!, sizes[Math.min(progress.flushedSteps + 1, sizes.length - 1)]!].some((size) => got.length === size && got.equals(content(size)));
        expect(ok, `size ${got.length} after ${progress.flushedSteps} steps`).toBe(true);
        const rw = await openLocation(folder.at('r.vhdx'));
        await rw.close();
        const r = await vhdxDriver.check!(folder.files.get('r.vhdx')!, folder.at('r.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('unused')) });
        expect(r.problems.filter((p) => p.severity === 'corrupt')).toEqual([]);
      },
    });
    expect(writes).toBeGreaterThan(10);
  }, 600_000);

  it('survives a fault at every write into a differencing image (sector bitmap blocks and bits through the log)', async () => {
    const loc = new MemoryLocation('p.vhdx');
    const size = 3 * MiB;
    const parentData = patternBytes(size, 31);
    const p = await vhdxDriver.create(loc, { size, options: { block_size: '1M' } });
    await p.write(parentData, 0);
    await p.close();
    const parent = await openLocation(loc.at('p.vhdx'), { readOnly: true });
    const c = await vhdxDriver.create(loc.at('c.vhdx'), { size, options: { block_size: '1M' }, parent, parentRef: 'p.vhdx' });
    await c.close();
    const initial = new Map<string, Buffer>();
    for (const name of ['p.vhdx', 'c.vhdx']) {
      const st = loc.files.get(name)!;
      const b = Buffer.alloc(st.size);
      await st.read(b, 0);
      initial.set(name, b);
    }
    const steps = [write(100, 3000, 41), write(MiB - 300, 600, 42), zeroes(2 * MiB + 4 * K, 8 * K), write(1000, 100, 44)];
    const model = [Buffer.from(parentData)];
    for (const st of steps) {
      const m = Buffer.from(model[model.length - 1]!);
      st.apply(m);
      model.push(m);
    }
    const writes = await crashSweep({
      initial,
      name: 'c.vhdx',
      flushes: true,
      workload: async (l, progress) => {
        const w = await openLocation(l.at('c.vhdx'));
        for (const st of steps) {
          await st.run(w);
          await w.flush();
          progress.flushedSteps++;
        }
        await w.close();
      },
      verify: async (files, progress) => {
        const folder = new MemoryLocation('c.vhdx');
        for (const [name, b] of files) folder.files.set(name, new MemoryStorage(b, { name }));
        expect(files.get('p.vhdx')!.equals(initial.get('p.vhdx')!), 'the parent is never written').toBe(true);
        const f = progress.flushedSteps;
        const before = model[f]!;
        const after = model[Math.min(f + 1, steps.length)]!;
        const [lo, hi] = f < steps.length ? steps[f]!.range : [0, 0];
        // A partial sector is written whole: the step's range widens to sectors.
        const a = Math.floor(lo / 512) * 512;
        const z = Math.ceil(hi / 512) * 512;
        const ro = await openLocation(folder.at('c.vhdx'), { readOnly: true });
        const got = await readAll(ro);
        await ro.close();
        expect(got.subarray(0, a).equals(before.subarray(0, a)), 'bytes before the step in progress').toBe(true);
        expect(got.subarray(z).equals(before.subarray(z)), 'bytes after the step in progress').toBe(true);
        for (let i = a; i < z; i++) if (got[i] !== before[i] && got[i] !== after[i]) throw new Error(`byte ${i} is neither before nor after`);
        const rw = await openLocation(folder.at('c.vhdx'));
        await rw.close();
        const r = await vhdxDriver.check!(folder.files.get('c.vhdx')!, folder.at('c.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('unused')) });
        expect(r.problems.filter((x) => x.severity === 'corrupt')).toEqual([]);
      },
    });
    expect(writes).toBeGreaterThan(15);
  }, 600_000);

  it('survives a fault at every write of a compact (zero blocks released, blocks moved, file cut)', async () => {
    const loc = new MemoryLocation('k.vhdx');
    const size = 6 * MiB;
    const img = await vhdxDriver.create(loc, { size, options: { block_size: '1M' } });
    const model = Buffer.alloc(size);
    // Blocks allocated in the order 5, 0, 3, 1: then 0 and 3 are zeroed, so 5 and 1 move down.
    for (const n of [5, 0, 3, 1]) {
      const d = patternBytes(MiB, 50 + n);
      await img.write(d, n * MiB);
      d.copy(model, n * MiB);
    }
    await img.writeZeroes(0, MiB);
    await img.writeZeroes(3 * MiB, MiB);
    model.fill(0, 0, MiB);
    model.fill(0, 3 * MiB, 4 * MiB);
    await img.close();
    const s0 = loc.files.get('k.vhdx')!;
    const b0 = Buffer.alloc(s0.size);
    await s0.read(b0, 0);
    let released = 0;
    const writes = await crashSweep({
      initial: new Map([['k.vhdx', b0]]),
      name: 'k.vhdx',
      flushes: true,
      workload: async (l, progress) => {
        const w = await openLocation(l.at('k.vhdx'));
        released = (await w.compact!()).releasedBlocks;
        await w.flush();
        progress.flushedSteps++;
        await w.close();
      },
      verify: async (files) => {
        const folder = new MemoryLocation('k.vhdx');
        for (const [name, b] of files) folder.files.set(name, new MemoryStorage(b, { name }));
        const ro = await openLocation(folder.at('k.vhdx'), { readOnly: true });
        const got = await readAll(ro);
        await ro.close();
        expect(got.equals(model), 'content unchanged').toBe(true);
        const rw = await openLocation(folder.at('k.vhdx'));
        await rw.close();
        const r = await vhdxDriver.check!(folder.files.get('k.vhdx')!, folder.at('k.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('unused')) });
        expect(r.problems.filter((x) => x.severity === 'corrupt')).toEqual([]);
      },
    });
    expect(released).toBe(2);
    expect(writes).toBeGreaterThan(10);
  }, 600_000);
});
