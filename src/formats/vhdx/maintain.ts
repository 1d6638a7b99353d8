/**
 * Changing a VHDX in place: resize. The new virtual size and the BAT entries it
 * changes go through the log as one entry, so a crash leaves the old size with the
 * old BAT or the new size with the new one (2.3). Blocks whose file space would
 * not hold the larger block they become are moved first.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { LOG_SECTOR_SIZE, METADATA_TABLE_SIZE, VIRTUAL_DISK_SIZE_GUID, decodeMetadataTable, type VhdxParameters } from './layout.js';
import type { VhdxMeta } from './image.js';

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
