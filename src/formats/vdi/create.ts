/** Creating a VDI: the header and block map written, blocks preallocated for a fixed image. */
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { boolOption } from '../../util/options.js';
import type { DriverCreateOptions } from '../driver.js';
import { blockStride, encodeMapEntries, scanBlockMap, VDI_BLOCK_FREE, VdiImageType, encodeHeader, newHeader, type VdiHeader } from './layout.js';
import { VdiImage } from './image.js';

/** Write a new image's header and block map. */
async function writeNewImage(storage: Storage, h: VdiHeader, fixed: boolean): Promise<Uint32Array> {
  const map = new Uint32Array(h.cBlocks);
  for (let i = 0; i < h.cBlocks; i++) map[i] = fixed ? i : VDI_BLOCK_FREE;
  const raw = encodeMapEntries(map);
  const end = h.offData + (fixed ? h.cBlocks * blockStride(h) : 0);
  await storage.truncate(end);
  await storage.write(encodeHeader(h), 0);
  await storage.write(raw, h.offBlocks);
  return map;
}

/** Create a VDI at `location.name`: dynamic, fixed (preallocated) or differencing (linked to its parent by uuid). */
export async function createVdi(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
  const sub = (opts.options.subformat ?? (boolOption(opts.options, 'static', false) ? 'fixed' : 'dynamic')).toLowerCase();
  if (sub !== 'dynamic' && sub !== 'fixed') throw new VdiskError('E_USAGE', `vdi: subformat=${sub}: expected dynamic or fixed`);
  const fixed = sub === 'fixed';
  let type: number = fixed ? VdiImageType.FIXED : VdiImageType.NORMAL;
  let link: { uuidLinkage: string; uuidParentModify: string } | undefined;
  if (opts.parent) {
    if (fixed) throw new VdiskError('E_USAGE', `${location.name}: a differencing VDI is dynamic; subformat=fixed cannot have a parent`);
    if (!(opts.parent instanceof VdiImage)) {
      throw new VdiskError('E_UNSUPPORTED', `${location.name}: a VDI links to its parent by uuid, so the parent must be a VDI image (${opts.parent.filename} is ${opts.parent.format})`);
    }
    link = { uuidLinkage: opts.parent.uuid, uuidParentModify: opts.parent.modificationUuid };
    type = VdiImageType.DIFF;
  }
  if (opts.size > 2 ** 32 * 1024 * 1024 - 1) throw new VdiskError('E_USAGE', `${location.name}: ${opts.size} bytes is too large for a VDI image`);
  const header = newHeader({ cbDisk: opts.size, type, ...link });
  if (header.cBlocks > 2 ** 25) throw new VdiskError('E_USAGE', `${location.name}: ${opts.size} bytes needs more blocks than vdisk handles`);
  if (fixed) header.cBlocksAllocated = header.cBlocks;
  const storage = await location.create(location.name);
  try {
    const map = await writeNewImage(storage, header, fixed);
    const raw = encodeHeader(header);
    const scan = scanBlockMap(header, map, storage.size, storage.name);
    return new VdiImage({ storage, header, headerRaw: raw, map, owner: scan.owner, nextSlot: scan.nextSlot, readOnly: false, parent: opts.parent, ownsParent: true, warnings: [] });
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw err;
  }
}
