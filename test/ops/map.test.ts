import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Extent } from '../../src/device/block-device.js';
import { BlockDeviceBase } from '../../src/device/base.js';
import { open } from '../../src/formats/registry.js';
import { cellSizeFor, mapEntry, mapImage, renderMapSvg, writeMapJson } from '../../src/ops/map.js';
import { writeMapHuman } from '../../src/cli/human.js';
import { nativeLoads, withHoleMode, type HoleMode } from '../helpers/native.js';
import { tempDir } from '../helpers/tmp.js';
import { DISK_SIZE, writePatternRaw } from './variants.js';

const GiB = 1024 ** 3;
const TiB = 1024 ** 4;

/** A disk that reports a given layout (reads return zeros): lets the picture be tested at 1 TiB. */
class LayoutDevice extends BlockDeviceBase {
  readonly readOnly = true;
  readonly filename = 'layout';
  constructor(readonly size: number, private readonly layout: Extent[]) {
    super();
  }
  protected async readAt(buf: Uint8Array): Promise<void> {
    buf.fill(0);
  }
  protected async writeAt(): Promise<void> {}
  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    for (const e of this.layout) {
      const s = Math.max(e.offset, offset);
      const end = Math.min(e.offset + e.length, offset + length);
      if (s < end) yield { ...e, offset: s, length: end - s };
    }
  }
  protected async flushAll(): Promise<void> {}
  protected async closeAll(): Promise<void> {}
}

let raw = '';
beforeAll(async () => {
  raw = join(await tempDir('vdisk-map-'), 'p.raw');
  await writePatternRaw(raw);
});

describe('map entries', () => {
  it('follow qemu-img map meaning: data = allocated data, zero = reads as zeros, present = answered by the chain', () => {
    expect(mapEntry({ offset: 0, length: 512, kind: 'data', depth: 1 })).toEqual({ start: 0, length: 512, depth: 1, present: true, zero: false, data: true });
    expect(mapEntry({ offset: 512, length: 512, kind: 'zero', depth: 0 })).toEqual({ start: 512, length: 512, depth: 0, present: true, zero: true, data: false });
    expect(mapEntry({ offset: 1024, length: 512, kind: 'hole', depth: 2 })).toEqual({ start: 1024, length: 512, depth: 2, present: false, zero: true, data: false });
  });

  // The pattern holds 128 KiB of written zeros at 64 KiB: allocated, so data to lseek
  // (as to qemu-img map), zero to the reading scan.
  const modes: HoleMode[] = nativeLoads ? ['native', 'scan'] : ['scan'];
  it.each(modes)('JSON output parses, covers the disk in order and marks the written ranges of a raw image as data (%s)', async (mode) => {
    const img = await withHoleMode(mode, () => open(raw, { readOnly: true }));
    try {
      let text = '';
      await writeMapJson(img, (s) => {
        text += s;
      });
      const entries = JSON.parse(text) as Array<{ start: number; length: number; data: boolean }>;
      let pos = 0;
      for (const e of entries) {
        expect(e.start).toBe(pos);
        pos += e.length;
      }
      expect(pos).toBe(DISK_SIZE);
      const data = entries.filter((e) => e.data).map((e) => [e.start, e.length]);
      expect(data).toEqual([
        ...(mode === 'native' ? [[0, 256 * 1024]] : [[0, 64 * 1024], [192 * 1024, 64 * 1024]]),
        [3 * 1024 * 1024, 512 * 1024],
        [5 * 1024 * 1024, 4096],
        [DISK_SIZE - 4096, 4096],
      ]);
      const collected = [];
      for await (const m of mapImage(img)) collected.push(m);
      expect(collected.length).toBe(entries.length);

      let human = '';
      await writeMapHuman(img, (s) => {
        human += s;
      });
      expect(human).toMatch(/^Offset\s+Length\s+Kind\s+Depth\s+File\n/);
      expect(human).toContain('0x300000            0x80000             data  0      ');
      expect(human).toMatch(mode === 'native' ? /776 KiB data, .* zero, .* unallocated of 8 MiB\n$/ : /648 KiB data, .* zero, .* unallocated of 8 MiB\n$/);
    } finally {
      await img.close();
    }
  });
});

describe('map SVG', () => {
  it('keeps a 1 TiB disk to a bounded grid, with a legend, a scale and per-cell fractions', async () => {
    // 1 TiB: data in the first 1.5 GiB, a parent's data at 512 GiB, zeros at 700 GiB, holes elsewhere.
    const dev = new LayoutDevice(TiB, [
      { offset: 0, length: 1.5 * GiB, kind: 'data', depth: 0 },
      { offset: 1.5 * GiB, length: 510.5 * GiB, kind: 'hole', depth: 1 },
      { offset: 512 * GiB, length: 128 * 1024 ** 2, kind: 'data', depth: 1 },
      { offset: 512 * GiB + 128 * 1024 ** 2, length: 188 * GiB - 128 * 1024 ** 2, kind: 'hole', depth: 1 },
      { offset: 700 * GiB, length: GiB, kind: 'zero', depth: 0 },
      { offset: 701 * GiB, length: TiB - 701 * GiB, kind: 'hole', depth: 1 },
    ]);
    const svg = await renderMapSvg(dev, { maxCells: 4096, columns: 64 });
    expect(svg.length).toBeLessThan(2 * 1024 * 1024);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(svg) as { svg: { g: Array<{ title: string; rect: unknown }>; text: Array<string | { '#text': string }> } };
    const cells = doc.svg.g;
    expect(cells.length).toBe(4096);
    expect(cellSizeFor(TiB, 4096)).toBe(256 * 1024 ** 2);
    const texts = doc.svg.text.map((t) => (typeof t === 'string' ? t : t['#text']));
    expect(texts).toContain('one cell = 256 MiB, one row = 16 GiB; a cell\'s fill shows the fraction of it allocated');
    expect(texts.some((t) => t.startsWith('1 TiB virtual: 1.63 GiB data'))).toBe(true);
    expect(texts).toContain('data (layout)');
    expect(texts).toContain('data from depth 1');
    expect(texts).toContain('zero (reads as zeros, allocated as zero)');
    expect(texts).toContain('unallocated');
    expect(texts).toContain('512 GiB'); // a row label
    expect(texts).toContain('16 GiB'); // the end of the scale
    // Cells 0-5 are full of data; cell 2048 (at 512 GiB) is half data from the parent.
    expect(cells[0]!.title).toBe('0 B +256 MiB: data 100.0%');
    expect(cells[2048]!.title).toBe('512 GiB +256 MiB: data from depth 1 50.0%');
    expect(cells[2800]!.title).toBe('700 GiB +256 MiB: zero 100.0%');
    expect(cells[4095]!.title).toBe('1023.75 GiB +256 MiB: unallocated');
    const bar = (cells[2048]!.rect as Array<{ height: string }>)[1]!;
    expect(Number(bar.height)).toBeCloseTo(5.5, 2);
  });

  it('draws a small disk with one cell per 512-byte-or-larger piece (never more than asked)', async () => {
    // Read by the scan, so the written zeros at 64 KiB show as zero.
    const img = await withHoleMode('scan', () => open(raw, { readOnly: true }));
    try {
      const svg = await renderMapSvg(img, { maxCells: 256 });
      const cells = svg.match(/<g>/g) ?? [];
      expect(cells.length).toBe(256);
      expect(svg).toContain('one cell = 32 KiB');
      expect(svg).toContain('<title>0 B +32 KiB: data 100.0%</title>');
      expect(svg).toContain('<title>64 KiB +32 KiB: zero 100.0%</title>');
      // The cell holding the lone 4 KiB data page is one eighth data.
      expect(svg).toContain('<title>5 MiB +32 KiB: data 12.5%, zero 87.5%</title>');
    } finally {
      await img.close();
    }
  });
});
