import type { DiskImage } from '../device/block-device.js';
import { isVdiskError } from '../errors.js';
import { driverCapabilities, type FormatCapability } from '../formats/driver.js';
import { formatDrivers, open } from '../formats/registry.js';
import { readPartitions, type PartitionTable } from '../partitions/index.js';

/** What `vdisk info --output json` prints, with qemu-img's field names. */
export interface ImageInfoReport {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'dirty-flag': boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: { type: string; data: Record<string, unknown> };
  /** Facts worth telling the user (vdisk's addition). */
  warnings?: string[];
  /** The MBR/GPT partition table with its problems (vdisk's addition; absent when there is none). */
  partitions?: PartitionTable;
}

/** Describe one opened image (not its parents). */
export async function describeImage(image: DiskImage): Promise<ImageInfoReport> {
  const facts = await image.info();
  const report: ImageInfoReport = {
    filename: image.filename,
    format: image.format,
    'virtual-size': image.size,
    'dirty-flag': facts.dirty ?? false,
  };
  const actual = await image.actualSize();
  if (actual !== undefined) report['actual-size'] = actual;
  if (facts.clusterSize !== undefined) report['cluster-size'] = facts.clusterSize;
  if (facts.backingFilename !== undefined) report['backing-filename'] = facts.backingFilename;
  if (facts.fullBackingFilename !== undefined) report['full-backing-filename'] = facts.fullBackingFilename;
  if (facts.formatSpecific && Object.keys(facts.formatSpecific).length > 0) {
    report['format-specific'] = { type: image.format, data: facts.formatSpecific };
  }
  if (facts.warnings?.length) report.warnings = facts.warnings;
  try {
    const table = await readPartitions(image);
    if (table.scheme !== 'none' || table.problems.length > 0) report.partitions = table;
  } catch (err) {
    // A table that cannot even be read (a broken chain) must not hide the header facts.
    if (!isVdiskError(err)) throw err;
    report.warnings = [...(report.warnings ?? []), `partition table not read: ${err.message}`];
  }
  return report;
}

/** Options for {@link info}. */
export interface InfoOptions {
  /** Describe each parent of a differencing image too, in chain order (`--backing-chain`). */
  backingChain?: boolean;
  /** Format name when `image` is an address (detected by magic when absent). */
  format?: string;
  /** Folders besides the image's own that references inside it may lead into. */
  allowPaths?: readonly string[];
}

/**
 * Describe an image with `qemu-img info`'s fields (and its partition table), and with
 * `backingChain` each of its parents in turn. `image` is an address (opened read-only
 * and closed again) or an open image (left open).
 *
 * @example
 * ```ts
 * import { create, info } from 'vdisk';
 *
 * await (await create('disk.vdi', { format: 'vdi', size: '4M' })).close();
 * const [report] = await info('disk.vdi');
 * console.log(report.format, report['virtual-size']); // vdi 4194304
 * ```
 */
export async function info(image: string | DiskImage, opts: InfoOptions = {}): Promise<ImageInfoReport[]> {
  if (typeof image === 'string') {
    const opened = await open(image, { format: opts.format, readOnly: true, allowPaths: opts.allowPaths });
    try {
      return await info(opened, opts);
    } finally {
      await opened.close();
    }
  }
  const out = [await describeImage(image)];
  if (opts.backingChain) {
    for (let p = image.backing; p; p = p.backing) out.push(await describeImage(p));
  }
  return out;
}

/** One format as `vdisk info --formats --output json` lists it. */
export interface FormatReport {
  name: string;
  aliases: string[];
  /** What the format's driver table declares it can do. */
  capabilities: FormatCapability[];
  /** The `-o` keys `create` accepts, with their descriptions. */
  createOptions: Record<string, string>;
}

/** Every registered format with the capabilities its driver declares. */
export function formats(): FormatReport[] {
  return formatDrivers().map((d) => ({ name: d.name, aliases: [...(d.aliases ?? [])], capabilities: driverCapabilities(d), createOptions: { ...d.createOptions } }));
}
