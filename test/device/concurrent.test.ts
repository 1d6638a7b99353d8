/**
 * Many tasks writing one image at once, as an LV's users or an NBD client's queue do:
 * overlapping requests must not share a newly allocated block, and a read issued
 * while another task allocates must see whole data. qemu-img judges the result.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { create } from '../../src/ops/create.js';
import { itWith, qemuSame, run } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';
import { VARIANTS, extension } from '../ops/variants.js';

const MiB = 1 << 20;
const SIZE = 24 * MiB;
const CHUNK = 192 << 10;
const TASKS = 6;
const PER_TASK = 12;

/** Where task `t`'s `n`th chunk goes: scattered, never overlapping another chunk, crossing block bounds. */
function slot(t: number, n: number): number {
  const slots = Math.floor(SIZE / CHUNK);
  const k = t * PER_TASK + n;
  return ((k * 37) % slots) * CHUNK;
}

describe('concurrent writers on one image', () => {
  for (const v of VARIANTS.filter((x) => x.format !== 'raw' && !x.id.endsWith('streamOptimized'))) {
    itWith(['qemu-img'], `${v.id}: ${TASKS} tasks writing and reading back at once leave the bytes each wrote, and qemu-img agrees`, async () => {
      const dir = await tempDir('vdisk-concurrent-');
      const path = join(dir, `d.${extension(v)}`);
      await (await create(path, { format: v.format, size: SIZE, options: v.options })).close();
      const img = await open(path, { readOnly: false });
      const expected = Buffer.alloc(SIZE);
      const errors: unknown[] = [];
      const task = async (t: number): Promise<void> => {
        for (let n = 0; n < PER_TASK; n++) {
          const at = slot(t, n);
          const data = patternBytes(CHUNK, t * 1000 + n + 1);
          data.copy(expected, at);
          await img.write(data, at);
          const back = Buffer.alloc(CHUNK);
          await img.read(back, at);
          if (!back.equals(data)) throw new Error(`task ${t}: chunk at ${at} read back wrong`);
          if (n % 4 === 3) await img.flush();
        }
      };
      await Promise.all(Array.from({ length: TASKS }, (_, t) => task(t).catch((e: unknown) => errors.push(e))));
      await img.close();
      expect(errors).toEqual([]);
      const raw = join(dir, 'expected.raw');
      await writeFile(raw, expected);
      expect(await qemuSame(path, v.format, raw, 'raw')).toBe(true);
      if (v.format !== 'vhd') expect((await run('qemu-img', ['check', '-f', v.qemuFormat, path])).code).toBe(0);
    });
  }
});
