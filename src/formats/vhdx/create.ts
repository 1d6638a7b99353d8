/**
 * Creating a VHDX ([MS-VHDX] 2.1): the header section (file type identifier, two
 * headers, two region tables), then a log, the metadata region, the BAT and, for a
 * fixed disk, every payload block. Everything but the headers is written and flushed
 * first; until both headers are there the file is no VHDX at all.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { parseSize } from '../../util/size.js';
import type { DriverCreateOptions } from '../driver.js';
import {
  BAT_REGION_GUID,
  FILE_PARAMETERS_GUID,
  FILE_PARAM_HAS_PARENT,
  FILE_PARAM_LEAVE_BLOCKS_ALLOCATED,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SECTION_SIZE,
  HEADER_VERSION,
  LOGICAL_SECTOR_SIZE_GUID,
  LOG_VERSION,
  MAX_BLOCK_SIZE,
  MAX_VIRTUAL_DISK_SIZE,
  METADATA_REGION_GUID,
  METADATA_TABLE_SIZE,
  MIN_BLOCK_SIZE,
  PAGE83_DATA_GUID,
  PARENT_LOCATOR_GUID,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PHYSICAL_SECTOR_SIZE_GUID,
  REGION_ALIGNMENT,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  VIRTUAL_DISK_SIZE_GUID,
  ZERO_GUID,
  batGeometry,
  encodeBatEntry,
  encodeFileIdentifier,
  encodeGuid,
  encodeHeader,
  encodeMetadataTable,
  encodeParentLocator,
  encodeRegionTable,
  payloadEntryIndex,
  randomGuid,
  type MetadataEntry,
  type ParentLocator,
} from './layout.js';

/** Block size when none is asked for: 32 MiB, Hyper-V's default for dynamic disks. */
export const DEFAULT_BLOCK_SIZE = 32 * 1024 * 1024;
/** Log size when none is asked for: 1 MiB, as qemu-img and Hyper-V make it. */
export const DEFAULT_LOG_SIZE = 1024 * 1024;
/** Largest log `create` makes. */
const MAX_LOG_SIZE = 256 * 1024 * 1024;
/** What we write as the file type identifier's creator. */
export const CREATOR = 'vdisk';

/** The `-o` keys `create` takes. */
export const CREATE_OPTIONS: Readonly<Record<string, string>> = {
  subformat: 'dynamic (default) or fixed',
  block_size: 'payload block size: a power of two from 1M to 256M (default 32M)',
  log_size: 'log size, a multiple of 1M (default 1M)',
  logical_sector_size: '512 (default) or 4096',
  physical_sector_size: '512 or 4096 (default 4096)',
};

/** The shape of a new image, checked. */
export interface VhdxCreateSpec {
  size: number;
  fixed: boolean;
  blockSize: number;
  logSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** A differencing disk's parent locator (tests and future writers). */
  parentLocator?: ParentLocator;
}

function sectorOption(o: Record<string, string>, key: string, dflt: number): number {
  const v = o[key] === undefined ? dflt : Number(o[key]);
  if (v !== 512 && v !== 4096) throw new VdiskError('E_USAGE', `vhdx: ${key}=${o[key]}: expected 512 or 4096`);
  return v;
}

/** Check `-o` options and the size into a create spec; E_USAGE naming the option otherwise. */
export function createSpec(name: string, opts: DriverCreateOptions): VhdxCreateSpec {
  const o = opts.options;
  const subformat = (o.subformat ?? 'dynamic').toLowerCase();
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new VdiskError('E_USAGE', `${name}: subformat=${o.subformat}: expected dynamic or fixed`);
  const blockSize = o.block_size === undefined || o.block_size === '0' ? DEFAULT_BLOCK_SIZE : parseSize(o.block_size, 'block_size');
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) throw new VdiskError('E_USAGE', `${name}: block_size=${o.block_size}: expected a power of two from 1M to 256M`);
  const logSize = o.log_size === undefined ? DEFAULT_LOG_SIZE : parseSize(o.log_size, 'log_size');
  if (logSize < REGION_ALIGNMENT || logSize % REGION_ALIGNMENT !== 0 || logSize > MAX_LOG_SIZE) throw new VdiskError('E_USAGE', `${name}: log_size=${o.log_size}: expected a multiple of 1M up to 256M`);
  const logicalSectorSize = sectorOption(o, 'logical_sector_size', 512);
  const physicalSectorSize = sectorOption(o, 'physical_sector_size', 4096);
  const size = opts.size;
  if (!Number.isSafeInteger(size) || size <= 0 || size % logicalSectorSize !== 0) throw new VdiskError('E_USAGE', `${name}: size ${size} is not a positive multiple of the ${logicalSectorSize}-byte logical sector`);
  if (size > MAX_VIRTUAL_DISK_SIZE) throw new VdiskError('E_USAGE', `${name}: size ${size} is over the VHDX format's 64 TiB`);
  if (opts.parent && (o.subformat ?? 'dynamic').toLowerCase() === 'fixed') throw new VdiskError('E_USAGE', `${name}: a differencing VHDX (-b) cannot be fixed`);
  return { size, fixed: subformat === 'fixed', blockSize, logSize, logicalSectorSize, physicalSectorSize };
}

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Write a new, empty VHDX of `spec` onto `storage` (which must be empty). */
export async function writeNewVhdx(storage: Storage, spec: VhdxCreateSpec): Promise<void> {
  const hasParent = spec.parentLocator !== undefined;
  const params = { blockSize: spec.blockSize, logicalSectorSize: spec.logicalSectorSize, virtualDiskSize: spec.size, hasParent };
  const g = batGeometry(params);
  const logOffset = HEADER_SECTION_SIZE;
  const metadataOffset = logOffset + spec.logSize;
  const metadataLength = REGION_ALIGNMENT;
  const batOffset = metadataOffset + metadataLength;
  const batLength = roundUp(g.totalEntries * 8, REGION_ALIGNMENT);
  const payloadStart = batOffset + batLength;
  const lastLen = spec.size - (g.payloadBlocks - 1) * spec.blockSize;
  const fileSize = spec.fixed ? payloadStart + (g.payloadBlocks - 1) * spec.blockSize + roundUp(lastLen, REGION_ALIGNMENT) : payloadStart;

  // Metadata items (2.6.2), laid out from 64 KiB into the region as qemu lays them.
  const items: Array<{ guid: string; data: Buffer; virtualDisk: boolean }> = [];
  const fp = Buffer.alloc(8);
  fp.writeUInt32LE(spec.blockSize, 0);
  fp.writeUInt32LE((spec.fixed ? FILE_PARAM_LEAVE_BLOCKS_ALLOCATED : 0) | (hasParent ? FILE_PARAM_HAS_PARENT : 0), 4);
  items.push({ guid: FILE_PARAMETERS_GUID, data: fp, virtualDisk: false });
  const vs = Buffer.alloc(8);
  vs.writeBigUInt64LE(BigInt(spec.size));
  items.push({ guid: VIRTUAL_DISK_SIZE_GUID, data: vs, virtualDisk: true });
  const p83 = Buffer.alloc(16);
  encodeGuid(randomGuid(), p83);
  items.push({ guid: PAGE83_DATA_GUID, data: p83, virtualDisk: true });
  const ls = Buffer.alloc(4);
  ls.writeUInt32LE(spec.logicalSectorSize);
  items.push({ guid: LOGICAL_SECTOR_SIZE_GUID, data: ls, virtualDisk: true });
  const ps = Buffer.alloc(4);
  ps.writeUInt32LE(spec.physicalSectorSize);
  items.push({ guid: PHYSICAL_SECTOR_SIZE_GUID, data: ps, virtualDisk: true });
  if (spec.parentLocator) items.push({ guid: PARENT_LOCATOR_GUID, data: encodeParentLocator(spec.parentLocator), virtualDisk: false });
  const entries: MetadataEntry[] = [];
  const region = Buffer.alloc(metadataLength);
  let at = METADATA_TABLE_SIZE;
  for (const it of items) {
    entries.push({ itemId: it.guid, offset: at, length: it.data.length, isUser: false, isVirtualDisk: it.virtualDisk, isRequired: true });
    it.data.copy(region, at);
    at += roundUp(it.data.length, 8);
  }
  encodeMetadataTable(entries).copy(region, 0);

  await storage.truncate(fileSize);
  await storage.write(region, metadataOffset);
  if (spec.fixed) {
    const bat = Buffer.alloc(g.totalEntries * 8);
    for (let n = 0; n < g.payloadBlocks; n++) encodeBatEntry(bat, payloadEntryIndex(n, g.chunkRatio) * 8, PAYLOAD_BLOCK_FULLY_PRESENT, payloadStart + n * spec.blockSize);
    await storage.write(bat, batOffset);
  }
  // A dynamic BAT stays all zeros, every block NOT_PRESENT: the truncate made it so.
  const regions = encodeRegionTable([
    { guid: BAT_REGION_GUID, fileOffset: batOffset, length: batLength, required: true },
    { guid: METADATA_REGION_GUID, fileOffset: metadataOffset, length: metadataLength, required: true },
  ]);
  await storage.write(encodeFileIdentifier(CREATOR), 0);
  await storage.write(regions, REGION_TABLE1_OFFSET);
  await storage.write(regions, REGION_TABLE2_OFFSET);
  await storage.flush();
  const fileWriteGuid = randomGuid();
  const dataWriteGuid = randomGuid();
  const h = { fileWriteGuid, dataWriteGuid, logGuid: ZERO_GUID, logVersion: LOG_VERSION, version: HEADER_VERSION, logLength: spec.logSize, logOffset };
  await storage.write(encodeHeader({ ...h, sequenceNumber: 1n }), HEADER1_OFFSET);
  await storage.flush();
  await storage.write(encodeHeader({ ...h, sequenceNumber: 2n }), HEADER2_OFFSET);
  await storage.flush();
}
