/**
 * A VMDK disk: a descriptor (separate text file or embedded in a sparse extent) and
 * the extents it lists, end to end, plus the parent of a delta link.
 */
import { randomInt } from 'node:crypto';
import { posix } from 'node:path';
import { readBelow } from '../../device/below.js';
import type { CompactOptions, CompactResult, DiskImage, Extent, ImageInfo, ResizeImageOptions } from '../../device/block-device.js';
import { ProgressMeter } from '../../device/progress.js';
import { BlockDeviceBase } from '../../device/base.js';
import { isZero, zeroBuffer } from '../../device/zero.js';
import { VdiskError } from '../../errors.js';
import { safeMemberName } from '../../storage/containers/names.js';
import { MAX_OFFSET } from '../../storage/checks.js';
import type { ImageLocation } from '../../storage/location.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import { CID_NONE, copyDescriptor, type Descriptor, type ExtentLine, MAX_DESCRIPTOR_BYTES, formatDescriptor, hex8, parseCid, parseDescriptor } from './descriptor.js';
import { compactSparse, growSparse, packSparse, releaseGrains, shrinkSparse } from './maintain.js';
import { StreamOptimizedWriter } from './stream.js';
import { FlatExtent, type ReadBelow, type VmdkExtent, ZeroExtent } from './extent.js';
import { COWD_MAGIC, SPLIT_EXTENT_SECTORS, FLAG_VALID_NEWLINE_TEST, HEADER_SIZE, SECTOR, SPARSE_MAGIC, type SparseHeader, decodeSparseHeader } from './layout.js';
import { SparseExtent, readSparseHeader, writeSparseExtent } from './sparse.js';

/** createTypes vdisk reads (spec: "createType"). The vmfs* thick types are descriptors over VMFS (flat) extents. */
export const READABLE_CREATE_TYPES = new Set([
  'monolithicSparse',
  'monolithicFlat',
  'twoGbMaxExtentSparse',
  'twoGbMaxExtentFlat',
  'streamOptimized',
  'vmfs',
  'vmfsPreallocated',
  'vmfsEagerZeroedThick',
  'vmfsThin',
  'custom',
]);

/** Where the descriptor lives, so a new CID can be written back. */
type DescriptorHome = { kind: 'file'; storage: Storage } | { kind: 'embedded'; storage: Storage; offset: number; size: number };

/** One extent placed in the disk (one per descriptor extent line, in order). */
interface Placed {
  start: number;
  extent: VmdkExtent;
  /** The file holding it (absent for ZERO extents). */
  storage?: Storage;
  /** The file's resolved name. */
  file?: string;
}

/** An opened VMDK disk. */
export class VmdkImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'vmdk';
  readonly filename: string;
  readonly readOnly: boolean;
  size: number;
  private cidUpdated = false;
  /** The CID the first write will set, once {@link nextCid} was asked for it. */
  private reservedCid: number | undefined;
  /** A descriptor file was replaced by rename: the open `home` storage is stale and never written again. */
  private descriptorReplaced = false;

  constructor(
    private desc: Descriptor,
    private readonly home: DescriptorHome,
    private readonly placed: Placed[],
    private readonly storages: Storage[],
    readOnly: boolean,
    readonly backing: DiskImage | undefined,
    private readonly fullBackingFilename: string | undefined,
    private readonly location: ImageLocation,
  ) {
    super();
    this.filename = home.storage.name;
    this.readOnly = readOnly;
    const last = placed[placed.length - 1];
    this.size = last ? last.start + last.extent.length : 0;
  }

  /** The content ID in the descriptor. */
  get cid(): number {
    return this.descriptor.cid;
  }

  /** The extents, in disk order. */
  get extentList(): readonly VmdkExtent[] {
    return this.placed.map((p) => p.extent);
  }

  private below(start: number): ReadBelow {
    return (buf, offset) => readBelow(this.backing, buf, start + offset);
  }

  private async forEach(offset: number, length: number, fn: (p: Placed, extOff: number, bufOff: number, len: number) => Promise<void>): Promise<void> {
    for (const p of this.placed) {
      const s = Math.max(offset, p.start);
      const e = Math.min(offset + length, p.start + p.extent.length);
      if (s < e) await fn(p, s - p.start, s - offset, e - s);
    }
  }

  protected readAt(buf: Uint8Array, offset: number): Promise<void> {
    const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    return this.forEach(offset, b.length, (p, extOff, bufOff, len) => p.extent.read(b.subarray(bufOff, bufOff + len), extOff, this.below(p.start)));
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    if (this.descriptor.createType === 'streamOptimized') {
      throw new VdiskError('E_UNSUPPORTED', `${this.filename}: streamOptimized images are written once, in order; convert to another subformat to change one`);
    }
    await this.updateCid();
    const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    await this.forEach(offset, b.length, (p, extOff, bufOff, len) => p.extent.write(b.subarray(bufOff, bufOff + len), extOff, this.below(p.start)));
  }

  /** Without a parent, unallocated grains already read as zeros: only allocated ones are cleared. */
  protected override async writeZeroesAt(offset: number, length: number): Promise<void> {
    if (this.backing || this.descriptor.createType === 'streamOptimized') return super.writeZeroesAt(offset, length);
    await this.updateCid();
    await this.forEach(offset, length, async (p, extOff, _bufOff, len) => {
      if (p.extent instanceof SparseExtent) return p.extent.zeroAllocated(extOff, len);
      if (p.extent instanceof ZeroExtent) return;
      for (let done = 0; done < len; ) {
        const n = Math.min(IO_CHUNK, len - done);
        await p.extent.write(zeroBuffer(n), extOff + done, this.below(p.start));
        done += n;
      }
    });
  }

  /** Whole grains of sparse extents are released (the parent or zeros show through); flat extents keep their bytes. */
  protected override async discardAt(offset: number, length: number): Promise<void> {
    if (this.descriptor.createType === 'streamOptimized') return;
    let any = false;
    await this.forEach(offset, length, async (p, extOff, _bufOff, len) => {
      if (!(p.extent instanceof SparseExtent) || p.extent.compressed) return;
      if (!any) await this.updateCid();
      any = true;
      await releaseGrains(p.extent, extOff, len);
    });
  }

  /** The descriptor as it is on disk (edits replace it once the new one is saved). */
  get descriptor(): Descriptor {
    return this.desc;
  }

  /**
   * The CID this disk has after its next change: the current one once it was written
   * since open, else the one the first write will set (chosen now and kept).
   */
  nextCid(): number {
    if (this.cidUpdated) return this.descriptor.cid;
    if (this.reservedCid === undefined) {
      let cid = randomInt(0, 0xffffffff);
      if (cid === this.descriptor.cid || cid === CID_NONE) cid = (cid + 1) % 0xffffffff;
      this.reservedCid = cid;
    }
    return this.reservedCid;
  }

  /** On the first write, give the disk a new content ID (spec: CID changes when the contents do). */
  private async updateCid(): Promise<void> {
    if (this.cidUpdated) return;
    this.descriptor.cid = this.nextCid();
    // A bare sparse extent opened by itself has no descriptor to update.
    if (this.home.kind === 'file' && this.descriptorReplaced) await this.saveDescriptor();
    else if (this.home.kind === 'file' || this.home.size > 0) await writeDescriptor(this.home, this.descriptor);
    this.cidUpdated = true;
  }

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    for (const p of this.placed) {
      const s = Math.max(offset, p.start);
      const e = Math.min(offset + length, p.start + p.extent.length);
      if (s >= e) continue;
      for await (const r of p.extent.map(s - p.start, e - s)) {
        const abs = p.start + r.offset;
        if (r.kind !== 'hole' || !this.backing) {
          yield { offset: abs, length: r.length, kind: r.kind, depth: 0 };
          continue;
        }
        const psize = this.backing.size;
        const inParent = Math.max(0, Math.min(abs + r.length, psize) - abs);
        if (inParent > 0) {
          for await (const pe of this.backing.extents(abs, inParent)) yield { ...pe, depth: pe.depth + 1 };
        }
        if (inParent < r.length) yield { offset: abs + inParent, length: r.length - inParent, kind: 'hole', depth: 1 };
      }
    }
  }

  protected async flushAll(): Promise<void> {
    for (const p of this.placed) await p.extent.flush();
    if (this.home.kind === 'file' && this.cidUpdated) await this.home.storage.flush();
  }

  protected async closeAll(): Promise<void> {
    const errors: unknown[] = [];
    for (const s of this.storages) await s.close().catch((e: unknown) => errors.push(e));
    await this.backing?.close().catch((e: unknown) => errors.push(e));
    if (errors.length) throw errors[0];
  }

  /** Total bytes of this disk's own files. */
  private filesSize(): number {
    let total = 0;
    const seen = new Set<Storage>();
    for (const p of this.placed) if (p.storage && !seen.has(p.storage)) seen.add(p.storage);
    if (this.home.kind === 'file') seen.add(this.home.storage);
    for (const s of seen) total += s.size;
    return total;
  }

  /**
   * Write the descriptor for a maintenance change: an embedded one in place (its
   * reserved sectors), a descriptor file as a temp file renamed over it, so a crash
   * leaves the old or the new text whole.
   */
  private async saveDescriptor(d: Descriptor = this.desc): Promise<void> {
    if (this.home.kind === 'embedded') {
      if (this.home.size === 0) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a bare sparse extent has no descriptor to change; open the disk's descriptor`);
      await writeDescriptor(this.home, d);
      await this.home.storage.flush();
      return;
    }
    const tmp = `${this.filename}.vdisk-tmp`;
    if (await this.location.exists(tmp)) await this.location.remove(tmp);
    const s = await this.location.create(tmp);
    try {
      await s.write(Buffer.from(formatDescriptor(d), 'utf8'), 0);
      await s.flush();
    } finally {
      await s.close();
    }
    await this.location.rename(tmp, this.filename);
    this.descriptorReplaced = true;
  }

  /** Save the descriptor as `edit` changes a copy of it; the one in use is replaced only once that is durable. */
  private async editDescriptor(edit: (d: Descriptor) => void): Promise<void> {
    const next = copyDescriptor(this.desc);
    edit(next);
    await this.saveDescriptor(next);
    this.desc = next;
  }

  /** Rebuild the extent objects from the descriptor's lines (after their files changed). */
  private async reopenExtents(): Promise<void> {
    const fresh: Placed[] = [];
    let start = 0;
    for (const [i, line] of this.descriptor.extents.entries()) {
      const len = line.sectors * SECTOR;
      const old = this.placed[i];
      const ro = this.readOnly || line.access !== 'RW';
      if (line.type === 'ZERO') fresh.push({ start, extent: new ZeroExtent(len) });
      else {
        const s = old?.storage;
        if (!s) throw new VdiskError('E_IO', `${this.filename}: extent ${i} has no open file`);
        const extent = line.type === 'SPARSE' ? await SparseExtent.open(s, len, ro) : new FlatExtent(s, len, line.offset * SECTOR, ro, line.type);
        fresh.push({ start, extent, storage: s, file: old.file });
      }
      start += len;
    }
    this.placed.splice(0, this.placed.length, ...fresh);
    this.size = start;
  }

  /** A name for a new extent file after `lines`, following the last one's numbering (disk-s002.vmdk → disk-s003.vmdk). */
  private nextExtentName(lines: readonly ExtentLine[], type: 'SPARSE' | 'FLAT'): string {
    const used = new Set(lines.map((l) => l.file));
    const last = [...lines].reverse().find((l) => l.file !== undefined)?.file ?? '';
    const m = /^(.*?)(\d+)(\.vmdk)$/i.exec(last);
    for (let k = 1; k < 100000; k++) {
      let name: string;
      if (m) name = `${m[1]}${String(Number(m[2]) + k).padStart(m[2]!.length, '0')}${m[3]}`;
      else name = `${posix.basename(this.filename.replace(/\\/g, '/')).replace(/\.vmdk$/i, '')}-${type === 'SPARSE' ? 's' : 'f'}${String(lines.length + k).padStart(3, '0')}.vmdk`;
      if (!used.has(name)) return name;
    }
    throw new VdiskError('E_UNSUPPORTED', `${this.filename}: no free name for a new extent file`);
  }

  /**
   * Change the virtual size. Grow: the last extent grows (sparse: header capacity and
   * grain directory; flat: its file), new extent files are added (split disks: VMware's
   * 4192256-sector pieces), and the descriptor is written last. Shrink: the descriptor
   * first, then the cut extent and the dropped files. streamOptimized: the stream is
   * rewritten into a temp file renamed over the old one.
   */
  async resize(newSize: number, opts: ResizeImageOptions = {}): Promise<void> {
    this.writable();
    if (newSize % SECTOR !== 0 || newSize <= 0) throw new VdiskError('E_USAGE', `${this.filename}: new size ${newSize} is not a positive multiple of ${SECTOR}`);
    if (newSize === this.size) return;
    const meter = new ProgressMeter(0, opts.onProgress);
    if (this.descriptor.createType === 'streamOptimized') {
      await this.rewriteStream(newSize, meter);
    } else {
      if (this.home.kind === 'embedded' && this.home.size === 0) {
        throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a bare sparse extent cannot be resized; resize the disk through its descriptor`);
      }
      if (newSize > this.size) await this.grow(newSize / SECTOR, meter);
      else await this.shrink(newSize / SECTOR);
    }
    meter.finish();
  }

  /**
   * Sectors a split disk's pieces hold at most: the size of its first piece when it
   * has several (so a disk keeps its own split size), else VMware's 4192256.
   */
  private splitSectors(lines: readonly ExtentLine[]): number {
    const first = lines[0]?.sectors ?? 0;
    return lines.length >= 2 && first > 0 && first <= SPLIT_EXTENT_SECTORS ? first : SPLIT_EXTENT_SECTORS;
  }

  private async grow(newSectors: number, meter: ProgressMeter): Promise<void> {
    const d = this.descriptor;
    const maxSectors = d.createType.startsWith('twoGbMaxExtent') ? this.splitSectors(d.extents) : Number.MAX_SAFE_INTEGER;
    const lines = d.extents.map((l) => ({ ...l }));
    const li = lines.length - 1;
    const last = lines[li]!;
    const lp = this.placed[li]!;
    if (last.type === 'ZERO' || last.access !== 'RW' || !lp.storage) {
      throw new VdiskError('E_UNSUPPORTED', `${this.filename}: the last extent (${last.access} ${last.type}) cannot grow`);
    }
    if (last.type !== 'SPARSE' && lines.some((l, i) => i !== li && this.placed[i]?.storage === lp.storage && l.offset > last.offset)) {
      throw new VdiskError('E_UNSUPPORTED', `${this.filename}: the last extent is not at the end of its file "${last.file}", so it cannot grow`);
    }
    const kind: 'SPARSE' | 'FLAT' = last.type === 'SPARSE' ? 'SPARSE' : 'FLAT';
    let rest = newSectors - this.size / SECTOR;
    const lastGrow = Math.min(rest, Math.max(0, maxSectors - last.sectors));
    if (lastGrow > 0) {
      const cap = last.sectors + lastGrow;
      if (lp.extent instanceof SparseExtent) await growSparse(lp.extent, cap, lp.extent.length);
      else {
        const s = lp.storage;
        const oldEnd = (last.offset + last.sectors) * SECTOR;
        const newEnd = (last.offset + cap) * SECTOR;
        // Bytes a file already holds past the old end (an interrupted shrink) must read as zeros.
        const zeroEnd = Math.min(s.size, newEnd);
        meter.more(Math.max(0, zeroEnd - oldEnd));
        for (let off = oldEnd; off < zeroEnd; off += IO_CHUNK) {
          const n = Math.min(IO_CHUNK, zeroEnd - off);
          await s.write(zeroBuffer(n), off);
          meter.add(n);
        }
        if (s.size < newEnd) await s.truncate(newEnd);
        await s.flush();
      }
      last.sectors = cap;
      rest -= lastGrow;
    }
    const added: Placed[] = [];
    try {
      while (rest > 0) {
        const sectors = Math.min(rest, maxSectors);
        const file = this.nextExtentName(lines, kind);
        const name = this.location.resolve(file, 'extent file');
        // A file of that name no line uses is what an interrupted grow left behind.
        if (await this.location.exists(name)) await this.location.remove(name);
        const s = await this.location.create(name);
        this.storages.unshift(s);
        meter.more(sectors * SECTOR);
        if (kind === 'SPARSE') await writeSparseExtent(s, sectors);
        else await s.truncate(sectors * SECTOR);
        await s.flush();
        meter.add(sectors * SECTOR);
        lines.push({ access: 'RW', sectors, type: kind, file, offset: 0 });
        added.push({ start: 0, extent: new ZeroExtent(0), storage: s, file: name });
        rest -= sectors;
      }
      await this.editDescriptor((n) => {
        n.extents = lines;
        setGeometry(n, newSectors);
      });
      this.placed.push(...added);
    } catch (err) {
      // New files no line names yet are left for the next attempt to replace.
      for (const p of added) {
        await p.storage?.close().catch(() => undefined);
        this.storages.splice(this.storages.indexOf(p.storage!), 1);
      }
      throw err;
    } finally {
      await this.reopenExtents();
    }
  }

  private async shrink(newSectors: number): Promise<void> {
    const d = this.descriptor;
    const lines: ExtentLine[] = [];
    const dropped: Placed[] = [];
    let cut: { index: number; sectors: number } | undefined;
    let acc = 0;
    for (const [i, line] of d.extents.entries()) {
      if (acc >= newSectors) {
        dropped.push(this.placed[i]!);
        continue;
      }
      const keep = Math.min(line.sectors, newSectors - acc);
      if (keep < line.sectors) cut = { index: i, sectors: keep };
      lines.push({ ...line, sectors: keep });
      acc += line.sectors;
    }
    await this.editDescriptor((n) => {
      n.extents = lines;
      setGeometry(n, newSectors);
    });
    const kept = this.placed.slice(0, lines.length);
    if (cut) {
      const p = this.placed[cut.index]!;
      const line = lines[cut.index]!;
      if (p.extent instanceof SparseExtent && p.storage) {
        await shrinkSparse(p.extent, cut.sectors);
        await packSparse(await SparseExtent.open(p.storage, cut.sectors * SECTOR, false));
      } else if (p.extent instanceof FlatExtent && p.storage && kept.filter((k) => k.storage === p.storage).length === 1) {
        const end = (line.offset + cut.sectors) * SECTOR;
        if (p.storage.size > end) {
          await p.storage.truncate(end);
          await p.storage.flush();
        }
      }
    }
    for (const p of dropped) {
      if (!p.storage || !p.file || kept.some((k) => k.storage === p.storage) || p.storage === this.home.storage) continue;
      await p.storage.close();
      const at = this.storages.indexOf(p.storage);
      if (at >= 0) this.storages.splice(at, 1);
      await this.location.remove(p.file);
    }
    this.placed.splice(lines.length);
    await this.reopenExtents();
  }

  /**
   * Rewrite a streamOptimized disk with `newSize` bytes (the same size: a compaction)
   * into a temp file next to it, then rename it over the old one. Returns the grains
   * left out (zero grains the old stream held).
   */
  private async rewriteStream(newSize: number, meter?: ProgressMeter): Promise<number> {
    const d = this.descriptor;
    const copy = copyDescriptor(d);
    for (const l of copy.extents) l.sectors = newSize / SECTOR;
    setGeometry(copy, newSize / SECTOR);
    const tmp = `${this.filename}.vdisk-tmp`;
    if (await this.location.exists(tmp)) await this.location.remove(tmp);
    const out = await this.location.create(tmp);
    let dropped = 0;
    try {
      const w = new StreamOptimizedWriter(out, newSize, copy);
      await w.start();
      const G = w.grain;
      const limit = Math.min(this.size, newSize);
      const buf = Buffer.alloc(G);
      let next = 0;
      if (meter) for await (const e of this.extents(0, limit)) if (e.kind === 'data') meter.more(e.length);
      for await (const e of this.extents(0, limit)) {
        if (e.kind !== 'data') continue;
        for (let g = Math.max(next, Math.floor(e.offset / G)); g * G < e.offset + e.length; g++) {
          const piece = buf.subarray(0, Math.min(G, limit - g * G));
          await this.read(piece, g * G);
          if (isZero(piece)) dropped++;
          await w.addGrain(g, piece); // addGrain copies it before returning
          meter?.add(Math.min(e.offset + e.length, (g + 1) * G) - Math.max(e.offset, g * G));
          next = g + 1;
        }
      }
      await w.finish();
      await out.flush();
    } catch (err) {
      await out.close().catch(() => undefined);
      await this.location.remove(tmp).catch(() => undefined);
      throw err;
    }
    await out.close();
    await this.location.rename(tmp, this.filename);
    // The old file is gone: read the new one (read-only, as compressed extents are).
    const s = await this.location.open(this.filename, { readOnly: true });
    this.storages.push(s);
    const { descriptor, header } = await readDescriptor(s);
    const extent = await SparseExtent.open(s, newSize, true, header);
    this.desc = descriptor;
    this.placed.splice(0, this.placed.length, { start: 0, extent, storage: s, file: this.filename });
    this.size = newSize;
    return dropped;
  }

  /**
   * Give back space: in each sparse extent, grains that hold only zeros are released
   * (where no parent shows through), then the last grains and tables move into holes
   * and the file is truncated. streamOptimized disks are rewritten.
   */
  async compact(opts: CompactOptions = {}): Promise<CompactResult> {
    this.writable();
    const sizeBefore = this.filesSize();
    let released = 0;
    if (this.descriptor.createType === 'streamOptimized') {
      released = await this.rewriteStream(this.size);
      return { releasedBlocks: released, sizeBefore, sizeAfter: this.filesSize() };
    }
    try {
      for (const p of this.placed) {
        if (!(p.extent instanceof SparseExtent) || p.extent.compressed) continue;
        const G = p.extent.grainBytes;
        const parent = this.backing;
        released += await compactSparse(p.extent, {
          releaseZeros: true,
          releasable: (g) => !parent || p.start + g * G >= parent.size,
          onProgress: opts.onProgress,
        });
      }
    } finally {
      await this.reopenExtents();
    }
    return { releasedBlocks: released, sizeBefore, sizeAfter: this.filesSize() };
  }

  /**
   * Point this delta link at `parent` (its CID becomes parentCID, `ref` the
   * parentFileNameHint), or with `undefined` make the disk stand alone
   * (parentCID=ffffffff, no hint). createType stays; only the descriptor changes.
   */
  async setBacking(parent: DiskImage | undefined, ref: string | undefined): Promise<void> {
    this.writable();
    if (this.descriptor.createType === 'streamOptimized') throw new VdiskError('E_UNSUPPORTED', `${this.filename}: streamOptimized disks have no parent`);
    if (parent && !(parent instanceof VmdkImage)) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a VMDK delta link needs a VMDK parent, not ${parent.format}`);
    if (parent && ref === undefined) throw new VdiskError('E_USAGE', `${this.filename}: a parent needs a name to store in parentFileNameHint`);
    await this.editDescriptor((n) => {
      n.parentCID = parent ? parent.cid : CID_NONE;
      if (parent) n.parentFileNameHint = ref;
      else delete n.parentFileNameHint;
      // A commit's note of the parent's coming CID is settled by the link itself.
      n.ddb.delete(PENDING_PARENT_CID);
    });
  }

  /**
   * Before a commit writes into `parent` (a writable open of this link's parent):
   * note the CID its first write will set under ddb.vdisk.pendingParentCID and make
   * that durable. Until setBacking settles the link, open accepts a parent whose CID
   * is parentCID or that pending one, so a crash on either side of the parent's
   * descriptor update leaves this link openable. Other readers ignore the key.
   */
  async prepareCommit(parent: DiskImage): Promise<void> {
    this.writable();
    if (!(parent instanceof VmdkImage) || this.descriptor.parentFileNameHint === undefined) return;
    const next = parent.nextCid();
    if (next === this.descriptor.parentCID) return;
    await this.editDescriptor((n) => n.ddb.set(PENDING_PARENT_CID, hex8(next)));
  }

  async info(): Promise<ImageInfo> {
    const d = this.descriptor;
    const sparse = this.placed.map((p) => p.extent).find((e): e is SparseExtent => e instanceof SparseExtent);
    const facts: Record<string, unknown> = {
      'create-type': d.createType,
      cid: d.cid,
      'parent-cid': d.parentCID,
      extents: this.placed.map((p) => p.extent.describe()),
    };
    const adapter = d.ddb.get('ddb.adapterType');
    if (adapter !== undefined) facts['adapter-type'] = adapter;
    const hw = d.ddb.get('ddb.virtualHWVersion');
    if (hw !== undefined) facts['hw-version'] = hw;
    if (sparse) facts['grain-size'] = sparse.grainBytes;
    const out: ImageInfo = { formatSpecific: facts };
    const mangled = this.placed.some((p) => p.extent instanceof SparseExtent && p.extent.header.flags & FLAG_VALID_NEWLINE_TEST && !p.extent.header.newlinesIntact);
    if (mangled) out.warnings = ['a sparse extent header fails the newline test: the file went through a text-mode transfer and is probably damaged'];
    if (sparse) out.clusterSize = sparse.grainBytes;
    if (d.parentFileNameHint !== undefined) out.backingFilename = d.parentFileNameHint;
    if (this.fullBackingFilename !== undefined) out.fullBackingFilename = this.fullBackingFilename;
    return out;
  }

  async actualSize(): Promise<number | undefined> {
    let total = 0;
    for (const s of this.storages) {
      const n = s.allocatedSize ? await s.allocatedSize() : s.size;
      total += n;
    }
    return total;
  }
}

/** A commit's note of the CID the parent is about to take (see VmdkImage.prepareCommit); vdisk's own ddb key. */
export const PENDING_PARENT_CID = 'ddb.vdisk.pendingParentCID';

/** The pending parent CID a commit noted, if any; E_CORRUPT when it is not a hex number. */
function pendingParentCid(d: Descriptor, name: string): number | undefined {
  const v = d.ddb.get(PENDING_PARENT_CID);
  return v === undefined ? undefined : parseCid(v, PENDING_PARENT_CID, name);
}

/** Make ddb.geometry.cylinders follow a new capacity (heads and sectors stay; at most 16383, as VMware caps it). */
export function setGeometry(d: Descriptor, capacity: number): void {
  const heads = Number(d.ddb.get('ddb.geometry.heads'));
  const spt = Number(d.ddb.get('ddb.geometry.sectors'));
  if (!d.ddb.has('ddb.geometry.cylinders') || !(heads > 0) || !(spt > 0)) return;
  d.ddb.set('ddb.geometry.cylinders', String(Math.max(1, Math.min(16383, Math.floor(capacity / (heads * spt))))));
}

/** Write the descriptor back where it came from (embedded: padded into its reserved sectors). */
export async function writeDescriptor(home: DescriptorHome, d: Descriptor): Promise<void> {
  const text = Buffer.from(formatDescriptor(d), 'utf8');
  if (home.kind === 'embedded') {
    if (text.length > home.size) throw new VdiskError('E_UNSUPPORTED', `${home.storage.name}: descriptor of ${text.length} bytes does not fit its ${home.size}-byte area`);
    const buf = Buffer.alloc(home.size);
    text.copy(buf);
    await home.storage.write(buf, home.offset);
  } else {
    await home.storage.write(text, 0);
    if (home.storage.size > text.length) await home.storage.truncate(text.length);
  }
}

/** Read the descriptor of the file in `storage`: returns it with its home and, for a sparse file, its header. */
export async function readDescriptor(storage: Storage): Promise<{ descriptor: Descriptor; home: DescriptorHome; header?: SparseHeader }> {
  const name = storage.name;
  const head = Buffer.alloc(Math.min(HEADER_SIZE, storage.size));
  await storage.read(head, 0);
  const magic = head.length >= 4 ? head.readUInt32LE(0) : 0;
  if (magic === COWD_MAGIC) throw new VdiskError('E_UNSUPPORTED', `${name}: vmfsSparse (COWD) extents are not supported`);
  if (magic === SPARSE_MAGIC) {
    const header = await readSparseHeader(storage);
    // The descriptor is found through the first header even when the footer replaced it.
    const first = decodeSparseHeader(head, name);
    const offset = first.descriptorOffset * SECTOR;
    const size = first.descriptorSize * SECTOR;
    if (first.descriptorOffset === 0 || first.descriptorSize === 0) {
      // A bare extent (e.g. one piece of a split disk) opened by itself: one sparse extent.
      const descriptor: Descriptor = {
        version: 1,
        cid: CID_NONE,
        parentCID: CID_NONE,
        createType: 'monolithicSparse',
        extents: [{ access: 'RW', sectors: header.capacity, type: 'SPARSE', file: posix.basename(name), offset: 0 }],
        headerKeys: new Map(),
        ddb: new Map(),
      };
      return { descriptor, home: { kind: 'embedded', storage, offset: 0, size: 0 }, header };
    }
    if (size > MAX_DESCRIPTOR_BYTES) throw new VdiskError('E_CORRUPT', `${name}: descriptorSize ${first.descriptorSize} sectors is over ${MAX_DESCRIPTOR_BYTES} bytes`);
    if (offset + size > storage.size) throw new VdiskError('E_CORRUPT', `${name}: descriptorOffset/descriptorSize point past the end of the file`);
    const buf = Buffer.alloc(size);
    await storage.read(buf, offset);
    return { descriptor: parseDescriptor(buf.toString('latin1'), name), home: { kind: 'embedded', storage, offset, size }, header };
  }
  if (storage.size > MAX_DESCRIPTOR_BYTES) throw new VdiskError('E_CORRUPT', `${name}: a ${storage.size}-byte file is too large for a descriptor (over ${MAX_DESCRIPTOR_BYTES} bytes) and has no sparse header`);
  const buf = Buffer.alloc(storage.size);
  await storage.read(buf, 0);
  return { descriptor: parseDescriptor(buf.toString('latin1'), name), home: { kind: 'file', storage } };
}

/** Open the VMDK disk whose main file is `storage`. */
export async function openVmdk(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<VmdkImage> {
  const name = storage.name;
  const readOnly = opts.readOnly || storage.readOnly;
  const { descriptor: d, home, header } = await readDescriptor(storage);
  if (!READABLE_CREATE_TYPES.has(d.createType)) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: createType "${d.createType}" is not supported`);
  }
  const opened = new Map<string, Storage>();
  const sparseFiles = new Set<string>();
  const storages: Storage[] = [];
  const placed: Placed[] = [];
  let backing: DiskImage | undefined;
  try {
    let start = 0;
    for (const line of d.extents) {
      const len = line.sectors * SECTOR;
      if (start + len > MAX_OFFSET) throw new VdiskError('E_CORRUPT', `${name}: extents add up to more than ${MAX_OFFSET} bytes`);
      if (line.type === 'ZERO') {
        placed.push({ start, extent: new ZeroExtent(len) });
        start += len;
        continue;
      }
      if (line.type !== 'SPARSE' && line.type !== 'FLAT' && line.type !== 'VMFS') {
        throw new VdiskError('E_UNSUPPORTED', `${name}: extent type ${line.type} is not supported`);
      }
      const file = line.file!;
      const extReadOnly = readOnly || line.access !== 'RW';
      let s: Storage;
      let resolved = name;
      if (header) {
        if (d.extents.length !== 1 || line.type !== 'SPARSE') throw new VdiskError('E_CORRUPT', `${name}: an embedded descriptor must list exactly one SPARSE extent`);
        // The extent is this file: its name is only checked (an export or archive has no folder to resolve it in).
        safeMemberName(name, file.replace(/\\/g, '/'), 'extent file');
        s = storage;
      } else {
        resolved = location.resolve(file, 'extent file');
        const known = opened.get(resolved);
        // A sparse file holds one extent; naming it twice would also load its directory twice.
        if (known && (line.type === 'SPARSE' || sparseFiles.has(resolved))) throw new VdiskError('E_CORRUPT', `${name}: extent file "${file}" is listed twice`);
        if (line.type === 'SPARSE') sparseFiles.add(resolved);
        if (known) s = known;
        else {
          s = await location.open(resolved, { readOnly: extReadOnly });
          opened.set(resolved, s);
          storages.push(s);
        }
      }
      if (line.type === 'SPARSE') placed.push({ start, extent: await SparseExtent.open(s, len, extReadOnly, s === storage ? header : undefined), storage: s, file: resolved });
      else placed.push({ start, extent: new FlatExtent(s, len, line.offset * SECTOR, extReadOnly, line.type), storage: s, file: resolved });
      start += len;
    }
    let fullBacking: string | undefined;
    if (opts.parent) backing = opts.parent;
    else if (d.parentFileNameHint !== undefined && !opts.noBacking) {
      fullBacking = location.resolve(d.parentFileNameHint);
      backing = await opts.openParent(fullBacking);
    }
    const pending = pendingParentCid(d, name);
    if (backing instanceof VmdkImage && !opts.parent && backing.cid !== d.parentCID && backing.cid !== pending) {
      throw new VdiskError('E_CHAIN', `${name}: parentCID ${d.parentCID.toString(16)} does not match the parent's CID ${backing.cid.toString(16)} (the parent changed after this delta link was made; if its content is known to be right, "vdisk rebase -u -b PARENT" re-links it)`);
    }
    storages.push(storage);
    const image = new VmdkImage(d, home, placed, storages, readOnly, backing, fullBacking, location);
    // An interrupted commit left its note: opened for writing, the link is settled to the parent
    // as it is (other readers, qemu among them, then accept it again).
    if (pending !== undefined && !readOnly && backing instanceof VmdkImage && !opts.parent) await image.setBacking(backing, d.parentFileNameHint);
    return image;
  } catch (err) {
    for (const s of storages) await s.close().catch(() => undefined);
    if (backing && backing !== opts.parent) await backing.close().catch(() => undefined);
    throw err;
  }
}
