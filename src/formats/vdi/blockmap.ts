/**
 * The VDI block map (VDICore.h: `paBlocks`, one uint32 VDIIMAGEBLOCKPOINTER per
 * block at offBlocks): entry i names the data block holding virtual block i, or is
 * VDI_IMAGE_BLOCK_FREE / VDI_IMAGE_BLOCK_ZERO. Data block n lives at
 * `offData + n × (cbBlockExtra + cbBlock)`, its cbBlockExtra service bytes first.
 */
import type { CheckProblem } from '../../device/check.js';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { VDI_BLOCK_ZERO, VDI_MAP_ENTRY_SIZE, type VdiHeader } from './header.js';

/** Most blocks vdisk loads a map for: 2^25 entries (128 MiB of map; 32 TiB at 1 MiB blocks). */
export const VDI_MAX_BLOCKS = 2 ** 25;

/** True when a map entry names a data block (VDICore.h IS_VDI_IMAGE_BLOCK_ALLOCATED). */
export function isAllocated(entry: number): boolean {
  return entry < VDI_BLOCK_ZERO;
}

/** Bytes one data block takes in the file. */
export function blockStride(h: VdiHeader): number {
  return h.cbBlockExtra + h.cbBlock;
}

/** Read the block map (bounded: validateHeader has checked it lies inside the file). */
export async function readBlockMap(storage: Storage, h: VdiHeader): Promise<Uint32Array> {
  if (h.cBlocks > VDI_MAX_BLOCKS) {
    throw new VdiskError('E_UNSUPPORTED', `${storage.name}: cBlocks ${h.cBlocks} is more than the ${VDI_MAX_BLOCKS} blocks vdisk handles`);
  }
  const raw = Buffer.alloc(h.cBlocks * VDI_MAP_ENTRY_SIZE);
  await storage.read(raw, h.offBlocks);
  const map = new Uint32Array(h.cBlocks);
  for (let i = 0; i < h.cBlocks; i++) map[i] = raw.readUInt32LE(i * VDI_MAP_ENTRY_SIZE);
  return map;
}

/**
 * Entries `first` .. `first + count - 1` of `map` as bytes (for writing at offBlocks +
 * first × 4), in a buffer of at least `bytes` (the rest zero).
 */
export function encodeMapEntries(map: Uint32Array, first = 0, count = map.length - first, bytes = count * VDI_MAP_ENTRY_SIZE): Buffer {
  const raw = Buffer.alloc(Math.max(bytes, count * VDI_MAP_ENTRY_SIZE));
  for (let k = 0; k < count; k++) raw.writeUInt32LE(map[first + k]! >>> 0, k * VDI_MAP_ENTRY_SIZE);
  return raw;
}

/** One map entry as bytes, for writing at offBlocks + i × 4. */
export function encodeMapEntry(entry: number): Buffer {
  const b = Buffer.alloc(VDI_MAP_ENTRY_SIZE);
  b.writeUInt32LE(entry >>> 0, 0);
  return b;
}

/** What a walk over the block map found. */
export interface BlockMapScan {
  /** Entries naming a data block. */
  mapped: number;
  /** owner[n] = the virtual block whose data is data block n, or -1 (size cBlocks). */
  owner: Int32Array;
  /** One past the highest data block in use. */
  nextSlot: number;
  /** Whole data blocks the file holds past offData. */
  slotsInFile: number;
  /** Entries past cBlocks or past EOF (`corrupt`; the image cannot be opened). */
  pointsNowhere: CheckProblem[];
  /** Data blocks named by two entries (`corrupt`; readable, but not safely writable). */
  duplicates: CheckProblem[];
}

/** Walk the block map and find entries that point nowhere or at a block another entry uses. */
export function scanBlockMap(h: VdiHeader, map: Uint32Array, fileSize: number, name: string): BlockMapScan {
  const stride = blockStride(h);
  const slotsInFile = fileSize > h.offData ? Math.floor((fileSize - h.offData) / stride) : 0;
  const owner = new Int32Array(h.cBlocks).fill(-1);
  const pointsNowhere: CheckProblem[] = [];
  const duplicates: CheckProblem[] = [];
  let mapped = 0;
  let nextSlot = 0;
  for (let i = 0; i < map.length; i++) {
    const e = map[i]!;
    if (!isAllocated(e)) continue;
    const at = h.offBlocks + i * VDI_MAP_ENTRY_SIZE;
    if (e >= h.cBlocks) {
      pointsNowhere.push({ severity: 'corrupt', offset: at, message: `${name}: block map entry ${i} names data block ${e}, past cBlocks ${h.cBlocks}` });
      continue;
    }
    if (e >= slotsInFile) {
      pointsNowhere.push({ severity: 'corrupt', offset: at, message: `${name}: block map entry ${i} names data block ${e} at ${h.offData + e * stride}, past the end of the ${fileSize}-byte file` });
      continue;
    }
    const prev = owner[e]!;
    if (prev >= 0) {
      duplicates.push({ severity: 'corrupt', offset: at, message: `${name}: block map entries ${prev} and ${i} both name data block ${e}` });
      continue;
    }
    owner[e] = i;
    mapped++;
    if (e + 1 > nextSlot) nextSlot = e + 1;
  }
  return { mapped, owner, nextSlot, slotsInFile, pointsNowhere, duplicates };
}
