/** Creating a VHD: fixed, dynamic or differencing, the footer written last. */
import { randomBytes } from 'node:crypto';
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import { boolOption } from '../../util/options.js';
import { parseSize } from '../../util/size.js';
import type { DriverCreateOptions } from '../driver.js';
import { VhdImage } from './image.js';
import {
  CREATOR_APPLICATION,
  CREATOR_VERSION,
  DEFAULT_BLOCK_SIZE,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  DYNAMIC_COOKIE,
  DYNAMIC_HEADER_SIZE,
  FEATURES_RESERVED,
  FILE_FORMAT_VERSION,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_VERSION,
  HOST_OS_WINDOWS,
  MAX_DISK_SIZE,
  NO_DATA_OFFSET,
  SECTOR_SIZE,
  diskGeometry,
  encodeDynamicHeader,
  encodeFooter,
  roundUpSector,
  vhdTimestamp,
  readVhdMeta,
  validateBat,
  type ParentLocator,
  type VhdFooter,
} from './layout.js';
import { absoluteRef, parentLinkData } from './maintain.js';

/** Smallest and largest block size `create` accepts (Hyper-V uses 512 KiB and 2 MiB). */
const MIN_CREATE_BLOCK = 4096;
const MAX_CREATE_BLOCK = 256 * 1024 * 1024;
/** Azure's rule: a fixed VHD whose virtual size is a whole number of MiB. */
const AZURE_ALIGNMENT = 1024 * 1024;

/** Create a VHD at `location.name`. */
export async function createVhd(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
  const name = location.name;
  const o = opts.options;
  const azure = boolOption(o, 'azure', false);
  const subformat = (o.subformat ?? (azure ? 'fixed' : 'dynamic')).toLowerCase();
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new VdiskError('E_USAGE', `${name}: subformat=${o.subformat}: expected dynamic or fixed`);
  const size = opts.size;
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE !== 0) throw new VdiskError('E_USAGE', `${name}: size ${size} is not a positive multiple of 512`);
  if (size > MAX_DISK_SIZE) throw new VdiskError('E_USAGE', `${name}: size ${size} is over the VHD format's 2040 GiB`);
  if (azure && subformat !== 'fixed') throw new VdiskError('E_USAGE', `${name}: azure=on needs subformat=fixed (Azure accepts only fixed VHDs)`);
  if (azure && size % AZURE_ALIGNMENT !== 0) throw new VdiskError('E_USAGE', `${name}: azure=on needs a size that is a whole number of MiB (${size} is not)`);
  let blockSize = DEFAULT_BLOCK_SIZE;
  if (o.block_size !== undefined) {
    if (subformat === 'fixed') throw new VdiskError('E_USAGE', `${name}: block_size applies to dynamic and differencing VHDs, not fixed`);
    blockSize = parseSize(o.block_size, 'block_size');
    if (blockSize < MIN_CREATE_BLOCK || blockSize > MAX_CREATE_BLOCK || (blockSize & (blockSize - 1)) !== 0) {
      throw new VdiskError('E_USAGE', `${name}: block_size=${o.block_size}: expected a power of two from 4K to 256M`);
    }
  }
  const parent = opts.parent;
  if (parent) {
    if (o.subformat !== undefined && subformat === 'fixed') throw new VdiskError('E_USAGE', `${name}: a differencing VHD (-b) cannot be fixed`);
    if (azure) throw new VdiskError('E_USAGE', `${name}: azure=on cannot have a backing file`);
    if (!(parent instanceof VhdImage)) throw new VdiskError('E_UNSUPPORTED', `${name}: a VHD's parent must be a VHD, not ${parent.format}`);
  }
  const type = parent ? DISK_TYPE_DIFFERENCING : subformat === 'fixed' ? DISK_TYPE_FIXED : DISK_TYPE_DYNAMIC;
  // A geometry whose CHS product is the size, so qemu (which sizes our creator by CHS) agrees.
  const { cylinders, heads, sectorsPerTrack } = diskGeometry(size);
  const footer: VhdFooter = {
    cookie: FOOTER_COOKIE,
    features: FEATURES_RESERVED,
    formatVersion: FILE_FORMAT_VERSION,
    dataOffset: type === DISK_TYPE_FIXED ? NO_DATA_OFFSET : FOOTER_SIZE,
    timestamp: vhdTimestamp(new Date()),
    creatorApplication: CREATOR_APPLICATION,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: HOST_OS_WINDOWS,
    originalSize: size,
    currentSize: size,
    cylinders,
    heads,
    sectorsPerTrack,
    diskType: type,
    checksum: 0,
    uniqueId: randomBytes(16),
    savedState: 0,
  };
  const footerBytes = encodeFooter(footer);
  const storage = await location.create(name);
  try {
    if (type === DISK_TYPE_FIXED) {
      await storage.truncate(size);
      await storage.write(footerBytes, size);
    } else {
      const entries = Math.ceil(size / blockSize);
      // Layout: footer copy, dynamic header, parent locator data, BAT, then blocks. The
      // locators lie before the BAT because other writers (qemu) append new blocks right
      // after the BAT or the last block, over anything else there; readers find them by
      // the offsets in the header.
      const batBytes = roundUpSector(entries * 4);
      let next = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
      const locators: ParentLocator[] = [];
      const locatorData: Array<{ offset: number; data: Buffer }> = [];
      let parentName = '';
      let parentId = Buffer.alloc(16);
      let parentTimestamp = 0;
      if (parent instanceof VhdImage) {
        const ref = opts.parentRef ?? parent.filename;
        const link = parentLinkData(ref, absoluteRef(location, ref));
        parentName = link.name;
        parentId = Buffer.from(parent.uniqueId);
        parentTimestamp = parent.timestamp;
        for (const { code, data } of link.locators) {
          const space = roundUpSector(Math.max(data.length, 1));
          locators.push({ platformCode: code, platformDataSpace: space, platformDataLength: data.length, platformDataOffset: next });
          locatorData.push({ offset: next, data });
          next += space;
        }
      }
      const tableOffset = next;
      const header = encodeDynamicHeader({
        cookie: DYNAMIC_COOKIE,
        dataOffset: NO_DATA_OFFSET,
        tableOffset,
        headerVersion: HEADER_VERSION,
        maxTableEntries: entries,
        blockSize,
        checksum: 0,
        parentUniqueId: parentId,
        parentTimestamp,
        parentUnicodeName: parentName,
        parentLocators: locators,
      });
      await storage.write(footerBytes, 0);
      await storage.write(header, FOOTER_SIZE);
      const ff = Buffer.alloc(Math.min(batBytes, 1024 * 1024), 0xff);
      for (let p = 0; p < batBytes; p += ff.length) await storage.write(ff.subarray(0, Math.min(ff.length, batBytes - p)), tableOffset + p);
      for (const l of locatorData) await storage.write(l.data, l.offset);
      await storage.write(footerBytes, tableOffset + batBytes);
    }
    await storage.flush();
    const meta = await readVhdMeta(storage);
    const { dataEnd } = validateBat(meta, name, 1);
    const io: ConstructorParameters<typeof VhdImage>[2] = { readOnly: false, dataEnd, location };
    if (parent) {
      io.parent = parent;
      io.parentInfo = { ref: opts.parentRef ?? parent.filename, resolved: parent.filename, platform: 'W2ru' };
    }
    return new VhdImage(storage, meta, io);
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw err;
  }
}
