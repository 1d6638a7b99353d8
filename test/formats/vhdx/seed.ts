/** Small VHDX images made in memory by our writer, and the tools to damage them, for the bad-input and fuzz tests. */
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdxDriver } from '../../../src/formats/vhdx/index.js';
import { HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE, REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, REGION_TABLE_SIZE, crc32c } from '../../../src/formats/vhdx/layout.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';

export const MiB = 1024 * 1024;

/** A 6 MiB dynamic image with 1 MiB blocks: blocks 0 and 4 hold data, the rest are holes. Layout: log 1M, metadata 2M, BAT 3M, blocks from 4M. */
export async function ourSeed(options: Record<string, string> = { block_size: '1M' }, size = 6 * MiB): Promise<Buffer> {
  const loc = new MemoryLocation('s.vhdx');
  const img = await vhdxDriver.create(loc, { size, options });
  await img.write(Buffer.alloc(3000, 0x11), 100);
  if (size >= 5 * MiB) await img.write(Buffer.alloc(4096, 0x22), 4 * MiB + 512);
  await img.close();
  const s = loc.files.get('s.vhdx')!;
  const b = Buffer.alloc(s.size);
  await s.read(b, 0);
  return b;
}

/** Recompute the CRC-32C of both headers and both region tables (so damage gets past the checksums to the fields). */
export function fixChecksums(b: Buffer): void {
  for (const [at, len] of [
    [HEADER1_OFFSET, HEADER_SIZE],
    [HEADER2_OFFSET, HEADER_SIZE],
    [REGION_TABLE1_OFFSET, REGION_TABLE_SIZE],
    [REGION_TABLE2_OFFSET, REGION_TABLE_SIZE],
  ] as const) {
    if (at + len > b.length) continue;
    b.writeUInt32LE(0, at + 4);
    b.writeUInt32LE(crc32c(b.subarray(at, at + len)), at + 4);
  }
}

/** A memory folder holding `data` as `f.vhdx`. */
export function folderWith(data: Buffer, readOnly = false): MemoryLocation {
  const folder = new MemoryLocation('f.vhdx');
  folder.files.set('f.vhdx', new MemoryStorage(Buffer.from(data), { name: 'f.vhdx', readOnly }));
  return folder;
}

/** Open `data` as a VHDX in memory. */
export async function openData(data: Buffer, readOnly = true): Promise<DiskImage> {
  const f = folderWith(data);
  return openLocation(f.at('f.vhdx'), { readOnly, format: 'vhdx' });
}
