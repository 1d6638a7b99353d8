/**
 * The registry: which formats exist, detection by magic (never by file name), and
 * opening an image with its whole differencing chain.
 */
import { resolve as resolvePath } from 'node:path';
import type { DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { resolveAddress } from '../storage/address.js';
import { FileLocation, type ImageLocation } from '../storage/location.js';
import type { Storage } from '../storage/storage.js';
import { imageMaintenance, type DriverOpenOptions, type FormatDriver } from './driver.js';
import { qcow2Driver } from './qcow2/index.js';
import { rawDriver } from './raw/index.js';
import { vdiDriver } from './vdi/index.js';
import { vhdDriver } from './vhd/index.js';
import { vhdxDriver } from './vhdx/index.js';
import { vmdkDriver } from './vmdk/index.js';

/**
 * VHDX and qcow2 images carry out their maintenance themselves; their tables are
 * completed here with entries that hand each operation to the image (entries a
 * driver declares itself win).
 */
const vhdxTable: FormatDriver = { differencing: true, ...imageMaintenance('vhdx', ['resize', 'compact', 'relink', 'prepareCommit']), ...vhdxDriver };
const qcow2Table: FormatDriver = { differencing: true, ...imageMaintenance('qcow2', ['resize', 'compact', 'relink']), ...qcow2Driver };

/** Every driver, probed in this order; raw matches anything and comes last. */
const DRIVERS: readonly FormatDriver[] = [vhdDriver, vhdxTable, vmdkDriver, vdiDriver, qcow2Table, rawDriver];

/** Longest differencing chain vdisk follows (child + 63 ancestors). */
export const MAX_CHAIN_DEPTH = 64;

/** All registered format drivers. */
export function formatDrivers(): readonly FormatDriver[] {
  return DRIVERS;
}

/** The registered driver of an open image's format (undefined for devices no driver opens, such as a pool's LV). */
export function driverOf(image: DiskImage): FormatDriver | undefined {
  return DRIVERS.find((d) => d.name === image.format);
}

/** The driver for a format name or alias (`vpc` = `vhd`); E_USAGE listing the known ones otherwise. */
export function findDriver(name: string): FormatDriver {
  const key = name.toLowerCase();
  const d = DRIVERS.find((x) => x.name === key || x.aliases?.includes(key));
  if (!d) {
    const known = DRIVERS.flatMap((x) => [x.name, ...(x.aliases ?? [])]).join(', ');
    throw new VdiskError('E_USAGE', `unknown format "${name}" (known: ${known})`);
  }
  return d;
}

/** Detect the format of `storage` by magic; raw when nothing else matches. */
export async function probeFormat(storage: Storage): Promise<FormatDriver> {
  for (const d of DRIVERS) {
    if (d === rawDriver) continue;
    if (await d.probe(storage)) return d;
  }
  return rawDriver;
}

/** Options for {@link open}. */
export interface OpenOptions {
  /** Format name; detected by magic when absent. An explicit format always wins. */
  format?: string;
  /** Open without write access (and without the write lock). */
  readOnly?: boolean;
  /** Folders besides the image's own that references inside images may lead into. */
  allowPaths?: readonly string[];
  /** An explicit parent for a differencing image, instead of the one it names. */
  parent?: DiskImage;
  /** Do not open the parent of a differencing image. */
  noBacking?: boolean;
  /** An internal snapshot (id or name) to open read-only instead of the active image (`img.qcow2@snap`). */
  snapshot?: string;
}

interface ChainState {
  depth: number;
  seen: Set<string>;
}

/** Open the image at `location` with the given storage factory and chain state. */
async function openAt(location: ImageLocation, opts: OpenOptions, chain: ChainState): Promise<DiskImage> {
  const readOnly = opts.readOnly ?? false;
  const storage = await location.open(location.name, { readOnly });
  try {
    if (storage.size === 0) throw new VdiskError('E_FORMAT', `${location.name}: empty file, not a disk image`);
    const driver = opts.format ? findDriver(opts.format) : await probeFormat(storage);
    const driverOpts: DriverOpenOptions = {
      readOnly,
      noBacking: opts.noBacking ?? false,
      openParent: async (name: string, format?: string) => {
        const key = location instanceof FileLocation ? resolvePath(name) : name;
        if (chain.seen.has(key)) throw new VdiskError('E_CHAIN', `${location.name}: backing chain loops back to ${name}`);
        if (chain.depth + 1 >= MAX_CHAIN_DEPTH) {
          throw new VdiskError('E_CHAIN', `${location.name}: backing chain deeper than ${MAX_CHAIN_DEPTH} images`);
        }
        chain.seen.add(key);
        return openAt(location.at(name), { readOnly: true, allowPaths: opts.allowPaths, format }, { depth: chain.depth + 1, seen: chain.seen });
      },
    };
    if (opts.parent) driverOpts.parent = opts.parent;
    if (opts.snapshot !== undefined) {
      if (driver.name !== 'qcow2') throw new VdiskError('E_UNSUPPORTED', `${location.name}@${opts.snapshot}: ${driver.name} images have no internal snapshots`);
      if (!readOnly) throw new VdiskError('E_READONLY', `${location.name}@${opts.snapshot}: an internal snapshot opens read-only`);
      driverOpts.snapshot = opts.snapshot;
    }
    return await driver.open(storage, location, driverOpts);
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw err;
  }
}

/** Open an image at `location` (a file path's location, a memory folder, ...). */
export function openLocation(location: ImageLocation, opts: OpenOptions = {}): Promise<DiskImage> {
  const key = location instanceof FileLocation ? resolvePath(location.name) : location.name;
  return openAt(location, opts, { depth: 0, seen: new Set([key]) });
}

/**
 * Open the image at `address` with its differencing chain; the format is detected
 * unless given. Any address {@link resolveAddress} takes: a path, `ARCHIVE:MEMBER`
 * (e.g. `app.ova:disk1.vmdk`, opened in place, read-only), an NBD URI,
 * `IMAGE@SNAPSHOT`, or `lvm:[DIR/]VG/LV` for a pool's logical volume; or an
 * {@link ImageLocation} already resolved (a memory folder's, say).
 *
 * @example
 * ```ts
 * import { create, open } from 'vdisk';
 *
 * const made = await create('disk.vmdk', { format: 'vmdk', size: '4M' });
 * await made.write(Buffer.from('hello'), 1024);
 * await made.close();
 * const disk = await open('disk.vmdk', { readOnly: true });
 * const text = Buffer.alloc(5);
 * await disk.read(text, 1024);
 * console.log(disk.format, disk.size, text.toString()); // vmdk 4194304 hello
 * await disk.close();
 * ```
 */
export async function open(address: string | ImageLocation, opts: OpenOptions = {}): Promise<DiskImage> {
  if (typeof address !== 'string') return openLocation(address, opts);
  const r = await resolveAddress(address, { allowPaths: opts.allowPaths, snapshots: opts.snapshot === undefined });
  if (r.kind === 'lv') return (await import('../pool/open.js')).openLv(r.lv, { readOnly: opts.readOnly });
  return openLocation(r.location, r.snapshot !== undefined ? { ...opts, snapshot: r.snapshot } : opts);
}
