/**
 * In-place maintenance of a hosted sparse extent: growing its capacity (grain
 * directory growth, relocating the directories when they outgrow their sectors),
 * shrinking it, and compacting it (releasing zero grains, moving the last grains
 * and tables into holes, truncating).
 *
 * Crash safety: every step leaves a state `check` accepts (at worst a leak, or a
 * redundant table lagging the primary one, as an interrupted write leaves):
 * - new space (tables, directories, moved grains) is written and flushed before
 *   anything points at it;
 * - the header (one sector: capacity, gdOffset, rgdOffset) is the single switch of
 *   a grow;
 * - a grain table entry that changes from one grain to another goes through the
 *   redundant copy being cleared first (primary X / redundant 0 is "lagging"), then
 *   the primary, then the redundant copy set again, so the two never disagree with
 *   both non-zero.
 */
import { isZero, zeroBuffer } from '../../device/zero.js';
import { VdiskError } from '../../errors.js';
import {
  FLAG_ZEROED_GRAIN_GTE,
  GTE_UNALLOCATED,
  GTE_ZEROED,
  SECTOR,
  encodeEntries,
  encodeSparseHeader,
  entrySectors,
} from './layout.js';
import type { SparseExtent } from './sparse.js';

/** Largest sector number a 32-bit grain directory or table entry can hold. */
const MAX_ENTRY_SECTOR = 0xffffffff;
/** Largest grain directory vdisk writes (as sparse.ts reads). */
const MAX_GD_BYTES = 64 * 1024 * 1024;

/** The grain tables of an extent, loaded: primary and (when kept) redundant, by directory index. */
interface Tables {
  gt: Map<number, Uint32Array>;
  rgt: Map<number, Uint32Array>;
}

async function loadTables(ext: SparseExtent): Promise<Tables> {
  const gt = new Map<number, Uint32Array>();
  const rgt = new Map<number, Uint32Array>();
  for (let t = 0; t < ext.gd.length; t++) {
    const s = ext.gd[t]!;
    if (s !== 0) gt.set(t, await ext.readTable(s, `grain directory entry ${t}`));
    const r = ext.rgd?.[t] ?? 0;
    if (r !== 0) rgt.set(t, await ext.readTable(r, `redundant grain directory entry ${t}`));
  }
  return { gt, rgt };
}

/**
 * Change entries of grain table `t` to `next` (a full table), keeping the redundant
 * copy from ever disagreeing with the primary while both are non-zero.
 */
async function updateTable(ext: SparseExtent, tables: Tables, t: number, next: Uint32Array): Promise<void> {
  const s = ext.storage;
  const gt = tables.gt.get(t)!;
  const rgt = tables.rgt.get(t);
  const rSector = ext.rgd?.[t] ?? 0;
  if (rgt && rSector !== 0) {
    // Step 1: clear the redundant entries that change (the table "lags", which check accepts).
    const cleared = Uint32Array.from(rgt);
    let changed = false;
    for (let i = 0; i < next.length; i++) {
      if (next[i] !== gt[i] || rgt[i] !== gt[i]) {
        if (cleared[i] !== 0) changed = true;
        cleared[i] = 0;
      }
    }
    if (changed) {
      await s.write(encodeEntries(cleared, 4), rSector * SECTOR);
      rgt.set(cleared);
    }
  }
  // Step 2: the primary table.
  await s.write(encodeEntries(next, 4), ext.gd[t]! * SECTOR);
  gt.set(next);
  // Step 3: the redundant copy catches up.
  if (rgt && rSector !== 0) {
    let differs = false;
    for (let i = 0; i < next.length; i++) if (rgt[i] !== next[i]) differs = true;
    if (differs) {
      await s.write(encodeEntries(next, 4), rSector * SECTOR);
      rgt.set(next);
    }
  }
}

/** Write a header with changed capacity/directory offsets: the one-sector switch. */
async function writeHeader(ext: SparseExtent, changes: { capacity?: number; gdOffset?: number; rgdOffset?: number }): Promise<void> {
  const h = { ...ext.header, ...changes };
  await ext.storage.write(encodeSparseHeader(h), 0);
}

function checkWritable(ext: SparseExtent): void {
  if (ext.compressed) throw new VdiskError('E_UNSUPPORTED', `${ext.storage.name}: compressed (stream-optimized) extents are rewritten, not changed in place`);
}

/**
 * Make every grain at or after `fromSectors` (extent sectors) read as zeros: entries
 * of grains wholly past it are cleared, the tail of a grain it cuts is zeroed.
 */
async function clearFrom(ext: SparseExtent, tables: Tables, fromSectors: number): Promise<void> {
  const h = ext.header;
  const n = h.numGTEsPerGT;
  const G = h.grainSize;
  const firstWhole = Math.ceil(fromSectors / G);
  const cut = Math.floor(fromSectors / G);
  if (cut < firstWhole) {
    const gte = (tables.gt.get(Math.floor(cut / n)) ?? [])[cut % n] ?? 0;
    if (gte > GTE_ZEROED) {
      const inGrain = fromSectors - cut * G;
      const fileEnd = Math.ceil(ext.storage.size / SECTOR);
      const len = Math.min(G - inGrain, fileEnd - (gte + inGrain));
      if (len > 0) await ext.storage.write(zeroBuffer(len * SECTOR), (gte + inGrain) * SECTOR);
    }
  }
  for (const [t, gt] of tables.gt) {
    if ((t + 1) * n <= firstWhole) continue;
    const next = Uint32Array.from(gt);
    let changed = false;
    for (let i = 0; i < n; i++) {
      if (t * n + i >= firstWhole && next[i] !== GTE_UNALLOCATED) {
        next[i] = GTE_UNALLOCATED;
        changed = true;
      }
    }
    const rgt = tables.rgt.get(t);
    if (!changed && rgt) for (let i = 0; i < n; i++) if (t * n + i >= firstWhole && rgt[i] !== 0) changed = true;
    if (changed) await updateTable(ext, tables, t, next);
  }
}

/**
 * Grow the extent to `capacity` sectors. New grain tables (and redundant ones) are
 * preallocated, as VMware and qemu expect (qemu cannot allocate a table on write); the
 * directories grow in place when their sectors have room, or are rewritten at the end
 * of the file. The header is written last; `oldLength` (bytes the descriptor used) is
 * where stale grains from an interrupted shrink are cleared.
 */
export async function growSparse(ext: SparseExtent, capacity: number, oldLength: number): Promise<void> {
  checkWritable(ext);
  const s = ext.storage;
  const h = ext.header;
  const n = h.numGTEsPerGT;
  const tables = await loadTables(ext);
  await clearFrom(ext, tables, oldLength / SECTOR);
  const oldEntries = ext.gd.length;
  const entries = Math.ceil(capacity / (h.grainSize * n));
  if (entries * 4 > MAX_GD_BYTES) throw new VdiskError('E_UNSUPPORTED', `${s.name}: ${capacity} sectors need a grain directory of ${entries} entries, over vdisk's limit`);
  if (entries <= oldEntries) {
    await s.flush();
    await writeHeader(ext, { capacity });
    await s.flush();
    return;
  }
  const added = entries - oldEntries;
  const gtSec = entrySectors(n);
  const redundant = ext.rgd !== undefined;
  const gdSec = entrySectors(entries);
  const inPlace = gdSec <= entrySectors(oldEntries);
  let end = Math.ceil(s.size / SECTOR);
  const needed = added * gtSec * (redundant ? 2 : 1) + (inPlace ? 0 : gdSec * (redundant ? 2 : 1));
  if (end + needed > MAX_ENTRY_SECTOR) throw new VdiskError('E_UNSUPPORTED', `${s.name}: growing needs metadata past sector ${MAX_ENTRY_SECTOR}, which grain directory entries cannot address`);
  // New tables: redundant ones, then primary ones, zero-filled, at the end of the file.
  const rgtStart = end;
  if (redundant) end += added * gtSec;
  const gtStart = end;
  end += added * gtSec;
  const gd = new Uint32Array(entries);
  gd.set(ext.gd);
  const rgd = redundant ? new Uint32Array(entries) : undefined;
  if (rgd) rgd.set(ext.rgd!);
  for (let k = 0; k < added; k++) {
    gd[oldEntries + k] = gtStart + k * gtSec;
    if (rgd) rgd[oldEntries + k] = rgtStart + k * gtSec;
  }
  await s.truncate(end * SECTOR);
  if (inPlace) {
    // The directories' sectors have room: fill in the new entries (past the old capacity, unread until the header says so).
    if (rgd) await s.write(encodeEntries(rgd.subarray(oldEntries), 4), h.rgdOffset * SECTOR + oldEntries * 4);
    await s.write(encodeEntries(gd.subarray(oldEntries), 4), h.gdOffset * SECTOR + oldEntries * 4);
    await s.flush();
    await writeHeader(ext, { capacity });
  } else {
    // Rewrite both directories after the new tables, then switch the header to them.
    const rgdOffset = redundant ? end : 0;
    if (rgd) {
      await s.write(encodeEntries(rgd), end * SECTOR);
      end += gdSec;
    }
    const gdOffset = end;
    await s.write(encodeEntries(gd), end * SECTOR);
    end += gdSec;
    await s.flush();
    await writeHeader(ext, { capacity, gdOffset, ...(redundant ? { rgdOffset } : {}) });
  }
  await s.flush();
}

/**
 * Shrink the extent to `capacity` sectors: grains past it are released (their
 * entries cleared, the tail of a cut grain zeroed), then the header changes, then the
 * file is packed and truncated. The caller has already shortened the descriptor.
 */
export async function shrinkSparse(ext: SparseExtent, capacity: number): Promise<void> {
  checkWritable(ext);
  const tables = await loadTables(ext);
  await clearFrom(ext, tables, capacity);
  await ext.storage.flush();
  await writeHeader(ext, { capacity });
  await ext.storage.flush();
}

/** One thing that occupies sectors after the overhead: a grain, a grain table, or fixed metadata. */
interface Item {
  start: number;
  size: number;
  kind: 'grain' | 'gt' | 'rgt' | 'fixed';
  /** Directory index (tables) or grain number (grains). */
  index: number;
}

/** Options for {@link compactSparse}. */
export interface CompactSparseOptions {
  /** True when grain `g` of this extent may become unallocated (nothing shows through from a parent there). */
  releasable: (g: number) => boolean;
  /** Release zero grains (false: only pack and truncate). */
  releaseZeros: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** E_CORRUPT naming what is wrong. */
function corrupt(ext: SparseExtent, what: string): VdiskError {
  return new VdiskError('E_CORRUPT', `${ext.storage.name}: ${what}; run "vdisk check" before compacting`);
}

/**
 * Compact the extent in place: release grains that hold only zeros (unallocated when
 * `releasable`, else "zeroed" when the header allows such entries), then move the
 * last grains and tables into holes and truncate. Returns the number of grains released.
 */
export async function compactSparse(ext: SparseExtent, opts: CompactSparseOptions): Promise<number> {
  checkWritable(ext);
  const s = ext.storage;
  const h = ext.header;
  const n = h.numGTEsPerGT;
  const G = h.grainSize;
  const grainBytes = G * SECTOR;
  const tables = await loadTables(ext);
  const zeroedOk = (h.flags & FLAG_ZEROED_GRAIN_GTE) !== 0;
  validate(ext, tables);
  let released = 0;
  if (opts.releaseZeros) {
    let total = 0;
    for (const gt of tables.gt.values()) for (const e of gt) if (e > GTE_ZEROED) total++;
    let done = 0;
    const buf = Buffer.alloc(grainBytes);
    for (const [t, gt] of [...tables.gt].sort((x, y) => x[0] - y[0])) {
      const next = Uint32Array.from(gt);
      let changed = false;
      for (let i = 0; i < n; i++) {
        const e = gt[i]!;
        if (e <= GTE_ZEROED) continue;
        const g = t * n + i;
        await s.read(buf, e * SECTOR);
        done++;
        opts.onProgress?.(done, total);
        if (!isZero(buf)) continue;
        if (opts.releasable(g)) next[i] = GTE_UNALLOCATED;
        else if (zeroedOk) next[i] = GTE_ZEROED;
        else continue;
        changed = true;
        released++;
      }
      if (changed) await updateTable(ext, tables, t, next);
    }
    // Released grains become holes only once their entries are durable.
    await s.flush();
  }
  await pack(ext, tables);
  return released;
}

/** Refuse to move anything in an extent `check` would call corrupt: both table copies must agree and grains must lie in the file. */
function validate(ext: SparseExtent, tables: Tables): void {
  const h = ext.header;
  const n = h.numGTEsPerGT;
  const fileSectors = Math.ceil(ext.storage.size / SECTOR);
  for (const t of tables.rgt.keys()) if (!tables.gt.has(t)) throw corrupt(ext, `grain directory entry ${t} is empty but the redundant one is not`);
  for (const [t, gt] of tables.gt) {
    const rgt = tables.rgt.get(t);
    for (let i = 0; i < n; i++) {
      const a = gt[i]!;
      const b = rgt?.[i] ?? 0;
      if (b !== 0 && a !== b) throw corrupt(ext, `grain table entry ${t * n + i} is ${a} but the redundant copy says ${b}`);
      if (a > GTE_ZEROED && (a < h.overHead || a + h.grainSize > fileSectors)) throw corrupt(ext, `grain table entry ${t * n + i} (sector ${a}) lies outside the grain area`);
    }
  }
}

/** Move the last grains and tables into holes lower in the file, then truncate after the last used sector. */
async function pack(ext: SparseExtent, tables: Tables): Promise<void> {
  const s = ext.storage;
  const h = ext.header;
  const n = h.numGTEsPerGT;
  const G = h.grainSize;
  const gtSec = entrySectors(n);
  validate(ext, tables);
  const items: Item[] = [];
  const add = (start: number, size: number, kind: Item['kind'], index: number): void => {
    const end = start + size;
    if (end <= h.overHead) return;
    if (start < h.overHead) items.push({ start: h.overHead, size: end - h.overHead, kind: 'fixed', index });
    else items.push({ start, size, kind, index });
  };
  add(h.gdOffset, entrySectors(ext.gd.length), 'fixed', -1);
  if (ext.rgd) add(h.rgdOffset, entrySectors(ext.rgd.length), 'fixed', -1);
  if (h.descriptorSize > 0) add(h.descriptorOffset, h.descriptorSize, 'fixed', -1);
  for (let t = 0; t < ext.gd.length; t++) {
    if (ext.gd[t]) add(ext.gd[t]!, gtSec, 'gt', t);
    if (ext.rgd?.[t]) add(ext.rgd[t]!, gtSec, 'rgt', t);
  }
  for (const [t, gt] of tables.gt) {
    for (let i = 0; i < n; i++) if (gt[i]! > GTE_ZEROED) add(gt[i]!, G, 'grain', t * n + i);
  }
  items.sort((a, b) => a.start - b.start);
  for (let k = 1; k < items.length; k++) {
    if (items[k]!.start < items[k - 1]!.start + items[k - 1]!.size) throw corrupt(ext, `sector ${items[k]!.start} is used twice`);
  }
  // Holes between items, in file order; they only ever shrink from the front.
  const holes: Array<{ start: number; size: number }> = [];
  let cursor = h.overHead;
  for (const it of items) {
    if (it.start > cursor) holes.push({ start: cursor, size: it.start - cursor });
    cursor = Math.max(cursor, it.start + it.size);
  }
  // First hole that may still fit each item size (grains, tables): holes never grow, so these only advance.
  const firstFit = new Map<number, number>();
  const fit = (size: number, below: number): { start: number; size: number } | undefined => {
    let i = firstFit.get(size) ?? 0;
    while (i < holes.length && holes[i]!.size < size) i++;
    firstFit.set(size, i);
    const hole = holes[i];
    return hole && hole.start + size <= below ? hole : undefined;
  };
  // Items are sorted and disjoint, so the last one not yet moved ends the file unless a moved one lies past it.
  let k = items.length - 1;
  let movedEnd = 0;
  while (k >= 0) {
    const last = items[k]!;
    if (last.kind === 'fixed' || movedEnd >= last.start + last.size) break;
    const hole = fit(last.size, last.start);
    if (!hole) break;
    const to = hole.start;
    await moveItem(ext, tables, last, to);
    hole.start += last.size;
    hole.size -= last.size;
    movedEnd = Math.max(movedEnd, to + last.size);
    k--;
  }
  const end = Math.max(h.overHead, movedEnd, k >= 0 ? items[k]!.start + items[k]!.size : 0);
  if (end * SECTOR < s.size) {
    await s.flush();
    await s.truncate(end * SECTOR);
    await s.flush();
  }
}

/** Copy one grain or table to sector `to`, make it durable, then point its entry there. */
async function moveItem(ext: SparseExtent, tables: Tables, it: Item, to: number): Promise<void> {
  const s = ext.storage;
  const n = ext.header.numGTEsPerGT;
  const len = Math.min(it.size * SECTOR, s.size - it.start * SECTOR);
  const buf = Buffer.alloc(it.size * SECTOR);
  await s.read(buf.subarray(0, len), it.start * SECTOR);
  await s.write(buf, to * SECTOR);
  await s.flush();
  if (it.kind === 'grain') {
    const t = Math.floor(it.index / n);
    const next = Uint32Array.from(tables.gt.get(t)!);
    next[it.index % n] = to;
    await updateTable(ext, tables, t, next);
  } else {
    const dir = it.kind === 'gt' ? ext.gd : ext.rgd!;
    const dirOffset = it.kind === 'gt' ? ext.header.gdOffset : ext.header.rgdOffset;
    const entry = Buffer.alloc(4);
    entry.writeUInt32LE(to, 0);
    await s.write(entry, dirOffset * SECTOR + it.index * 4);
    dir[it.index] = to;
  }
}

/** Pack and truncate without releasing anything (after a shrink). */
export async function packSparse(ext: SparseExtent): Promise<void> {
  checkWritable(ext);
  await pack(ext, await loadTables(ext));
}

/**
 * Release the whole grains of `[offset, offset+length)` (extent bytes): their entries
 * become unallocated (redundant copy cleared first), so reads fall through to the parent
 * or read zeros. The grains' space is left for compact to take back.
 */
export async function releaseGrains(ext: SparseExtent, offset: number, length: number): Promise<void> {
  checkWritable(ext);
  const G = ext.grainBytes;
  const n = ext.header.numGTEsPerGT;
  const first = Math.ceil(offset / G);
  // A partial last grain of the extent counts as whole when the range reaches the extent's end.
  const end = offset + length >= ext.length ? Math.ceil(ext.length / G) : Math.floor((offset + length) / G);
  for (let t = Math.floor(first / n); t * n < end; t++) {
    const gt = await ext.table(t);
    if (!gt) continue;
    const next = Uint32Array.from(gt);
    let changed = false;
    for (let g = Math.max(first, t * n); g < Math.min(end, (t + 1) * n); g++) {
      if (next[g % n] !== GTE_UNALLOCATED) {
        next[g % n] = GTE_UNALLOCATED;
        changed = true;
      }
    }
    if (!changed) continue;
    const r = ext.rgd?.[t] ?? 0;
    const tables: Tables = { gt: new Map([[t, gt]]), rgt: new Map() };
    if (r !== 0) tables.rgt.set(t, await ext.readTable(r, `redundant grain directory entry ${t}`));
    await updateTable(ext, tables, t, next);
  }
}
