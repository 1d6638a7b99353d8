/**
 * `vdisk map --output svg` draws the partition table over the allocation picture:
 * layouts written by sgdisk/sfdisk, boundaries checked at the x/y their start and
 * end sectors (as sgdisk/sfdisk print them) fall on in the grid, names as sgdisk
 * stores them, extended containers as dashed outlines around their logicals, and a
 * 1 TiB disk (inside a qemu-made VDI) still drawn in a bounded picture. Runs the built CLI.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { describe, expect } from 'vitest';
import { MAP_SVG_GRID, cellSizeFor } from '../../src/ops/map.js';
import { itWith, run, runOk } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { sfdiskImage, sfdiskJson, sgdiskPrint } from '../partitions/helpers.js';

const MiB = 1024 * 1024;
const COLUMNS = 64; // the renderer's default cells per row
const MAX_CELLS = 4096; // and default cell count

interface SvgLine {
  class?: string;
  'data-index'?: string;
  'data-edge'?: string;
  x1: string;
  y1: string;
  y2: string;
}
interface SvgText {
  '#text'?: string | number;
  class?: string;
  'data-index'?: string;
}
interface SvgPartition {
  class?: string;
  'data-index': string;
  'data-kind': string;
  'data-offset': string;
  'data-length': string;
  polygon: { points: string; 'stroke-dasharray'?: string };
  line: SvgLine[];
  text?: SvgText[];
}
interface Svg {
  g: SvgPartition[];
  text: SvgText[];
}

async function svgOf(image: string): Promise<{ svg: Svg; size: number }> {
  const r = await run('node', [VDISK_BIN, 'map', '--output', 'svg', image]);
  expect(r.code, r.stderr).toBe(0);
  const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (name) => name === 'g' || name === 'line' || name === 'text' }).parse(r.stdout) as { svg: Svg };
  return { svg: doc.svg, size: r.stdout.length };
}

const partitionsOf = (svg: Svg): SvgPartition[] => svg.g.filter((g) => g.class === 'partition');

/** Where byte `pos` of a disk of `diskSize` bytes falls on the grid: x, and the top of its row (an end on a row boundary stays on the row above). */
function expectedPoint(diskSize: number, pos: number, isEnd: boolean): { x: number; rowTop: number } {
  const rowBytes = COLUMNS * cellSizeFor(diskSize, MAX_CELLS);
  let row = Math.floor(pos / rowBytes);
  let within = pos - row * rowBytes;
  if (isEnd && within === 0 && row > 0) {
    row -= 1;
    within = rowBytes;
  }
  return { x: MAP_SVG_GRID.left + (within / rowBytes) * COLUMNS * MAP_SVG_GRID.cellWidth, rowTop: MAP_SVG_GRID.top + row * MAP_SVG_GRID.cellHeight };
}

/** Check the start and end boundary lines of partition `index` against sectors first..last (inclusive). */
function expectBoundaries(p: SvgPartition, diskSize: number, first: number, last: number): void {
  for (const [edge, pos] of [['start', first * 512], ['end', (last + 1) * 512]] as const) {
    const line = p.line.find((l) => l.class === 'partition-boundary' && l['data-edge'] === edge)!;
    expect(line, `${edge} of ${p['data-index']}`).toBeDefined();
    const want = expectedPoint(diskSize, pos, edge === 'end');
    expect(Number(line.x1), `${edge} x of partition ${p['data-index']}`).toBeCloseTo(want.x, 1);
    expect(Number(line.y1)).toBeCloseTo(want.rowTop - 2, 1);
    expect(Number(line.y2)).toBeCloseTo(want.rowTop + MAP_SVG_GRID.cellHeight + 2, 1);
  }
}

describe('vdisk map --output svg draws partitions', async () => {
  const dir = await tempDir('vdisk-map-parts-');

  itWith(['sgdisk'], 'GPT by sgdisk: boundaries at the x of each start/end sector, names as sgdisk stores them', async () => {
    const img = join(dir, 'gpt.raw');
    const size = 64 * MiB;
    await runOk('truncate', ['-s', String(size), img]);
    // 8-sector alignment so boundaries fall inside rows (a row is 1 MiB here), not only on row edges.
    await runOk('sgdisk', ['-a', '8', '-n1:2048:+4M', '-t1:ef00', '-c1:esp', '-n2:10752:+10M', '-c2:root fs', '-n3:0:+3000K', '-t3:8200', '-c3:swap', '-n4:0:0', '-c4:data', img]);
    const sg = await sgdiskPrint(img);
    expect(sg.rows.map((r) => r.start)).toContain(10752);
    const { svg } = await svgOf(img);
    const parts = partitionsOf(svg);
    expect(parts.map((p) => Number(p['data-index'])).sort()).toEqual(sg.rows.map((r) => r.index).sort());
    for (const row of sg.rows) {
      const p = parts.find((q) => Number(q['data-index']) === row.index)!;
      expect(Number(p['data-offset'])).toBe(row.start * 512);
      expect(Number(p['data-length'])).toBe((row.end - row.start + 1) * 512);
      expectBoundaries(p, size, row.start, row.end);
      // Every partition here has room for its full label: number and sgdisk's name.
      expect(p.text?.[0]?.['#text']).toBe(`${row.index} ${row.name}`);
      expect(p.polygon['stroke-dasharray']).toBeUndefined();
    }
    // root starts a quarter into the 6th row: 5.25 MiB.
    const root = parts.find((p) => p['data-index'] === '2')!;
    expect(Number(root.line.find((l) => l['data-edge'] === 'start')!.x1)).toBe(MAP_SVG_GRID.left + (COLUMNS * MAP_SVG_GRID.cellWidth) / 4);
    const legend = svg.text.filter((t) => t.class === 'partition-legend').map((t) => String(t['#text']));
    expect(legend).toContain('2: root fs (Linux filesystem), 10 MiB at 5.25 MiB');
    expect(svg.text.map((t) => String(t['#text'] ?? ''))).toContain('GPT partitions (outlined on the map; extended dashed)');
  });

  itWith(['sfdisk'], 'MBR by sfdisk: the extended container is a dashed, unlabelled outline around its logicals', async () => {
    const size = 64 * MiB;
    const img = await sfdiskImage(dir, 'mbr.raw', 64, 'label: dos\nstart=2048, size=8M, type=83\nstart=18432, size=40M, type=5\nstart=20480, size=10M, type=83\nstart=43008, size=20M, type=82\n');
    const table = await sfdiskJson(img);
    const { svg } = await svgOf(img);
    const parts = partitionsOf(svg);
    expect(parts.length).toBe(table.partitions.length);
    const ext = parts.find((p) => p['data-kind'] === 'extended')!;
    expect(ext['data-index']).toBe('2');
    expect(ext.polygon['stroke-dasharray']).toBeDefined();
    expect(ext.text).toBeUndefined();
    const extStart = Number(ext['data-offset']);
    const extEnd = extStart + Number(ext['data-length']);
    for (const sp of table.partitions) {
      const index = Number(/(\d+)$/.exec(sp.node)![1]);
      const p = parts.find((q) => Number(q['data-index']) === index)!;
      expect(Number(p['data-offset'])).toBe(sp.start * 512);
      expectBoundaries(p, size, sp.start, sp.start + sp.size - 1);
      if (index >= 5) {
        expect(p['data-kind']).toBe('logical');
        expect(Number(p['data-offset'])).toBeGreaterThanOrEqual(extStart);
        expect(Number(p['data-offset']) + Number(p['data-length'])).toBeLessThanOrEqual(extEnd);
        expect(p.text?.[0]?.['#text']).toMatch(new RegExp(`^${index} Linux`));
      }
    }
  });

  itWith(['sgdisk', 'qemu-img'], 'a 1 TiB GPT disk inside a VDI: a bounded picture, boundaries where sgdisk says, big partitions named', async () => {
    const TiB = 1024 ** 4;
    const raw = join(dir, 'tera.raw');
    const vdi = join(dir, 'tera.vdi');
    await runOk('truncate', ['-s', String(TiB), raw]);
    await runOk('sgdisk', ['-n1:2048:+1M', '-t1:ef02', '-c1:bios', '-n2:0:+512M', '-t2:ef00', '-c2:EFI system', '-n3:0:+100G', '-c3:root', '-n4:0:+8G', '-t4:8200', '-c4:swap', '-n5:0:0', '-c5:home', raw]);
    const sg = await sgdiskPrint(raw);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', raw, vdi]);
    await rm(raw);
    const { svg, size } = await svgOf(vdi);
    expect(size).toBeLessThan(2 * MiB);
    expect(svg.g.filter((g) => g.class !== 'partition').length).toBeLessThanOrEqual(MAX_CELLS);
    const parts = partitionsOf(svg);
    expect(parts.length).toBe(5);
    for (const row of sg.rows) expectBoundaries(parts.find((p) => Number(p['data-index']) === row.index)!, TiB, row.start, row.end);
    const labels = parts.flatMap((p) => (p.text ?? []).map((t) => String(t['#text'])));
    for (const name of ['3 root', '4 swap', '5 home']) expect(labels).toContain(name);
    // The 1 MiB partition is far under a cell: no label on the map, but in the legend.
    expect(parts.find((p) => p['data-index'] === '1')!.text).toBeUndefined();
    expect(svg.text.filter((t) => t.class === 'partition-legend').map((t) => String(t['#text']))).toContain('1: bios (BIOS boot), 1 MiB at 1 MiB');
  });
});
