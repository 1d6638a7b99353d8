/**
 * The image variants the ops tests run over, with how qemu-img makes each one. A
 * variant whose driver is not registered yet is skipped with that reason; once its
 * driver is in the registry the same tests run for real.
 */
import { open as fsOpen, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { findDriver } from '../../src/formats/registry.js';
import { patternBytes } from '../helpers/tmp.js';
import { runOk } from '../helpers/oracle.js';

/** One format + subformat, as vdisk and as qemu-img name it. */
export interface Variant {
  id: string;
  /** vdisk driver name. */
  format: string;
  /** vdisk `-o` options. */
  options: Record<string, string>;
  /** qemu-img format name. */
  qemuFormat: string;
  /** qemu-img `-o` options (making the same variant). */
  qemuOptions?: string;
  /**
   * True when both vdisk and qemu-img report allocation per format block, so their
   * data ranges must agree exactly; false for fully allocated layouts (raw, fixed,
   * flat), where qemu-img asks the host file system and vdisk may report zero pages
   * as zero: there vdisk's data must lie inside qemu's and the rest must read as zeros.
   */
  exactMap: boolean;
}

/** Every variant issue 6 names, and issue 20's qcow2 and VHDX. */
export const VARIANTS: readonly Variant[] = [
  { id: 'raw', format: 'raw', options: {}, qemuFormat: 'raw', exactMap: false },
  { id: 'vhd-dynamic', format: 'vhd', options: { subformat: 'dynamic' }, qemuFormat: 'vpc', qemuOptions: 'subformat=dynamic,force_size=on', exactMap: true },
  { id: 'vhd-fixed', format: 'vhd', options: { subformat: 'fixed' }, qemuFormat: 'vpc', qemuOptions: 'subformat=fixed,force_size=on', exactMap: false },
  { id: 'vdi-dynamic', format: 'vdi', options: { subformat: 'dynamic' }, qemuFormat: 'vdi', qemuOptions: 'static=off', exactMap: true },
  { id: 'vdi-fixed', format: 'vdi', options: { subformat: 'fixed' }, qemuFormat: 'vdi', qemuOptions: 'static=on', exactMap: false },
  { id: 'vmdk-monolithicSparse', format: 'vmdk', options: { subformat: 'monolithicSparse' }, qemuFormat: 'vmdk', qemuOptions: 'subformat=monolithicSparse', exactMap: true },
  { id: 'vmdk-monolithicFlat', format: 'vmdk', options: { subformat: 'monolithicFlat' }, qemuFormat: 'vmdk', qemuOptions: 'subformat=monolithicFlat', exactMap: false },
  { id: 'vmdk-twoGbMaxExtentSparse', format: 'vmdk', options: { subformat: 'twoGbMaxExtentSparse' }, qemuFormat: 'vmdk', qemuOptions: 'subformat=twoGbMaxExtentSparse', exactMap: true },
  { id: 'vmdk-twoGbMaxExtentFlat', format: 'vmdk', options: { subformat: 'twoGbMaxExtentFlat' }, qemuFormat: 'vmdk', qemuOptions: 'subformat=twoGbMaxExtentFlat', exactMap: false },
  { id: 'vmdk-streamOptimized', format: 'vmdk', options: { subformat: 'streamOptimized' }, qemuFormat: 'vmdk', qemuOptions: 'subformat=streamOptimized', exactMap: true },
  // Issue 20.
  { id: 'qcow2', format: 'qcow2', options: {}, qemuFormat: 'qcow2', qemuOptions: 'compat=1.1', exactMap: true },
  // qemu-img map reports a VHDX as all data (its vhdx driver has no block status): vdisk's data must lie inside it.
  { id: 'vhdx-dynamic', format: 'vhdx', options: { subformat: 'dynamic', block_size: '1M' }, qemuFormat: 'vhdx', qemuOptions: 'subformat=dynamic,block_size=1M', exactMap: false },
  { id: 'vhdx-fixed', format: 'vhdx', options: { subformat: 'fixed' }, qemuFormat: 'vhdx', qemuOptions: 'subformat=fixed', exactMap: false },
];

/**
 * The convert matrix: every variant above, and qcow2 with a small cluster size too,
 * so an 8 MiB disk spans many L2 entries and refcount-block boundaries.
 */
export const MATRIX_VARIANTS: readonly Variant[] = [
  ...VARIANTS,
  { id: 'qcow2-4k', format: 'qcow2', options: { cluster_size: '4096' }, qemuFormat: 'qcow2', qemuOptions: 'compat=1.1,cluster_size=4096', exactMap: true },
];

/** True when vdisk has a driver for `format`. */
export function registered(format: string): boolean {
  try {
    findDriver(format);
    return true;
  } catch {
    return false;
  }
}

/** File extension for a variant's images. */
export function extension(v: Variant): string {
  return v.format === 'vhd' ? 'vhd' : v.format;
}

/** Size of the test disks: 8 MiB spans several VHD (2 MiB) and VDI (1 MiB) blocks. */
export const DISK_SIZE = 8 * 1024 * 1024;

/**
 * Write a raw disk with a mix worth converting: random data, written zeros (a run
 * longer than 4 KiB inside data), holes, a lone sector, and data in the last block.
 */
export async function writePatternRaw(path: string, size = DISK_SIZE): Promise<void> {
  const fh = await fsOpen(path, 'w');
  try {
    await fh.truncate(size);
    await fh.write(patternBytes(64 * 1024, 1), 0, 64 * 1024, 0);
    await fh.write(Buffer.alloc(128 * 1024), 0, 128 * 1024, 64 * 1024);
    await fh.write(patternBytes(64 * 1024, 2), 0, 64 * 1024, 192 * 1024);
    await fh.write(patternBytes(512 * 1024, 3), 0, 512 * 1024, 3 * 1024 * 1024);
    await fh.write(patternBytes(512, 4), 0, 512, 5 * 1024 * 1024 + 7 * 512);
    await fh.write(patternBytes(4096, 5), 0, 4096, size - 4096);
  } finally {
    await fh.close();
  }
}

/** Make the variant from a raw file with `qemu-img convert` (the way users get such images). */
export async function qemuMake(v: Variant, raw: string, out: string): Promise<void> {
  await runOk('qemu-img', ['convert', '-f', 'raw', '-O', v.qemuFormat, ...(v.qemuOptions ? ['-o', v.qemuOptions] : []), raw, out]);
}

/** The biggest file of a (possibly multi-file) image: where its data lives, the one to damage. */
export async function dataFile(image: string): Promise<string> {
  const folder = dirname(image);
  const stem = basename(image).replace(/\.[^.]+$/, '');
  let best = image;
  let bestSize = -1;
  for (const n of await readdir(folder)) {
    if (!n.startsWith(stem)) continue;
    const size = (await stat(join(folder, n))).size;
    if (size > bestSize) {
      best = join(folder, n);
      bestSize = size;
    }
  }
  return best;
}
