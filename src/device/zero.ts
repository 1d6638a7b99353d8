/** Zero detection at memory speed: native compares against a shared zero page. */

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** A read-only view of `length` (<= 1 MiB) zero bytes; do not write into it. */
export function zeroBuffer(length: number): Buffer {
  if (length <= ZERO_CHUNK.length) return ZERO_CHUNK.subarray(0, length);
  return Buffer.alloc(length);
}

/** True when bytes `start` to `end` of `buf` are all zero. */
function zeroRange(buf: Uint8Array, start: number, end: number): boolean {
  if (start >= end) return true;
  // Most data is not zero at its ends: answer without a compare (a convert tests every 4 KiB).
  if (buf[start] !== 0 || buf[end - 1] !== 0) return false;
  for (let off = start; off < end; off += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, end - off);
    // Buffer#compare over ranges is a memcmp in native code, and makes no views.
    if (ZERO_CHUNK.compare(buf, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

/** True when every byte of `buf` is zero. */
export function isZero(buf: Uint8Array): boolean {
  return zeroRange(buf, 0, buf.length);
}

/**
 * Split `buf` into runs of zero and non-zero `granularity`-sized pieces. Calls
 * `fn(start, end, zero)` for each maximal run, in order.
 */
export function forEachZeroRun(buf: Uint8Array, granularity: number, fn: (start: number, end: number, zero: boolean) => void): void {
  // A buffer of nothing but zeros (a hole read from a raw file) is one compare, not one per piece.
  if (buf.length > 0 && zeroRange(buf, 0, buf.length)) {
    fn(0, buf.length, true);
    return;
  }
  let runStart = 0;
  let runZero: boolean | undefined;
  for (let off = 0; off < buf.length; off += granularity) {
    const end = Math.min(buf.length, off + granularity);
    const z = zeroRange(buf, off, end);
    if (runZero === undefined) runZero = z;
    else if (z !== runZero) {
      fn(runStart, off, runZero);
      runStart = off;
      runZero = z;
    }
  }
  if (runZero !== undefined) fn(runStart, buf.length, runZero);
}
