/**
 * map: where a virtual disk's data sits — as `qemu-img map` JSON, a human table, or
 * an SVG picture that stays readable for a terabyte disk.
 */
import type { BlockDevice, DiskImage, Extent } from '../device/block-device.js';
import { open } from '../formats/registry.js';
import type { PartitionSpan } from '../partitions/types.js';
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

/** Options for {@link map}. */
export interface MapOptions {
  /** First byte of the range to map (default 0). */
  offset?: number;
  /** Bytes to map from `offset` (default: to the end of the disk). */
  length?: number;
  /** Format name when `image` is an address (detected by magic when absent). */
  format?: string;
  /** Folders besides the image's own that references inside it may lead into. */
  allowPaths?: readonly string[];
}

/**
 * Where the disk's data sits, as `qemu-img map --output json`'s entries, streamed
 * (constant memory for any number of entries). `image` is an address (opened
 * read-only, closed when the walk ends) or an open device (left open).
 *
 * @example
 * ```ts
 * import { create, map } from 'vdisk';
 *
 * const disk = await create('disk.vhd', { format: 'vhd', size: '4M' });
 * await disk.write(Buffer.alloc(512, 7), 0);
 * await disk.close();
 * for await (const e of map('disk.vhd')) console.log(e.start, e.length, e.data);
 * // 0 2097152 true
 * // 2097152 2097152 false
 * ```
 */
export async function* map(image: string | BlockDevice, opts: MapOptions = {}): AsyncGenerator<MapEntry> {
  const dev = typeof image === 'string' ? await open(image, { format: opts.format, readOnly: true, allowPaths: opts.allowPaths }) : image;
  try {
    const offset = opts.offset ?? 0;
    yield* mapImage(dev, offset, opts.length ?? dev.size - offset);
  } finally {
    if (dev !== image) await dev.close();
  }
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

/** Options for {@link renderMapSvg}. */
export interface MapSvgOptions {
  /** Most cells in the picture (default 4096); the disk is aggregated into at most this many. */
  maxCells?: number;
  /** Cells per row (default 64). */
  columns?: number;
  /** Title line (default: the image's name). */
  title?: string;
  /** Partitions to draw over the cells (from `partitionSpans(readPartitions(dev))`): outlines, boundary lines, names. */
  partitions?: readonly PartitionSpan[];
  /** The partition scheme's name for the legend (`GPT`, `MBR`). */
  partitionScheme?: string;
}

/** Where the SVG's grid of cells sits and how big a cell is, in SVG user units. */
export const MAP_SVG_GRID = { left: 110, top: 60, cellWidth: 12, cellHeight: 12 } as const;

/** Stroke colours for partitions, in turn. */
const PARTITION_COLOURS = ['#d62728', '#17becf', '#bcbd22', '#e377c2', '#7f7f7f', '#2b2b8c', '#8c2b6e', '#2b8c3f'];
/** Average glyph width of the 10 px labels, to decide how much of a name fits. */
const LABEL_CHAR_WIDTH = 6;

/** Where the grid is drawn: what {@link partitionOverlay} needs to place a byte offset. */
interface GridGeometry {
  left: number;
  top: number;
  cellWidth: number;
  cellHeight: number;
  columns: number;
  cellBytes: number;
}

/** The point of byte `pos` on the grid: its row and x; an end on a row boundary stays at the end of the row above. */
function gridPoint(g: GridGeometry, pos: number, isEnd: boolean): { row: number; x: number } {
  const rowBytes = g.columns * g.cellBytes;
  let row = Math.floor(pos / rowBytes);
  let within = pos - row * rowBytes;
  if (isEnd && within === 0 && row > 0) {
    row -= 1;
    within = rowBytes;
  }
  return { row, x: g.left + (within / rowBytes) * g.columns * g.cellWidth };
}

const px = (n: number): string => String(Number(n.toFixed(2)));

/**
 * SVG elements drawing partitions over the grid: for each, a translucent outline of
 * the cells it covers (extended containers dashed, unfilled, around their logicals),
 * a boundary line at its first and last byte, and its name in the row where it has
 * the most room (shortened to fit, left out when under two characters fit).
 */
function partitionOverlay(g: GridGeometry, spans: readonly PartitionSpan[], diskSize: number): string[] {
  const out: string[] = [];
  const gridRight = g.left + g.columns * g.cellWidth;
  const y = (row: number): number => g.top + row * g.cellHeight;
  // Extended containers first, so logicals draw over them.
  const ordered = [...spans].filter((p) => p.length > 0 && p.offset < diskSize).sort((a, b) => Number(b.kind === 'extended') - Number(a.kind === 'extended') || a.offset - b.offset);
  for (const p of ordered) {
    const colour = PARTITION_COLOURS[(p.index - 1) % PARTITION_COLOURS.length]!;
    const end = Math.min(p.offset + p.length, diskSize);
    const a = gridPoint(g, p.offset, false);
    const b = gridPoint(g, end, true);
    const points =
      a.row === b.row
        ? [[a.x, y(a.row)], [b.x, y(a.row)], [b.x, y(a.row + 1)], [a.x, y(a.row + 1)]]
        : [[a.x, y(a.row)], [gridRight, y(a.row)], [gridRight, y(b.row)], [b.x, y(b.row)], [b.x, y(b.row + 1)], [g.left, y(b.row + 1)], [g.left, y(a.row + 1)], [a.x, y(a.row + 1)]];
    const extended = p.kind === 'extended';
    const tip = `partition ${p.index}${p.label !== p.typeName ? ` "${p.label}"` : ''} (${p.typeName}${extended ? ', extended' : ''}): ${exactSize(p.offset)} +${exactSize(p.length)}`;
    out.push(`<g class="partition" data-index="${p.index}" data-kind="${p.kind}" data-offset="${p.offset}" data-length="${p.length}"><title>${esc(tip)}</title>`);
    out.push(
      `<polygon points="${points.map(([px1, py1]) => `${px(px1!)},${px(py1!)}`).join(' ')}" fill="${extended ? 'none' : colour}" fill-opacity="0.12" stroke="${colour}" stroke-width="${extended ? 2.5 : 1.5}"${extended ? ' stroke-dasharray="5,3"' : ''}/>`,
    );
    for (const [edge, pt] of [['start', a], ['end', b]] as const) {
      out.push(`<line class="partition-boundary" data-index="${p.index}" data-edge="${edge}" x1="${px(pt.x)}" y1="${px(y(pt.row) - 2)}" x2="${px(pt.x)}" y2="${px(y(pt.row + 1) + 2)}" stroke="${colour}" stroke-width="2"/>`);
    }
    if (!extended) {
      // The row piece with the most room: the first row, the last row, or any full row between.
      const pieces = [{ row: a.row, x0: a.x, x1: a.row === b.row ? b.x : gridRight }];
      if (b.row > a.row) pieces.push({ row: b.row, x0: g.left, x1: b.x });
      if (b.row > a.row + 1) pieces.push({ row: a.row + 1, x0: g.left, x1: gridRight });
      const best = pieces.reduce((m, q) => (q.x1 - q.x0 > m.x1 - m.x0 ? q : m));
      const fit = Math.floor((best.x1 - best.x0 - 4) / LABEL_CHAR_WIDTH);
      const text = `${p.index} ${p.label}`;
      const shown = text.length <= fit ? text : fit >= 2 ? `${text.slice(0, fit - 1)}…` : '';
      if (shown) {
        out.push(
          `<text class="partition-label" data-index="${p.index}" x="${px(best.x0 + 2)}" y="${px(y(best.row) + g.cellHeight - 3)}" font-size="10" font-weight="bold" fill="${colour}" stroke="white" stroke-width="2.5" paint-order="stroke">${esc(shown)}</text>`,
        );
      }
    }
    out.push('</g>');
  }
  return out;
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

  const { cellWidth: cw, cellHeight: ch, left, top } = MAP_SVG_GRID;
  const rows = Math.ceil(count / columns);
  const gridW = columns * cw;
  const legendTop = top + rows * ch + 30;
  const width = left + gridW + 20;
  const names = chainNames(dev);
  const legend: Array<[string, string]> = [];
  for (let d = 0; d <= maxDepth; d++) legend.push([DEPTH_COLOURS[d]!, d === 0 ? `data (${names[0] ?? 'this image'})` : `data from depth ${d}${names[d] ? ` (${names[d]})` : ''}`]);
  legend.push([ZERO_COLOUR, 'zero (reads as zeros, allocated as zero)']);
  legend.push([HOLE_COLOUR, 'unallocated']);
  const spans = opts.partitions ?? [];
  const partsTop = legendTop + 20 + Math.ceil(legend.length / 3) * 18;
  const partRows = spans.length ? 1 + Math.ceil(spans.length / 2) : 0;
  const height = partsTop + partRows * 16 + (partRows ? 8 : 0);
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

  out.push(...partitionOverlay({ left, top, cellWidth: cw, cellHeight: ch, columns, cellBytes }, spans, dev.size));

  legend.forEach(([colour, label], k) => {
    const lx = 10 + (k % 3) * 260;
    const ly = legendTop + 12 + Math.floor(k / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${colour}" stroke="#999"/>`);
    out.push(`<text x="${lx + 18}" y="${ly}">${esc(label)}</text>`);
  });
  if (spans.length) {
    out.push(`<text x="10" y="${partsTop + 8}" font-weight="bold">${esc(`${opts.partitionScheme ? `${opts.partitionScheme} partitions` : 'Partitions'} (outlined on the map; extended dashed)`)}</text>`);
    spans.forEach((p, k) => {
      const lx = 10 + (k % 2) * 390;
      const ly = partsTop + 24 + Math.floor(k / 2) * 16;
      const colour = PARTITION_COLOURS[(p.index - 1) % PARTITION_COLOURS.length]!;
      const what = `${p.index}: ${p.label}${p.label !== p.typeName ? ` (${p.typeName})` : ''}, ${formatSize(p.length)} at ${exactSize(p.offset)}`;
      out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${colour}" fill-opacity="0.12" stroke="${colour}"${p.kind === 'extended' ? ' stroke-dasharray="3,2"' : ''}/>`);
      out.push(`<text class="partition-legend" data-index="${p.index}" x="${lx + 18}" y="${ly}">${esc(what)}</text>`);
    });
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
