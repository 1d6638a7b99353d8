/** Helpers for the VDI tests: images in a memory folder, and a model to compare against. */
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
export { readAll } from '../../helpers/read.js';
import { vdiDriver } from '../../../src/formats/vdi/index.js';
import { VDI_BLOCK_FREE, VDI_MAP_ENTRY_SIZE, encodeHeader, newHeader, type VdiHeader } from '../../../src/formats/vdi/layout.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';

export const MiB = 1024 * 1024;

/** A memory folder. */
export function memFolder(): MemoryLocation {
  return new MemoryLocation('unused');
}

/** Create a VDI named `name` in `folder` through the driver. */
export async function createIn(folder: MemoryLocation, name: string, size: number, opts: { fixed?: boolean; parent?: DiskImage } = {}): Promise<DiskImage> {
  return vdiDriver.create(folder.at(name), { size, options: opts.fixed ? { subformat: 'fixed' } : {}, parent: opts.parent });
}

/** Open `name` in `folder` through the registry (format detected by magic, parent found by uuid). */
export function openIn(folder: MemoryLocation, name: string, opts: { readOnly?: boolean; parent?: DiskImage; noBacking?: boolean } = {}): Promise<DiskImage> {
  return openLocation(folder.at(name), opts);
}

/** The bytes of a memory file. */
export async function bytesOf(folder: MemoryLocation, name: string): Promise<Buffer> {
  const s = folder.files.get(name);
  if (!s) throw new Error(`no file ${name}`);
  const b = Buffer.alloc(s.size);
  await s.read(b, 0);
  return b;
}

/** Put bytes into the folder as a file. */
export function putFile(folder: MemoryLocation, name: string, bytes: Buffer): void {
  folder.files.set(name, new MemoryStorage(bytes, { name }));
}

/** Read a whole device. */
/**
 * A small dynamic VDI built from a header (any block size): `blocks` maps virtual
 * block → data block index (or FREE/ZERO), data filled with `fill(virtualBlock)`.
 */
export function smallVdi(opts: { cbDisk: number; cbBlock: number; entries: Record<number, number>; fill?: (block: number) => number; tweak?: (h: VdiHeader) => void }): Buffer {
  const h = newHeader({ cbDisk: opts.cbDisk, type: 1, cbBlock: opts.cbBlock });
  h.offBlocks = 512;
  h.offData = Math.ceil((512 + h.cBlocks * 4) / 512) * 512;
  const slots = Object.values(opts.entries).filter((e) => e < 0xfffffffe);
  h.cBlocksAllocated = slots.length;
  opts.tweak?.(h);
  const nSlots = slots.length ? Math.max(...slots) + 1 : 0;
  const file = Buffer.alloc(h.offData + nSlots * (h.cbBlock + h.cbBlockExtra));
  encodeHeader(h).copy(file, 0);
  for (let i = 0; i < h.cBlocks; i++) {
    const e = opts.entries[i] ?? VDI_BLOCK_FREE;
    file.writeUInt32LE(e, h.offBlocks + i * VDI_MAP_ENTRY_SIZE);
    if (e < 0xfffffffe) file.fill(opts.fill ? opts.fill(i) : i + 1, h.offData + e * (h.cbBlock + h.cbBlockExtra) + h.cbBlockExtra, h.offData + (e + 1) * (h.cbBlock + h.cbBlockExtra));
  }
  return file;
}
