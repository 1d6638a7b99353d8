/**
 * Changing a VHDX in place: resize and relink. The new virtual size and the BAT entries it
 * changes go through the log as one entry, so a crash leaves the old size with the
 * old BAT or the new size with the new one (2.3). Blocks whose file space would
 * not hold the larger block they become are moved first.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { LOG_SECTOR_SIZE, METADATA_TABLE_SIZE, PARENT_LOCATOR_GUID, VIRTUAL_DISK_SIZE_GUID, decodeMetadataTable, encodeMetadataTable, encodeParentLocator, type ParentLocator, type VhdxMeta, type VhdxParameters } from './layout.js';

/** The 4 KiB sectors of the metadata region holding VirtualDiskSize, with the new size written in (2.6.2.2). */
export async function virtualSizeSectors(storage: Storage, meta: VhdxMeta, newSize: number): Promise<Array<{ fileOffset: number; data: Buffer }>> {
  const table = Buffer.alloc(METADATA_TABLE_SIZE);
  await storage.read(table, meta.metadata.fileOffset);
  const e = decodeMetadataTable(table, meta.metadata.length, storage.name).find((x) => x.itemId === VIRTUAL_DISK_SIZE_GUID && !x.isUser);
  if (!e) throw new VdiskError('E_CORRUPT', `${storage.name}: the metadata has no virtual disk size item`);
  const at = meta.metadata.fileOffset + e.offset;
  const first = Math.floor(at / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  const last = Math.floor((at + 7) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  const span = Buffer.alloc(last + LOG_SECTOR_SIZE - first);
  await storage.read(span, first);
  span.writeBigUInt64LE(BigInt(newSize), at - first);
  const out: Array<{ fileOffset: number; data: Buffer }> = [];
  for (let p = 0; p < span.length; p += LOG_SECTOR_SIZE) out.push({ fileOffset: first + p, data: span.subarray(p, p + LOG_SECTOR_SIZE) });
  return out;
}

/** Refuse sizes the format or this image cannot take. */
export function checkNewSize(name: string, p: VhdxParameters, newSize: number, maxSize: number): void {
  if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % p.logicalSectorSize !== 0) {
    throw new VdiskError('E_USAGE', `${name}: new size ${newSize} is not a positive multiple of the ${p.logicalSectorSize}-byte logical sector`);
  }
  if (newSize > maxSize) throw new VdiskError('E_USAGE', `${name}: new size ${newSize} is over the VHDX format's 64 TiB`);
}

/** Largest metadata region relink reads whole. */
const MAX_METADATA_REGION = 16 * 1024 * 1024;

/**
 * The 4 KiB sectors of the metadata region that change when the parent locator
 * becomes `locator` (2.6.2.6): the item rewritten in place when it fits, else after
 * every other item, and its table entry updated. Written through the log, the table
 * and the item change together.
 */
export async function locatorSectors(storage: Storage, meta: VhdxMeta, locator: ParentLocator): Promise<Array<{ fileOffset: number; data: Buffer }>> {
  const name = storage.name;
  if (meta.metadata.length > MAX_METADATA_REGION) throw new VdiskError('E_UNSUPPORTED', `${name}: a ${meta.metadata.length}-byte metadata region is larger than relinking reads (${MAX_METADATA_REGION})`);
  const region = Buffer.alloc(meta.metadata.length);
  await storage.read(region, meta.metadata.fileOffset);
  const before = Buffer.from(region);
  const entries = decodeMetadataTable(region, region.length, name);
  const i = entries.findIndex((e) => e.itemId === PARENT_LOCATOR_GUID && !e.isUser);
  if (i < 0) throw new VdiskError('E_CORRUPT', `${name}: the metadata has no parent locator`);
  const item = encodeParentLocator(locator);
  const e = entries[i]!;
  let offset = e.offset;
  if (item.length > e.length) {
    const end = Math.max(METADATA_TABLE_SIZE, ...entries.filter((x) => x !== e).map((x) => x.offset + x.length));
    offset = Math.ceil(end / 8) * 8;
    if (offset + item.length > region.length) throw new VdiskError('E_UNSUPPORTED', `${name}: no room in the metadata region for a ${item.length}-byte parent locator`);
  } else {
    region.fill(0, e.offset, e.offset + e.length);
  }
  item.copy(region, offset);
  entries[i] = { ...e, offset, length: item.length };
  encodeMetadataTable(entries).copy(region, 0, 0, 32 + entries.length * 32);
  const out: Array<{ fileOffset: number; data: Buffer }> = [];
  for (let p = 0; p < region.length; p += LOG_SECTOR_SIZE) {
    if (!region.subarray(p, p + LOG_SECTOR_SIZE).equals(before.subarray(p, p + LOG_SECTOR_SIZE))) out.push({ fileOffset: meta.metadata.fileOffset + p, data: region.subarray(p, p + LOG_SECTOR_SIZE) });
  }
  return out;
}

/** A reference as a VHDX parent locator's relative_path spells it (Windows separators, `.\` for the folder). */
export function windowsRelative(ref: string): string {
  const w = ref.replace(/\//g, '\\');
  return /^(\.{1,2}\\|[A-Za-z]:|\\)/.test(w) ? w : `.\\${w}`;
}
