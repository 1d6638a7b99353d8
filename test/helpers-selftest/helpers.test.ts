/** The shared test machinery must itself catch what it exists to catch. */
import { describe, expect, it } from 'vitest';
import { VdiskError } from '../../src/errors.js';
import { openLocation } from '../../src/formats/registry.js';
import { crashSweep } from '../helpers/crash.js';
import { fuzz, mutations } from '../helpers/fuzz.js';

describe('fuzz helper', () => {
  const seed = Buffer.alloc(1024, 7);

  it('makes the same cases from the same seed, and different ones from another', () => {
    const a = [...mutations(seed, { count: 50, seed: 1, fields: [{ offset: 8, size: 4 }] })];
    const b = [...mutations(seed, { count: 50, seed: 1, fields: [{ offset: 8, size: 4 }] })];
    const c = [...mutations(seed, { count: 50, seed: 2, fields: [{ offset: 8, size: 4 }] })];
    expect(a.map((x) => x.name)).toEqual(b.map((x) => x.name));
    expect(a.map((x) => x.name)).not.toEqual(c.map((x) => x.name));
    expect(a.some((x) => x.name.includes('truncate'))).toBe(true);
    expect(a.some((x) => x.name.includes('field'))).toBe(true);
    expect(a.every((x) => !x.data.equals(seed) || x.name.includes('field'))).toBe(true);
  });

  it('accepts VdiskErrors and fails on any other error, naming the case', async () => {
    const cases = [...mutations(seed, { count: 20, seed: 3 })];
    const stats = await fuzz(cases, async (d) => {
      if (d[0] !== 7) throw new VdiskError('E_CORRUPT', 'first byte');
    });
    expect(stats.cases).toBe(20);
    await expect(
      fuzz(cases, async () => {
        throw new TypeError('boom');
      }),
    ).rejects.toThrow(/fuzz case #0 .*not a VdiskError: TypeError: boom/);
  });

  it('fails a case that hangs', async () => {
    await expect(fuzz([{ name: 'slow', data: seed }], () => new Promise(() => undefined), { timeoutMs: 50 })).rejects.toThrow(/slow: no answer within 50 ms/);
  });
});

describe('crash sweep helper', () => {
  it('finds a workload that loses flushed data, and passes one that keeps it', async () => {
    const initial = new Map([['disk.img', Buffer.alloc(64 * 1024)]]);
    const steps = 4;
    const workload = (careful: boolean) => async (loc: Parameters<Parameters<typeof crashSweep>[0]['workload']>[0], progress: { flushedSteps: number }) => {
      const img = await openLocation(loc, { format: 'raw' });
      for (let i = 0; i < steps; i++) {
        // The careless variant claims a step is durable before writing it.
        if (!careful) progress.flushedSteps = i + 1;
        await img.write(Buffer.alloc(512, i + 1), i * 4096);
        await img.flush();
        progress.flushedSteps = i + 1;
      }
      await img.close();
    };
    const verify = async (files: Map<string, Buffer>, p: { flushedSteps: number }) => {
      const data = files.get('disk.img')!;
      for (let i = 0; i < p.flushedSteps; i++) if (data[i * 4096] !== i + 1) throw new Error(`step ${i} lost`);
    };
    const n = await crashSweep({ initial, name: 'disk.img', workload: workload(true), verify });
    expect(n).toBe(steps);
    await expect(crashSweep({ initial, name: 'disk.img', workload: workload(false), verify, modes: ['power-loss'] })).rejects.toThrow(/step \d lost/);
  });
});
