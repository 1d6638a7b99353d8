/**
 * VHD (Virtual PC / Hyper-V / Azure, qemu's "vpc"): the driver table. On-disk
 * structures and their validation at open in layout.ts, the device (and opening it)
 * in image.ts, resize/compact/relink in maintain.ts, create.ts, check.ts.
 */
import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import { imageOf, type FormatDriver } from '../driver.js';
import { checkVhd } from './check.js';
import { createVhd } from './create.js';
import { VhdImage, openVhd } from './image.js';
import { probeVhd } from './layout.js';

export { VhdImage } from './image.js';

/** The VHD format driver (`vhd`, alias `vpc` as qemu names it). */
export const vhdDriver: FormatDriver = {
  name: 'vhd',
  aliases: ['vpc'],
  createOptions: {
    subformat: 'dynamic (default) or fixed',
    block_size: 'block size of a dynamic or differencing disk (default 2M; power of two, 4K..256M)',
    azure: 'on: a fixed disk whose size is a whole MiB, as Azure demands (refused otherwise)',
  },
  probe: probeVhd,
  open: openVhd,
  create: createVhd,
  check: checkVhd,
  differencing: true,
  async resize(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void> {
    await imageOf(image, VhdImage, 'vhd').resize(newSize, opts);
  },
  compact(image: DiskImage, opts: CompactOptions): Promise<CompactResult> {
    return imageOf(image, VhdImage, 'vhd').compact(opts);
  },
  async relink(image: DiskImage, parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    await imageOf(image, VhdImage, 'vhd').setBacking(parent, ref);
  },
};
