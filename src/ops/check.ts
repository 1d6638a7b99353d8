/**
 * check: ask an image's format driver for a consistency check (and, with `repair`,
 * fix what is safe), and summarise it the way `qemu-img check` does.
 */
import type { CheckProblem, CheckResult, FormatDriver } from '../formats/driver.js';
import { VdiskError } from '../errors.js';
import { findDriver, openLocation, probeFormat } from '../formats/registry.js';
import { FileLocation, type ImageLocation } from '../storage/location.js';

/** Thrown when the image's format has no check (raw), as qemu-img says it; the CLI exits 63 like qemu-img. */
export class ChecksUnsupportedError extends VdiskError {
  constructor(readonly filename: string, readonly format: string) {
    super('E_UNSUPPORTED', `${filename}: This image format (${format}) does not support checks`);
  }
}

/** Options for {@link check}. */
export interface CheckOptions {
  /** Format name; detected by magic when absent. */
  format?: string;
  /** Repair what is safe (`leaks`: free leaked space; `all`: also rewrite damaged redundant copies). */
  repair?: 'leaks' | 'all';
  /** Folders besides the image's own that references inside it may lead into. */
  allowPaths?: readonly string[];
}

/** What `vdisk check --output json` prints: qemu-img check's fields, plus the problems themselves. */
export interface CheckReport {
  filename: string;
  format: string;
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'allocated-clusters'?: number;
  'total-clusters'?: number;
  /** Every problem found (vdisk's addition), repaired ones marked. */
  problems: CheckProblem[];
}

/** Summarise a driver's findings with qemu-img's counters. */
export function summariseCheck(filename: string, format: string, result: CheckResult): CheckReport {
  const count = (sev: CheckProblem['severity'], repaired: boolean): number =>
    result.problems.filter((p) => p.severity === sev && Boolean(p.repaired) === repaired).length;
  const report: CheckReport = { filename, format, 'check-errors': 0, problems: result.problems };
  const corruptions = count('corrupt', false);
  const leaks = count('leak', false);
  const corruptionsFixed = count('corrupt', true);
  const leaksFixed = count('leak', true);
  // qemu-img leaves out zero counters except check-errors.
  if (corruptions) report.corruptions = corruptions;
  if (leaks) report.leaks = leaks;
  if (corruptionsFixed) report['corruptions-fixed'] = corruptionsFixed;
  if (leaksFixed) report['leaks-fixed'] = leaksFixed;
  if (result.allocatedClusters !== undefined) report['allocated-clusters'] = result.allocatedClusters;
  if (result.totalClusters !== undefined) report['total-clusters'] = result.totalClusters;
  return report;
}

/** The exit code qemu-img check would give: 0 clean, 2 corruptions left, 3 only leaks left. */
export function checkExitCode(report: CheckReport): number {
  if (report['check-errors'] > 0) return 1;
  if (report.corruptions) return 2;
  if (report.leaks) return 3;
  return 0;
}

/** Check the image at `location` with `driver` (detected by magic when absent). */
export async function checkLocation(location: ImageLocation, opts: CheckOptions & { driver?: FormatDriver } = {}): Promise<CheckReport> {
  const readOnly = opts.repair === undefined;
  const storage = await location.open(location.name, { readOnly });
  try {
    if (storage.size === 0) throw new VdiskError('E_FORMAT', `${location.name}: empty file, not a disk image`);
    const driver = opts.driver ?? (opts.format ? findDriver(opts.format) : await probeFormat(storage));
    if (!driver.check) throw new ChecksUnsupportedError(location.name, driver.name);
    const result = await driver.check(storage, location, {
      repair: opts.repair,
      readOnly,
      // Parents open read-only and with the registry's loop and depth checks.
      openParent: (name: string) => openLocation(location.at(name), { readOnly: true, allowPaths: opts.allowPaths }),
    });
    return summariseCheck(location.name, driver.name, result);
  } finally {
    await storage.close();
  }
}

/** Check (and with `repair`, fix) the image file at `path`. */
export function check(path: string, opts: CheckOptions = {}): Promise<CheckReport> {
  return checkLocation(new FileLocation(path, opts.allowPaths ?? []), opts);
}

/** Render a report the way `qemu-img check` prints it. */
export function formatCheckHuman(r: CheckReport): string {
  const lines: string[] = [];
  for (const p of r.problems) {
    const where = p.offset !== undefined ? ` (at offset ${p.offset})` : '';
    const tag = p.severity === 'corrupt' ? 'ERROR' : p.severity === 'leak' ? 'Leaked' : 'Warning';
    lines.push(`${p.repaired ? 'Repaired: ' : ''}${tag} ${p.message}${where}`);
  }
  const fixed = (r['corruptions-fixed'] ?? 0) + (r['leaks-fixed'] ?? 0);
  if (fixed) {
    if (lines.length) lines.push('');
    lines.push('The following inconsistencies were found and repaired:', '');
    lines.push(`    ${r['leaks-fixed'] ?? 0} leaked clusters`, `    ${r['corruptions-fixed'] ?? 0} corruptions`);
  }
  if (!r.corruptions && !r.leaks && !r['check-errors']) {
    if (lines.length) lines.push('');
    lines.push('No errors were found on the image.');
  }
  if (r.corruptions) {
    lines.push('', `${r.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
  }
  if (r.leaks) {
    lines.push('', `${r.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
  }
  const alloc = r['allocated-clusters'];
  const totalClusters = r['total-clusters'];
  if (alloc !== undefined && totalClusters) {
    lines.push(`${alloc}/${totalClusters} = ${((100 * alloc) / totalClusters).toFixed(2)}% allocated`);
  }
  return lines.join('\n');
}
