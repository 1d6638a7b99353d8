/** Zero detection at memory speed: native compares against a shared zero page. */

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** A read-only view of `length` (<= 1 MiB) zero bytes; do not write into it. */
export function zeroBuffer(length: number): Buffer {
  if (length <= ZERO_CHUNK.length) return ZERO_CHUNK.subarray(0, length);
  return Buffer.alloc(length);
}

/** True when every byte of `buf` is zero. */
export function isZero(buf: Uint8Array): boolean {
  // Most data is not zero at its ends: answer without making views (a convert tests every 4 KiB).
  if (buf.length > 0 && (buf[0] !== 0 || buf[buf.length - 1] !== 0)) return false;
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off < b.length; off += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, b.length - off);
    // Buffer.compare over equal-length views is a memcmp in native code.
    if (Buffer.compare(b.subarray(off, off + n), ZERO_CHUNK.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/**
 * Split `buf` into runs of zero and non-zero `granularity`-sized pieces. Calls
 * `fn(start, end, zero)` for each maximal run, in order.
 */
export function forEachZeroRun(buf: Uint8Array, granularity: number, fn: (start: number, end: number, zero: boolean) => void): void {
  let runStart = 0;
  let runZero: boolean | undefined;
  for (let off = 0; off < buf.length; off += granularity) {
    const end = Math.min(buf.length, off + granularity);
    // The end bytes settle most non-zero pieces without a view (see isZero).
    const z = buf[off] === 0 && buf[end - 1] === 0 && isZero(buf.subarray(off, end));
    if (runZero === undefined) runZero = z;
    else if (z !== runZero) {
      fn(runStart, off, runZero);
      runStart = off;
      runZero = z;
    }
  }
  if (runZero !== undefined) fn(runStart, buf.length, runZero);
}
