/**
 * VDI (VirtualBox Disk Image) driver: normal (dynamic), fixed, undo and differencing
 * images, version 1.1, with either header size (qemu's 384 bytes, VirtualBox's 400).
 * A differencing image names its parent only by uuid (uuidLinkage = the parent's
 * uuidCreate), so the parent is the one given explicitly or the VDI in the same
 * folder whose uuid matches.
 */
import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { boolOption } from '../../util/options.js';
import { imageOf, type DriverCreateOptions, type DriverOpenOptions, type FormatDriver } from '../driver.js';
import { blockStride, encodeMapEntries, readBlockMap, scanBlockMap, type BlockMapScan } from './blockmap.js';
import {
  NULL_UUID,
  VDI_BLOCK_FREE,
  VDI_HEADER1_SIZE,
  VDI_HEADER_BYTES,
  VDI_PREHEADER_SIZE,
  VDI_SIGNATURE,
  VdiField,
  VdiImageType,
  decodeHeader,
  encodeHeader,
  newHeader,
  validateHeader,
  type VdiHeader,
} from './header.js';
import { VdiImage } from './image.js';

export { VdiImage, type VdiImageParts } from './image.js';
export { decodeHeader as decodeVdiHeader, encodeHeader as encodeVdiHeader, type VdiGeometry, type VdiHeader } from './header.js';

/** Header bytes, decoded and checked against the file. */
async function loadHeader(storage: Storage): Promise<{ header: VdiHeader; raw: Buffer }> {
  const len = Math.min(storage.size, VDI_HEADER_BYTES);
  if (len < VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE) {
    throw new VdiskError('E_FORMAT', `${storage.name}: ${storage.size} bytes is too short for a VDI image`);
  }
  const raw = Buffer.alloc(len);
  await storage.read(raw, 0);
  const header = decodeHeader(raw, storage.name);
  validateHeader(header, storage.size, storage.name);
  return { header, raw };
}

/** The uuids of a VDI file, or undefined when it is not one (for the parent search). */
async function peekUuids(storage: Storage): Promise<{ create: string; modify: string } | undefined> {
  if (storage.size < VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE) return undefined;
  const raw = Buffer.alloc(VDI_PREHEADER_SIZE + VDI_HEADER1_SIZE);
  await storage.read(raw, 0);
  if (raw.readUInt32LE(VdiField.u32Signature) !== VDI_SIGNATURE) return undefined;
  const h = decodeHeader(raw, storage.name);
  return { create: h.uuidCreate, modify: h.uuidModify };
}

/**
 * Find the parent of a differencing image among the files in its folder: the VDI
 * whose uuidCreate is the child's uuidLinkage, preferring one whose uuidModify is
 * the child's uuidParentModify. Returns the resolved name.
 */
async function findParentByUuid(location: ImageLocation, self: string, h: VdiHeader): Promise<{ name: string; modifyMatches: boolean }> {
  const selfRef = location.relativeName(location.name);
  let fallback: string | undefined;
  let scanned = 0;
  const refused: string[] = [];
  for (const sibling of (await location.siblings()).sort()) {
    const ref = location.relativeName(sibling);
    if (ref === selfRef) continue;
    let name: string;
    try {
      name = location.resolve(ref);
    } catch (err) {
      // A link out of the allowed folders is not looked into, but the user hears of it.
      if (isVdiskError(err) && err.code === 'E_PATH') refused.push(ref);
      continue;
    }
    let s: Storage | undefined;
    try {
      s = await location.open(name, { readOnly: true });
      scanned++;
      const ids = await peekUuids(s);
      if (!ids || ids.create !== h.uuidLinkage) continue;
      if (ids.modify === h.uuidParentModify) return { name, modifyMatches: true };
      fallback ??= name;
    } catch (err) {
      // Folders, unreadable and damaged files are not the parent; keep looking.
      if (!isVdiskError(err)) throw err;
      if (err.code === 'E_PATH') refused.push(ref);
    } finally {
      await s?.close().catch(() => undefined);
    }
  }
  if (fallback) return { name: fallback, modifyMatches: false };
  const skipped = refused.length === 0 ? '' : `; not looked into, as they lead outside the allowed folders (through a symbolic link): ${refused.join(', ')} (--allow-path to follow)`;
  throw new VdiskError('E_CHAIN', `${self}: parent with uuid ${h.uuidLinkage} (uuidLinkage) not found among ${scanned} files in the image's folder (give it explicitly)${skipped}`);
}

/** Open a validated VDI image on `storage`, following its parent. */
async function openVdi(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<VdiImage> {
  const { header, raw } = await loadHeader(storage);
  const map = await readBlockMap(storage, header);
  const scan = scanBlockMap(header, map, storage.size, storage.name);
  const fatal = scan.pointsNowhere[0];
  if (fatal) throw new VdiskError('E_CORRUPT', fatal.message);
  const readOnly = opts.readOnly || storage.readOnly;
  const dup = scan.duplicates[0];
  if (dup && !readOnly) throw new VdiskError('E_CORRUPT', `${dup.message} (writing could change both; open read-only or run check)`);
  const warnings: string[] = [];
  let parent: DiskImage | undefined;
  let ownsParent = false;
  const differencing = header.type === VdiImageType.DIFF || header.type === VdiImageType.UNDO;
  if (differencing) {
    if (header.uuidLinkage === header.uuidCreate) throw new VdiskError('E_CHAIN', `${storage.name}: uuidLinkage names the image itself (${header.uuidCreate})`);
    if (opts.parent) {
      parent = opts.parent;
      if (parent instanceof VdiImage && parent.uuid !== header.uuidLinkage) {
        warnings.push(`the given parent's uuid ${parent.uuid} is not uuidLinkage ${header.uuidLinkage}`);
      }
    } else if (!opts.noBacking) {
      const found = await findParentByUuid(location, storage.name, header);
      parent = await opts.openParent(found.name);
      ownsParent = true;
      if (!found.modifyMatches) {
        warnings.push(`parent ${found.name} was modified after this image was made (uuidModify is not uuidParentModify ${header.uuidParentModify})`);
      }
    }
    // Opened without its parent (noBacking: info on a broken chain, rebase -u to repair
    // the link): writes that need the parent's data are refused by the image.
  }
  const image = new VdiImage({ storage, header, headerRaw: raw, map, owner: scan.owner, nextSlot: scan.nextSlot, readOnly, parent, ownsParent, warnings, parentMissing: differencing && !parent, location });
  if (!image.readOnly && needsSettling(header, scan, storage.size)) {
    try {
      await image.settle();
    } catch (err) {
      if (ownsParent) await parent?.close().catch(() => undefined);
      throw err;
    }
  }
  return image;
}

/** True when a crash left holes, a tail or a stale count that other writers would trip over. */
function needsSettling(h: VdiHeader, scan: BlockMapScan, fileSize: number): boolean {
  if (h.cBlocksAllocated !== scan.mapped) return true;
  if (scan.mapped !== scan.nextSlot) return true;
  // Bytes past a preallocated image's last block are left alone.
  return h.type !== VdiImageType.FIXED && fileSize > h.offData + scan.nextSlot * blockStride(h);
}

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

/** The VDI format driver. */
export const vdiDriver: FormatDriver = {
  name: 'vdi',
  createOptions: {
    subformat: 'dynamic (default: blocks allocated as written) or fixed (preallocated)',
    static: 'on = subformat=fixed (qemu-img\'s spelling)',
  },

  async probe(storage: Storage): Promise<boolean> {
    if (storage.size < VDI_PREHEADER_SIZE) return false;
    const b = Buffer.alloc(4);
    await storage.read(b, VdiField.u32Signature);
    return b.readUInt32LE(0) === VDI_SIGNATURE;
  },

  open(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage> {
    return openVdi(storage, location, opts);
  },

  async create(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
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
  },

  async check(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkVdi(storage, location, opts);
  },

  differencing: true,

  async resize(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void> {
    await imageOf(image, VdiImage, 'vdi').resize(newSize, opts);
  },

  compact(image: DiskImage, opts: CompactOptions): Promise<CompactResult> {
    return imageOf(image, VdiImage, 'vdi').compact(opts);
  },

  async relink(image: DiskImage, parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    await imageOf(image, VdiImage, 'vdi').setBacking(parent, ref);
  },
};

/**
 * Check a VDI image: map entries past cBlocks or the file's end, data blocks named
 * twice (corrupt); a cBlocksAllocated above the map's count (an interrupted
 * allocation or release: a leak) or below it (a warning: no VDI writer leaves that,
 * and the map is authoritative); data blocks no entry names (leaks). `repair` compacts leaks and
 * fixes the count when nothing is corrupt.
 */
export async function checkVdi(storage: Storage, _location: ImageLocation, opts: DriverCheckOptions & Partial<DriverOpenOptions>): Promise<CheckResult> {
  const { header, raw } = await loadHeader(storage);
  const map = await readBlockMap(storage, header);
  const scan = scanBlockMap(header, map, storage.size, storage.name);
  const problems: CheckProblem[] = [...scan.pointsNowhere, ...scan.duplicates];
  const corrupt = problems.length > 0;
  const repairable: CheckProblem[] = [];
  if (header.cBlocksAllocated !== scan.mapped) {
    repairable.push({
      // Counted but unmapped blocks are leaked; a count behind the map is worse
      // (qemu and VirtualBox would allocate over a block in use) but the map is
      // authoritative and vdisk recounts on open.
      severity: header.cBlocksAllocated > scan.mapped ? 'leak' : 'warning',
      offset: VdiField.cBlocksAllocated,
      message: `${storage.name}: cBlocksAllocated is ${header.cBlocksAllocated} but the block map uses ${scan.mapped} blocks`,
    });
  }
  const stride = blockStride(header);
  let leaked = 0;
  const used = Math.min(scan.slotsInFile, header.cBlocks);
  for (let n = 0; n < used; n++) if (scan.owner[n]! < 0) leaked++;
  const tail = storage.size - (header.offData + used * stride);
  if (leaked > 0 || (tail > 0 && header.type !== VdiImageType.FIXED)) {
    repairable.push({
      severity: 'leak',
      offset: header.offData,
      message: `${storage.name}: ${leaked} data blocks${tail > 0 ? ` and ${tail} bytes at the end` : ''} are not named by any block map entry`,
    });
  }
  if (opts.repair && repairable.length > 0 && !corrupt) {
    const image = new VdiImage({ storage, header, headerRaw: raw, map, owner: scan.owner, nextSlot: scan.nextSlot, readOnly: false, ownsParent: false, warnings: [] });
    await image.settle();
    await storage.flush();
    for (const p of repairable) p.repaired = true;
  }
  problems.push(...repairable);
  return { problems, allocatedClusters: scan.mapped, totalClusters: header.cBlocks };
}

/** Re-exported for tests and tools: the uuid that means "no parent". */
export const VDI_NULL_UUID = NULL_UUID;
