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

describe('crash sweep helper: file creation, rename and removal', () => {
  const initial = new Map([['disk.img', Buffer.alloc(4096, 1)]]);
  type Loc = Parameters<Parameters<typeof crashSweep>[0]['workload']>[0];
  /** Replace disk.img with new bytes through a temp file; `careful` flushes before the rename and renames over the old file. */
  const replace = (how: 'careful' | 'no-flush' | 'remove-first') => async (loc: Loc, progress: { flushedSteps: number }) => {
    const tmp = await loc.create('disk.img.tmp');
    await tmp.write(Buffer.alloc(4096, 2), 0);
    if (how !== 'no-flush') await tmp.flush();
    if (how === 'remove-first') await loc.remove('disk.img');
    await loc.rename('disk.img.tmp', 'disk.img');
    progress.flushedSteps = 1;
  };
  const verify = async (files: Map<string, Buffer>, p: { flushedSteps: number }) => {
    const d = files.get('disk.img');
    if (!d || d.length !== 4096) throw new Error(`disk.img is ${d ? `${d.length} bytes` : 'missing'}`);
    if (d[0] !== 1 && d[0] !== 2) throw new Error(`disk.img holds ${d[0]}`);
    if (p.flushedSteps === 1 && d[0] !== 2) throw new Error('the rename was lost after it returned');
  };

  it('counts create, write, rename as crash points and passes a careful replace', async () => {
    // create, write, rename (flushes are not points by default).
    expect(await crashSweep({ initial, name: 'disk.img', workload: replace('careful'), verify })).toBe(3);
    // With flushes as points too: create, write, flush, rename.
    expect(await crashSweep({ initial, name: 'disk.img', workload: replace('careful'), verify, flushes: true })).toBe(4);
  });

  it('finds a rename of unflushed bytes (power loss) and a removal before the rename (either mode)', async () => {
    await expect(crashSweep({ initial, name: 'disk.img', workload: replace('no-flush'), verify, modes: ['power-loss'] })).rejects.toThrow(/disk.img is 0 bytes/);
    await expect(crashSweep({ initial, name: 'disk.img', workload: replace('no-flush'), verify, modes: ['ordered'] })).resolves.toBe(3);
    await expect(crashSweep({ initial, name: 'disk.img', workload: replace('remove-first'), verify, modes: ['ordered'] })).rejects.toThrow(/disk.img is missing/);
  });

  it('after a power loss a file created since the last flush is gone, one flushed stays', async () => {
    const seen: Array<[number, string, string[]]> = [];
    await crashSweep({
      initial,
      name: 'disk.img',
      tear: false,
      workload: async (loc) => {
        const a = await loc.create('a.img');
        await a.write(Buffer.alloc(512, 3), 0);
        await a.flush();
        const b = await loc.create('b.img');
        await b.write(Buffer.alloc(512, 4), 0);
      },
      verify: async (files, _p, at, mode) => {
        seen.push([at, mode, [...files.keys()].sort()]);
      },
    });
    const pl = seen.filter((s) => s[1] === 'power-loss').map((s) => [s[0], s[2]]);
    // Points: 1 create a, 2 write a, 3 create b, 4 write b, 5 = after the end.
    expect(pl).toEqual([
      [1, ['disk.img']],
      [2, ['disk.img']],
      [3, ['a.img', 'disk.img']],
      [4, ['a.img', 'disk.img']],
      [5, ['a.img', 'disk.img']],
    ]);
    const ord = seen.filter((s) => s[1] === 'ordered').map((s) => [s[0], s[2]]);
    expect(ord).toEqual([
      [1, ['disk.img']],
      [2, ['a.img', 'disk.img']],
      [3, ['a.img', 'disk.img']],
      [4, ['a.img', 'b.img', 'disk.img']],
      [5, ['a.img', 'b.img', 'disk.img']],
    ]);
  });
});
