/**
 * qcow2 check and repair, as `qemu-img check [-r leaks|all]` does them: every
 * reference to each host cluster is counted and compared with the stored refcounts;
 * `-r leaks` lowers leaked refcounts, `-r all` also rebuilds the refcount structure
 * (new table and blocks at the end of the file, named by one header write) and
 * rewrites OFLAG_COPIED where it disagrees with the refcount. After a repair the
 * image is checked again: what the second pass still finds is reported unrepaired.
 */
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import { QCOW2_MAX_L1_BYTES, QCOW2_MAX_REFTABLE_BYTES, Extension, Incompatible, Qcow2Field, loadHeader, readSnapshots } from './layout.js';
import { Refcounts } from './refcount.js';
import { QCOW_OFLAG_COPIED_HI, QCOW_OFLAG_ZERO, decodeL2, entryHalves, entryOffset, setRefcount, writeEntry } from './tables.js';

/** Most host clusters check counts references for (a Uint32Array of this many entries is 512 MiB). */
const CHECK_MAX_CLUSTERS = 2 ** 27;

/** What one pass of the check found, with what a repair needs. */
interface Scan {
  result: CheckResult;
  refs: Uint32Array;
  /** Clusters the refcount table and blocks were counted in (once per table or block). */
  refcountClusters: number[];
  leaked: number[];
  /** Some stored refcount is below its references or cannot be read. */
  refcountsWrong: boolean;
  /** A cluster in use has refcount 0 (or no readable refcount block): only a rebuild fixes that. */
  rebuildNeeded: boolean;
  /**
   * Active L1/L2 entries whose OFLAG_COPIED disagrees with the references (file
   * offset of the entry, whether the flag should be set, whether the stored refcount
   * is at least the references, so that a leak repair makes it right).
   */
  badCopied: Array<{ at: number; set: boolean; refcountOk: boolean }>;
  /** The dirty bit is set (lazy refcounts not written back). */
  dirty: boolean;
}

/**
 * Count every reference to each host cluster (header, refcount table and blocks, L1
 * and L2 tables of the active image and every snapshot, data and compressed
 * clusters, the snapshot table) and compare with the stored refcounts: a refcount
 * below its references is corruption (a writer would reuse a cluster in use), above
 * it a leak; references past the end of the file and COPIED flags that disagree
 * with the refcount are corruption.
 */
async function scan(storage: Storage): Promise<Scan> {
  const h = await loadHeader(storage);
  const cs = 2 ** h.clusterBits;
  const clusters = Math.ceil(storage.size / cs);
  if (clusters > CHECK_MAX_CLUSTERS) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: ${clusters} host clusters are more than check counts (${CHECK_MAX_CLUSTERS})`);
  const refs = new Uint32Array(clusters);
  const problems: CheckProblem[] = [];
  const corrupt = (message: string, offset?: number): void => void problems.push({ severity: 'corrupt', message: `${storage.name}: ${message}`, offset });
  const extended = (h.incompatibleFeatures & BigInt(Incompatible.EXTENDED_L2)) !== 0n;
  const stride = extended ? 16 : 8;
  /** Count a reference to the host bytes [offset, offset + length); false when they lie past the file. */
  const inc = (offset: number, length: number, what: string): boolean => {
    const last = Math.floor((offset + length - 1) / cs);
    if (last >= clusters) {
      corrupt(`${what} at ${offset} lies past the end of the ${storage.size}-byte file`, offset);
      return false;
    }
    for (let c = Math.floor(offset / cs); c <= last; c++) refs[c]!++;
    return true;
  };
  const read = async (len: number, at: number): Promise<Buffer> => {
    const b = Buffer.alloc(len);
    await storage.read(b, at);
    return b;
  };
  inc(0, cs, 'header');
  /** Clusters counted for the refcount table and blocks (a rebuild replaces them). */
  const refcountClusters: number[] = [];
  const incRefcounts = (offset: number, length: number, what: string): void => {
    if (inc(offset, length, what)) for (let c = offset / cs; c < (offset + length) / cs; c++) refcountClusters.push(c);
  };
  incRefcounts(h.refcountTableOffset, h.refcountTableClusters * cs, 'refcount table');
  const table = await read(h.refcountTableClusters * cs, h.refcountTableOffset);
  for (let t = 0; t < table.length / 8; t++) {
    const [hi, lo] = entryHalves(table, t * 8);
    const off = entryOffset(hi, lo);
    if (off === 0) continue;
    if (off % cs !== 0) corrupt(`refcount table entry ${t} (${off}) is not cluster-aligned`, h.refcountTableOffset + t * 8);
    else incRefcounts(off, cs, `refcount block ${t}`);
  }
  /** Active-image entries whose COPIED flag is checked against the refcount afterwards. */
  const copied: Array<{ at: number; host: number; flag: boolean; what: string }> = [];
  let allocated = 0;
  const walkL1 = async (l1Offset: number, l1Size: number, active: boolean, label: string): Promise<void> => {
    if (l1Size === 0) return;
    if (l1Size * 8 > QCOW2_MAX_L1_BYTES) return corrupt(`${label} L1 table of ${l1Size} entries is larger than ${QCOW2_MAX_L1_BYTES} bytes`);
    if (l1Offset % cs !== 0) return corrupt(`${label} L1 table offset ${l1Offset} is not cluster-aligned`);
    if (!inc(l1Offset, l1Size * 8, `${label} L1 table`)) return;
    const l1 = await read(l1Size * 8, l1Offset);
    for (let i = 0; i < l1Size; i++) {
      const [hi, lo] = entryHalves(l1, i * 8);
      const l2 = entryOffset(hi, lo);
      if (l2 === 0) continue;
      if (l2 % cs !== 0) {
        corrupt(`${label} L1 entry ${i} names an L2 table at ${l2}, not cluster-aligned`, l1Offset + i * 8);
        continue;
      }
      if (!inc(l2, cs, `${label} L2 table ${i}`)) continue;
      if (active) copied.push({ at: l1Offset + i * 8, host: l2, flag: (hi & QCOW_OFLAG_COPIED_HI) !== 0, what: `L1 entry ${i}` });
      const t = await read(cs, l2);
      for (let j = 0; j < cs / stride; j++) {
        const [ehi, elo] = entryHalves(t, j * stride);
        const m = decodeL2(ehi, extended ? elo & ~QCOW_OFLAG_ZERO : elo, h.clusterBits, h.version);
        const guest = i * (cs / stride) + j;
        if (m.kind === 'unallocated' || (m.kind === 'zero' && m.offset === 0)) continue;
        if (m.kind === 'compressed') {
          if (inc(m.offset, m.length, `compressed guest cluster ${guest}`) && active) allocated++;
          continue;
        }
        if (m.offset % cs !== 0) {
          corrupt(`${label} guest cluster ${guest} names host offset ${m.offset}, not cluster-aligned`, l2 + j * stride);
          continue;
        }
        if (!inc(m.offset, cs, `${label} guest cluster ${guest}`)) continue;
        if (active) {
          allocated++;
          copied.push({ at: l2 + j * stride, host: m.offset, flag: (ehi & QCOW_OFLAG_COPIED_HI) !== 0, what: `L2 entry of guest cluster ${guest}` });
        }
      }
    }
  };
  await walkL1(h.l1TableOffset, h.l1Size, true, 'active');
  if (h.nbSnapshots > 0) {
    const snaps = await readSnapshots(read, h.snapshotsOffset, h.nbSnapshots, storage.size, storage.name);
    let end = h.snapshotsOffset;
    // The table's length: walk the same entries again for their sizes.
    for (let n = 0; n < h.nbSnapshots; n++) {
      const e = await read(40, end);
      end += Math.ceil((40 + e.readUInt32BE(36) + e.readUInt16BE(12) + e.readUInt16BE(14)) / 8) * 8;
    }
    inc(h.snapshotsOffset, end - h.snapshotsOffset, 'snapshot table');
    for (const s of snaps) await walkL1(s['l1-offset'], s['l1-size'], false, `snapshot ${s.id}`);
  }
  const warnings: CheckProblem[] = [];
  if (h.otherExtensions.includes(Extension.BITMAPS)) {
    warnings.push({ severity: 'warning', message: `${storage.name}: persistent bitmaps are not counted; their clusters show as leaks` });
  }
  const rc = new Refcounts(storage, { clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, table, tableOffset: h.refcountTableOffset });
  const stored = new Uint32Array(clusters);
  const leaked: number[] = [];
  let refcountsWrong = false;
  let rebuildNeeded = false;
  for (let c = 0; c < clusters; c++) {
    let actual: number;
    try {
      actual = await rc.get(c);
    } catch (err) {
      if (!isVdiskError(err)) throw err;
      corrupt(`cannot read the refcount of host cluster ${c}: ${err.message}`);
      refcountsWrong = true;
      rebuildNeeded = true;
      break;
    }
    stored[c] = actual;
    const want = refs[c]!;
    if (actual < want) {
      corrupt(`host cluster ${c} has refcount ${actual} but ${want} references`, c * cs);
      refcountsWrong = true;
      // qemu (compare_refcounts): a cluster in use with refcount 0 needs the structure rebuilt (-r all).
      if (actual === 0) rebuildNeeded = true;
    }
    else if (actual > want) {
      leaked.push(c);
      problems.push({ severity: 'leak', message: `${storage.name}: host cluster ${c} has refcount ${actual} but ${want} references (leaked)`, offset: c * cs });
    }
  }
  for (const x of copied) {
    const c = Math.floor(x.host / cs);
    if (c < clusters && x.flag !== (stored[c] === 1)) corrupt(`${x.what}: OFLAG_COPIED is ${x.flag ? 'set' : 'clear'} but the refcount is ${stored[c]}`, x.at);
  }
  const badCopied: Scan['badCopied'] = [];
  for (const x of copied) {
    const c = Math.floor(x.host / cs);
    if (c < clusters && x.flag !== (refs[c] === 1)) badCopied.push({ at: x.at, set: refs[c] === 1, refcountOk: stored[c]! >= refs[c]! });
  }
  problems.push(...warnings);
  return {
    result: { problems, allocatedClusters: allocated, totalClusters: Math.ceil(h.size / cs) },
    refs,
    refcountClusters,
    leaked,
    refcountsWrong,
    rebuildNeeded,
    badCopied,
    dirty: (h.incompatibleFeatures & BigInt(Incompatible.DIRTY)) !== 0n,
  };
}

/**
 * Check a qcow2 image as `qemu-img check` does (references counted against the stored refcounts). `repair: 'leaks'`
 * lowers leaked refcounts to their references; `repair: 'all'` rebuilds the refcount
 * structure from the references when any refcount is wrong (or the dirty bit is
 * set, which it then clears), and rewrites OFLAG_COPIED flags that disagree. A
 * repaired image is checked again; problems the second pass no longer finds are
 * reported repaired, what it still finds unrepaired.
 */
export async function checkQcow2(storage: Storage, _location: ImageLocation, opts: DriverCheckOptions & Partial<DriverOpenOptions>): Promise<CheckResult> {
  const first = await scan(storage);
  const mode = opts.repair;
  // As qemu, -r leaks also sets OFLAG_COPIED right where the refcount (once leaks are lowered) is right.
  const copiedFixes = first.badCopied.filter((x) => mode === 'all' || x.refcountOk);
  const needs = first.leaked.length > 0 || copiedFixes.length > 0 || (mode === 'all' && (first.refcountsWrong || first.dirty));
  if (mode === 'leaks' && first.rebuildNeeded) {
    throw new VdiskError('E_CORRUPT', `${storage.name}: clusters in use have refcount 0; the refcount structure needs a rebuild (vdisk check -r all), as qemu-img check -r leaks says`);
  }
  if (!mode || !needs) return first.result;
  if (storage.readOnly) throw new VdiskError('E_READONLY', `${storage.name}: opened read-only; cannot repair`);
  const h = await loadHeader(storage);
  if (mode === 'all' && (first.refcountsWrong || first.dirty || first.leaked.length > 0)) {
    // The old table and blocks are not referenced once the new ones are named.
    const refs = Uint32Array.from(first.refs);
    for (const c of first.refcountClusters) refs[c]!--;
    await rebuildRefcounts(storage, h, refs);
  } else if (first.leaked.length > 0) {
    const table = Buffer.alloc(h.refcountTableClusters * 2 ** h.clusterBits);
    await storage.read(table, h.refcountTableOffset);
    const rc = new Refcounts(storage, { clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, table, tableOffset: h.refcountTableOffset });
    // Lowering a refcount to its references never frees a cluster in use.
    for (const c of first.leaked) await rc.put(c, first.refs[c]!);
    await storage.flush();
  }
  const e = Buffer.alloc(8);
  for (const x of copiedFixes) {
      await storage.read(e, x.at);
      const hi = e.readUInt32BE(0);
      e.writeUInt32BE((x.set ? hi | QCOW_OFLAG_COPIED_HI : hi & ~QCOW_OFLAG_COPIED_HI) >>> 0, 0);
    await storage.write(e, x.at);
  }
  await storage.flush();
  if (mode === 'all' && first.dirty) {
    const f = Buffer.alloc(8);
    f.writeBigUInt64BE(h.incompatibleFeatures & ~BigInt(Incompatible.DIRTY), 0);
    await storage.write(f, Qcow2Field.incompatibleFeatures);
    await storage.flush();
  }
  const second = await scan(storage);
  const still = new Set(second.result.problems.map((p) => p.message));
  const fixed = first.result.problems.filter((p) => p.severity !== 'warning' && !still.has(p.message)).map((p) => ({ ...p, repaired: true }));
  return { ...second.result, problems: [...fixed, ...second.result.problems] };
}

/**
 * Write a new refcount structure that counts exactly `refs` (one entry per host
 * cluster of the file): refcount blocks and a table placed after the end of the
 * file, counting themselves, written and flushed before one header write names the
 * table. Until then the old structure stands; after it the old table and blocks
 * are free clusters (qemu's rebuild_refcount_structure works the same way).
 */
async function rebuildRefcounts(storage: Storage, h: Awaited<ReturnType<typeof loadHeader>>, refs: Uint32Array): Promise<void> {
  const cs = 2 ** h.clusterBits;
  const bits = 2 ** h.refcountOrder;
  const perBlock = (cs * 8) / bits;
  const start = Math.ceil(storage.size / cs);
  const used = (r: number): boolean => {
    for (let c = r * perBlock; c < Math.min(start, (r + 1) * perBlock); c++) if (refs[c]! > 0) return true;
    return false;
  };
  let blocks = 0;
  let tableClusters = 1;
  let ranges: number[] = [];
  for (let guard = 0; guard < 64; guard++) {
    const end = start + blocks + tableClusters;
    ranges = [];
    for (let r = 0; r * perBlock < end; r++) if (used(r) || (r + 1) * perBlock > start) ranges.push(r);
    const entries = Math.ceil(end / perBlock);
    const t = Math.max(1, Math.ceil((entries * 8) / cs));
    if (ranges.length === blocks && t === tableClusters) break;
    blocks = ranges.length;
    tableClusters = t;
  }
  if (tableClusters * cs > QCOW2_MAX_REFTABLE_BYTES) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: the rebuilt refcount table would be larger than ${QCOW2_MAX_REFTABLE_BYTES} bytes`);
  const end = start + blocks + tableClusters;
  const max = bits >= 32 ? Number.MAX_SAFE_INTEGER : 2 ** bits - 1;
  const table = Buffer.alloc(tableClusters * cs);
  const block = Buffer.alloc(cs);
  for (const [k, r] of ranges.entries()) {
    block.fill(0);
    for (let c = r * perBlock; c < Math.min(end, (r + 1) * perBlock); c++) {
      const n = c < start ? refs[c]! : 1;
      if (n > max) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: host cluster ${c} has ${n} references, more than ${bits}-bit refcounts hold`);
      if (n > 0) setRefcount(block, c % perBlock, bits, n);
    }
    await storage.write(block, (start + k) * cs);
    writeEntry(table, r * 8, (start + k) * cs, 0);
  }
  await storage.write(table, (start + blocks) * cs);
  await storage.flush();
  const hdr = Buffer.alloc(12);
  hdr.writeBigUInt64BE(BigInt((start + blocks) * cs), 0);
  hdr.writeUInt32BE(tableClusters, 8);
  await storage.write(hdr, Qcow2Field.refcountTableOffset);
  await storage.flush();
}
