/** Human-readable rendering of a partition table, for `vdisk info`. */
import { formatSize } from '../util/size.js';
import type { PartitionTable } from './types.js';

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
