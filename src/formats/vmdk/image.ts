/**
 * A VMDK disk: a descriptor (separate text file or embedded in a sparse extent) and
 * the extents it lists, end to end, plus the parent of a delta link.
 */
import { randomInt } from 'node:crypto';
import { posix } from 'node:path';
import type { DiskImage, Extent, ImageInfo } from '../../device/block-device.js';
import { BlockDeviceBase, IO_CHUNK } from '../../device/base.js';
import { zeroBuffer } from '../../device/zero.js';
import { VdiskError } from '../../errors.js';
import { MAX_OFFSET } from '../../storage/checks.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import { CID_NONE, type Descriptor, MAX_DESCRIPTOR_BYTES, formatDescriptor, parseDescriptor } from './descriptor.js';
import { FlatExtent, type ReadBelow, type VmdkExtent, ZeroExtent } from './extent.js';
import { COWD_MAGIC, FLAG_VALID_NEWLINE_TEST, HEADER_SIZE, SECTOR, SPARSE_MAGIC, type SparseHeader, decodeSparseHeader } from './header.js';
import { SparseExtent, readSparseHeader } from './sparse.js';

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

/** One extent placed in the disk. */
interface Placed {
  start: number;
  extent: VmdkExtent;
}

/** Refuse extent names that are absolute or climb out with `..` (the CVE-2022-47951 class). */
export function checkExtentName(image: string, file: string): void {
  const norm = file.replace(/\\/g, '/');
  if (norm === '' || norm.startsWith('/') || /^[A-Za-z]:/.test(norm) || norm.split('/').includes('..') || norm.includes('\0')) {
    throw new VdiskError('E_PATH', `${image}: extent file "${file}" is absolute or leaves the image's folder`);
  }
}

/** An opened VMDK disk. */
export class VmdkImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'vmdk';
  readonly filename: string;
  readonly readOnly: boolean;
  readonly size: number;
  private cidUpdated = false;

  constructor(
    readonly descriptor: Descriptor,
    private readonly home: DescriptorHome,
    private readonly placed: Placed[],
    private readonly storages: Storage[],
    readOnly: boolean,
    readonly backing: DiskImage | undefined,
    private readonly fullBackingFilename: string | undefined,
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
    return async (buf, offset) => {
      const abs = start + offset;
      const parent = this.backing;
      if (!parent || abs >= parent.size) {
        buf.fill(0);
        return;
      }
      const n = Math.min(buf.length, parent.size - abs);
      await parent.read(buf.subarray(0, n), abs);
      if (n < buf.length) buf.fill(0, n);
    };
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

  /** On the first write, give the disk a new content ID (spec: CID changes when the contents do). */
  private async updateCid(): Promise<void> {
    if (this.cidUpdated) return;
    let cid = randomInt(0, 0xffffffff);
    if (cid === this.descriptor.cid || cid === CID_NONE) cid = (cid + 1) % 0xffffffff;
    this.descriptor.cid = cid;
    // A bare sparse extent opened by itself has no descriptor to update.
    if (this.home.kind === 'file' || this.home.size > 0) await writeDescriptor(this.home, this.descriptor);
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
      checkExtentName(name, file);
      const extReadOnly = readOnly || line.access !== 'RW';
      let s: Storage;
      if (header) {
        if (d.extents.length !== 1 || line.type !== 'SPARSE') throw new VdiskError('E_CORRUPT', `${name}: an embedded descriptor must list exactly one SPARSE extent`);
        s = storage;
      } else {
        const resolved = location.resolve(file);
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
      if (line.type === 'SPARSE') placed.push({ start, extent: await SparseExtent.open(s, len, extReadOnly, s === storage ? header : undefined) });
      else placed.push({ start, extent: new FlatExtent(s, len, line.offset * SECTOR, extReadOnly, line.type) });
      start += len;
    }
    let fullBacking: string | undefined;
    if (opts.parent) backing = opts.parent;
    else if (d.parentFileNameHint !== undefined && !opts.noBacking) {
      fullBacking = location.resolve(d.parentFileNameHint);
      backing = await opts.openParent(fullBacking);
    }
    if (backing instanceof VmdkImage && !opts.parent && backing.cid !== d.parentCID) {
      throw new VdiskError('E_CHAIN', `${name}: parentCID ${d.parentCID.toString(16)} does not match the parent's CID ${backing.cid.toString(16)} (the parent changed after this delta link was made)`);
    }
    storages.push(storage);
    return new VmdkImage(d, home, placed, storages, readOnly, backing, fullBacking);
  } catch (err) {
    for (const s of storages) await s.close().catch(() => undefined);
    if (backing && backing !== opts.parent) await backing.close().catch(() => undefined);
    throw err;
  }
}
