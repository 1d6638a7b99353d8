import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../device/check.js';
import type { ImageLocation } from '../storage/location.js';
import type { Storage } from '../storage/storage.js';
import { VdiskError } from '../errors.js';

/** What a driver gets when it opens an image. */
export interface DriverOpenOptions {
  /** Refuse writes. */
  readOnly: boolean;
  /**
   * Open another image of any format (a parent), detected by magic, read-only,
   * with chain-depth and loop checks. `name` must come from `location.resolve`;
   * `format`, when the image records the parent's format (qcow2's backing_fmt),
   * is used instead of probing.
   */
  openParent(name: string, format?: string): Promise<DiskImage>;
  /** An internal snapshot (by id or name) to open instead of the active image, read-only (qcow2). */
  snapshot?: string;
  /** An explicitly given parent (overrides what the image names), if any. */
  parent?: DiskImage;
  /** Do not open the parent even if the image names one (info on a broken chain). */
  noBacking?: boolean;
}

/** What a driver gets when it creates an image. */
export interface DriverCreateOptions {
  /** Virtual size in bytes (for a differencing image, defaults to the parent's). */
  size: number;
  /** `-o key=value` options, already checked against the driver's `createOptions`. */
  options: Record<string, string>;
  /** The parent of a new differencing image, opened read-only. */
  parent?: DiskImage;
  /** How to name the parent inside the child (as the user gave it, relative to the child). */
  parentRef?: string;
  /** Write whole clusters compressed where the format stores them so (qcow2; `convert -c`). */
  compress?: boolean;
}

/** A format: one object that says everything the format can do (like a QEMU BlockDriver table). */
export interface FormatDriver {
  /** Canonical name: `raw`, `vhd`, `vdi`, `vmdk`. */
  readonly name: string;
  /** Other names accepted for -f/-O (e.g. `vpc` for vhd). */
  readonly aliases?: readonly string[];
  /** The `-o` keys `create` accepts, each with a one-line description. */
  readonly createOptions: Readonly<Record<string, string>>;
  /** True when `storage` starts with this format's magic. */
  probe(storage: Storage): Promise<boolean>;
  /** Open an image whose main file is `storage` at `location`. */
  open(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage>;
  /** Create a new image at `location.name` (and any extra files it needs) and open it writable. */
  create(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage>;
  /** Check (and optionally repair) the image's consistency. */
  check?(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult>;
  /** True when the format has differencing images (a child reading through to a parent), which commit merges down. */
  readonly differencing?: boolean;
  /**
   * Change an open image's virtual size in place, ordered so a crash leaves the old or
   * the new size readable; E_UNSUPPORTED for kinds of image of the format that cannot.
   */
  resize?(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void>;
  /** Release blocks that hold only zeros or that nothing maps, and shorten the file; guest content is unchanged. */
  compact?(image: DiskImage, opts: CompactOptions): Promise<CompactResult>;
  /**
   * Point a differencing image at another parent, changing only the link (`ref` is how
   * the child names it); `undefined` for both makes the image stand alone.
   */
  relink?(image: DiskImage, parent: DiskImage | undefined, ref: string | undefined): Promise<void>;
  /**
   * Before a commit writes into `parent` (a writable open of the image's parent), record
   * durably the identity that write will give the parent (VMDK: its next CID).
   */
  prepareCommit?(image: DiskImage, parent: DiskImage): Promise<void>;
}

/** What a format can do, as `vdisk info --formats` lists it. */
export type FormatCapability = 'create' | 'check' | 'resize' | 'compact' | 'differencing' | 'commit' | 'relink';

/** The capabilities `driver`'s table declares, in a fixed order. */
export function driverCapabilities(driver: FormatDriver): FormatCapability[] {
  const out: FormatCapability[] = ['create'];
  if (driver.check) out.push('check');
  if (driver.resize) out.push('resize');
  if (driver.compact) out.push('compact');
  // Any differencing image can be merged down; relinking the child afterwards is the format's relink, when it has one.
  if (driver.differencing) out.push('differencing', 'commit');
  if (driver.relink) out.push('relink');
  return out;
}

/** The maintenance entries of a driver table. */
export type MaintenanceEntry = 'resize' | 'compact' | 'relink' | 'prepareCommit';

/** The methods through which a format's image class carries out its driver's maintenance entries. */
interface MaintainedImage {
  resize?(newSize: number, opts?: ResizeImageOptions): Promise<void>;
  compact?(opts?: CompactOptions): Promise<CompactResult>;
  setBacking?(parent: DiskImage | undefined, ref: string | undefined): Promise<void>;
  prepareCommit?(parent: DiskImage): Promise<void>;
}

/**
 * Driver entries that hand each maintenance operation to the image's own method, for
 * a format whose image class implements them: the image must be of format `name`.
 */
export function imageMaintenance(name: string, entries: readonly MaintenanceEntry[]): Pick<FormatDriver, MaintenanceEntry> {
  const own = (image: DiskImage, what: string): MaintainedImage => {
    if (image.format !== name) throw new VdiskError('E_USAGE', `${image.filename}: a ${image.format} image given to the ${name} driver's ${what}`);
    return image as DiskImage & MaintainedImage;
  };
  const missing = (image: DiskImage, what: string): VdiskError => new VdiskError('E_UNSUPPORTED', `${image.filename}: ${name} images of this kind cannot ${what}`);
  const out: Pick<FormatDriver, MaintenanceEntry> = {};
  for (const e of entries) {
    if (e === 'resize') {
      out.resize = async (image, newSize, opts) => {
        const img = own(image, 'resize');
        if (!img.resize) throw missing(image, 'be resized');
        return img.resize(newSize, opts);
      };
    } else if (e === 'compact') {
      out.compact = async (image, opts) => {
        const img = own(image, 'compact');
        if (!img.compact) throw missing(image, 'be compacted');
        return img.compact(opts);
      };
    } else if (e === 'relink') {
      out.relink = async (image, parent, ref) => {
        const img = own(image, 'relink');
        if (!img.setBacking) throw missing(image, 'change their backing file');
        return img.setBacking(parent, ref);
      };
    } else {
      out.prepareCommit = async (image, parent) => {
        await own(image, 'prepareCommit').prepareCommit?.(parent);
      };
    }
  }
  return out;
}

/** `image` as the driver's own image class `cls`; E_USAGE when another format's image is handed to it. */
export function imageOf<T extends DiskImage>(image: DiskImage, cls: abstract new (...args: never[]) => T, name: string): T {
  if (!(image instanceof cls)) throw new VdiskError('E_USAGE', `${image.filename}: a ${image.format} image given to the ${name} driver`);
  return image;
}
