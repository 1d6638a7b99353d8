import { copyFile, open as fsOpen, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { compare, type CompareResult } from '../../src/ops/compare.js';
import { convert } from '../../src/ops/convert.js';
import { itWith, run } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';
import { VARIANTS, extension, qemuMake, registered, writePatternRaw } from './variants.js';

let dir = '';
let base = '';

beforeAll(async () => {
  dir = await tempDir('vdisk-compare-');
  base = join(dir, 'base.raw');
  await writePatternRaw(base);
});

async function cmp(a: string, b: string, strict = false): Promise<CompareResult> {
  const ia = await open(a, { readOnly: true });
  const ib = await open(b, { readOnly: true });
  try {
    return await compare(ia, ib, { strict });
  } finally {
    await ia.close();
    await ib.close();
  }
}

/** qemu-img compare's verdict: exit code and the offset it names. */
async function qemuCompare(a: string, b: string, strict = false): Promise<{ code: number; offset?: number }> {
  const r = await run('qemu-img', ['compare', ...(strict ? ['-s'] : []), '-f', 'raw', '-F', 'raw', a, b]);
  const m = /offset (\d+)/.exec(r.stdout);
  return { code: r.code, offset: m ? Number(m[1]) : undefined };
}

async function poke(path: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await fsOpen(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

describe('compare agrees with qemu-img compare', () => {
  itWith(['qemu-img'], 'identical copies, a one-byte difference, and a difference inside a hole on one side', async () => {
    const same = join(dir, 'same.raw');
    await copyFile(base, same);
    expect(await cmp(base, same)).toEqual({ identical: true, sizeMismatch: false });
    expect((await qemuCompare(base, same)).code).toBe(0);

    for (const at of [70_000, 3 * 1024 * 1024 + 12345, 6 * 1024 * 1024 + 3]) {
      const diff = join(dir, `diff-${at}.raw`);
      await copyFile(base, diff);
      await poke(diff, at, Buffer.from([0xee]));
      const ours = await cmp(base, diff);
      expect(ours).toMatchObject({ identical: false, offset: at, reason: 'content' });
      // qemu-img names the sector that holds the first difference.
      const q = await qemuCompare(base, diff);
      expect(q.code).toBe(1);
      expect(q.offset).toBe(Math.floor(at / 512) * 512);
      // Both orders find the same place.
      expect((await cmp(diff, base)).offset).toBe(at);
    }
  });

  itWith(['qemu-img'], 'different sizes: same when the tail reads as zeros, unless strict; a data tail differs', async () => {
    const longer = join(dir, 'longer.raw');
    await copyFile(base, longer);
    await truncate(longer, 12 * 1024 * 1024);
    const ours = await cmp(base, longer);
    expect(ours).toEqual({ identical: true, sizeMismatch: true });
    expect((await qemuCompare(base, longer)).code).toBe(0);
    expect(await cmp(base, longer, true)).toMatchObject({ identical: false, reason: 'size' });
    expect((await qemuCompare(base, longer, true)).code).toBe(1);

    await poke(longer, 10 * 1024 * 1024 + 77, Buffer.from([1]));
    expect(await cmp(base, longer)).toMatchObject({ identical: false, offset: 10 * 1024 * 1024 + 77 });
    const q = await qemuCompare(base, longer);
    expect(q.code).toBe(1);
    expect(q.offset).toBe(10 * 1024 * 1024);
  });

  itWith(['qemu-img'], 'strict mode tells unallocated from written zeros', async () => {
    const holes = join(dir, 'holes.raw');
    const zeros = join(dir, 'zeros.raw');
    await writeFile(holes, '');
    await truncate(holes, 1024 * 1024);
    await writeFile(zeros, Buffer.alloc(1024 * 1024));
    expect(await cmp(holes, zeros)).toEqual({ identical: true, sizeMismatch: false });
    expect((await qemuCompare(holes, zeros)).code).toBe(0);
    expect(await cmp(holes, zeros, true)).toMatchObject({ identical: false, reason: 'allocation', offset: 0 });
    expect((await qemuCompare(holes, zeros, true)).code).toBe(1);
  });
});

describe('compare across formats (a converted copy is the same disk; a changed one is not)', () => {
  for (const v of VARIANTS) {
    const name = `raw vs ${v.id}`;
    if (!registered(v.format)) {
      it.skip(`${name} [skipped: driver ${v.format} not registered]`, () => undefined);
      continue;
    }
    itWith(['qemu-img'], name, async () => {
      const img = join(dir, `x-${v.id}.${extension(v)}`);
      await qemuMake(v, base, img);
      expect(await cmp(base, img)).toMatchObject({ identical: true });
      const changed = join(dir, `changed-${v.id}.raw`);
      await copyFile(base, changed);
      await poke(changed, 2 * 1024 * 1024 + 700, patternBytes(3, 5));
      expect(await cmp(img, changed)).toMatchObject({ identical: false, offset: 2 * 1024 * 1024 + 700 });
      // And our own conversion compares equal to qemu's.
      const ours = join(dir, `ours-${v.id}.${extension(v)}`);
      await convert(base, ours, { format: v.format, options: v.options });
      expect(await cmp(img, ours)).toMatchObject({ identical: true });
    });
  }
});
