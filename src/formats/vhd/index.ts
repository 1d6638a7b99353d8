/**
 * VHD (Virtual PC / Hyper-V / Azure, qemu's "vpc"): the driver table. Layout in
 * layout.ts, validation in parse.ts, the device in image.ts, creation and check here.
 */
import { findParentRef } from '../parent.js';
import { randomBytes } from 'node:crypto';
import type { CompactOptions, CompactResult, DiskImage, ResizeImageOptions } from '../../device/block-device.js';
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import { boolOption } from '../../util/options.js';
import { parseSize } from '../../util/size.js';
import { imageOf, type DriverCreateOptions, type DriverOpenOptions, type FormatDriver } from '../driver.js';
import { VhdImage, type VhdParentInfo } from './image.js';
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
  uuidString,
  vhdTimestamp,
  type ParentLocator,
  type VhdFooter,
} from './layout.js';
import { absoluteRef, parentLinkData, secureMetadata } from './maintain.js';
import { findLeaks, metadataAtRisk, probeVhd, readParentRefs, readVhdMeta, validateBat, type VhdMeta } from './parse.js';

export { VhdImage } from './image.js';

/** Smallest and largest block size `create` accepts (Hyper-V uses 512 KiB and 2 MiB). */
const MIN_CREATE_BLOCK = 4096;
const MAX_CREATE_BLOCK = 256 * 1024 * 1024;
/** Azure's rule: a fixed VHD whose virtual size is a whole number of MiB. */
const AZURE_ALIGNMENT = 1024 * 1024;

/** Find and open the parent of a differencing disk; E_PATH/E_CHAIN when it cannot. */
async function openParent(storage: Storage, location: ImageLocation, meta: VhdMeta, opts: DriverOpenOptions): Promise<{ parent?: DiskImage; info: VhdParentInfo; warnings: string[] }> {
  const header = meta.header!;
  const { refs, skipped } = await readParentRefs(storage, header, meta.overwrittenLocators);
  if (header.parentUnicodeName) refs.push({ platform: 'parent_unicode_name', ref: header.parentUnicodeName });
  const warnings = [...skipped];
  const { found, pathError } = await findParentRef(location, refs);
  const info: VhdParentInfo = found ? { ref: found.ref, resolved: found.resolved, platform: found.platform } : refs[0] ? { ref: refs[0].ref, platform: refs[0].platform } : {};
  if (opts.noBacking) return { info, warnings };
  if (!found) {
    if (pathError) throw pathError;
    const tried = refs.map((r) => `${r.platform} "${r.ref}"`).join(', ') || 'no parent locators';
    throw new VdiskError('E_CHAIN', `${storage.name}: parent of this differencing VHD not found (tried ${tried})`);
  }
  const parent = await opts.openParent(found.resolved);
  if (!(parent instanceof VhdImage)) {
    await parent.close().catch(() => undefined);
    throw new VdiskError('E_CHAIN', `${storage.name}: parent ${found.resolved} is a ${parent.format} image, not a VHD`);
  }
  if (!parent.uniqueId.equals(header.parentUniqueId)) {
    await parent.close().catch(() => undefined);
    throw new VdiskError(
      'E_CHAIN',
      `${storage.name}: parent ${found.resolved} has unique id ${uuidString(parent.uniqueId)}, but the dynamic header's parent_unique_id is ${uuidString(header.parentUniqueId)}`,
    );
  }
  return { parent, info, warnings };
}

/** Open a VHD whose metadata was read and whose BAT was validated. */
async function openVhd(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<VhdImage> {
  const meta = await readVhdMeta(storage);
  const { problems, dataEnd } = validateBat(meta, storage.name, 1);
  if (problems[0]) throw new VdiskError('E_CORRUPT', problems[0].message);
  const warnings: string[] = [];
  if (meta.footerSource === 'copy-at-0') warnings.push(`trailing footer unusable (${meta.trailingProblem}); using the footer copy at offset 0`);
  else if (meta.copyProblem) warnings.push(`footer copy at offset 0 is damaged (${meta.copyProblem})`);
  else if (meta.copyDiffers) warnings.push('footer copy at offset 0 differs from the trailing footer; using the trailing one');
  let parent: DiskImage | undefined;
  let parentInfo: VhdParentInfo | undefined;
  if (meta.footer.diskType === DISK_TYPE_DIFFERENCING) {
    if (opts.parent) {
      parent = opts.parent;
      parentInfo = { ref: parent.filename, resolved: parent.filename };
    } else {
      const r = await openParent(storage, location, meta, opts);
      parent = r.parent;
      parentInfo = r.info;
      warnings.push(...r.warnings);
    }
  }
  const o: ConstructorParameters<typeof VhdImage>[2] = { readOnly: opts.readOnly, dataEnd, warnings, location };
  if (parent) o.parent = parent;
  if (parentInfo) o.parentInfo = parentInfo;
  return new VhdImage(storage, meta, o);
}

/** Create a VHD at `location.name`. */
async function createVhd(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
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

/** Check a VHD's consistency: footers and checksums, BAT entries, leaks, the parent's unique id. */
async function checkVhd(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
  const problems: CheckProblem[] = [];
  let meta: VhdMeta;
  try {
    meta = await readVhdMeta(storage);
  } catch (err) {
    if (!isVdiskError(err)) throw err;
    return { problems: [{ severity: 'corrupt', message: err.message }] };
  }
  const name = storage.name;
  const writable = !storage.readOnly && !opts.readOnly;
  const { problems: batProblems, dataEnd, allocated } = validateBat(meta, name);
  for (const p of batProblems) problems.push({ severity: 'corrupt', message: p.message, offset: p.offset });

  const footerBytes = meta.footerBytes;
  if (meta.footerSource === 'copy-at-0') {
    const p: CheckProblem = { severity: 'corrupt', message: `${name}: trailing footer: ${meta.trailingProblem} (the copy at offset 0 is intact)`, offset: meta.fileSize - FOOTER_SIZE };
    if (opts.repair === 'all' && writable && batProblems.length === 0) {
      await storage.write(footerBytes, dataEnd);
      await storage.truncate(dataEnd + FOOTER_SIZE);
      p.repaired = true;
    }
    problems.push(p);
  }
  if (meta.copyProblem || meta.copyDiffers) {
    const p: CheckProblem = meta.copyProblem
      ? { severity: 'corrupt', message: `${name}: footer copy at offset 0: ${meta.copyProblem}`, offset: 0 }
      : { severity: 'warning', message: `${name}: footer copy at offset 0 differs from the trailing footer (other readers may use it)`, offset: 0 };
    if (opts.repair === 'all' && writable) {
      await storage.write(footerBytes, 0);
      p.repaired = true;
    }
    problems.push(p);
  }

  for (const o of meta.overwrittenLocators) problems.push({ severity: 'corrupt', message: o.message, offset: meta.header!.parentLocators[o.index]!.platformDataOffset });

  if (meta.bat && batProblems.length === 0) {
    const leaks = findLeaks(meta);
    let total = 0;
    for (const l of leaks) total += l.end - l.start;
    const last = leaks[leaks.length - 1];
    const tailLeak = last !== undefined && meta.footerSource === 'trailing' && last.end === meta.fileSize - FOOTER_SIZE ? last : undefined;
    for (const l of leaks.slice(0, 100)) {
      const p: CheckProblem = { severity: 'leak', message: `${name}: ${l.end - l.start} bytes at ${l.start} belong to no block (leaked)`, offset: l.start };
      if (l === tailLeak && opts.repair && writable) {
        // The footer moves back over the leak first; only then is the file cut.
        await storage.write(footerBytes, l.start);
        await storage.truncate(l.start + FOOTER_SIZE);
        p.repaired = true;
      }
      problems.push(p);
    }
    if (leaks.length > 100) problems.push({ severity: 'leak', message: `${name}: ${leaks.length - 100} more leaked stretches (${total} bytes leaked in all)` });
  }

  if (meta.footer.diskType === DISK_TYPE_DIFFERENCING && !opts.noBacking) {
    try {
      const r = await openParent(storage, location, meta, { ...opts, noBacking: false });
      await r.parent?.close();
    } catch (err) {
      if (!isVdiskError(err)) throw err;
      problems.push({ severity: 'corrupt', message: err.message });
    }
  }
  const risk = batProblems.length === 0 ? metadataAtRisk(meta) : { header: false, locators: [] };
  if (risk.header || risk.locators.length > 0) {
    const what = [...(risk.header ? [`the dynamic header (offset ${meta.footer.dataOffset})`] : []), ...risk.locators.map((i) => `parent locator ${i} (offset ${meta.header!.parentLocators[i]!.platformDataOffset})`)].join(', ');
    const p: CheckProblem = { severity: 'warning', message: `${name}: ${what} lies after the BAT and every block, where qemu appends its next new block over it (check -r all moves it below the BAT)` };
    if (opts.repair === 'all' && writable && meta.footerSource === 'trailing') {
      // Earlier repairs may have changed the file: read it again.
      const fresh = await readVhdMeta(storage);
      await secureMetadata(storage, fresh, metadataAtRisk(fresh).locators);
      p.repaired = true;
    }
    problems.push(p);
  }
  if (opts.repair && writable) await storage.flush();
  const result: CheckResult = { problems };
  if (meta.bat) {
    result.allocatedClusters = allocated;
    result.totalClusters = meta.bat.length;
  }
  return result;
}

/** The VHD format driver (`vhd`, alias `vpc` as qemu names it). */
export const vhdDriver: FormatDriver = {
  name: 'vhd',
  aliases: ['vpc'],
  createOptions: {
    subformat: 'dynamic (default) or fixed',
    block_size: 'block size of a dynamic or differencing disk (default 2M; power of two, 4K..256M)',
    azure: 'on: a fixed disk whose size is a whole MiB, as Azure demands (refused otherwise)',
  },
  probe: probeVhd,
  open: openVhd,
  create: createVhd,
  check: checkVhd,
  differencing: true,
  async resize(image: DiskImage, newSize: number, opts: ResizeImageOptions): Promise<void> {
    await imageOf(image, VhdImage, 'vhd').resize(newSize, opts);
  },
  compact(image: DiskImage, opts: CompactOptions): Promise<CompactResult> {
    return imageOf(image, VhdImage, 'vhd').compact(opts);
  },
  async relink(image: DiskImage, parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    await imageOf(image, VhdImage, 'vhd').setBacking(parent, ref);
  },
};
