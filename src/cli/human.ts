/**
 * What the commands print for people: qemu-img's text layouts for info, check and
 * map, the partition table and package summaries, and check's exit codes. The
 * library returns data (reports, entries); only the CLI renders it.
 */
import type { BlockDevice } from '../device/block-device.js';
import type { CheckReport } from '../ops/check.js';
import type { FormatReport, ImageInfoReport } from '../ops/info.js';
import { chainNames } from '../ops/map.js';
import type { PackageInfo } from '../ops/ova.js';
import type { PartitionTable } from '../partitions/index.js';
import { formatSize } from '../util/size.js';

function humanValue(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Render a report the way `qemu-img info` prints it. */
export function formatInfoHuman(r: ImageInfoReport): string {
  const lines = [`image: ${r.filename}`, `file format: ${r.format}`, `virtual size: ${formatSize(r['virtual-size'])} (${r['virtual-size']} bytes)`];
  if (r['actual-size'] !== undefined) lines.push(`disk size: ${formatSize(r['actual-size'])}`);
  if (r['cluster-size'] !== undefined) lines.push(`cluster_size: ${r['cluster-size']}`);
  if (r['backing-filename'] !== undefined) {
    const full = r['full-backing-filename'];
    lines.push(`backing file: ${r['backing-filename']}${full && full !== r['backing-filename'] ? ` (actual path: ${full})` : ''}`);
  }
  if (r['dirty-flag']) lines.push('dirty: yes');
  const fs = r['format-specific'];
  if (fs) {
    lines.push('Format specific information:');
    for (const [k, v] of Object.entries(fs.data)) {
      if (Array.isArray(v)) {
        lines.push(`    ${k}:`);
        for (const item of v) lines.push(`        ${humanValue(item)}`);
      } else if (v !== undefined) {
        lines.push(`    ${k}: ${humanValue(v)}`);
      }
    }
  }
  for (const w of r.warnings ?? []) lines.push(`warning: ${w}`);
  if (r.partitions) lines.push(...formatPartitionsHuman(r.partitions));
  return lines.join('\n');
}

/** Render the format list one line per format: name, aliases, capabilities. */
export function formatFormatsHuman(list: readonly FormatReport[]): string {
  const width = Math.max(...list.map((f) => f.name.length));
  return list.map((f) => `${f.name.padEnd(width)}  ${f.capabilities.join(' ')}${f.aliases.length ? ` (also: ${f.aliases.join(', ')})` : ''}`).join('\n');
}

/** The exit code qemu-img check would give: 0 clean, 2 corruptions left, 3 only leaks (or partition-table warnings) left. */
export function checkExitCode(report: CheckReport): number {
  if (report['check-errors'] > 0) return 1;
  if (report.corruptions) return 2;
  if (report.leaks || report['partition-warnings']) return 3;
  return 0;
}

/** Render a report the way `qemu-img check` prints it. */
export function formatCheckHuman(r: CheckReport): string {
  const lines: string[] = [];
  for (const l of r['removed-leftovers'] ?? []) lines.push(`Removed ${l.path}, left by process ${l.pid} which is no longer running`);
  for (const p of r.problems) {
    const where = p.offset !== undefined ? ` (at offset ${p.offset})` : p.diskOffset !== undefined ? ` (at disk offset ${p.diskOffset})` : '';
    const tag = p.severity === 'corrupt' ? 'ERROR' : p.severity === 'leak' ? 'Leaked' : 'Warning';
    const scope = p.scope === 'partitions' ? 'partition table: ' : '';
    lines.push(`${p.repaired ? 'Repaired: ' : ''}${tag} ${scope}${p.message}${where}`);
  }
  if (r['partition-check-skipped'] !== undefined) lines.push(`Warning partition table not checked: ${r['partition-check-skipped']}`);
  const warningsFixed = r.problems.filter((p) => p.scope === 'partitions' && p.severity === 'warning' && p.repaired).length;
  const fixed = (r['corruptions-fixed'] ?? 0) + (r['leaks-fixed'] ?? 0) + warningsFixed;
  if (fixed) {
    if (lines.length) lines.push('');
    lines.push('The following inconsistencies were found and repaired:', '');
    lines.push(`    ${r['leaks-fixed'] ?? 0} leaked clusters`, `    ${r['corruptions-fixed'] ?? 0} corruptions`);
    if (warningsFixed) lines.push(`    ${warningsFixed} partition table warnings`);
  }
  if (!r.corruptions && !r.leaks && !r['check-errors'] && !r['partition-warnings']) {
    if (lines.length) lines.push('');
    lines.push('No errors were found on the image.');
  }
  if (r.corruptions) {
    lines.push('', `${r.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
  }
  if (r.leaks) {
    lines.push('', `${r.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
  }
  if (r['partition-warnings']) {
    lines.push('', `${r['partition-warnings']} partition table warnings were found on the disk.`, 'No harm to data; -r all moves a misplaced backup GPT and resizes the protective MBR.');
  }
  if (r['check-errors']) lines.push('', `${r['check-errors']} internal errors have occurred during the check.`);
  const alloc = r['allocated-clusters'];
  const totalClusters = r['total-clusters'];
  if (alloc !== undefined && totalClusters) {
    lines.push(`${alloc}/${totalClusters} = ${((100 * alloc) / totalClusters).toFixed(2)}% allocated`);
  }
  return lines.join('\n');
}

/** Render {@link PackageInfo} for people. */
export function formatPackageInfoHuman(i: PackageInfo): string {
  const lines = [`package: ${i.package} (${i.container})`, `descriptor: ${i.descriptor} (OVF ${i['ovf-version']})`];
  for (const vs of i['virtual-systems']) {
    lines.push(`virtual system: ${vs.name ?? vs.id}`);
    if (vs.cpus !== undefined) lines.push(`    cpus: ${vs.cpus}`);
    if (vs['memory-bytes'] !== undefined) lines.push(`    memory: ${vs['memory-bytes'] / 2 ** 20} MiB`);
    if (vs['os-id'] !== undefined) lines.push(`    os id: ${vs['os-id']}${vs.os ? ` (${vs.os})` : ''}`);
  }
  for (const d of i.disks) {
    lines.push(`disk ${d.id}: ${d.href ?? '(no file)'}`);
    lines.push(`    capacity: ${d.capacity} bytes`);
    if (d['populated-size'] !== undefined) lines.push(`    populated size: ${d['populated-size']} bytes`);
    if (d['file-size'] !== undefined) lines.push(`    file size: ${d['file-size']} bytes`);
    if (d.format) lines.push(`    format: ${d.format}`);
  }
  for (const n of i.networks) lines.push(`network: ${n.name}${n.description ? ` (${n.description})` : ''}`);
  const m = i.manifest;
  lines.push(m.status === 'absent' ? 'manifest: absent' : `manifest: ${m.name} (${m.algorithms.join(', ')}, ${m.entries} entries; not verified, run 'vdisk ova verify')`);
  if (m.unlisted.length && m.status === 'present') lines.push(`    not in manifest: ${m.unlisted.join(', ')}`);
  return lines.join('\n');
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

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd());
}

/** Lines describing `t` (scheme, disk id, one row per partition, problems), indented like `qemu-img info`'s sections. */
export function formatPartitionsHuman(t: PartitionTable): string[] {
  const lines = [`partition table: ${t.scheme === 'mbr' ? 'mbr (dos)' : t.scheme}`];
  const rows: string[][] = [['Number', 'Start', 'Sectors', 'Size', 'Type', 'Name', 'Flags']];
  if (t.scheme === 'gpt') {
    lines.push(`    disk GUID: ${t.diskGuid}`);
    lines.push(`    usable sectors: ${t.firstUsableLba}-${t.lastUsableLba} (${t.numberOfPartitionEntries} entries of ${t.sizeOfPartitionEntry} bytes, read from the ${t.source} copy)`);
    for (const p of t.partitions) rows.push([String(p.index), String(p.start), String(p.sectors), formatSize(p.length), p.typeName, p.name, p.flags.join(',')]);
  } else if (t.scheme === 'mbr') {
    lines.push(`    disk identifier: ${t.diskId}`);
    for (const p of t.partitions) {
      const flags = [p.bootable ? 'active' : '', p.kind !== 'primary' ? p.kind : ''].filter(Boolean).join(',');
      rows.push([String(p.index), String(p.start), String(p.sectors), formatSize(p.length), `${p.typeName} (${p.typeHex})`, '', flags]);
    }
  }
  if (rows.length > 1) lines.push(...table(rows).map((l) => `    ${l}`));
  for (const p of t.problems) lines.push(`partition ${p.severity === 'warning' ? 'warning' : 'problem'}: ${p.message}`);
  return lines;
}
