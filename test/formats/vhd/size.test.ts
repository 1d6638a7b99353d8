/**
 * Every reader sees the same VHD size: the geometry we write makes plain qemu-img
 * (which sizes our creator "vdsk" by CHS), vhdiinfo (current_size) and vdisk agree,
 * after create, convert -O vhd and resize, and on images qemu-img made; `vdisk info`
 * warns about images from other tools that qemu would size differently.
 */
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { open } from '../../../src/formats/registry.js';
import { MAX_CHS_SECTORS, MAX_GEOMETRY, chsGeometry, decodeFooter, diskGeometry, geometrySectors } from '../../../src/formats/vhd/layout.js';
import { convert } from '../../../src/ops/convert.js';
import { create } from '../../../src/ops/create.js';
import { describeImage } from '../../../src/ops/info.js';
import { resize } from '../../../src/ops/resize.js';
import { vdisk } from '../../helpers/cli.js';
import { itWith, qemuInfo, runOk } from '../../helpers/oracle.js';
import { tempDir } from '../../helpers/tmp.js';
import { editFooter } from './helpers.js';

const dir = await tempDir('vdisk-vhd-size-');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * The sizes the issue names, plus a prime sector count over 65535, and whether some
 * cylinders x heads x sectors product (at most 65535 x 16 x 255) is exactly the size.
 */
const SIZES: Array<[string, number, boolean]> = [
  ['1M', MiB, true],
  ['100M', 100 * MiB, true],
  ['1000M', 1000 * MiB, true],
  ['12345 sectors', 12345 * 512, true], // 3 x 5 x 823
  ['65537 sectors (prime)', 65537 * 512, false],
  ['127G', 127 * GiB, false], // 127 x 2^21 sectors: 16 heads x 254 sectors leave 65536 cylinders
  ['2040G', 2040 * GiB, false], // over 65535 x 16 x 255 sectors
];

/** What a reader that sizes by CHS alone (Virtual PC) sees: the geometry's product, or "largest". */
async function chsReading(f: string): Promise<number | 'largest'> {
  const b = await readFile(f);
  const { footer } = decodeFooter(b.subarray(b.length - 512));
  return geometrySectors(footer) === MAX_CHS_SECTORS ? 'largest' : geometrySectors(footer) * 512;
}

/** What each reader sees of an image. */
interface Readings {
  /** Plain `qemu-img info -f vpc`, as a user runs it (CHS for creators qemu does not know). */
  qemu: number;
  /** Hyper-V's rule, current_size, as qemu-img applies it with force_size_calc=current_size. */
  currentSize: number;
  /** vhdiinfo's media size (libvhdi reports original_size). */
  vhdiinfo: number;
  vdisk: number;
  /** What `vdisk info` warns. */
  warnings: string[];
}

/** What the judges say of `f`. */
async function judged(f: string): Promise<Readings> {
  const qemu = (await qemuInfo(f, 'vpc'))['virtual-size'] as number;
  const opts = `driver=vpc,force_size_calc=current_size,file.filename=${f.replace(/,/g, ',,')}`;
  const currentSize = (JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', '--image-opts', opts])) as Record<string, unknown>)['virtual-size'] as number;
  const m = /Media size\s*:.*\((\d+) bytes\)/.exec(await runOk('vhdiinfo', [f]));
  const img = await open(f, { readOnly: true });
  try {
    const r = await describeImage(img);
    return { qemu, currentSize, vhdiinfo: Number(m?.[1]), vdisk: img.size, warnings: r.warnings ?? [] };
  } finally {
    await img.close();
  }
}

/** Every reader sees `size`, and vdisk warns of nothing. */
function allSee(size: number): Readings {
  return { qemu: size, currentSize: size, vhdiinfo: size, vdisk: size, warnings: [] };
}

describe('diskGeometry', () => {
  it('keeps the spec geometry when it is exact, finds another exact one when not, else the largest', () => {
    const spec = 17 * 4 * 600 * 512; // the spec's algorithm multiplies out to this size exactly
    expect(diskGeometry(spec)).toEqual({ ...chsGeometry(spec), exact: true });
    for (const [, size, exact] of SIZES) {
      const g = diskGeometry(size);
      expect(g.exact).toBe(exact);
      expect([g.cylinders <= 65535, g.heads <= 16, g.sectorsPerTrack <= 255]).toEqual([true, true, true]);
      if (exact) expect(geometrySectors(g) * 512).toBe(size);
      else expect(g).toMatchObject(MAX_GEOMETRY);
    }
    // The spec's 1003x12x17 falls short of 100M; tracks of at most 63 sectors (what a BIOS addresses) come first.
    expect(diskGeometry(100 * MiB)).toEqual({ cylinders: 256, heads: 16, sectorsPerTrack: 50, exact: true });
    expect(diskGeometry(MAX_CHS_SECTORS * 512)).toEqual({ ...MAX_GEOMETRY, exact: true });
  });
});

describe('VHD sizes: plain qemu-img, current_size, vhdiinfo and vdisk agree', () => {
  for (const [label, size, exact] of SIZES) {
    itWith(['qemu-img', 'vhdiinfo'], `dynamic ${label}`, async () => {
      const f = join(dir, `dyn-${size}.vhd`);
      await (await create(f, { format: 'vhd', size })).close();
      expect(await judged(f)).toEqual(allSee(size));
      // The geometry says the size itself where one can; else it is the largest, which qemu reads as "use current_size".
      expect(await chsReading(f)).toBe(exact ? size : 'largest');
    });
  }

  for (const [label, size, exact] of SIZES.filter(([, s]) => s <= 1000 * MiB)) {
    itWith(['qemu-img', 'vhdiinfo'], `fixed ${label}`, async () => {
      const f = join(dir, `fix-${size}.vhd`);
      await (await create(f, { format: 'vhd', size, options: { subformat: 'fixed' } })).close();
      expect(await judged(f)).toEqual(allSee(size));
      expect(await chsReading(f)).toBe(exact ? size : 'largest');
    });
  }

  itWith(['qemu-img', 'vhdiinfo'], 'azure=on stays exact (fixed, whole MiB)', async () => {
    const f = join(dir, 'azure.vhd');
    await (await create(f, { format: 'vhd', size: 30 * MiB, options: { azure: 'on' } })).close();
    expect(await judged(f)).toEqual(allSee(30 * MiB));
  });

  itWith(['qemu-img', 'vhdiinfo'], 'differencing child of an odd-sized parent', async () => {
    const base = join(dir, 'diff-base.vhd');
    const child = join(dir, 'diff-child.vhd');
    await (await create(base, { format: 'vhd', size: 65537 * 512 })).close();
    await (await create(child, { format: 'vhd', backing: base })).close();
    expect(await judged(child)).toEqual(allSee(65537 * 512));
  });

  for (const [label, size, subformat] of [
    ['100M', 100 * MiB, 'dynamic'],
    ['12345 sectors', 12345 * 512, 'fixed'],
    ['65537 sectors', 65537 * 512, 'dynamic'],
    ['an odd byte count (rounded up to a sector)', 1000 * 1000 + 1, 'dynamic'],
  ] as const) {
    itWith(['qemu-img', 'vhdiinfo'], `convert -O vhd (${subformat}) of a raw ${label}`, async () => {
      const raw = join(dir, `conv-${size}.raw`);
      const f = join(dir, `conv-${size}.vhd`);
      await writeFile(raw, '');
      await truncate(raw, size);
      const r = await convert(raw, f, { format: 'vhd', options: { subformat } });
      const want = Math.ceil(size / 512) * 512;
      expect(r.size).toBe(want);
      expect(await judged(f)).toEqual(allSee(want));
    });
  }

  for (const [label, to] of [
    ['to 100M', 100 * MiB],
    ['to 65537 sectors', 65537 * 512],
    ['to 127G', 127 * GiB],
    ['to 2040G', 2040 * GiB],
  ] as const) {
    itWith(['qemu-img', 'vhdiinfo'], `resize a dynamic 1M ${label}`, async () => {
      const f = join(dir, `resize-${to}.vhd`);
      await (await create(f, { format: 'vhd', size: MiB })).close();
      await resize(f, to);
      expect(await judged(f)).toEqual(allSee(to));
    });
  }

  itWith(['qemu-img', 'vhdiinfo'], 'resize a fixed 1M to 12345 sectors and to 65537 sectors', async () => {
    const f = join(dir, 'resize-fixed.vhd');
    await (await create(f, { format: 'vhd', size: MiB, options: { subformat: 'fixed' } })).close();
    for (const to of [12345 * 512, 65537 * 512]) {
      await resize(f, to);
      expect(await judged(f)).toEqual(allSee(to));
    }
  });

  itWith(['qemu-img', 'vhdiinfo'], 'vdisk create prints the size every reader sees', async () => {
    const r = await vdisk(['create', '-f', 'vhd', 'cli.vhd', '100M'], dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`size=${100 * MiB} `);
    expect((await judged(join(dir, 'cli.vhd'))).qemu).toBe(100 * MiB);
  });
});

describe('VHDs qemu-img made (creator "qemu", size rounded up to a CHS product)', () => {
  for (const [label, asked] of [
    ['100M', 100 * MiB],
    ['200G (over 65535x16x255 sectors: the largest geometry, current_size)', 200 * GiB],
  ] as const) {
    itWith(['qemu-img', 'vhdiinfo'], `${label}: vdisk reads the size qemu gives it, convert -O vhd keeps it`, async () => {
      const q = join(dir, `qemu-${asked}.vhd`);
      await runOk('qemu-img', ['create', '-q', '-f', 'vpc', q, String(asked)]);
      const theirs = await judged(q);
      expect(theirs.qemu).toBeGreaterThanOrEqual(asked);
      expect(theirs).toEqual(allSee(theirs.qemu));
      const out = join(dir, `qemu-${asked}-copy.vhd`);
      await convert(q, out, { format: 'vhd' });
      expect(await judged(out)).toEqual(allSee(theirs.qemu));
    });
  }

  itWith(['qemu-img', 'vhdiinfo'], 'resize keeps the creator and writes a geometry qemu reads as the new size', async () => {
    const q = join(dir, 'qemu-resize.vhd');
    await runOk('qemu-img', ['create', '-q', '-f', 'vpc', q, '100M']);
    // An exact geometry; none (65537 sectors); over 65535x16x255 sectors: the largest, as qemu-img itself writes it.
    for (const [to, chs] of [
      [200 * MiB, 200 * MiB],
      [65537 * 512, 'largest'],
      [200 * GiB, 'largest'],
    ] as const) {
      await resize(q, to, { shrink: true });
      expect(await judged(q)).toEqual(allSee(to));
      expect(await chsReading(q)).toBe(chs);
    }
    const file = await readFile(q);
    expect(file.toString('latin1', file.length - 512 + 28, file.length - 512 + 32)).toBe('qemu'); // creator_application, unchanged
  });
});

describe('Virtual PC images (creator "vpc ": sized by the geometry alone)', () => {
  itWith(['qemu-img', 'vhdiinfo'], 'resize to a size with no exact geometry is refused naming the nearest; those resize, and qemu agrees', async () => {
    const f = join(dir, 'vpc.vhd');
    await (await create(f, { format: 'vhd', size: 100 * MiB })).close();
    await writeFile(
      f,
      editFooter(await readFile(f), (ft) => {
        ft.creatorApplication = 'vpc ';
      }),
    );
    const before = await readFile(f);
    const err = (await resize(f, 65537 * 512, { shrink: true }).catch((e: unknown) => e)) as { code?: string; message: string };
    expect(err).toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringContaining('(vpc ) makes readers take the size from the CHS geometry') });
    expect((await readFile(f)).equals(before)).toBe(true);
    const m = /nearest: (\d+) below, (\d+) above/.exec(err.message);
    expect(m).not.toBeNull();
    const [below, above] = [Number(m![1]), Number(m![2])];
    expect(below).toBeLessThan(65537 * 512);
    expect(above).toBeGreaterThan(65537 * 512);
    // qemu sizes "vpc " by the geometry: it sees the new size only if the geometry's product is it.
    for (const to of [above, below]) {
      await resize(f, to, { shrink: true });
      expect(await judged(f)).toEqual(allSee(to));
    }
  });
});

describe('vdisk info on VHDs qemu sizes differently', () => {
  // Another tool's image: its creator, the spec's (rounding-down) geometry 1003x12x17, an exact current_size.
  const creators = ['vbox', 'wa\0\0', 'vdsk', 'win ', 'qem2', 'd2v ', 'CTXS', 'tap\0', 'vpc ', 'qemu'];
  for (const creator of creators) {
    const shown = creator.replace(/\0/g, '\\0');
    itWith(['qemu-img'], `creator "${shown}": vdisk warns exactly when plain qemu-img sizes it otherwise, naming qemu's size`, async () => {
      const f = join(dir, `creator-${shown.replace(/\W/g, '_')}.vhd`);
      await (await create(f, { format: 'vhd', size: 100 * MiB })).close();
      await writeFile(
        f,
        editFooter(await readFile(f), (ft) => {
          ft.creatorApplication = creator;
          Object.assign(ft, chsGeometry(100 * MiB));
        }),
      );
      const qemu = (await qemuInfo(f, 'vpc'))['virtual-size'] as number;
      const img = await open(f, { readOnly: true });
      const { warnings } = await describeImage(img);
      const ours = img.size;
      await img.close();
      if (qemu === ours) {
        expect(warnings).toBeUndefined();
      } else {
        expect(warnings).toEqual([expect.stringContaining(`qemu sizes this VHD (creator "${shown}") by its CHS geometry 1003x12x17: ${qemu} bytes, not ${ours}`)]);
        const cli = await vdisk(['info', f], dir);
        expect(cli.stdout).toContain(`warning: qemu sizes this VHD (creator "${shown}")`);
      }
    });
  }
});
