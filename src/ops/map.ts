/**
 * map: where a virtual disk's data sits — as `qemu-img map` JSON, a human table, or
 * an SVG picture that stays readable for a terabyte disk.
 */
import type { BlockDevice, DiskImage, Extent } from '../device/block-device.js';
import { formatSize } from '../util/size.js';

/**
 * One range of the disk, with `qemu-img map --output json`'s fields and meaning:
 * `data` = allocated with data in this image or a parent (not a scan of the bytes),
 * `zero` = reads as zeros, `present` = answered by some image of the chain.
 */
export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset of the data in its file, when the format can say (vdisk's extents do not carry it yet). */
  offset?: number;
}

/** The qemu-img map entry for one extent. */
export function mapEntry(e: Extent): MapEntry {
  return { start: e.offset, length: e.length, depth: e.depth, present: e.kind !== 'hole', zero: e.kind !== 'data', data: e.kind === 'data' };
}

/** The map of `dev` (or a range of it), entry by entry, streamed. */
export async function* mapImage(dev: BlockDevice, offset = 0, length = dev.size - offset): AsyncGenerator<MapEntry> {
  for await (const e of dev.extents(offset, length)) yield mapEntry(e);
}

/** One entry as qemu-img prints it in its JSON list. */
export function formatMapJsonEntry(m: MapEntry): string {
  const off = m.offset !== undefined ? `, "offset": ${m.offset}` : '';
  return `{ "start": ${m.start}, "length": ${m.length}, "depth": ${m.depth}, "present": ${m.present}, "zero": ${m.zero}, "data": ${m.data}${off}}`;
}

/** Write the whole map as qemu-img's JSON list, streaming (constant memory for any number of entries). */
export async function writeMapJson(dev: BlockDevice, write: (s: string) => void): Promise<void> {
  let first = true;
  write('[');
  for await (const m of mapImage(dev)) {
    write(`${first ? '' : ',\n'}${formatMapJsonEntry(m)}`);
    first = false;
  }
  write(']\n');
}

/** Names of the images in a chain, indexed by depth. */
export function chainNames(dev: BlockDevice): string[] {
  const out: string[] = [];
  for (let p = dev as Partial<DiskImage> | undefined; p; p = p.backing) out.push(p.filename ?? '');
  return out;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** Write the map as a table: every range that holds data or reads as written zeros (holes left out, as qemu-img does). */
export async function writeMapHuman(dev: BlockDevice, write: (s: string) => void): Promise<void> {
  const names = chainNames(dev);
  const pad = (s: string, n: number): string => s.padEnd(n);
  write(`${pad('Offset', 20)}${pad('Length', 20)}${pad('Kind', 6)}${pad('Depth', 7)}File\n`);
  const total = { data: 0, zero: 0, hole: 0 };
  for await (const e of dev.extents(0, dev.size)) {
    total[e.kind] += e.length;
    if (e.kind === 'hole') continue;
    write(`${pad(hex(e.offset), 20)}${pad(hex(e.length), 20)}${pad(e.kind, 6)}${pad(String(e.depth), 7)}${names[e.depth] ?? ''}\n`);
  }
  write(`${formatSize(total.data)} data, ${formatSize(total.zero)} zero, ${formatSize(total.hole)} unallocated of ${formatSize(dev.size)}\n`);
}

/** Options for {@link renderMapSvg}. */
export interface MapSvgOptions {
  /** Most cells in the picture (default 4096); the disk is aggregated into at most this many. */
  maxCells?: number;
  /** Cells per row (default 64). */
  columns?: number;
  /** Title line (default: the image's name). */
  title?: string;
}

/** What one cell of the picture covers: bytes of each kind (data split by chain depth). */
interface Cell {
  dataByDepth: number[];
  zero: number;
  hole: number;
}

/** Colours for data by depth (0 = this image); deeper levels reuse the last. */
const DEPTH_COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b'];
const ZERO_COLOUR = '#c7e9c0';
const HOLE_COLOUR = '#f4f4f4';

/** A cell size that is a power of two of at least 512 bytes and makes at most `maxCells` cells. */
export function cellSizeFor(size: number, maxCells: number): number {
  let cell = 512;
  while (Math.ceil(size / cell) > maxCells) cell *= 2;
  return cell;
}

/** An offset in the largest binary unit that shows it exactly with at most two decimals (`1023.75 GiB`). */
function exactSize(n: number): string {
  const names = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  for (let i = names.length - 1; i > 0; i--) {
    const v = n / 1024 ** i;
    if (v >= 1 && Number.isInteger(Math.round(v * 100)) && Math.abs(v * 100 - Math.round(v * 100)) < 1e-9) return `${Number(v.toFixed(2))} ${names[i]}`;
  }
  return `${n} B`;
}

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);

/**
 * Draw the disk as an SVG picture: a grid of cells, each a bar split by what fraction
 * of it holds data (per chain depth), written zeros, or nothing; a legend, a size
 * scale and totals. Memory and output size are bounded by the cell count, not the disk.
 */
export async function renderMapSvg(dev: BlockDevice, opts: MapSvgOptions = {}): Promise<string> {
  const maxCells = Math.max(1, opts.maxCells ?? 4096);
  const columns = Math.max(1, opts.columns ?? 64);
  const cellBytes = cellSizeFor(dev.size, maxCells);
  const count = Math.max(1, Math.ceil(dev.size / cellBytes));
  const cells: Cell[] = Array.from({ length: count }, () => ({ dataByDepth: [], zero: 0, hole: 0 }));
  const totals = { data: 0, zero: 0, hole: 0 };
  let maxDepth = 0;
  for await (const e of dev.extents(0, dev.size)) {
    totals[e.kind] += e.length;
    const d = Math.min(e.depth, DEPTH_COLOURS.length - 1);
    if (e.kind === 'data') maxDepth = Math.max(maxDepth, d);
    for (let off = e.offset; off < e.offset + e.length; ) {
      const i = Math.floor(off / cellBytes);
      const n = Math.min(e.offset + e.length, (i + 1) * cellBytes) - off;
      const c = cells[i]!;
      if (e.kind === 'data') c.dataByDepth[d] = (c.dataByDepth[d] ?? 0) + n;
      else if (e.kind === 'zero') c.zero += n;
      else c.hole += n;
      off += n;
    }
  }

  const cw = 12;
  const ch = 12;
  const left = 110;
  const top = 60;
  const rows = Math.ceil(count / columns);
  const gridW = columns * cw;
  const legendTop = top + rows * ch + 30;
  const width = left + gridW + 20;
  const names = chainNames(dev);
  const legend: Array<[string, string]> = [];
  for (let d = 0; d <= maxDepth; d++) legend.push([DEPTH_COLOURS[d]!, d === 0 ? `data (${names[0] ?? 'this image'})` : `data from depth ${d}${names[d] ? ` (${names[d]})` : ''}`]);
  legend.push([ZERO_COLOUR, 'zero (reads as zeros, allocated as zero)']);
  legend.push([HOLE_COLOUR, 'unallocated']);
  const height = legendTop + 20 + Math.ceil(legend.length / 3) * 18;
  const title = opts.title ?? names[0] ?? 'disk';
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<title>${esc(`vdisk map of ${title}`)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  const pct = (n: number): string => (dev.size > 0 ? ((100 * n) / dev.size).toFixed(1) : '0');
  out.push(
    `<text x="10" y="38">${esc(`${formatSize(dev.size)} virtual: ${formatSize(totals.data)} data (${pct(totals.data)}%), ${formatSize(totals.zero)} zero, ${formatSize(totals.hole)} unallocated`)}</text>`,
  );
  out.push(`<text x="10" y="52">${esc(`one cell = ${formatSize(cellBytes)}, one row = ${formatSize(cellBytes * columns)}; a cell's fill shows the fraction of it allocated`)}</text>`);

  // Row labels: the disk offset at which each row starts (every row when few, else every few rows).
  const labelEvery = Math.max(1, Math.ceil(rows / 32));
  for (let r = 0; r < rows; r += labelEvery) {
    out.push(`<text x="${left - 6}" y="${top + r * ch + ch - 2}" text-anchor="end">${esc(formatSize(r * columns * cellBytes))}</text>`);
  }
  for (let i = 0; i < count; i++) {
    const c = cells[i]!;
    const x = left + (i % columns) * cw;
    const y = top + Math.floor(i / columns) * ch;
    const span = Math.min(cellBytes, dev.size - i * cellBytes);
    const parts: Array<[string, number, string]> = [];
    c.dataByDepth.forEach((n, d) => {
      if (n) parts.push([DEPTH_COLOURS[d]!, n, d === 0 ? 'data' : `data from depth ${d}`]);
    });
    if (c.zero) parts.push([ZERO_COLOUR, c.zero, 'zero']);
    const tip = `${exactSize(i * cellBytes)} +${exactSize(span)}: ${parts.map(([, n, what]) => `${what} ${((100 * n) / span).toFixed(1)}%`).join(', ') || 'unallocated'}`;
    out.push(`<g><title>${esc(tip)}</title><rect x="${x}" y="${y}" width="${cw - 1}" height="${ch - 1}" fill="${HOLE_COLOUR}" stroke="#ddd" stroke-width="0.5"/>`);
    // Bars fill from the bottom in proportion to each kind's share of the cell.
    let filled = 0;
    for (const [colour, n] of parts) {
      const h = ((ch - 1) * n) / span;
      out.push(`<rect x="${x}" y="${(y + ch - 1 - filled - h).toFixed(2)}" width="${cw - 1}" height="${h.toFixed(2)}" fill="${colour}"/>`);
      filled += h;
    }
    out.push('</g>');
  }

  // Size scale under the grid: a ruler across one row.
  const scaleY = top + rows * ch + 6;
  out.push(`<line x1="${left}" y1="${scaleY}" x2="${left + gridW - 1}" y2="${scaleY}" stroke="black"/>`);
  for (const frac of [0, 0.25, 0.5, 0.75, 1]) {
    const x = left + frac * (gridW - 1);
    out.push(`<line x1="${x}" y1="${scaleY - 3}" x2="${x}" y2="${scaleY + 3}" stroke="black"/>`);
    out.push(`<text x="${x}" y="${scaleY + 14}" text-anchor="middle">${esc(formatSize(frac * columns * cellBytes))}</text>`);
  }

  legend.forEach(([colour, label], k) => {
    const lx = 10 + (k % 3) * 260;
    const ly = legendTop + 12 + Math.floor(k / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${colour}" stroke="#999"/>`);
    out.push(`<text x="${lx + 18}" y="${ly}">${esc(label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
