/**
 * Crash safety of qcow2 writes: a fault (torn or not, in order or as a power loss) at
 * every write of a workload that allocates clusters, L2 tables and refcount blocks
 * and zeroes clusters must leave an image that opens, reads
 * every flushed step, and that `qemu-img check` finds free of corruption (leaks allowed).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { checkQcow2, qcow2Driver } from '../../../src/formats/qcow2/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { findTool, run } from '../../helpers/oracle.js';
import { readAll } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const K = 1024;
type Step = { run: (img: DiskImage) => Promise<void>; apply: (m: Buffer) => void; range: [number, number] };
const write = (off: number, len: number, seed: number): Step => {
  const d = patternBytes(len, seed);
  return { run: (img) => img.write(d, off), apply: (m) => void d.copy(m, off), range: [off, off + len] };
};
const zeroes = (off: number, len: number): Step => ({ run: (img) => img.writeZeroes(off, len), apply: (m) => void m.fill(0, off, off + len), range: [off, off + len] });

describe('qcow2 crash safety', async () => {
  const dir = await tempDir('vdisk-qcow2-crash-');
  it('survives a fault at every write (512-byte clusters: new L2 tables and refcount blocks)', async () => {
    const size = 512 * K;
    const loc = new MemoryLocation('a.qcow2');
    const img = await qcow2Driver.create(loc, { size, options: { cluster_size: '512' } });
    await img.close();
    const initial = new Map<string, Buffer>();
    const s0 = loc.files.get('a.qcow2')!;
    const b0 = Buffer.alloc(s0.size);
    await s0.read(b0, 0);
    initial.set('a.qcow2', b0);
    const steps = [write(100, 3000, 1), write(200 * K, 64 * K, 2), zeroes(200 * K, 16 * K), write(201 * K, 512, 4), write(400 * K, 100, 5), write(300 * K, 40 * K, 6)];
    const model = [Buffer.alloc(size)];
    for (const s of steps) {
      const m = Buffer.from(model[model.length - 1]!);
      s.apply(m);
      model.push(m);
    }
    const sample: Buffer[] = [];
    let n = 0;
    const writes = await crashSweep({
      initial,
      name: 'a.qcow2',
      workload: async (l, progress) => {
        const w = await openLocation(l.at('a.qcow2'));
        for (const s of steps) {
          await s.run(w);
          await w.flush();
          progress.flushedSteps++;
        }
        await w.close();
      },
      verify: async (files, progress) => {
        const folder = new MemoryLocation('a.qcow2');
        for (const [name, b] of files) folder.files.set(name, new MemoryStorage(b, { name }));
        const f = progress.flushedSteps;
        const before = model[f]!;
        const after = model[Math.min(f + 1, steps.length)]!;
        const [lo, hi] = f < steps.length ? steps[f]!.range : [0, 0];
        const ro = await openLocation(folder.at('a.qcow2'), { readOnly: true });
        const got = await readAll(ro);
        await ro.close();
        expect(got.subarray(0, lo).equals(before.subarray(0, lo)), 'bytes before the step in progress').toBe(true);
        expect(got.subarray(hi).equals(before.subarray(hi)), 'bytes after the step in progress').toBe(true);
        for (let i = lo; i < hi; i++) if (got[i] !== before[i] && got[i] !== after[i]) throw new Error(`byte ${i} is neither before nor after`);
        // Our check: leaks allowed, never corruption.
        const r = await checkQcow2(new MemoryStorage(files.get('a.qcow2')!, { name: 'a.qcow2' }), folder.at('a.qcow2'), {});
        expect(r.totalClusters).toBe(size / 512);
        expect(r.problems.filter((p) => p.severity === 'corrupt')).toEqual([]);
        if (n++ % 17 === 0) sample.push(files.get('a.qcow2')!);
      },
    });
    expect(writes).toBeGreaterThan(30);
    expect(sample.length).toBeGreaterThan(10);
    if (findTool('qemu-img')) {
      for (const [i, b] of sample.entries()) {
        const f = join(dir, `c${i}.qcow2`);
        await writeFile(f, b);
        const r = await run('qemu-img', ['check', '-f', 'qcow2', f]);
        // 0: clean, 3: leaked clusters only; 2 would be corruption.
        expect([0, 3], `${f}: ${r.stdout}${r.stderr}`).toContain(r.code);
      }
    }
  }, 300_000);
});
