/**
 * Addresses: the one place that turns what a user (or an image) names into where it
 * lives. A path; `ARCHIVE:MEMBER[:MEMBER…]` inside a tar or zip (read-only);
 * `nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`, `nbds://…` for a
 * remote export; `IMAGE@SNAPSHOT` for an internal snapshot when IMAGE exists and the
 * whole name does not; `lvm:[DIR/]VG/LV` for a pool's logical volume, which is a
 * device rather than a container and so is handed back parsed, for the pool to open.
 */
import { stat } from 'node:fs/promises';
import { VdiskError } from '../errors.js';
import { FileLocation, type ImageLocation } from './location.js';

/** A parsed `lvm:[DIR/]VG/LV` address. */
export interface LvAddress {
  /** Folder to scan for members (the current one when the address names none). */
  dir: string;
  vg: string;
  lv: string;
}

/** True when `address` names a logical volume. */
export function isLvAddress(address: string): boolean {
  return address.startsWith('lvm:');
}

/** Split `lvm:[DIR/]VG/LV`; E_USAGE when VG or LV is missing. */
export function parseLvAddress(address: string): LvAddress {
  const rest = address.slice('lvm:'.length);
  const parts = rest.split('/');
  const lv = parts.pop() ?? '';
  const vg = parts.pop() ?? '';
  if (!vg || !lv) throw new VdiskError('E_USAGE', `${address}: a logical volume is addressed as lvm:[DIR/]VG/LV`);
  const dir = parts.length === 0 ? '.' : parts.join('/') || '/';
  return { dir, vg, lv };
}

/** True when `address` names an NBD export. */
export function isNbdAddress(address: string): boolean {
  return /^nbds?(\+(unix|tcp))?:\/\//i.test(address);
}

/** Options for {@link resolveAddress}. */
export interface AddressOptions {
  /** Folders besides the image's own that references inside it may lead into (`--allow-path`). */
  allowPaths?: readonly string[];
  /** Read `IMAGE@SNAPSHOT` as an internal snapshot (where the caller can open one). */
  snapshots?: boolean;
}

/** What an address resolves to: a location (with a snapshot name, for `IMAGE@SNAPSHOT`), or a logical volume. */
export type ResolvedAddress = { kind: 'location'; location: ImageLocation; snapshot?: string } | { kind: 'lv'; address: string; lv: LvAddress };

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** Resolve any address every command and `open()` accept (see the module comment). */
export async function resolveAddress(address: string, opts: AddressOptions = {}): Promise<ResolvedAddress> {
  if (isLvAddress(address)) return { kind: 'lv', address, lv: parseLvAddress(address) };
  if (isNbdAddress(address)) return { kind: 'location', location: new (await import('./nbd/location.js')).NbdLocation(address) };
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(address);
  if (scheme && !(await exists(address))) {
    throw new VdiskError('E_USAGE', `${address}: unknown scheme "${scheme[1]}://" (an image is a path, ARCHIVE:MEMBER, nbd://, nbds:// or nbd+unix://)`);
  }
  if (opts.snapshots) {
    const at = address.lastIndexOf('@');
    if (at > 0 && !(await exists(address)) && (await isFile(address.slice(0, at)))) {
      return { kind: 'location', location: await locatePath(address.slice(0, at), opts), snapshot: address.slice(at + 1) };
    }
  }
  return { kind: 'location', location: await locatePath(address, opts) };
}

/** A path or `ARCHIVE:MEMBER`; only a name with a colon can be a member, and only then is the archive code loaded. */
async function locatePath(address: string, opts: AddressOptions): Promise<ImageLocation> {
  const member = address.includes(':') ? await (await import('./containers/location.js')).archiveMemberLocation(address) : undefined;
  return member ?? new FileLocation(address, opts.allowPaths ?? []);
}

/**
 * The location an address names: a path, `ARCHIVE:MEMBER` inside a tar or zip
 * (read-only), or an NBD URI. A logical volume is a device, not a location: E_USAGE.
 */
export async function locate(address: string, opts: { allowPaths?: readonly string[] } = {}): Promise<ImageLocation> {
  const r = await resolveAddress(address, opts);
  if (r.kind === 'lv') throw new VdiskError('E_USAGE', `${address}: a logical volume is a device, not a file: this command takes an image file or export`);
  return r.location;
}
