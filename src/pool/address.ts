/** `lvm:[DIR/]VG/LV` addresses: which folder to scan, which VG, which LV. */
import { VdiskError } from '../errors.js';

/** A parsed pool address. */
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
