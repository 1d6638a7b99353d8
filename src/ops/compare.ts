/**
 * compare: do two disks (of any formats) hold the same guest content? Ranges that
 * are holes or zero extents on both sides are not read; everything else is read in
 * large chunks and compared byte by byte, like `qemu-img compare`.
 */
import type { BlockDevice, Extent } from '../device/block-device.js';
import { isZero } from '../device/zero.js';
import { VdiskError } from '../errors.js';
import { open } from '../formats/registry.js';
import { IO_CHUNK } from '../storage/storage.js';

/** Options for {@link compare}. */
export interface CompareOptions {
  /** Strict (`-s`): a size difference or a different allocation state is a difference too. */
  strict?: boolean;
  /** Called as the comparison advances. */
  onProgress?: (done: number, total: number) => void;
  /** Format of `a` when it is an address (detected when absent). */
  format?: string;
  /** Format of `b` when it is an address (detected when absent). */
  secondFormat?: string;
  /** Folders besides the images' own that references inside them may lead into. */
  allowPaths?: readonly string[];
}

/** What {@link compare} found. */
export interface CompareResult {
  /** True when the guest sees the same bytes on both. */
  identical: boolean;
  /** First differing byte offset (exact, not rounded to a sector), when they differ. */
  offset?: number;
  /** Why they differ: `content`, `size` (strict mode), `allocation` (strict mode). */
  reason?: 'content' | 'size' | 'allocation';
  /** True when the sizes differ (without strict mode the extra part must read as zeros). */
  sizeMismatch: boolean;
}

/** Walks a device's extents from a position, handing out pieces of them. */
class ExtentCursor {
  private readonly it: AsyncIterator<Extent>;
  private cur: Extent | undefined;
  private readonly name: string;

  constructor(dev: BlockDevice, offset: number, length: number) {
    this.name = (dev as { filename?: string }).filename ?? 'disk';
    this.it = dev.extents(offset, length)[Symbol.asyncIterator]();
  }

  /** The extent covering `pos` (extents come in order and cover the range exactly). */
  async at(pos: number): Promise<Extent> {
    while (!this.cur || this.cur.offset + this.cur.length <= pos) {
      const r = await this.it.next();
      if (r.done) throw new VdiskError('E_CORRUPT', `${this.name}: extents end before offset ${pos}`);
      this.cur = r.value;
    }
    return this.cur;
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** Index of the first byte where `a` and `b` differ, or -1. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  // Narrow down by halves with native compares, then finish byte by byte.
  let lo = 0;
  let hi = a.length;
  while (hi - lo > 64) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (a.subarray(lo, mid).equals(b.subarray(lo, mid))) lo = mid;
    else hi = mid;
  }
  for (let i = lo; i < hi; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Index of the first non-zero byte of `a`, or -1. */
function firstNonZero(a: Buffer): number {
  if (isZero(a)) return -1;
  let lo = 0;
  let hi = a.length;
  while (hi - lo > 64) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (isZero(a.subarray(lo, mid))) lo = mid;
    else hi = mid;
  }
  for (let i = lo; i < hi; i++) if (a[i] !== 0) return i;
  return -1;
}

/**
 * Compare the guest content of two disks of any formats, as `qemu-img compare`: each
 * an address (opened read-only and closed again) or an open device (left open).
 *
 * @example
 * ```ts
 * import { compare, convert, create } from 'vdisk';
 *
 * const disk = await create('disk.raw', { format: 'raw', size: '4M' });
 * await disk.write(Buffer.alloc(512, 1), 8192);
 * await disk.close();
 * await convert('disk.raw', 'disk.vmdk', { format: 'vmdk' });
 * const same = await compare('disk.raw', 'disk.vmdk');
 * console.log(same.identical); // true
 * ```
 */
export async function compare(a: string | BlockDevice, b: string | BlockDevice, opts: CompareOptions = {}): Promise<CompareResult> {
  const devA = typeof a === 'string' ? await open(a, { format: opts.format, readOnly: true, allowPaths: opts.allowPaths }) : a;
  try {
    const devB = typeof b === 'string' ? await open(b, { format: opts.secondFormat, readOnly: true, allowPaths: opts.allowPaths }) : b;
    try {
      return await compareDevices(devA, devB, opts);
    } finally {
      if (devB !== b) await devB.close();
    }
  } finally {
    if (devA !== a) await devA.close();
  }
}

async function compareDevices(a: BlockDevice, b: BlockDevice, opts: CompareOptions): Promise<CompareResult> {
  const common = Math.min(a.size, b.size);
  const sizeMismatch = a.size !== b.size;
  if (sizeMismatch && opts.strict) return { identical: false, offset: common, reason: 'size', sizeMismatch };
  const total = Math.max(a.size, b.size);
  const bufA = Buffer.alloc(IO_CHUNK);
  const bufB = Buffer.alloc(IO_CHUNK);

  // Pending range that must be read on both sides, grown over neighbouring segments.
  let pendStart = 0;
  let pendLen = 0;
  const flushPending = async (): Promise<number> => {
    if (pendLen === 0) return -1;
    const pa = bufA.subarray(0, pendLen);
    const pb = bufB.subarray(0, pendLen);
    await Promise.all([a.read(pa, pendStart), b.read(pb, pendStart)]);
    const d = firstDifference(pa, pb);
    pendLen = 0;
    return d < 0 ? -1 : pendStart + d;
  };

  if (common > 0) {
    const ca = new ExtentCursor(a, 0, common);
    const cb = new ExtentCursor(b, 0, common);
    try {
      for (let pos = 0; pos < common; ) {
        const [ea, eb] = await Promise.all([ca.at(pos), cb.at(pos)]);
        const end = Math.min(ea.offset + ea.length, eb.offset + eb.length);
        if (opts.strict && (ea.kind === 'hole') !== (eb.kind === 'hole')) {
          const d = await flushPending();
          if (d >= 0) return { identical: false, offset: d, reason: 'content', sizeMismatch };
          return { identical: false, offset: pos, reason: 'allocation', sizeMismatch };
        }
        if (ea.kind === 'data' || eb.kind === 'data') {
          // Read this segment, in chunks, through the pending buffer.
          for (let p = pos; p < end; ) {
            if (pendLen > 0 && (pendStart + pendLen !== p || pendLen === IO_CHUNK)) {
              const d = await flushPending();
              if (d >= 0) return { identical: false, offset: d, reason: 'content', sizeMismatch };
            }
            if (pendLen === 0) pendStart = p;
            const n = Math.min(end - p, IO_CHUNK - pendLen);
            pendLen += n;
            p += n;
          }
        }
        pos = end;
        opts.onProgress?.(pos, total);
      }
      const d = await flushPending();
      if (d >= 0) return { identical: false, offset: d, reason: 'content', sizeMismatch };
    } finally {
      await Promise.all([ca.close(), cb.close()]);
    }
  }

  // The longer disk's tail must read as zeros (qemu-img compare without -s does the same).
  if (sizeMismatch) {
    const longer = a.size > b.size ? a : b;
    for await (const e of longer.extents(common, longer.size - common)) {
      if (e.kind !== 'data') continue;
      for (let p = e.offset; p < e.offset + e.length; p += IO_CHUNK) {
        const piece = bufA.subarray(0, Math.min(IO_CHUNK, e.offset + e.length - p));
        await longer.read(piece, p);
        const z = firstNonZero(piece);
        if (z >= 0) return { identical: false, offset: p + z, reason: 'content', sizeMismatch };
      }
      opts.onProgress?.(e.offset + e.length, total);
    }
  }
  opts.onProgress?.(total, total);
  return { identical: true, sizeMismatch };
}
