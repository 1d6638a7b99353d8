import { randomFillSync } from 'node:crypto';
import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { compressGrain } from '../../src/formats/compress.js';

const GRAIN = 64 * 1024;

/** English-like text: compresses well. */
function text(n: number): Buffer {
  const words = 'the quick brown fox jumps over a lazy dog while disks hold sectors of data'.split(' ');
  let s = '';
  for (let i = 0; s.length < n; i++) s += `${words[(i * 7 + (i >> 3)) % words.length]} `;
  return Buffer.from(s.slice(0, n));
}

describe('grain compression on worker threads', () => {
  it('stores random grains (no shrink possible) as a valid zlib stream', async () => {
    const g = randomFillSync(Buffer.alloc(GRAIN));
    const z = await compressGrain(g, 6);
    expect(inflateSync(z).equals(g)).toBe(true);
    // Stored blocks: the data plus 2 header bytes, 5 bytes per block and the 4-byte Adler-32.
    expect(z.length).toBeGreaterThan(GRAIN);
    expect(z.length).toBeLessThan(GRAIN + 64);
    // RFC 1950 §2.2: CM = 8 (deflate); FLEVEL (top two bits of FLG) 0 = the fastest
    // setting was used: stored, not searched at level 6 (which writes FLEVEL 2).
    expect(z[0]! & 0x0f).toBe(8);
    expect(z[1]! >> 6).toBe(0);
  });

  it('compresses text, and a grain that is random except for one text sample', async () => {
    const t = text(GRAIN);
    const zt = await compressGrain(t, 6);
    expect(inflateSync(zt).equals(t)).toBe(true);
    expect(zt.length).toBeLessThan(GRAIN / 4);
    expect(zt[1]! >> 6).toBe(2);
    const mixed = randomFillSync(Buffer.alloc(GRAIN));
    text(8192).copy(mixed, GRAIN / 2 - 4096);
    const zm = await compressGrain(mixed, 6);
    expect(inflateSync(zm).equals(mixed)).toBe(true);
    expect(zm.length).toBeLessThan(GRAIN);
    expect(zm[1]! >> 6).toBe(2);
  });

  it('keeps many grains in flight in order of their own results, and level 0 stores everything', async () => {
    const grains = Array.from({ length: 64 }, (_, i) => (i % 2 ? randomFillSync(Buffer.alloc(GRAIN)) : text(GRAIN)));
    const out = await Promise.all(grains.map((g) => compressGrain(g, 6)));
    out.forEach((z, i) => expect(inflateSync(z).equals(grains[i]!)).toBe(true));
    const z0 = await compressGrain(grains[0]!, 0);
    expect(z0.length).toBeGreaterThan(GRAIN);
  });

  it('copies the grain before returning, so the caller may reuse its buffer', async () => {
    const buf = text(GRAIN);
    const copy = Buffer.from(buf);
    const p = compressGrain(buf, 6);
    buf.fill(0xaa);
    expect(inflateSync(await p).equals(copy)).toBe(true);
  });
});
