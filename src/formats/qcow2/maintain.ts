/**
 * Changing a qcow2 image in place (qcow2.txt, "Header", "Cluster mapping", "Host
 * cluster management"): growing the L1 table, writing a new virtual size, relinking
 * the backing file (name and backing_fmt extension), and packing the host clusters
 * of a compacted image towards the start of the file so it can be cut.
 *
 * Every step keeps qemu's order: a cluster is counted before anything names it, its
 * contents are flushed before the entry that names it is written, and the old place
 * is released only after that entry is flushed; a crash leaves at worst leaks.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { Extension, encodeExtension, QCOW2_MAX_L1_BYTES, QCOW2_V2_HEADER_LENGTH, Qcow2Field, type Qcow2Header } from './layout.js';
import type { Refcounts } from './refcount.js';
import { QCOW_OFLAG_COPIED_HI, QCOW_OFLAG_ZERO, decodeL2, entryHalves, entryOffset, writeEntry } from './tables.js';

/** What maintenance works on: the image's storage and metadata, every deferred map update already on disk. */
export interface Qcow2State {
  storage: Storage;
  header: Qcow2Header;
  /** The active L1 table (l1_size entries), as on disk. */
  l1: Buffer;
  refcounts: Refcounts;
}

/** L1 entries needed for `size` bytes of guest disk. */
export function l1EntriesFor(size: number, clusterBits: number): number {
  const cs = 2 ** clusterBits;
  return Math.ceil(size / (cs * (cs / 8)));
}

/**
 * Make the L1 table `entries` long (growing only). When the clusters it has hold the
 * new length, the new entries are zeroed and then l1_size written; else a new table
 * is allocated at the end, written and flushed before one header write names it,
 * and the old one released. Returns the (possibly new) L1 buffer; `st.header` is updated.
 */
export async function growL1(st: Qcow2State, entries: number): Promise<Buffer> {
  const { storage, header: h } = st;
  if (entries <= h.l1Size) return st.l1;
  if (entries * 8 > QCOW2_MAX_L1_BYTES) throw new VdiskError('E_USAGE', `${storage.name}: ${entries} L1 entries are more than qcow2 allows (${QCOW2_MAX_L1_BYTES / 8}); use a larger cluster size`);
  const cs = 2 ** h.clusterBits;
  const l1 = Buffer.alloc(entries * 8);
  st.l1.copy(l1);
  const clustersHad = h.l1TableOffset === 0 ? 0 : Math.ceil((h.l1Size * 8) / cs);
  const fld = Buffer.alloc(12);
  if (Math.ceil((entries * 8) / cs) <= clustersHad) {
    // The entries past l1_size are not part of the table yet: zero them, then count them in.
    await storage.write(l1.subarray(h.l1Size * 8), h.l1TableOffset + h.l1Size * 8);
    await storage.flush();
    fld.writeUInt32BE(entries, 0);
    await storage.write(fld.subarray(0, 4), Qcow2Field.l1Size);
    await storage.flush();
    h.l1Size = entries;
    return l1;
  }
  const clusters = Math.ceil((entries * 8) / cs);
  const at = await st.refcounts.allocateRun(clusters);
  const padded = Buffer.alloc(clusters * cs);
  l1.copy(padded);
  await storage.write(padded, at);
  await storage.flush();
  fld.writeUInt32BE(entries, 0);
  fld.writeBigUInt64BE(BigInt(at), 4);
  await storage.write(fld, Qcow2Field.l1Size);
  await storage.flush();
  const old = { offset: h.l1TableOffset, length: clustersHad * cs };
  h.l1Size = entries;
  h.l1TableOffset = at;
  if (old.offset !== 0 && old.length > 0) await st.refcounts.release(old.offset, old.length);
  return l1;
}

/** Write the header's virtual size field (one 8-byte write) and flush. */
export async function writeVirtualSize(storage: Storage, size: number): Promise<void> {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(size), 0);
  await storage.write(b, Qcow2Field.size);
  await storage.flush();
}

/**
 * Rewrite the header's backing file name and backing_fmt extension (`undefined`:
 * no backing file), keeping every other extension as it is. The header fields, the
 * extensions and the name are one write from offset 0, as qemu's header update
 * writes them (a few hundred bytes: one or two sectors), then flushed.
 */
export async function relinkHeader(storage: Storage, h: Qcow2Header, backing: { name: string; format: string } | undefined): Promise<void> {
  const cs = 2 ** h.clusterBits;
  const raw = Buffer.alloc(Math.min(cs, storage.size));
  await storage.read(raw, 0);
  const fieldsEnd = h.version === 2 ? QCOW2_V2_HEADER_LENGTH : h.headerLength;
  const keep: Buffer[] = [];
  for (let at = Math.ceil(fieldsEnd / 8) * 8; at + 8 <= raw.length; ) {
    const type = raw.readUInt32BE(at);
    const len = raw.readUInt32BE(at + 4);
    if (type === Extension.END) break;
    const whole = 8 + Math.ceil(len / 8) * 8;
    if (type !== Extension.BACKING_FORMAT) keep.push(raw.subarray(at, at + whole));
    at += whole;
  }
  const exts: Buffer[] = [];
  if (backing) exts.push(encodeExtension(Extension.BACKING_FORMAT, Buffer.from(backing.format, 'latin1')));
  exts.push(...keep, Buffer.alloc(8));
  const name = backing ? Buffer.from(backing.name, 'utf8') : Buffer.alloc(0);
  if (name.length > 1023) throw new VdiskError('E_USAGE', `${storage.name}: a backing file name of ${name.length} bytes is longer than qcow2 allows (1023)`);
  const fields = Buffer.alloc(Math.ceil(fieldsEnd / 8) * 8);
  raw.copy(fields, 0, 0, fieldsEnd);
  const extBytes = Buffer.concat(exts);
  const nameAt = fields.length + extBytes.length;
  fields.writeBigUInt64BE(BigInt(name.length > 0 ? nameAt : 0), Qcow2Field.backingFileOffset);
  fields.writeUInt32BE(name.length, Qcow2Field.backingFileSize);
  const oldEnd = Math.max(h.extensionsEnd, h.backingFileOffset + h.backingFileSize);
  const out = Buffer.alloc(Math.max(nameAt + name.length, oldEnd));
  fields.copy(out, 0);
  extBytes.copy(out, fields.length);
  name.copy(out, nameAt);
  if (out.length > cs) throw new VdiskError('E_USAGE', `${storage.name}: the header with a ${name.length}-byte backing name does not fit one ${cs}-byte cluster`);
  await storage.write(out, 0);
  await storage.flush();
  h.backingFileOffset = name.length > 0 ? nameAt : 0;
  h.backingFileSize = name.length;
  h.extensionsEnd = nameAt;
  if (backing) {
    h.backingFile = backing.name;
    h.backingFormat = backing.format;
  } else {
    delete h.backingFile;
    delete h.backingFormat;
  }
}

/** What one host cluster is to the image, for moving it. */
const enum Owner {
  None = 0,
  /** Header, compressed or shared clusters: they stay where they are. */
  Fixed,
  Data,
  L2,
  RefBlock,
  RefTable,
  L1,
}

/** Host clusters a packing pass is willing to look at (a Float64Array of this many is 1 GiB). */
const PACK_MAX_CLUSTERS = 2 ** 27;
/** Data clusters moved per round of flushes. */
const MOVE_BATCH = 256;

/**
 * Every host cluster of an image open for writing (no snapshots, no extended L2)
 * and what names it; throws E_CORRUPT when a stored refcount is below its references.
 */
async function mapOwners(st: Qcow2State): Promise<{ owner: Uint8Array; where: Float64Array; clusters: number }> {
  const { storage, header: h, refcounts: rc } = st;
  const cs = 2 ** h.clusterBits;
  const clusters = Math.ceil(storage.size / cs);
  if (clusters > PACK_MAX_CLUSTERS) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: ${clusters} host clusters are more than compact packs (${PACK_MAX_CLUSTERS})`);
  const owner = new Uint8Array(clusters);
  const where = new Float64Array(clusters);
  const refs = new Uint32Array(clusters);
  const mark = (offset: number, length: number, kind: Owner, w: number, what: string): void => {
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    if (last >= clusters) throw new VdiskError('E_CORRUPT', `${storage.name}: ${what} at ${offset} lies past the end of the file; run "vdisk check -r all" first`);
    for (let c = first; c <= last; c++) {
      refs[c]!++;
      owner[c] = refs[c]! > 1 || first !== last ? Owner.Fixed : kind;
      where[c] = w;
    }
  };
  mark(0, cs, Owner.Fixed, 0, 'header');
  const tableAt = rc.tableAt;
  for (let k = 0; k < tableAt.clusters; k++) mark(tableAt.offset + k * cs, cs, Owner.RefTable, 0, 'refcount table');
  for (let t = 0; t < rc.ranges; t++) {
    const off = rc.blockAt(t);
    if (off !== 0) mark(off, cs, Owner.RefBlock, t, `refcount block ${t}`);
  }
  const l1Clusters = Math.ceil((h.l1Size * 8) / cs);
  for (let k = 0; k < l1Clusters; k++) mark(h.l1TableOffset + k * cs, cs, Owner.L1, 0, 'L1 table');
  const t = Buffer.alloc(cs);
  for (let i = 0; i < h.l1Size; i++) {
    const [hi, lo] = entryHalves(st.l1, i * 8);
    const l2 = entryOffset(hi, lo);
    if (l2 === 0) continue;
    mark(l2, cs, Owner.L2, i, `L2 table ${i}`);
    await storage.read(t, l2);
    for (let j = 0; j < cs / 8; j++) {
      const [ehi, elo] = entryHalves(t, j * 8);
      const m = decodeL2(ehi, elo, h.clusterBits, h.version);
      if (m.kind === 'compressed') mark(m.offset, m.length, Owner.Fixed, 0, 'compressed cluster');
      else if (m.kind === 'normal' || (m.kind === 'zero' && m.offset !== 0)) mark(m.offset, cs, Owner.Data, l2 + j * 8, 'data cluster');
    }
  }
  for (let c = 0; c < clusters; c++) {
    const n = await rc.get(c);
    if (n < refs[c]!) throw new VdiskError('E_CORRUPT', `${storage.name}: host cluster ${c} has refcount ${n} but ${refs[c]} references; run "vdisk check -r all" first`);
    // Counted but named by nothing: a leak, given back now.
    if (n > refs[c]!) await rc.put(c, refs[c]!);
  }
  await storage.flush();
  return { owner, where, clusters };
}

/**
 * Move host clusters from the end of the file into free clusters below them (data
 * clusters in batches; L2 tables, refcount blocks, the L1 table and the refcount
 * table one at a time), drop refcount blocks that count only themselves, and cut
 * the file after the last cluster in use. Returns the new L1 buffer (its entries
 * change when L2 tables move); `st.header` is updated.
 */
export async function packClusters(st: Qcow2State, onProgress?: (done: number, total: number) => void): Promise<Buffer> {
  const { storage, header: h, refcounts: rc } = st;
  const cs = 2 ** h.clusterBits;
  const { owner, where, clusters } = await mapOwners(st);
  /** Where L2 tables went (old host offset -> new), for data entries that live in them. */
  const movedL2 = new Map<number, number>();
  const entryAt = (w: number): number => {
    const table = Math.floor(w / cs) * cs;
    return (movedL2.get(table) ?? table) + (w - table);
  };
  let lo = 1;
  const free = (c: number): boolean => owner[c] === Owner.None && rc.hasBlockFor(c);
  const nextFree = (): number => {
    while (lo < clusters && !free(lo)) lo++;
    return lo;
  };
  /** `n` free clusters in a row below `limit`, lowest first; -1 when there are none. */
  const freeRun = (n: number, limit: number): number => {
    for (let c = nextFree(); c + n <= limit; c++) {
      let k = 0;
      while (k < n && free(c + k)) k++;
      if (k === n) return c;
      c += k;
    }
    return -1;
  };
  const buf = Buffer.alloc(cs);
  const batch: Array<[number, number]> = [];
  const flushBatch = async (): Promise<void> => {
    if (batch.length === 0) return;
    for (const [, to] of batch) await rc.put(to, 1);
    for (const [from, to] of batch) {
      await storage.read(buf, from * cs);
      await storage.write(buf, to * cs);
    }
    await storage.flush();
    const e = Buffer.alloc(8);
    for (const [from, to] of batch) {
      const at = entryAt(where[from]!);
      await storage.read(e, at);
      const [hi, lo2] = entryHalves(e, 0);
      writeEntry(e, 0, to * cs, hi & QCOW_OFLAG_COPIED_HI, lo2 & QCOW_OFLAG_ZERO);
      await storage.write(e, at);
    }
    await storage.flush();
    for (const [from] of batch) await rc.put(from, 0);
    batch.length = 0;
  };
  const total = clusters;
  let l1 = st.l1;
  for (let c = clusters - 1; c > 0; c--) {
    onProgress?.(clusters - c, total);
    const kind = owner[c] as Owner;
    if (kind === Owner.None) continue;
    if (kind === Owner.Fixed) break;
    if (kind === Owner.L1 || kind === Owner.RefTable) {
      // Tables move whole: from their first cluster, into a free run below them.
      const first = kind === Owner.L1 ? h.l1TableOffset / cs : rc.tableAt.offset / cs;
      const n = kind === Owner.L1 ? Math.ceil((h.l1Size * 8) / cs) : rc.tableAt.clusters;
      if (c !== first + n - 1) break;
      await flushBatch();
      const to = freeRun(n, first);
      if (to < 0) break;
      if (kind === Owner.L1) {
        for (let k = 0; k < n; k++) await rc.put(to + k, 1);
        const padded = Buffer.alloc(n * cs);
        l1.copy(padded);
        await storage.write(padded, to * cs);
        await storage.flush();
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(BigInt(to * cs), 0);
        await storage.write(b, Qcow2Field.l1TableOffset);
        await storage.flush();
        h.l1TableOffset = to * cs;
        for (let k = 0; k < n; k++) await rc.put(first + k, 0);
      } else {
        await rc.moveTable(to * cs);
      }
      for (let k = 0; k < n; k++) {
        owner[to + k] = kind;
        owner[first + k] = Owner.None;
      }
      c = first;
      continue;
    }
    const to = nextFree();
    if (to >= c) break;
    owner[to] = kind;
    lo = to + 1;
    if (kind === Owner.Data) {
      batch.push([c, to]);
      if (batch.length >= MOVE_BATCH) await flushBatch();
      owner[c] = Owner.None;
      continue;
    }
    await flushBatch();
    if (kind === Owner.L2) {
      const i = where[c]!;
      await rc.put(to, 1);
      await storage.read(buf, c * cs);
      await storage.write(buf, to * cs);
      await storage.flush();
      const next = Buffer.from(l1);
      writeEntry(next, i * 8, to * cs, QCOW_OFLAG_COPIED_HI);
      await storage.write(next.subarray(i * 8, i * 8 + 8), h.l1TableOffset + i * 8);
      await storage.flush();
      l1 = next;
      movedL2.set(c * cs, to * cs);
      await rc.put(c, 0);
    } else if (kind === Owner.RefBlock) {
      await rc.moveBlock(where[c]!, to * cs);
    }
    owner[c] = Owner.None;
  }
  await flushBatch();
  await storage.flush();
  // Refcount blocks that count nothing but themselves, from the end down.
  const per = rc.clustersPerBlock;
  for (let t = rc.ranges - 1; t >= 0; t--) {
    const at = rc.blockAt(t);
    if (at === 0) continue;
    let used = false;
    for (let c = t * per; c < Math.min((t + 1) * per, clusters) && !used; c++) used = c !== at / cs && (await rc.get(c)) !== 0;
    if (used) break;
    await rc.dropBlock(t);
  }
  let end = clusters;
  while (end > 1 && !(rc.hasBlockFor(end - 1) && (await rc.get(end - 1)) !== 0) && !inUse(end - 1)) end--;
  if (end * cs < storage.size) {
    await storage.flush();
    await storage.truncate(end * cs);
    await storage.flush();
    rc.restartAtEnd();
  }
  onProgress?.(total, total);
  return l1;

  function inUse(c: number): boolean {
    const at = rc.tableAt;
    return c === 0 || (c >= at.offset / cs && c < at.offset / cs + at.clusters) || (c >= h.l1TableOffset / cs && c < h.l1TableOffset / cs + Math.ceil((h.l1Size * 8) / cs));
  }
}
