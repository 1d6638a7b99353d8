/**
 * Mutation fuzzing for format readers: start from a valid seed image, damage it
 * (bit flips, truncation, overwritten header fields), and demand that the reader
 * either works or throws a VdiskError, within a time and memory bound per case.
 */
import type { BlockDevice } from '../../src/device/block-device.js';
import { isVdiskError } from '../../src/errors.js';

/** A header field worth overwriting with extreme values. */
export interface FuzzField {
  offset: number;
  /** Width in bytes: 1, 2, 4 or 8. */
  size: 1 | 2 | 4 | 8;
  name?: string;
}

/** One damaged image. */
export interface FuzzCase {
  name: string;
  data: Buffer;
}

/** Small deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const EXTREMES = [0n, 1n, 0x7fn, 0x80n, 0xffn, 0x7fffn, 0xffffn, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn, 0x7fffffffffffffffn, 0xffffffffffffffffn];

function writeField(buf: Buffer, f: FuzzField, value: bigint, bigEndian: boolean): void {
  if (f.offset + f.size > buf.length) return;
  const v = value & ((1n << BigInt(f.size * 8)) - 1n);
  if (f.size === 8) {
    if (bigEndian) buf.writeBigUInt64BE(v, f.offset);
    else buf.writeBigUInt64LE(v, f.offset);
  } else if (bigEndian) buf.writeUIntBE(Number(v), f.offset, f.size);
  else buf.writeUIntLE(Number(v), f.offset, f.size);
}

/**
 * `count` damaged copies of `seed`: about a third bit flips (weighted toward the
 * first `hotBytes`, where headers live), a sixth truncations, the rest overwrites of
 * `fields` with extreme or random values.
 */
export function* mutations(
  seed: Buffer,
  opts: { count: number; seed?: number; fields?: readonly FuzzField[]; bigEndian?: boolean; hotBytes?: number },
): Generator<FuzzCase> {
  const rand = rng(opts.seed ?? 1);
  const fields = opts.fields ?? [];
  const hot = Math.min(seed.length, opts.hotBytes ?? 4096);
  for (let i = 0; i < opts.count; i++) {
    const data = Buffer.from(seed);
    const kind = rand();
    if (kind < 0.33 || (fields.length === 0 && kind >= 0.5)) {
      const flips = 1 + Math.floor(rand() * 4);
      const where: number[] = [];
      for (let k = 0; k < flips; k++) {
        const pos = rand() < 0.8 ? Math.floor(rand() * hot) : Math.floor(rand() * data.length);
        data[pos] = (data[pos] ?? 0) ^ (1 << Math.floor(rand() * 8));
        where.push(pos);
      }
      yield { name: `#${i} flip@${where.join(',')}`, data };
    } else if (kind < 0.5) {
      const len = Math.floor(rand() * data.length);
      yield { name: `#${i} truncate@${len}`, data: data.subarray(0, len) };
    } else {
      const f = fields[Math.floor(rand() * fields.length)]!;
      const value = rand() < 0.7 ? EXTREMES[Math.floor(rand() * EXTREMES.length)]! : BigInt(Math.floor(rand() * 2 ** 32));
      writeField(data, f, value, opts.bigEndian ?? false);
      yield { name: `#${i} field ${f.name ?? f.offset}=${value}`, data };
    }
  }
}

/**
 * Read a device the way users do, with bounds so a hostile size cannot make the
 * case slow: walk up to `maxExtents` extents and read up to `maxBytes` of them, plus
 * a few sectors at the start, the middle and the end.
 */
export async function exercise(dev: BlockDevice, opts: { maxExtents?: number; maxBytes?: number } = {}): Promise<void> {
  const maxExtents = opts.maxExtents ?? 4096;
  let budget = opts.maxBytes ?? 8 * 1024 * 1024;
  const buf = Buffer.alloc(64 * 1024);
  let n = 0;
  for await (const e of dev.extents()) {
    if (++n > maxExtents) break;
    if (e.kind === 'data' && budget > 0) {
      const len = Math.min(buf.length, e.length, budget);
      await dev.read(buf.subarray(0, len), e.offset);
      budget -= len;
    }
  }
  for (const off of [0, Math.floor(dev.size / 2 / 512) * 512, dev.size - 512]) {
    if (off >= 0 && off + 512 <= dev.size) await dev.read(buf.subarray(0, 512), off);
  }
}

/** What a fuzz run saw. */
export interface FuzzStats {
  cases: number;
  opened: number;
  rejected: Map<string, number>;
}

/**
 * Run `attempt` on every case. Each must resolve or reject with a VdiskError within
 * `timeoutMs`, and RSS must stay within `maxRssGrowthMiB` of where it started; any
 * other outcome throws naming the case (so the test fails and shows how to replay it).
 */
export async function fuzz(
  cases: Iterable<FuzzCase>,
  attempt: (data: Buffer) => Promise<void>,
  opts: { timeoutMs?: number; maxRssGrowthMiB?: number } = {},
): Promise<FuzzStats> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const limit = (opts.maxRssGrowthMiB ?? 512) * 1024 * 1024;
  const baseRss = process.memoryUsage.rss();
  const stats: FuzzStats = { cases: 0, opened: 0, rejected: new Map() };
  for (const c of cases) {
    stats.cases++;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`fuzz case ${c.name}: no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([attempt(c.data), timeout]);
      stats.opened++;
    } catch (err) {
      if (!isVdiskError(err)) {
        const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        throw new Error(`fuzz case ${c.name}: not a VdiskError: ${msg}`, { cause: err });
      }
      stats.rejected.set(err.code, (stats.rejected.get(err.code) ?? 0) + 1);
    } finally {
      clearTimeout(timer);
    }
    const grown = process.memoryUsage.rss() - baseRss;
    if (grown > limit) throw new Error(`fuzz case ${c.name}: RSS grew by ${Math.round(grown / 2 ** 20)} MiB`);
  }
  return stats;
}
