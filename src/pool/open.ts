/** Opening a logical volume by its `lvm:[DIR/]VG/LV` address, as `open()` does for every command. */
import type { DiskImage } from '../device/block-device.js';
import { parseLvAddress } from './address.js';
import { Pool } from './pool.js';

/** Open the pool the address names and return its LV; closing the LV closes the pool. */
export async function openLv(address: string, opts: { readOnly?: boolean } = {}): Promise<DiskImage> {
  const a = parseLvAddress(address);
  const pool = await Pool.open(a.vg, { dir: a.dir, readOnly: opts.readOnly });
  try {
    return pool.openLv(a.lv, { ownsPool: true });
  } catch (e) {
    await pool.close().catch(() => undefined);
    throw e;
  }
}
