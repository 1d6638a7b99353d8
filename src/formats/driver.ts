import type { DiskImage } from '../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../device/check.js';
import type { ImageLocation } from '../storage/location.js';
import type { Storage } from '../storage/storage.js';

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
}
