/** Opening a logical volume by its parsed `lvm:[DIR/]VG/LV` address, as `open()` does for every command. */
import type { DiskImage } from '../device/block-device.js';
import { parseLvAddress, type LvAddress } from '../storage/address.js';
import { Pool } from './pool.js';

/** Open the pool the address names and return its LV; closing the LV closes the pool. */
export async function openLv(address: string | LvAddress, opts: { readOnly?: boolean } = {}): Promise<DiskImage> {
  const a = typeof address === 'string' ? parseLvAddress(address) : address;
  const pool = await Pool.open(a.vg, { dir: a.dir, readOnly: opts.readOnly });
  try {
    return pool.openLv(a.lv, { ownsPool: true });
  } catch (e) {
    await pool.close().catch(() => undefined);
    throw e;
  }
}
