/**
 * convert: copy the guest-visible contents of any image (through its whole
 * differencing chain) into a new flat image of any format. The destination is built
 * in a temporary folder next to it and renamed into place at the end, so a failed or
 * interrupted convert leaves no half image behind.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { BlockDevice, DiskImage, Extent } from '../device/block-device.js';
import { forEachZeroRun } from '../device/zero.js';
import { VdiskError } from '../errors.js';
import { findDriver, open } from '../formats/registry.js';
import type { Leftover } from '../storage/lock.js';
import type { ImageLocation } from '../storage/location.js';
import { stageNewFile } from '../storage/staging.js';
import { filterStorage } from '../storage/filter.js';
import { isNbdUri } from '../storage/nbd/uri.js';
import { isLvAddress, parseLvAddress } from '../storage/address.js';
import { LogicalVolume } from '../pool/lv.js';
import { checkName } from '../pool/metadata.js';
import { Pool } from '../pool/pool.js';
import { parseSize } from '../util/size.js';
import type { Storage } from '../storage/storage.js';
import { checkOptionKeys } from '../util/options.js';

/** Default for {@link ConvertOptions.sparseSize}: zero runs of a page or more stay unallocated (as qemu-img). */
export const DEFAULT_SPARSE_SIZE = 4096;

/** Largest `-S` accepted; the copy buffer grows to it, so it bounds memory. */
export const MAX_SPARSE_SIZE = 64 * 1024 * 1024;

/**
 * Bytes copied per step (or `-S` when larger): 2 MiB, the default block of VHD (and
 * twice VDI's), so a sparse destination allocates each block in one write instead of
 * revisiting it (2 GiB VMDK -> VHD 0.99 s -> 0.88 s, VHD -> VMDK 1.05 s -> 0.71 s
 * against 1 MiB steps).
 */
const COPY_CHUNK = 2 * 1024 * 1024;

/**
 * Reads in flight ahead of the writer: as many as qemu-img convert keeps (8), which
 * keeps the disk busy when the source is not in the page cache, but no more than
 * {@link READ_AHEAD_BYTES} in all.
 */
const READ_AHEAD = 8;
const READ_AHEAD_BYTES = 32 * 1024 * 1024;

/** Options for {@link convert}. */
export interface ConvertOptions {
  /** Source format (`-f`) when the source is an address; detected by magic when absent. */
  sourceFormat?: string;
  /** Output format name or alias (`-O`). */
  format: string;
  /** Output format options (`-o subformat=...`), checked against the driver's list. */
  options?: Record<string, string>;
  /**
   * Zero runs at least this long (and aligned to it) are left unallocated (`-S`);
   * 0 allocates every byte, holes included. Default {@link DEFAULT_SPARSE_SIZE}.
   */
  sparseSize?: number;
  /** Replace an existing destination. */
  force?: boolean;
  /** Called as the copy advances, with bytes of the virtual disk done and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the copy (the destination is removed) when aborted. */
  signal?: AbortSignal;
  /** Folders besides the images' own that references inside them may lead into. */
  allowPaths?: readonly string[];
  /**
   * `writeback` (default): flush the new image before renaming it into place, so a
   * crash never leaves a DST whose bytes did not reach the disk. `unsafe`: the new
   * image's files skip their flushes (qemu-img convert's default cache mode).
   */
  cache?: 'writeback' | 'unsafe';
  /**
   * Compress the output (`-c`, as qemu-img): qcow2 writes whole clusters as
   * compressed clusters, vmdk means subformat=streamOptimized; other formats refuse it.
   */
  compress?: boolean;
}

/**
 * The output options `-c` implies: streamOptimized for vmdk, nothing extra for
 * qcow2 (its driver compresses); E_USAGE for any other format.
 */
function compressedOptions(format: string, options: Record<string, string>): Record<string, string> {
  if (format === 'qcow2') return options;
  if (format === 'vmdk') {
    if (options.subformat !== undefined && options.subformat !== 'streamOptimized') {
      throw new VdiskError('E_USAGE', `-c with -O vmdk writes subformat=streamOptimized, not ${options.subformat}`);
    }
    return { ...options, subformat: 'streamOptimized' };
  }
  throw new VdiskError('E_USAGE', `-c: output format ${format} has no compressed form (qcow2 and vmdk do)`);
}

/** What a finished convert did. */
export interface ConvertResult {
  /** The destination's main file. */
  path: string;
  /** Every file written (main file first), as renamed into place. */
  files: string[];
  /** Driver name of the destination. */
  format: string;
  /** Virtual size of the destination. */
  size: number;
  /** Bytes of guest data written (zero runs skipped are not counted). */
  bytesWritten: number;
  /** What a killed earlier run left beside the destination (dead pid), removed before this one. */
  leftovers: Leftover[];
}

/**
 * Convert `source` (an address such as a path, or an open device: an image, a chain,
 * a pool volume) into a new image at `destination`, read through its whole chain.
 * A source given as an address is opened read-only and closed again; an open device
 * is left open.
 *
 * @example
 * ```ts
 * import { convert, create } from 'vdisk';
 *
 * const disk = await create('disk.raw', { format: 'raw', size: '4M' });
 * await disk.write(Buffer.alloc(4096, 0x5a), 0);
 * await disk.close();
 * const result = await convert('disk.raw', 'disk.vhd', { format: 'vhd' });
 * console.log(result.format, result.size); // vhd 4194304
 * ```
 */
export async function convert(source: string | BlockDevice, destination: string, opts: ConvertOptions): Promise<ConvertResult> {
  if (typeof source !== 'string') return convertDevice(source, destination, opts);
  // Validate what needs no I/O first, so a typo costs nothing.
  if (isLvOutput(opts.format, destination)) {
    if (opts.compress) throw new VdiskError('E_USAGE', '-c: a logical volume holds a disk\'s bytes, uncompressed');
    checkOptionKeys(opts.options ?? {}, LV_OPTIONS, 'output format lvm');
  } else {
    const driver = findDriver(opts.format);
    checkOptionKeys(opts.options ?? {}, driver.createOptions, `output format ${driver.name}`);
    if (opts.compress) compressedOptions(driver.name, opts.options ?? {});
  }
  const device = await open(source, { format: opts.sourceFormat, readOnly: true, allowPaths: opts.allowPaths });
  try {
    return await convertDevice(device, destination, opts);
  } finally {
    await device.close();
  }
}

/** Files of `image` and its parents, for the "onto the source itself" check. */
function chainFiles(image: BlockDevice): string[] {
  const out: string[] = [];
  for (let p = image as Partial<DiskImage> | undefined; p; p = p.backing) if (p.filename) out.push(p.filename);
  return out;
}

/** Convert an open device into a new image at `dst`; the source is not closed. */
async function convertDevice(source: BlockDevice, dst: string, opts: ConvertOptions): Promise<ConvertResult> {
  const sparse = opts.sparseSize ?? DEFAULT_SPARSE_SIZE;
  if (!Number.isSafeInteger(sparse) || sparse < 0 || sparse % 512 !== 0 || sparse > MAX_SPARSE_SIZE) {
    throw new VdiskError('E_USAGE', `-S ${sparse}: the sparse size must be 0 or a multiple of 512 bytes up to ${MAX_SPARSE_SIZE}`);
  }
  if (isLvOutput(opts.format, dst)) {
    if (opts.compress) throw new VdiskError('E_USAGE', '-c: a logical volume holds a disk\'s bytes, uncompressed');
    return convertIntoNewLv(source, dst, sparse, opts);
  }
  const driver = findDriver(opts.format);
  let options = opts.options ?? {};
  checkOptionKeys(options, driver.createOptions, `output format ${driver.name}`);
  if (opts.compress) {
    if (isNbdUri(dst)) throw new VdiskError('E_USAGE', '-c: an NBD export holds a disk\'s bytes, uncompressed');
    options = compressedOptions(driver.name, options);
  }

  if (isNbdUri(dst)) return convertIntoExport(source, dst, driver.name, sparse, opts);
  // Formats other than raw store whole sectors; raw keeps an odd source size exactly.
  const size = driver.name === 'raw' ? source.size : Math.ceil(source.size / 512) * 512;
  const unsafe = opts.cache === 'unsafe';
  const stage = await stageNewFile(dst, { force: opts.force, allowPaths: opts.allowPaths, unsafe, notOneOf: chainFiles(source) });
  try {
    const location = unsafe ? new UnsyncedLocation(stage.location) : stage.location;
    const out = await driver.create(location, { size, options, compress: opts.compress === true && driver.name === 'qcow2' });
    let bytesWritten: number;
    try {
      if (out.size < source.size) {
        throw new VdiskError('E_UNSUPPORTED', `${dst}: format ${driver.name} made a ${out.size}-byte disk, smaller than the ${source.size}-byte source`);
      }
      bytesWritten = await copyContents(source, out, sparse, opts);
      await out.flush();
    } catch (err) {
      // The first failure is the one to report; closing a broken image may fail too.
      await out.close().catch(() => undefined);
      throw err;
    }
    await out.close();
    const files = await stage.commit();
    return { path: dst, files, format: driver.name, size: out.size, bytesWritten, leftovers: stage.leftovers };
  } catch (err) {
    // Name the destination, not the hidden folder it was being built in.
    throw stage.rename(err);
  } finally {
    await stage.close();
  }
}

/**
 * Convert into an NBD export that already exists (as `qemu-img convert -n` or
 * `nbdcopy` do): the export is a disk's bytes, so the output is raw; it must be at
 * least as large as the source, and what the source does not hold is zeroed there
 * (WRITE_ZEROES), since the export's old contents would show through otherwise.
 * Bytes past the source's end are left as they are.
 */
async function convertIntoExport(source: BlockDevice, dst: string, format: string, sparse: number, opts: ConvertOptions): Promise<ConvertResult> {
  if (format !== 'raw') throw new VdiskError('E_UNSUPPORTED', `${dst}: an NBD export holds a disk's bytes, so only -O raw converts into it (not ${format}); serve an image of that format instead`);
  const out = await open(dst, { format: 'raw', readOnly: false });
  try {
    if (out.size < source.size) throw new VdiskError('E_BOUNDS', `${dst}: the export is ${out.size} bytes, smaller than the ${source.size}-byte source`);
    const bytesWritten = await copyContents(source, out, sparse, opts, true);
    await out.flush();
    return { path: dst, files: [dst], format: 'raw', size: out.size, bytesWritten, leftovers: [] };
  } finally {
    await out.close();
  }
}

/** `-o` keys of `-O lvm`: how the new LV is laid out (as lvcreate's -i and -I). */
const LV_OPTIONS: Readonly<Record<string, string>> = {
  stripes: 'stripe the LV over this many members (lvcreate -i)',
  stripe_size: 'bytes per stripe, a power of two from 4K to the extent size (lvcreate -I); 64K by default',
};

/**
 * True when the destination is a new logical volume: `-O lvm` and an `lvm:` address
 * go together, and either without the other is a usage error.
 */
function isLvOutput(format: string, dst: string): boolean {
  const lvFormat = format === 'lvm';
  if (lvFormat !== isLvAddress(dst)) {
    throw new VdiskError('E_USAGE', lvFormat ? `${dst}: -O lvm writes a new logical volume, addressed as lvm:[DIR/]VG/LV` : `${dst}: a logical volume is written with -O lvm (it holds a disk's bytes, not a ${format} file)`);
  }
  return lvFormat;
}

/** Name of the LV a convert builds before renaming it to `lv`. */
function buildLvName(lv: string): string {
  return `${lv.slice(0, 100)}.vdisk-convert`;
}

/**
 * Convert into a new LV of an existing pool, the pool's way of "temporary name, then
 * rename": the copy is built in an LV named `LV.vdisk-convert` (sized to the source,
 * rounded up to whole extents, striped with `-o stripes=N,stripe_size=S`), flushed,
 * and only then renamed to `LV` in one metadata commit (with `force`, removing an old
 * `LV` in that same commit). A crash before the rename leaves `LV` untouched and the
 * build LV behind; the next convert into that name removes it and says so. Extents
 * may hold a removed LV's old bytes, so everything the source does not hold (holes,
 * zero runs, the tail after an odd size) is zeroed rather than skipped.
 */
async function convertIntoNewLv(source: BlockDevice, dst: string, sparse: number, opts: ConvertOptions): Promise<ConvertResult> {
  const options = opts.options ?? {};
  checkOptionKeys(options, LV_OPTIONS, 'output format lvm');
  const stripes = options.stripes === undefined ? undefined : Number(options.stripes);
  if (stripes !== undefined && !/^\d+$/.test(options.stripes!)) throw new VdiskError('E_USAGE', `-o stripes=${options.stripes}: a count`);
  const stripeSize = options.stripe_size === undefined ? undefined : parseSize(options.stripe_size, '-o stripe_size');
  const a = parseLvAddress(dst);
  if (source instanceof LogicalVolume && source.filename === `lvm:${a.vg}/${a.lv}`) throw new VdiskError('E_USAGE', `${dst}: is the source itself; convert into a new LV`);
  const pool = await Pool.open(a.vg, { dir: a.dir });
  try {
    checkName(a.lv, 'LV');
    const exists = pool.vg.lvs.some((l) => l.name === a.lv);
    if (exists && !opts.force) throw new VdiskError('E_EXISTS', `${dst}: VG ${a.vg} already has an LV ${a.lv} (use --force to replace it)`);
    const build = buildLvName(a.lv);
    const leftovers: Leftover[] = [];
    if (pool.vg.lvs.some((l) => l.name === build)) {
      // The pool's members are write-locked by this process, so no live convert owns it.
      await pool.lvRemove(build);
      // pid 0: no process recorded one (the pool lock says none is live).
      leftovers.push({ path: `lvm:${a.dir === '.' ? '' : `${a.dir}/`}${a.vg}/${build}`, pid: 0 });
    }
    await pool.lvCreate(build, source.size, { stripes, stripeSize });
    let bytesWritten: number;
    let size: number;
    try {
      const out = pool.openLv(build);
      try {
        size = out.size;
        bytesWritten = await copyContents(source, out, sparse, opts, true);
        if (size > source.size) await out.writeZeroes(source.size, size - source.size);
        await out.flush();
      } finally {
        await out.close();
      }
      await pool.lvRename(build, a.lv, { replace: opts.force });
    } catch (err) {
      await pool.lvRemove(build).catch(() => undefined);
      throw err;
    }
    return { path: dst, files: pool.vg.pvs.map((p) => pool.member(p.key).path), format: 'lvm', size, bytesWritten, leftovers };
  } finally {
    await pool.close();
  }
}

/** Storage whose flush does nothing (qemu-img's cache=unsafe); everything else passes through. */
function withoutSync(s: Storage): Storage {
  return filterStorage(s, { flush: async () => undefined });
}

/** A location whose files skip their durability calls: where `cache: 'unsafe'` builds the new image. */
class UnsyncedLocation implements ImageLocation {
  constructor(private readonly inner: ImageLocation) {}
  get name(): string {
    return this.inner.name;
  }
  resolve(ref: string, what?: string): string {
    return this.inner.resolve(ref, what);
  }
  relativeName(name: string): string {
    return this.inner.relativeName(name);
  }
  async open(name: string, opts?: { readOnly?: boolean }): Promise<Storage> {
    return withoutSync(await this.inner.open(name, opts));
  }
  async create(name: string): Promise<Storage> {
    return withoutSync(await this.inner.create(name));
  }
  exists(name: string): Promise<boolean> {
    return this.inner.exists(name);
  }
  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  siblings(): Promise<string[]> {
    return this.inner.siblings();
  }
  at(name: string): ImageLocation {
    return new UnsyncedLocation(this.inner.at(name));
  }
}

/** One piece of the copy plan: a chunk to read, or a run the destination leaves unallocated. */
interface Piece {
  offset: number;
  length: number;
  read: boolean;
}

/** Split the source's extents into chunks of at most `chunk` bytes; holes and zero extents need no read unless `allocateAll`. */
async function* plan(source: BlockDevice, chunk: number, allocateAll: boolean): AsyncGenerator<Piece> {
  // A source whose extents() would read everything (raw) is read once, here: the
  // zero scan of each chunk finds what extents() would have found.
  const extents: Iterable<Extent> | AsyncIterable<Extent> = source.extentsReadContent ? [{ offset: 0, length: source.size, kind: 'data', depth: 0 }] : source.extents(0, source.size);
  for await (const e of extents) {
    if (e.kind !== 'data' && !allocateAll) {
      yield { offset: e.offset, length: e.length, read: false };
      continue;
    }
    for (let off = e.offset; off < e.offset + e.length; off += chunk) {
      yield { offset: off, length: Math.min(chunk, e.offset + e.length - off), read: true };
    }
  }
}

/**
 * Copy every byte of `source` into the fresh (all-zero) `out`: holes are skipped
 * without reading, zero runs of at least `sparse` bytes are not written, and reads
 * run ahead of the (strictly sequential) writes. Returns bytes written.
 */
async function copyContents(source: BlockDevice, out: BlockDevice, sparse: number, opts: ConvertOptions, zeroSkipped = false): Promise<number> {
  const chunk = Math.max(COPY_CHUNK, sparse);
  const ahead = Math.max(1, Math.min(READ_AHEAD, Math.floor(READ_AHEAD_BYTES / chunk)));
  const buffers = Array.from({ length: ahead + 1 }, () => Buffer.alloc(chunk));
  let next = 0;
  const pieces = plan(source, chunk, sparse === 0);
  let done = 0;
  let written = 0;

  /** The next piece of the plan, with the buffer its read goes into. */
  const pull = async (): Promise<{ piece: Piece; data?: Buffer } | undefined> => {
    const r = await pieces.next();
    if (r.done) return undefined;
    const piece = r.value;
    if (!piece.read) return { piece };
    return { piece, data: buffers[next++ % buffers.length]!.subarray(0, piece.length) };
  };

  // A queue of reads in flight: the generator is pulled in order, one step at a time,
  // and the reads themselves overlap (big file reads run on the thread pool).
  const queue: Array<Promise<{ piece: Piece; data?: Buffer } | undefined>> = [];
  let tail: Promise<unknown> = Promise.resolve();
  const enqueue = (): void => {
    const p = tail.then(pull);
    tail = p.catch(() => undefined);
    const q = p.then(async (item) => {
      if (item?.data) await source.read(item.data, item.piece.offset);
      return item;
    });
    // Handled here too: a read that fails while earlier pieces are still being written
    // must not count as an unhandled rejection; the loop still gets the error.
    q.catch(() => undefined);
    queue.push(q);
  };
  for (let i = 0; i < ahead; i++) enqueue();
  try {
    for (;;) {
      // File I/O is synchronous underneath, so give the event loop a turn: signals,
      // progress timers and other clients get to run between pieces.
      await nextTurn();
      if (opts.signal?.aborted) throw new VdiskError('E_IO', 'convert interrupted');
      const item = await queue.shift();
      if (!item) break;
      enqueue();
      const { piece, data } = item;
      if (!data && zeroSkipped) await out.writeZeroes(piece.offset, piece.length);
      if (data) {
        if (sparse > 0) {
          const runs: Array<[number, number, boolean]> = [];
          forEachZeroRun(data, sparse, (s, e, zero) => {
            if (!zero || zeroSkipped) runs.push([s, e, zero]);
          });
          for (const [s, e, zero] of runs) {
            if (zero) {
              await out.writeZeroes(piece.offset + s, e - s);
              continue;
            }
            await out.write(data.subarray(s, e), piece.offset + s);
            written += e - s;
          }
        } else {
          await out.write(data, piece.offset);
          written += data.length;
        }
      }
      done += piece.length;
      opts.onProgress?.(done, source.size);
    }
  } finally {
    // Let reads still in flight settle before the buffers go away.
    await Promise.allSettled(queue);
    await pieces.return(undefined);
  }
  return written;
}
