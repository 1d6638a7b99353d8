/**
 * Creating VMDK disks in each createType, laid out as VMware and qemu lay them out:
 * a sparse extent is header, descriptor (monolithic only), redundant GD and GTs,
 * GD and GTs, padded to a grain; split disks use VMware's 4 192 256-sector extents.
 */
import { posix } from 'node:path';
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { DriverCreateOptions } from '../driver.js';
import { ADAPTER_TYPES, type Descriptor, type ExtentLine, formatDescriptor, newDescriptor } from './descriptor.js';
import { SECTOR, SPLIT_EXTENT_SECTORS } from './layout.js';
import { writeSparseExtent } from './sparse.js';
import { VmdkImage, openVmdk } from './image.js';
import { StreamOptimizedImage, StreamOptimizedWriter } from './stream.js';

/** The subformats `create` makes. */
export const SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'] as const;

function baseName(location: ImageLocation): string {
  const b = posix.basename(location.name.replace(/\\/g, '/'));
  return b.replace(/\.vmdk$/i, '');
}

/** Parse and check the `-o` options. */
function createSettings(opts: DriverCreateOptions): { subformat: string; adapterType: string; hwVersion: number } {
  const subformat = opts.options.subformat ?? 'monolithicSparse';
  const match = SUBFORMATS.find((s) => s.toLowerCase() === subformat.toLowerCase());
  if (!match) throw new VdiskError('E_USAGE', `subformat=${subformat}: expected one of ${SUBFORMATS.join(', ')}`);
  const adapter = opts.options.adapter_type ?? 'ide';
  const adapterType = ADAPTER_TYPES.find((a) => a.toLowerCase() === adapter.toLowerCase());
  if (!adapterType) throw new VdiskError('E_USAGE', `adapter_type=${adapter}: expected one of ${ADAPTER_TYPES.join(', ')}`);
  const hw = opts.options.hwversion ?? '4';
  const hwVersion = Number(hw);
  if (!Number.isInteger(hwVersion) || hwVersion < 1 || hwVersion > 99) throw new VdiskError('E_USAGE', `hwversion=${hw}: expected a whole number from 1 to 99`);
  return { subformat: match, adapterType, hwVersion };
}

/** Create a VMDK disk at `location` and open it for writing. */
export async function createVmdk(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
  const settings = createSettings(opts);
  const { subformat } = settings;
  let { adapterType, hwVersion } = settings;
  // A delta link describes the same virtual disk as its parent: keep the parent's adapter and hardware version unless told otherwise.
  if (opts.parent instanceof VmdkImage) {
    const ddb = opts.parent.descriptor.ddb;
    const a = ADAPTER_TYPES.find((x) => x === ddb.get('ddb.adapterType'));
    if (opts.options.adapter_type === undefined && a) adapterType = a;
    const hw = Number(ddb.get('ddb.virtualHWVersion'));
    if (opts.options.hwversion === undefined && Number.isInteger(hw) && hw >= 1 && hw <= 99) hwVersion = hw;
  }
  const capacity = opts.size / SECTOR;
  if (!Number.isSafeInteger(capacity) || capacity <= 0) throw new VdiskError('E_USAGE', `${location.name}: size ${opts.size} is not a positive multiple of ${SECTOR}`);
  let parentCID: number | undefined;
  if (opts.parent) {
    if (!(opts.parent instanceof VmdkImage)) throw new VdiskError('E_UNSUPPORTED', `${location.name}: a VMDK delta link needs a VMDK parent, not ${opts.parent.format}`);
    if (subformat !== 'monolithicSparse' && subformat !== 'twoGbMaxExtentSparse') {
      throw new VdiskError('E_UNSUPPORTED', `${location.name}: subformat ${subformat} cannot have a parent (use monolithicSparse or twoGbMaxExtentSparse)`);
    }
    parentCID = opts.parent.cid;
  }
  const base = baseName(location);
  const extents: ExtentLine[] = [];
  const files: Array<{ file: string; sectors: number }> = [];
  if (subformat === 'monolithicSparse' || subformat === 'streamOptimized') {
    extents.push({ access: 'RW', sectors: capacity, type: 'SPARSE', file: posix.basename(location.name.replace(/\\/g, '/')), offset: 0 });
  } else if (subformat === 'monolithicFlat') {
    files.push({ file: `${base}-flat.vmdk`, sectors: capacity });
    extents.push({ access: 'RW', sectors: capacity, type: 'FLAT', file: `${base}-flat.vmdk`, offset: 0 });
  } else {
    const letter = subformat === 'twoGbMaxExtentSparse' ? 's' : 'f';
    for (let i = 0, left = capacity; left > 0; i++) {
      const sectors = Math.min(SPLIT_EXTENT_SECTORS, left);
      const file = `${base}-${letter}${String(i + 1).padStart(3, '0')}.vmdk`;
      files.push({ file, sectors });
      extents.push({ access: 'RW', sectors, type: letter === 's' ? 'SPARSE' : 'FLAT', file, offset: 0 });
      left -= sectors;
    }
  }
  const descriptor: Descriptor = newDescriptor({
    createType: subformat,
    extents,
    capacity,
    adapterType,
    hwVersion,
    parentCID,
    parentFileNameHint: opts.parent ? opts.parentRef : undefined,
  });
  const text = formatDescriptor(descriptor);

  if (subformat === 'streamOptimized') {
    const storage = await location.create(location.name);
    try {
      const writer = new StreamOptimizedWriter(storage, opts.size, descriptor);
      await writer.start();
      return new StreamOptimizedImage(storage, opts.size, writer, descriptor);
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  }

  const made: string[] = [];
  const parentOpts = {
    readOnly: false,
    openParent: async (): Promise<DiskImage> => {
      throw new VdiskError('E_CHAIN', `${location.name}: parent must be given when creating`);
    },
    parent: opts.parent,
  };
  try {
    if (subformat === 'monolithicSparse') {
      const storage = await location.create(location.name);
      try {
        await writeSparseExtent(storage, capacity, text);
        await storage.flush();
        return await openVmdk(storage, location, parentOpts);
      } catch (err) {
        await storage.close().catch(() => undefined);
        throw err;
      }
    }
    for (const f of files) {
      const name = location.resolve(f.file);
      const s = await location.create(name);
      made.push(name);
      try {
        if (subformat === 'twoGbMaxExtentSparse') await writeSparseExtent(s, f.sectors);
        else await s.truncate(f.sectors * SECTOR);
        await s.flush();
      } finally {
        await s.close();
      }
    }
    const storage = await location.create(location.name);
    try {
      await storage.write(Buffer.from(text, 'utf8'), 0);
      await storage.flush();
      return await openVmdk(storage, location, parentOpts);
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  } catch (err) {
    for (const m of made) await location.remove(m).catch(() => undefined);
    throw err;
  }
}
