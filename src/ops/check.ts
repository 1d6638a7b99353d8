/**
 * check: ask an image's format driver for a consistency check (and, with `repair`,
 * fix what is safe), then check the partition table on the virtual disk it holds
 * (with `repair: 'all'`, rebuild a damaged or misplaced GPT copy), and summarise it
 * all the way `qemu-img check` does.
 *
 * Exit codes (qemu-img's, extended for partition tables): 0 clean; 2 corruptions left
 * (format or partition table: overlapping or out-of-disk partitions, bad GPT CRCs,
 * primary/backup disagreement, a missing GPT copy); 3 only leaks or partition-table
 * warnings left (no harm to data, e.g. a backup GPT not at the end of a grown disk, a
 * protective MBR that does not cover the disk: `-r all` fixes those); 1 error; 63
 * when nothing could be checked (the format has no check, as raw, and the disk holds
 * no partition table). A raw disk with a partition table is checked for it alone.
 */
import type { DiskImage } from '../device/block-device.js';
import type { CheckProblem, CheckResult } from '../device/check.js';
import type { FormatDriver } from '../formats/driver.js';
import { VdiskError } from '../errors.js';
import { findDriver, openLocation, probeFormat } from '../formats/registry.js';
import { locate } from '../storage/address.js';
import { checkPartitions, readPartitions } from '../partitions/index.js';
import { FileLocation, type ImageLocation } from '../storage/location.js';
import { removeLeftovers, type Leftover } from '../storage/lock.js';

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
  /** The format driver to check with (one the registry need not list); overrides `format`. */
  driver?: FormatDriver;
}

/** A problem as the report lists it: a format problem (offset in the image file) or a partition-table one. */
export interface ReportProblem extends CheckProblem {
  /** `partitions` for problems of the partition table on the virtual disk; absent for the format's own. */
  scope?: 'partitions';
  /** For partition-table problems: the byte offset on the virtual disk (not in the image file; `offset` is left out). */
  diskOffset?: number;
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
  /** Partition-table warnings left unrepaired (vdisk's addition; they make the exit code 3 when nothing worse is left). */
  'partition-warnings'?: number;
  /** The partition table found on the virtual disk (after any repair): `mbr`, `gpt` or `none`. */
  'partition-table'?: 'mbr' | 'gpt' | 'none';
  /** Why the partition table could not be checked (the image would not open), when it could not. */
  'partition-check-skipped'?: string;
  /** Every problem found (vdisk's addition), repaired ones marked. */
  problems: ReportProblem[];
  /** Leftovers of a killed vdisk process (dead pid) removed from beside the image before the check. */
  'removed-leftovers'?: Leftover[];
}

/** Summarise a driver's findings with qemu-img's counters. */
export function summariseCheck(filename: string, format: string, result: Omit<CheckResult, 'problems'> & { problems: ReportProblem[] }): CheckReport {
  const count = (sev: CheckProblem['severity'], repaired: boolean): number =>
    result.problems.filter((p) => p.severity === sev && Boolean(p.repaired) === repaired).length;
  const report: CheckReport = { filename, format, 'check-errors': result.checkErrors ?? 0, problems: result.problems };
  const partitionWarnings = result.problems.filter((p) => p.scope === 'partitions' && p.severity === 'warning' && !p.repaired).length;
  const corruptions = count('corrupt', false);
  const leaks = count('leak', false);
  const corruptionsFixed = count('corrupt', true);
  const leaksFixed = count('leak', true);
  // qemu-img leaves out zero counters except check-errors.
  if (corruptions) report.corruptions = corruptions;
  if (leaks) report.leaks = leaks;
  if (corruptionsFixed) report['corruptions-fixed'] = corruptionsFixed;
  if (leaksFixed) report['leaks-fixed'] = leaksFixed;
  if (partitionWarnings) report['partition-warnings'] = partitionWarnings;
  if (result.allocatedClusters !== undefined) report['allocated-clusters'] = result.allocatedClusters;
  if (result.totalClusters !== undefined) report['total-clusters'] = result.totalClusters;
  return report;
}

/** What checking the partition table of an image found. */
interface PartitionFindings {
  problems: ReportProblem[];
  scheme?: 'mbr' | 'gpt' | 'none';
  skipped?: string;
}

/** Open the image (writable for `repair: 'all'`) and check (and repair) its partition table. */
async function checkImagePartitions(location: ImageLocation, driver: FormatDriver, opts: CheckOptions): Promise<PartitionFindings> {
  const readOnly = opts.repair !== 'all';
  let image: DiskImage;
  try {
    // Opened with the driver that was checked (it may be one the registry does not list).
    const storage = await location.open(location.name, { readOnly });
    try {
      image = await driver.open(storage, location, {
        readOnly,
        noBacking: false,
        openParent: (name: string) => openLocation(location.at(name), { readOnly: true, allowPaths: opts.allowPaths }),
      });
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  } catch (err) {
    if (!(err instanceof VdiskError)) throw err;
    return { problems: [], skipped: err.message };
  }
  try {
    const found = await checkPartitions(image, { repair: opts.repair });
    const problems = found.map(({ offset, ...p }): ReportProblem => ({ ...p, scope: 'partitions', ...(offset !== undefined ? { diskOffset: offset } : {}) }));
    return { problems, scheme: (await readPartitions(image)).scheme };
  } finally {
    await image.close();
  }
}

/** Check the image at `location` with `driver` (detected by magic when absent). */
async function checkAt(location: ImageLocation, opts: CheckOptions): Promise<CheckReport> {
  const readOnly = opts.repair === undefined;
  let driver: FormatDriver;
  let result: CheckResult | undefined;
  const storage = await location.open(location.name, { readOnly });
  try {
    if (storage.size === 0) throw new VdiskError('E_FORMAT', `${location.name}: empty file, not a disk image`);
    driver = opts.driver ?? (opts.format ? findDriver(opts.format) : await probeFormat(storage));
    if (driver.check) {
      result = await driver.check(storage, location, {
        repair: opts.repair,
        readOnly,
        // Parents open read-only and with the registry's loop and depth checks.
        openParent: (name: string) => openLocation(location.at(name), { readOnly: true, allowPaths: opts.allowPaths }),
      });
    }
  } finally {
    await storage.close();
  }
  // The format's own check first (it may repair what opening relies on), then the disk inside.
  const parts = await checkImagePartitions(location, driver, opts);
  // No format check and no partition table: nothing was checked, as qemu-img says for raw.
  if (!result && parts.problems.length === 0 && parts.scheme !== 'mbr' && parts.scheme !== 'gpt') throw new ChecksUnsupportedError(location.name, driver.name);
  const report = summariseCheck(location.name, driver.name, { ...result, problems: [...(result?.problems ?? []), ...parts.problems] });
  if (parts.scheme) report['partition-table'] = parts.scheme;
  if (parts.skipped !== undefined) report['partition-check-skipped'] = parts.skipped;
  return report;
}

/**
 * Check (and with `repair`, fix) the image at `image`: an address (a path,
 * `ARCHIVE:MEMBER`, `lvm:`, `nbd://`) or an {@link ImageLocation} already resolved.
 * A check reads the image's container, not a device, so an open image is not taken:
 * close it first (a check with `repair` needs the write lock).
 *
 * @example
 * ```ts
 * import { check, create } from 'vdisk';
 *
 * await (await create('disk.vdi', { format: 'vdi', size: '4M' })).close();
 * const report = await check('disk.vdi');
 * console.log(report.format, report.corruptions ?? 0, report.leaks ?? 0); // vdi 0 0
 * ```
 */
export async function check(image: string | ImageLocation, opts: CheckOptions = {}): Promise<CheckReport> {
  if (typeof image !== 'string') return checkAt(image, opts);
  const location = await locate(image, opts);
  // What a killed vdisk left beside the image (dead pid only) goes first, and the report says so.
  const leftovers = location instanceof FileLocation ? await removeLeftovers(image) : [];
  const report = await checkAt(location, opts);
  if (leftovers.length) report['removed-leftovers'] = leftovers;
  return report;
}
