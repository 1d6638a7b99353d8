/**
 * Interop: for every ordered pair of variants, a qemu-made source converted by vdisk
 * is the same disk to `qemu-img compare`; and for every qemu-made variant,
 * `vdisk map` and `qemu-img map` agree on which ranges hold data.
 *
 * Variants whose driver is not registered are skipped naming the driver; the same
 * tests run for real as soon as the driver is in the registry.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { convert } from '../../src/ops/convert.js';
import { mapImage } from '../../src/ops/map.js';
import { isZero } from '../../src/device/zero.js';
import { itWith, qemuSame, run, runOk } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { MATRIX_VARIANTS, type Variant, extension, qemuMake, registered, writePatternRaw } from './variants.js';

let dir = '';
let rawSource = '';
const sources = new Map<string, Promise<string>>();

beforeAll(async () => {
  dir = await tempDir('vdisk-interop-');
  rawSource = join(dir, 'pattern.raw');
  await writePatternRaw(rawSource);
});

/** The qemu-made image of variant `v` (made once). */
function source(v: Variant): Promise<string> {
  let p = sources.get(v.id);
  if (!p) {
    p = (async () => {
      const out = join(dir, `src-${v.id}.${extension(v)}`);
      await qemuMake(v, rawSource, out);
      return out;
    })();
    sources.set(v.id, p);
  }
  return p;
}

/** `it` that needs qemu-img and the drivers of `formats`; skipped naming what is missing. */
function itFor(formats: readonly string[], name: string, fn: () => Promise<void>, timeout?: number): void {
  const missing = [...new Set(formats.filter((f) => !registered(f)))];
  if (missing.length) it.skip(`${name} [skipped: driver ${missing.join(', ')} not registered]`, () => undefined);
  else itWith(['qemu-img'], name, fn, timeout);
}

type Range = [number, number];

function dataRanges(entries: Array<{ start: number; length: number; data: boolean }>): Range[] {
  const out: Range[] = [];
  for (const e of entries) {
    if (!e.data) continue;
    const last = out[out.length - 1];
    if (last && last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.start + e.length]);
  }
  return out;
}

/** Parts of `a` not covered by `b` (both sorted, disjoint). */
function subtract(a: Range[], b: Range[]): Range[] {
  const out: Range[] = [];
  for (const [s0, e0] of a) {
    let s = s0;
    for (const [bs, be] of b) {
      if (be <= s || bs >= e0) continue;
      if (bs > s) out.push([s, bs]);
      s = Math.max(s, be);
    }
    if (s < e0) out.push([s, e0]);
  }
  return out;
}

describe('convert between every ordered pair of variants (judged by qemu-img compare)', () => {
  for (const from of MATRIX_VARIANTS) {
    for (const to of MATRIX_VARIANTS) {
      itFor([from.format, to.format], `${from.id} → ${to.id}`, async () => {
        const src = await source(from);
        const dst = join(dir, `out-${from.id}-to-${to.id}.${extension(to)}`);
        const result = await convert(src, dst, { format: to.format, options: to.options });
        expect(result.files[0]).toBe(dst);
        expect(await qemuSame(src, from.qemuFormat, dst, to.qemuFormat)).toBe(true);
        // Also identical to the raw it all came from.
        expect(await qemuSame(rawSource, 'raw', dst, to.qemuFormat)).toBe(true);
        if (to.qemuFormat === 'vdi' || to.qemuFormat === 'vmdk' || to.qemuFormat === 'qcow2' || to.qemuFormat === 'vhdx') {
          const r = await run('qemu-img', ['check', '-f', to.qemuFormat, dst]);
          expect(r.code, r.stdout + r.stderr).toBe(0);
        }
        // No temporary folder left next to the result.
        expect((await readdir(dir)).filter((n) => n.includes('vdisk-convert'))).toEqual([]);
      });
    }
  }
});

describe('vdisk map agrees with qemu-img map on which ranges hold data', () => {
  for (const v of MATRIX_VARIANTS) {
    itFor([v.format], v.id, async () => {
      const src = await source(v);
      const qemu = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', v.qemuFormat, src])) as Array<{ start: number; length: number; data: boolean }>;
      const img = await open(src, { readOnly: true });
      try {
        const ours: Array<{ start: number; length: number; data: boolean }> = [];
        for await (const m of mapImage(img)) ours.push(m);
        // Both maps cover the disk exactly, in order.
        let pos = 0;
        for (const m of ours) {
          expect(m.start).toBe(pos);
          pos += m.length;
        }
        expect(pos).toBe(img.size);
        const vd = dataRanges(ours);
        const qd = dataRanges(qemu);
        expect(vd.length).toBeGreaterThan(0);
        // vdisk never claims data where qemu-img sees none.
        expect(subtract(vd, qd)).toEqual([]);
        if (v.exactMap) {
          expect(vd).toEqual(qd);
        } else {
          // Where qemu-img says data and vdisk does not, the disk must read as zeros.
          for (const [s, e] of subtract(qd, vd)) {
            for (let p = s; p < e; p += 1024 * 1024) {
              const buf = Buffer.alloc(Math.min(1024 * 1024, e - p));
              await img.read(buf, p);
              expect(isZero(buf), `${v.id}: qemu data at ${p} that vdisk calls zero is not zeros`).toBe(true);
            }
          }
        }
      } finally {
        await img.close();
      }
    });
  }
});

describe('a differencing chain converts flat and maps with depths like qemu-img (vmdk: the chain qemu follows)', () => {
  itFor(['vmdk'], 'vmdk child over a vmdk parent', async () => {
    const parent = join(dir, 'chain-parent.vmdk');
    const child = join(dir, 'chain-child.vmdk');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', rawSource, parent]);
    await runOk('qemu-img', ['create', '-f', 'vmdk', '-b', 'chain-parent.vmdk', '-F', 'vmdk', child]);
    await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x33 1M 128k', '-c', 'write -P 0x44 3200k 64k', child]);
    const out = join(dir, 'chain-flat.raw');
    await convert(child, out, { format: 'raw' });
    expect(await qemuSame(child, 'vmdk', out, 'raw')).toBe(true);
    const qemu = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'vmdk', child])) as Array<{ start: number; length: number; depth: number; data: boolean }>;
    const img = await open(child, { readOnly: true });
    try {
      const ours = [];
      for await (const m of mapImage(img)) ours.push(m);
      for (const depth of [0, 1]) {
        expect(dataRanges(ours.filter((m) => m.depth === depth)), `depth ${depth}`).toEqual(dataRanges(qemu.filter((m) => m.depth === depth)));
      }
    } finally {
      await img.close();
    }
  });
});
