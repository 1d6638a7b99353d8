/**
 * Writing stream-optimized extents the way VMware does (spec: "Stream-Optimized
 * Compressed Sparse Extents"): a header whose gdOffset is GD_AT_END, the descriptor,
 * then each non-zero grain as a grain marker plus zlib data padded to a sector, a GT
 * marker and table after each table's grains, a GD marker and directory, a footer
 * marker and footer (a copy of the header with the real gdOffset), and an
 * end-of-stream marker. Every byte is written once, in order, so the target can be a
 * pipe-like Storage (a tar entry inside an OVA).
 *
 * Grains are compressed on worker threads (./compress.ts): several grains compress
 * in parallel while the next ones are read; grains that do not shrink are stored.
 */
import { posix } from 'node:path';
import type { BlockDevice, DiskImage, Extent, ImageInfo } from '../../device/block-device.js';
import { BlockDeviceBase } from '../../device/base.js';
import { isZero } from '../../device/zero.js';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { compressGrain } from '../compress.js';
import { type Descriptor, formatDescriptor, newDescriptor } from './descriptor.js';
import {
  COMPRESSION_DEFLATE,
  DEFAULT_GRAIN_SECTORS,
  DEFAULT_GTES_PER_GT,
  FLAG_COMPRESSED_GRAINS,
  FLAG_MARKERS,
  FLAG_VALID_NEWLINE_TEST,
  GRAIN_MARKER_HEADER,
  MARKER_EOS,
  MARKER_FOOTER,
  MARKER_GD,
  MARKER_GT,
  SECTOR,
  type SparseHeader,
  encodeEntries,
  encodeGrainMarker,
  encodeMetadataMarker,
  encodeSparseHeader,
  entrySectors,
} from './layout.js';


/** Sectors before the first grain in VMware's stream-optimized files (header + descriptor, padded). */
export const STREAM_OVERHEAD_SECTORS = 128;
/** Sectors reserved for the descriptor after the header. */
const STREAM_DESCRIPTOR_SECTORS = 20;

/** Options for stream-optimized output. */
export interface StreamOptimizedOptions {
  /** zlib level 0-9 (default 6, zlib's default, as VMware and qemu use). */
  compressionLevel?: number;
  /** Grains compressed at once (default 32); the worker count sets the real parallelism. */
  concurrency?: number;
}

/** Writes one stream-optimized extent to `out`, front to back. */
export class StreamOptimizedWriter {
  private readonly grainBytes = DEFAULT_GRAIN_SECTORS * SECTOR;
  private readonly gtes = DEFAULT_GTES_PER_GT;
  private readonly gd: Uint32Array;
  private gt: Uint32Array;
  private gtIndex = -1;
  private gtUsed = false;
  private pos = 0;
  private lastGrain = -1;
  private readonly pending: Array<{ g: number; data: Promise<Buffer> }> = [];
  private readonly level: number;
  private readonly concurrency: number;
  private started = false;
  private finished = false;
  /** Output not yet written (grains are small: one write per megabyte instead of per grain). */
  private readonly outBuf = Buffer.alloc(1024 * 1024);
  private outLen = 0;

  constructor(
    private readonly out: Storage,
    private readonly capacity: number,
    private readonly descriptor: Descriptor,
    opts: StreamOptimizedOptions = {},
  ) {
    if (capacity % SECTOR !== 0) throw new VdiskError('E_USAGE', `${out.name}: size ${capacity} is not a multiple of ${SECTOR}`);
    this.gd = new Uint32Array(Math.ceil(capacity / (this.grainBytes * this.gtes)));
    this.gt = new Uint32Array(this.gtes);
    this.level = opts.compressionLevel ?? 6;
    this.concurrency = Math.max(1, opts.concurrency ?? 32);
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    return this.pos;
  }

  /** Grain size in bytes. */
  get grain(): number {
    return this.grainBytes;
  }

  private header(gdSector: number | undefined): SparseHeader {
    return {
      version: 3,
      flags: FLAG_VALID_NEWLINE_TEST | FLAG_COMPRESSED_GRAINS | FLAG_MARKERS,
      capacity: this.capacity / SECTOR,
      grainSize: DEFAULT_GRAIN_SECTORS,
      descriptorOffset: 1,
      descriptorSize: STREAM_DESCRIPTOR_SECTORS,
      numGTEsPerGT: this.gtes,
      rgdOffset: 0,
      gdOffset: gdSector ?? 0,
      gdAtEnd: gdSector === undefined,
      overHead: STREAM_OVERHEAD_SECTORS,
      uncleanShutdown: false,
      compressAlgorithm: COMPRESSION_DEFLATE,
      newlinesIntact: true,
    };
  }

  /** Append `buf` to the stream; small pieces gather in {@link outBuf} and go out as one write. */
  private async emit(buf: Buffer): Promise<void> {
    if (this.outLen + buf.length > this.outBuf.length) await this.flushOut();
    if (buf.length >= this.outBuf.length) await this.out.write(buf, this.pos);
    else {
      buf.copy(this.outBuf, this.outLen);
      this.outLen += buf.length;
    }
    this.pos += buf.length;
  }

  /** Write out what {@link emit} has gathered. */
  private async flushOut(): Promise<void> {
    if (this.outLen === 0) return;
    await this.out.write(this.outBuf.subarray(0, this.outLen), this.pos - this.outLen);
    this.outLen = 0;
  }

  /** Write the header and descriptor (done by the first grain or by finish). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const head = Buffer.alloc(STREAM_OVERHEAD_SECTORS * SECTOR);
    encodeSparseHeader(this.header(undefined)).copy(head, 0);
    const text = Buffer.from(formatDescriptor(this.descriptor), 'utf8');
    if (text.length > STREAM_DESCRIPTOR_SECTORS * SECTOR) throw new VdiskError('E_USAGE', `${this.out.name}: descriptor is too long`);
    text.copy(head, SECTOR);
    await this.emit(head);
  }

  /**
   * Add grain `g` (its bytes, at most one grain; shorter means zero-padded). Grains
   * must come in increasing order; all-zero grains are left out. The bytes are copied
   * before this returns, so the caller may reuse its buffer.
   */
  async addGrain(g: number, data: Buffer): Promise<void> {
    if (this.finished) throw new VdiskError('E_CLOSED', `${this.out.name}: stream already finished`);
    if (g <= this.lastGrain) throw new VdiskError('E_UNSUPPORTED', `${this.out.name}: stream-optimized grains must be written in order (grain ${g} after ${this.lastGrain})`);
    if (g * this.grainBytes >= this.capacity) throw new VdiskError('E_BOUNDS', `${this.out.name}: grain ${g} is past the end of the disk`);
    this.lastGrain = g;
    await this.start();
    if (isZero(data)) return;
    let full = data;
    if (data.length < this.grainBytes) {
      full = Buffer.alloc(this.grainBytes);
      data.copy(full);
    }
    this.pending.push({ g, data: compressGrain(full, this.level) });
    while (this.pending.length >= this.concurrency) await this.drainOne();
  }

  private async drainOne(): Promise<void> {
    const next = this.pending.shift();
    if (!next) return;
    const z = await next.data;
    const t = Math.floor(next.g / this.gtes);
    if (t !== this.gtIndex) {
      await this.closeTable();
      this.gtIndex = t;
    }
    const total = Math.ceil((GRAIN_MARKER_HEADER + z.length) / SECTOR) * SECTOR;
    const buf = Buffer.alloc(total);
    encodeGrainMarker(next.g * DEFAULT_GRAIN_SECTORS, z.length).copy(buf, 0);
    z.copy(buf, GRAIN_MARKER_HEADER);
    this.gt[next.g % this.gtes] = this.pos / SECTOR;
    this.gtUsed = true;
    await this.emit(buf);
  }

  /** Write the GT marker and table for the grains just written (tables with no grains are left out). */
  private async closeTable(): Promise<void> {
    if (this.gtIndex >= 0 && this.gtUsed) {
      const table = encodeEntries(this.gt);
      await this.emit(encodeMetadataMarker(MARKER_GT, table.length / SECTOR));
      this.gd[this.gtIndex] = this.pos / SECTOR;
      await this.emit(table);
    }
    this.gt = new Uint32Array(this.gtes);
    this.gtUsed = false;
  }

  /** Write the remaining grains, the last GT, GD, footer and end-of-stream marker; returns the file size. */
  async finish(): Promise<number> {
    if (this.finished) return this.pos;
    await this.start();
    while (this.pending.length > 0) await this.drainOne();
    await this.closeTable();
    this.finished = true;
    const gdSectors = entrySectors(this.gd.length);
    await this.emit(encodeMetadataMarker(MARKER_GD, gdSectors));
    const gdSector = this.pos / SECTOR;
    if (this.gd.length > 0) await this.emit(encodeEntries(this.gd));
    await this.emit(encodeMetadataMarker(MARKER_FOOTER, 1));
    await this.emit(encodeSparseHeader(this.header(gdSector)));
    await this.emit(encodeMetadataMarker(MARKER_EOS, 0));
    await this.flushOut();
    return this.pos;
  }
}

/** Options for {@link writeStreamOptimized}. */
export interface WriteStreamOptimizedOptions extends StreamOptimizedOptions {
  /** ddb.adapterType: ide (default), lsilogic, buslogic, legacyESX. */
  adapterType?: string;
  /** ddb.virtualHWVersion (default 4). */
  hwVersion?: number;
  /** File name in the descriptor's extent line (default: the base name of `out.name`). */
  extentName?: string;
}

/** Largest read when walking a source device (16 grains). */
const READ_GRAINS = 16;

/**
 * Convert any BlockDevice into a VMware-layout streamOptimized VMDK written to `out`
 * (sequentially, from offset 0); returns the number of bytes written.
 */
export async function writeStreamOptimized(src: BlockDevice, out: Storage, opts: WriteStreamOptimizedOptions = {}): Promise<number> {
  if (src.size % SECTOR !== 0) throw new VdiskError('E_USAGE', `${out.name}: source size ${src.size} is not a multiple of ${SECTOR}`);
  const descriptor = newDescriptor({
    createType: 'streamOptimized',
    capacity: src.size / SECTOR,
    extents: [{ access: 'RW', sectors: src.size / SECTOR, type: 'SPARSE', file: opts.extentName ?? posix.basename(out.name.replace(/\\/g, '/')), offset: 0 }],
    adapterType: opts.adapterType,
    hwVersion: opts.hwVersion,
  });
  const w = new StreamOptimizedWriter(out, src.size, descriptor, opts);
  const G = w.grain;
  let next = 0; // first grain not yet handled
  const buf = Buffer.alloc(READ_GRAINS * G);
  for await (const ext of src.extents(0, src.size)) {
    if (ext.kind !== 'data') continue;
    let g = Math.max(next, Math.floor(ext.offset / G));
    const lastG = Math.floor((ext.offset + ext.length - 1) / G);
    while (g <= lastG) {
      const count = Math.min(READ_GRAINS, lastG - g + 1);
      const off = g * G;
      const len = Math.min(count * G, src.size - off);
      const piece = buf.subarray(0, len);
      await src.read(piece, off);
      for (let i = 0; i < count; i++) {
        const s = i * G;
        // No copy needed: addGrain hands the compressor its own copy before it returns.
        await w.addGrain(g + i, piece.subarray(s, Math.min(len, s + G)));
      }
      g += count;
    }
    next = lastG + 1;
  }
  return w.finish();
}

/**
 * A new streamOptimized image open for writing: a sequential writer. Writes must move
 * forward (within the grain being filled, or past it); reads are refused until the
 * image is closed and opened again.
 */
export class StreamOptimizedImage extends BlockDeviceBase implements DiskImage {
  readonly format = 'vmdk';
  readonly readOnly = false;
  readonly filename: string;
  private grainIndex = -1;
  private grainBuf: Buffer;

  constructor(
    private readonly storage: Storage,
    readonly size: number,
    private readonly writer: StreamOptimizedWriter,
    private readonly descriptor: Descriptor,
  ) {
    super();
    this.filename = storage.name;
    this.grainBuf = Buffer.alloc(writer.grain);
  }

  protected async readAt(): Promise<void> {
    throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a streamOptimized image being written cannot be read; close and reopen it`);
  }

  private async pushGrain(): Promise<void> {
    if (this.grainIndex >= 0) {
      const G = this.writer.grain;
      const len = Math.min(G, this.size - this.grainIndex * G);
      await this.writer.addGrain(this.grainIndex, this.grainBuf.subarray(0, len));
      this.grainBuf.fill(0);
    }
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    const G = this.writer.grain;
    for (let pos = offset; pos < offset + buf.length; ) {
      const g = Math.floor(pos / G);
      if (g < this.grainIndex) {
        throw new VdiskError('E_UNSUPPORTED', `${this.filename}: streamOptimized images are written in order; offset ${pos} is behind grain ${this.grainIndex}`);
      }
      if (g > this.grainIndex) {
        await this.pushGrain();
        this.grainIndex = g;
      }
      const n = Math.min((g + 1) * G - pos, offset + buf.length - pos);
      this.grainBuf.set(buf.subarray(pos - offset, pos - offset + n), pos - g * G);
      pos += n;
    }
  }

  protected override async writeZeroesAt(offset: number, length: number): Promise<void> {
    const G = this.writer.grain;
    const firstG = Math.floor(offset / G);
    if (firstG < this.grainIndex) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: streamOptimized images are written in order`);
    // Zeros inside the grain being filled clear it; whole grains after it are simply not written.
    if (firstG === this.grainIndex) {
      const end = Math.min(offset + length, (firstG + 1) * G);
      this.grainBuf.fill(0, offset - firstG * G, end - firstG * G);
    }
  }

  protected extentsIn(): AsyncIterable<Extent> {
    throw new VdiskError('E_UNSUPPORTED', `${this.filename}: a streamOptimized image being written cannot be mapped; close and reopen it`);
  }

  protected async flushAll(): Promise<void> {
    // Nothing is durable until the stream is finished: the footer comes last.
  }

  protected async closeAll(): Promise<void> {
    try {
      await this.pushGrain();
      await this.writer.finish();
      await this.storage.flush();
    } finally {
      await this.storage.close();
    }
  }

  async info(): Promise<ImageInfo> {
    return { clusterSize: this.writer.grain, formatSpecific: { 'create-type': 'streamOptimized', cid: this.descriptor.cid } };
  }

  async actualSize(): Promise<number | undefined> {
    return this.writer.bytesWritten;
  }
}
