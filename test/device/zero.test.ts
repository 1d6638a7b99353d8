import { describe, expect, it } from 'vitest';
import { forEachZeroRun, isZero } from '../../src/device/zero.js';

/** The runs a byte-by-byte scan finds: the definition forEachZeroRun must meet. */
function slowRuns(buf: Uint8Array, granularity: number): Array<[number, number, boolean]> {
  const runs: Array<[number, number, boolean]> = [];
  for (let off = 0; off < buf.length; off += granularity) {
    const end = Math.min(buf.length, off + granularity);
    let zero = true;
    for (let i = off; i < end && zero; i++) zero = buf[i] === 0;
    const last = runs[runs.length - 1];
    if (last && last[2] === zero) last[1] = end;
    else runs.push([off, end, zero]);
  }
  return runs;
}

function runs(buf: Uint8Array, granularity: number): Array<[number, number, boolean]> {
  const out: Array<[number, number, boolean]> = [];
  forEachZeroRun(buf, granularity, (s, e, z) => out.push([s, e, z]));
  return out;
}

/** A small deterministic generator, so a failure reproduces. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('zero detection', () => {
  it('isZero sees a single non-zero byte anywhere, also past the 1 MiB compare window', () => {
    const buf = new Uint8Array(3 * 1024 * 1024 + 100);
    expect(isZero(buf)).toBe(true);
    expect(isZero(buf.subarray(0, 0))).toBe(true);
    for (const at of [0, 1, 4095, 1024 * 1024 - 1, 1024 * 1024, 2 * 1024 * 1024 + 7, buf.length - 2, buf.length - 1]) {
      buf[at] = 1;
      expect(isZero(buf), `byte ${at}`).toBe(false);
      expect(isZero(buf.subarray(at + 1)), `after byte ${at}`).toBe(true);
      buf[at] = 0;
    }
  });

  it('forEachZeroRun finds the same runs as a byte-by-byte scan', () => {
    const rand = lcg(7);
    for (let round = 0; round < 300; round++) {
      const granularity = [512, 4096, 65536][round % 3]!;
      const length = Math.floor(rand() * 12 * granularity) + 1;
      const buf = new Uint8Array(length);
      // Runs of zero and non-zero bytes whose edges fall anywhere, including mid-piece.
      for (let at = 0; at < length; ) {
        const run = Math.floor(rand() * 6 * granularity) + 1;
        if (rand() < 0.5) {
          // Data: non-zero bytes with a few zero bytes among them.
          const end = Math.min(length, at + run);
          buf.fill(1 + Math.floor(rand() * 255), at, end);
          for (let k = Math.floor(rand() * 4); k > 0; k--) buf[at + Math.floor(rand() * (end - at))] = 0;
        }
        // A lone non-zero byte inside a zero run now and then: the piece holding it is data.
        else if (rand() < 0.2) buf[Math.min(length - 1, at + Math.floor(rand() * run))] = 9;
        at += run;
      }
      expect(runs(buf, granularity), `round ${round}`).toEqual(slowRuns(buf, granularity));
    }
  });

  it('forEachZeroRun reports a buffer of zeros as one run, and nothing for an empty one', () => {
    expect(runs(new Uint8Array(2 * 1024 * 1024), 4096)).toEqual([[0, 2 * 1024 * 1024, true]]);
    expect(runs(new Uint8Array(0), 4096)).toEqual([]);
    const tail = new Uint8Array(10000);
    tail[9999] = 1;
    expect(runs(tail, 4096)).toEqual([
      [0, 8192, true],
      [8192, 10000, false],
    ]);
  });
});
