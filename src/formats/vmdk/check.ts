/**
 * Consistency check of a VMDK disk's sparse extents: grain tables inside the file,
 * grain table entries inside the file and clear of metadata and of each other, the
 * redundant directory in step with the primary one, and space no entry uses (leaks).
 */
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import { GTE_ZEROED, SECTOR, encodeEntries, entrySectors } from './layout.js';
import { openVmdk } from './image.js';
import { SparseExtent } from './sparse.js';

interface Interval {
  start: number;
  end: number;
  what: string;
  grain: boolean;
}

/** Check one sparse extent; pushes problems and returns [allocated, total] grains. */
async function checkExtent(ext: SparseExtent, problems: CheckProblem[], repair: DriverCheckOptions['repair']): Promise<[number, number]> {
  const name = ext.storage.name;
  const h = ext.header;
  const fileSectors = Math.ceil(ext.storage.size / SECTOR);
  const gtSectors = entrySectors(h.numGTEsPerGT);
  const intervals: Interval[] = [];
  const meta = (start: number, len: number, what: string): void => {
    if (len > 0) intervals.push({ start, end: start + len, what, grain: false });
  };
  meta(0, 1, 'header');
  meta(h.descriptorOffset, h.descriptorSize, 'descriptor');
  meta(h.gdOffset, entrySectors(ext.gd.length), 'grain directory');
  if (ext.rgd) meta(h.rgdOffset, entrySectors(ext.rgd.length), 'redundant grain directory');
  let allocated = 0;
  for (let t = 0; t < ext.gd.length; t++) {
    const gdSector = ext.gd[t]!;
    const rgdSector = ext.rgd?.[t] ?? 0;
    if (ext.rgd && gdSector === 0 && rgdSector !== 0) {
      problems.push({ severity: 'corrupt', message: `${name}: grain directory entry ${t} is empty but the redundant entry says ${rgdSector}` });
    } else if (ext.rgd && gdSector !== 0 && rgdSector === 0) {
      // The primary entry is written first: an interrupted table allocation leaves the redundant one behind.
      problems.push({ severity: 'warning', message: `${name}: redundant grain directory entry ${t} lags the primary one (a write was interrupted)` });
    }
    if (gdSector === 0) continue;
    if ((gdSector + gtSectors) * SECTOR > ext.storage.size) {
      problems.push({ severity: 'corrupt', message: `${name}: grain table ${t} at sector ${gdSector} lies past the end of the file`, offset: gdSector * SECTOR });
      continue;
    }
    meta(gdSector, gtSectors, `grain table ${t}`);
    const gt = await ext.readTable(gdSector, `grain directory entry ${t}`);
    let rgt: Uint32Array | undefined;
    if (rgdSector !== 0) {
      if ((rgdSector + gtSectors) * SECTOR > ext.storage.size) {
        problems.push({ severity: 'corrupt', message: `${name}: redundant grain table ${t} at sector ${rgdSector} lies past the end of the file` });
      } else {
        meta(rgdSector, gtSectors, `redundant grain table ${t}`);
        rgt = await ext.readTable(rgdSector, `redundant grain directory entry ${t}`);
      }
    }
    let stale = false;
    for (let i = 0; i < gt.length; i++) {
      const g = t * h.numGTEsPerGT + i;
      const gte = gt[i]!;
      if (rgt && rgt[i] !== gte) {
        if (rgt[i] === 0) stale = true;
        else problems.push({ severity: 'corrupt', message: `${name}: grain table entry ${g} is ${gte} but the redundant copy says ${rgt[i]}` });
      }
      if (gte <= GTE_ZEROED) continue;
      if (g * h.grainSize >= h.capacity) {
        problems.push({ severity: 'corrupt', message: `${name}: grain table entry ${g} maps a grain past the capacity` });
        continue;
      }
      allocated++;
      if (gte < h.overHead) {
        problems.push({ severity: 'corrupt', message: `${name}: grain table entry ${g} (sector ${gte}) points into the metadata (overHead ${h.overHead})`, offset: gte * SECTOR });
        continue;
      }
      if (gte >= fileSectors || (!ext.compressed && gte + h.grainSize > fileSectors)) {
        problems.push({ severity: 'corrupt', message: `${name}: grain table entry ${g} (sector ${gte}) points outside the file`, offset: gte * SECTOR });
        continue;
      }
      if (!ext.compressed) intervals.push({ start: gte, end: gte + h.grainSize, what: `grain ${g}`, grain: true });
    }
    if (stale) {
      const fixed = repair === 'all' && rgt !== undefined;
      if (fixed) await ext.storage.write(encodeEntries(gt), rgdSector * SECTOR);
      problems.push({ severity: 'warning', message: `${name}: redundant grain table ${t} lags the primary one (a write was interrupted)`, repaired: fixed });
    }
  }
  if (!ext.compressed) {
    intervals.sort((a, b) => a.start - b.start);
    let prev: Interval | undefined;
    let leaked = 0;
    let cursor = h.overHead;
    for (const iv of intervals) {
      if (prev && iv.start < prev.end && (iv.grain || prev.grain)) {
        problems.push({ severity: 'corrupt', message: `${name}: ${iv.what} (sector ${iv.start}) overlaps ${prev.what}`, offset: iv.start * SECTOR });
      }
      if (iv.start > cursor) leaked += iv.start - cursor;
      cursor = Math.max(cursor, iv.end);
      if (!prev || iv.end > prev.end) prev = iv;
    }
    const tail = Math.max(0, fileSectors - cursor);
    leaked += tail;
    if (leaked > 0) {
      // Space at the end of the file can be given back; holes in the middle stay (nothing is moved).
      const fixed = repair !== undefined && tail > 0 && tail === leaked;
      if (fixed) await ext.storage.truncate(cursor * SECTOR);
      problems.push({ severity: 'leak', message: `${name}: ${leaked * SECTOR} bytes after the metadata are used by no grain table entry`, repaired: fixed });
    }
  }
  return [allocated, Math.ceil(h.capacity / h.grainSize)];
}

/** Check a VMDK disk's sparse extents (the parent is not checked). */
export async function checkVmdk(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
  const readOnly = opts.repair === undefined ? true : opts.readOnly;
  if (opts.repair && readOnly) throw new VdiskError('E_READONLY', `${storage.name}: repair needs the image open for writing`);
  const image = await openVmdk(storage, location, { ...opts, readOnly, noBacking: true });
  const problems: CheckProblem[] = [];
  let allocated = 0;
  let total = 0;
  try {
    for (const ext of image.extentList) {
      if (!(ext instanceof SparseExtent)) continue;
      const [a, t] = await checkExtent(ext, problems, opts.repair);
      allocated += a;
      total += t;
    }
  } finally {
    await image.close();
  }
  return { problems, allocatedClusters: allocated, totalClusters: total };
}
