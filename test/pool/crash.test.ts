// The fault sweep over every pool change: create, lv create, add, a striped lv create,
// lv extend, lv reduce, remove with its migration chunks, lv remove. At every write
// (whole or torn, kept in order or lost to a power cut after the last flush) the pool
// opens at a seqno between the last finished change and the next one, its flushed LV
// data reads back, and a sample of the states left is accepted by LVM2's pvck and vgs.
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { Pool } from '../../src/pool/pool.js';
import { memoryFolder } from '../../src/pool/folder.js';
import { MemoryLocation } from '../../src/storage/location.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { crashSweep } from '../helpers/crash.js';
import { LVM_TOOLS, withLvm } from '../helpers/lvm.js';
import { itWith } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;
const MEMBERS = ['a.raw', 'b.raw', 'c.raw'];
const A = patternBytes(6 * MiB, 11);
const TAIL = patternBytes(8 * MiB, 12);

/** What lin holds once step `n` has finished (and its size then). */
function linAfter(n: number): Buffer | undefined {
  if (n < 2) return undefined;
  if (n < 5) return A;
  return Buffer.concat([A, TAIL]).subarray(0, n >= 6 ? 12 * MiB : 14 * MiB);
}

describe('pool crash safety', () => {
  itWith(LVM_TOOLS, 'every write of every pool change, torn or lost, leaves a pool that opens at the old or new seqno with its flushed data', async () => {
    const initial = new Map(MEMBERS.map((n, i) => [n, Buffer.alloc((i === 0 ? 12 : 16) * MiB)]));
    const seqnoAfter: number[] = [0];
    let dry = true;
    const states = new Map<string, { files: Map<string, Buffer>; seqno: number }>();
    const points = await crashSweep({
      initial,
      name: 'a.raw',
      modes: ['ordered', 'power-loss'],
      workload: async (loc, progress) => {
        const folder = memoryFolder(loc);
        const step = (n: number, p: Pool): void => {
          progress.flushedSteps = n;
          if (dry) seqnoAfter[n] = p.vg.seqno;
        };
        const pool = await Pool.create('vg0', ['a.raw', 'b.raw'], { folder, extentSize: MiB });
        step(1, pool);
        await pool.lvCreate('lin', 6 * MiB);
        const lin = pool.openLv('lin');
        await lin.write(A, 0);
        await lin.flush();
        step(2, pool);
        await pool.add('c.raw', { folder });
        step(3, pool);
        await pool.lvCreate('str', 4 * MiB, { stripes: 2, stripeSize: 64 << 10 });
        step(4, pool);
        await pool.lvExtend('lin', 14 * MiB);
        await lin.write(TAIL, 6 * MiB);
        await lin.flush();
        step(5, pool);
        await pool.lvReduce('lin', 12 * MiB);
        step(6, pool);
        await pool.remove('b.raw', { chunkExtents: 2 });
        step(7, pool);
        await pool.lvRemove('str');
        step(8, pool);
        await pool.close();
        dry = false;
      },
      verify: async (files, progress) => {
        const done = progress.flushedSteps;
        const loc = new MemoryLocation('a.raw', new Map([...files].map(([n, b]) => [n, new MemoryStorage(b, { name: n })])));
        let pool: Pool;
        try {
          pool = await Pool.open('vg0', { folder: memoryFolder(loc) });
        } catch (e) {
          // Before create's first commit slot nothing names a VG yet.
          expect(done, `pool lost after step ${done}: ${(e as Error).message}`).toBe(0);
          expect((e as { code?: string }).code).toBe('E_NOENT');
          return;
        }
        try {
          const s = pool.vg.seqno;
          expect(s, `seqno after step ${done}`).toBeGreaterThanOrEqual(seqnoAfter[done]!);
          expect(s).toBeLessThanOrEqual(seqnoAfter[Math.min(done + 1, 8)]!);
          expect(pool.readOnly, pool.warnings.join('; ')).toBe(false);
          const want = linAfter(done);
          if (want) {
            // The change under way may already have shrunk lin (the reduce step).
            const n = Math.min(want.length, linAfter(done + 1)?.length ?? want.length);
            const lv = pool.openLv('lin');
            expect(lv.size).toBeGreaterThanOrEqual(n);
            const got = Buffer.alloc(n);
            await lv.read(got, 0);
            expect(got.equals(want.subarray(0, n)), `lin data after step ${done}`).toBe(true);
          }
          const key = createHash('sha1');
          for (const n of MEMBERS) key.update(files.get(n)!);
          const h = key.digest('hex');
          if (!states.has(h)) states.set(h, { files, seqno: s });
        } finally {
          await pool.close();
        }
      },
    });
    expect(points).toBeGreaterThan(100);
    expect(seqnoAfter[8]).toBeGreaterThan(10);

    // LVM2 judges a spread of the states left behind (the mixed ones included).
    const sample = [...states.values()].filter((_, i, all) => i % Math.max(1, Math.floor(all.length / 6)) === 0).slice(0, 7);
    const dir = await tempDir('vdisk-pool-crash-');
    for (const [i, st] of sample.entries()) {
      const paths: string[] = [];
      for (const n of MEMBERS) {
        const p = join(dir, `${i}-${n}`);
        await writeFile(p, st.files.get(n)!);
        paths.push(p);
      }
      await withLvm(paths, async (s) => {
        const [vgs] = await s.report('vgs', 'vg_name,vg_seqno', ['vg0']);
        expect(vgs, `state ${i}`).toMatchObject({ vg_name: 'vg0', vg_seqno: String(st.seqno) });
        for (const d of s.devices) {
          const label = (await s.lvmRun('pvs', ['--noheadings', '-o', 'vg_name', d])).out.trim();
          if (label === 'vg0') expect((await s.lvmRun('pvck', [d])).code, `pvck ${d} in state ${i}`).toBe(0);
        }
      });
    }
  }, 600_000);
});
