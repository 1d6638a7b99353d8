/**
 * What `pool show` reports: members with format, size and extent use; each LV's
 * segments; and an SVG drawing which extents of which LV sit on which member.
 */
import { basename } from 'node:path';
import { formatSize } from '../util/size.js';
import { formatId, SECTOR } from './layout.js';
import { extentBytes, lvExtents } from './metadata.js';
import { freeRanges, type Pool } from './pool.js';

/** One member in a pool report. */
export interface PoolMemberReport {
  pv: string;
  uuid: string;
  path: string;
  /** Container format, or undefined when the member is missing. */
  format?: string;
  /** Guest-visible size in bytes. */
  size: number;
  extents: number;
  used: number;
  free: number;
  missing: boolean;
}

/** One segment in a pool report. */
export interface PoolSegmentReport {
  startExtent: number;
  extentCount: number;
  type: string;
  stripeSize?: number;
  stripes: Array<{ pv: string; member: string; pe: number }>;
}

/** The whole pool, JSON-friendly. */
export interface PoolReport {
  vg: string;
  uuid: string;
  seqno: number;
  extentSize: number;
  size: number;
  free: number;
  readOnly: boolean;
  members: PoolMemberReport[];
  lvs: Array<{ name: string; uuid: string; size: number; segments: PoolSegmentReport[] }>;
  warnings: string[];
}

/** Describe `pool`. */
export function poolReport(pool: Pool): PoolReport {
  const vg = pool.vg;
  const E = extentBytes(vg);
  const free = freeRanges(vg);
  const members = vg.pvs.map((p): PoolMemberReport => {
    const m = pool.members.find((x) => x.uuid === p.id);
    const f = (free.get(p.key) ?? []).reduce((s, [a, b]) => s + b - a, 0);
    return { pv: p.key, uuid: formatId(p.id), path: m?.path ?? p.device, format: m?.dev?.format, size: p.devSize * SECTOR, extents: p.peCount, used: p.peCount - f, free: f, missing: !m?.dev };
  });
  const name = (pv: string): string => basename(members.find((m) => m.pv === pv)?.path ?? pv);
  return {
    vg: vg.name,
    uuid: formatId(vg.id),
    seqno: vg.seqno,
    extentSize: E,
    size: members.reduce((s, m) => s + m.extents, 0) * E,
    free: members.reduce((s, m) => s + m.free, 0) * E,
    readOnly: pool.readOnly,
    members,
    lvs: vg.lvs.map((l) => ({
      name: l.name,
      uuid: formatId(l.id),
      size: lvExtents(l) * E,
      segments: l.segments.map((s) => ({
        startExtent: s.startExtent,
        extentCount: s.extentCount,
        type: s.type,
        ...(s.stripes.length > 1 ? { stripeSize: (s.stripeSize ?? 0) * SECTOR } : {}),
        stripes: s.stripes.map((a) => ({ pv: a.pv, member: name(a.pv), pe: a.pe })),
      })),
    })),
    warnings: [...pool.warnings],
  };
}

/** `pool show` in words. */
export function formatPoolHuman(r: PoolReport): string {
  const lines = [
    `VG ${r.vg} (${r.uuid}), seqno ${r.seqno}${r.readOnly ? ', read-only' : ''}`,
    `extent size ${formatSize(r.extentSize)}, ${formatSize(r.size)} in ${r.members.length} member(s), ${formatSize(r.free)} free`,
    'members:',
  ];
  for (const m of r.members) {
    lines.push(`  ${m.pv}  ${basename(m.path)}  ${m.missing ? 'MISSING' : m.format}  ${formatSize(m.size)}  ${m.extents} extents, ${m.used} used, ${m.free} free  ${m.uuid}`);
  }
  lines.push(r.lvs.length ? 'logical volumes:' : 'no logical volumes');
  for (const l of r.lvs) {
    lines.push(`  ${l.name}  ${formatSize(l.size)}  ${l.uuid}`);
    for (const s of l.segments) {
      const len = s.extentCount / s.stripes.length;
      const where = s.stripes.map((a) => `${a.member}:${a.pe}-${a.pe + len - 1}`).join(' ');
      const kind = s.stripes.length > 1 ? `striped ${s.stripes.length} x ${formatSize(s.stripeSize ?? 0)}` : 'linear';
      lines.push(`    extents ${s.startExtent}-${s.startExtent + s.extentCount - 1}  ${kind}  ${where}`);
    }
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** An SVG: one row per member, one cell per extent (grouped when there are many), coloured by the LV using it. */
export function renderPoolSvg(r: PoolReport, maxCellsPerRow = 256): string {
  const rowH = 28;
  const labelW = 180;
  const width = 1000;
  const cellsW = width - labelW - 20;
  const legendH = 24 * Math.ceil((r.lvs.length + 1) / 4);
  const height = 50 + r.members.length * (rowH + 10) + legendH + 20;
  const owner = new Map<string, string[]>();
  r.members.forEach((m) => owner.set(m.pv, new Array<string>(m.extents).fill('')));
  for (const l of r.lvs) {
    for (const s of l.segments) {
      const len = s.extentCount / s.stripes.length;
      for (const a of s.stripes) {
        const row = owner.get(a.pv);
        for (let i = 0; row && i < len; i++) row[a.pe + i] = l.name;
      }
    }
  }
  const colour = new Map(r.lvs.map((l, i) => [l.name, PALETTE[i % PALETTE.length]!]));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${esc(`VG ${r.vg}: extents of each member by logical volume`)}</title>`,
    `<text x="10" y="22" font-size="15">${esc(`VG ${r.vg} — ${formatSize(r.size)}, extent ${formatSize(r.extentSize)}, ${formatSize(r.free)} free`)}</text>`,
  ];
  const widest = Math.max(1, ...r.members.map((m) => m.extents));
  r.members.forEach((m, i) => {
    const y = 40 + i * (rowH + 10);
    out.push(`<text x="10" y="${y + 18}">${esc(`${basename(m.path)} (${m.missing ? 'missing' : m.format})`)}</text>`);
    const rowW = (cellsW * m.extents) / widest;
    const cells = Math.min(m.extents, maxCellsPerRow);
    const per = m.extents / cells;
    const row = owner.get(m.pv)!;
    for (let c = 0; c < cells; c++) {
      const a = Math.floor(c * per);
      const b = Math.max(a + 1, Math.floor((c + 1) * per));
      const lv = row.slice(a, b).find((x) => x) ?? '';
      const fill = lv ? colour.get(lv)! : '#eeeeee';
      const x = labelW + (rowW * c) / cells;
      const w = Math.max(0.5, rowW / cells - (cells < 128 ? 1 : 0));
      out.push(`<rect x="${x.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${rowH}" fill="${fill}"><title>${esc(`${basename(m.path)} extents ${a}-${b - 1}: ${lv || 'free'}`)}</title></rect>`);
    }
  });
  const ly = 50 + r.members.length * (rowH + 10);
  [...r.lvs.map((l) => [l.name, colour.get(l.name)!] as const), ['free', '#eeeeee'] as const].forEach(([name, fill], i) => {
    const x = 10 + (i % 4) * 240;
    const y = ly + Math.floor(i / 4) * 24;
    out.push(`<rect x="${x}" y="${y}" width="16" height="16" fill="${fill}" stroke="#999"/><text x="${x + 22}" y="${y + 13}">${esc(name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
