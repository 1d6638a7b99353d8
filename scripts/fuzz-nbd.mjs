#!/usr/bin/env node
// Fuzzing of the NBD server with hostile clients, against the built library:
//
//   node scripts/fuzz-nbd.mjs --cases N --seed S [--parallel P]
//   node scripts/fuzz-nbd.mjs --seed S --case I          (replay one sequence)
//
// Each case is one client's byte stream: a handshake (right or wrong client flags),
// a run of options (real ones with damaged lengths and names, unknown ones, endless
// LISTs, huge declared lengths), then requests (every command, flags set at random,
// offsets and lengths at the edges and past them, payloads cut short), the whole
// stream bit-flipped at random, sent in random slices, sometimes a byte at a time,
// sometimes cut off mid-way. The server must answer or hang up; after each batch a
// well-behaved client must still read the export correctly, the process must not
// have crashed, and its resident size must stay under --memory MiB.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { open } from '../dist/formats/registry.js';
import { NbdServer } from '../dist/nbd/server.js';
import { NbdStorage } from '../dist/storage/nbd/client.js';

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const caseRandom = (seed, i) => rng(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35));

const IHAVEOPT = 0x49484156454f5054n;
const SIZE = 4 << 20;
const pick = (rand, xs) => xs[Math.floor(rand() * xs.length)];
const u32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const str = (s) => Buffer.concat([u32(Buffer.byteLength(s)), Buffer.from(s)]);
const edgeLength = (rand) => pick(rand, [0, 1, 511, 512, 4096, 65536, 1 << 20, 32 << 20, (32 << 20) + 1, 0x7fffffff, 0xffffffff, Math.floor(rand() * 70000)]);
const edgeOffset = (rand) => pick(rand, [0n, 1n, 512n, BigInt(SIZE - 512), BigInt(SIZE - 1), BigInt(SIZE), BigInt(SIZE + 512), 0x7fffffffffffffffn, 0xffffffffffffffffn, BigInt(Math.floor(rand() * SIZE))]);

function option(rand, names) {
  const kind = rand();
  let type;
  let data;
  if (kind < 0.15) [type, data] = [3, Buffer.alloc(0)]; // LIST
  else if (kind < 0.3) [type, data] = [8, Buffer.alloc(0)]; // STRUCTURED_REPLY
  else if (kind < 0.45) {
    type = 10; // SET_META_CONTEXT (or LIST with 9)
    if (rand() < 0.3) type = 9;
    const qs = Array.from({ length: Math.floor(rand() * 4) }, () => pick(rand, ['base:allocation', 'qemu:allocation-depth', 'qemu:', 'base:', 'x:y', '']));
    data = Buffer.concat([str(pick(rand, names)), u32(qs.length), ...qs.map(str)]);
  } else if (kind < 0.6) {
    type = rand() < 0.5 ? 6 : 7; // INFO / GO
    const infos = Array.from({ length: Math.floor(rand() * 4) }, () => Math.floor(rand() * 5));
    const n = Buffer.alloc(2 + 2 * infos.length);
    n.writeUInt16BE(infos.length);
    infos.forEach((x, i) => n.writeUInt16BE(x, 2 + 2 * i));
    data = Buffer.concat([str(pick(rand, names)), n]);
  } else if (kind < 0.7) [type, data] = [1, Buffer.from(pick(rand, names))]; // EXPORT_NAME
  else if (kind < 0.75) [type, data] = [2, Buffer.alloc(0)]; // ABORT
  else if (kind < 0.8) [type, data] = [5, Buffer.alloc(0)]; // STARTTLS
  else [type, data] = [Math.floor(rand() * 20), Buffer.alloc(Math.floor(rand() * 64), Math.floor(rand() * 256))];
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(IHAVEOPT);
  head.writeUInt32BE(type, 8);
  let length = data.length;
  if (rand() < 0.08) length = pick(rand, [0xffffffff, 0x7fffffff, 1 << 20, data.length + 1, Math.max(0, data.length - 1)]);
  head.writeUInt32BE(length >>> 0, 12);
  return { bytes: Buffer.concat([head, data]), ends: type === 1 || type === 2 || (type === 7 && rand() < 0.8) };
}

function request(rand) {
  const type = rand() < 0.9 ? pick(rand, [0, 0, 1, 1, 3, 4, 5, 6, 7, 2]) : Math.floor(rand() * 65536);
  const flags = rand() < 0.7 ? pick(rand, [0, 1, 2, 4, 8, 16, 32]) : Math.floor(rand() * 65536);
  const length = rand() < 0.6 ? pick(rand, [512, 4096, 65536, Math.floor(rand() * 8192)]) : edgeLength(rand);
  const offset = rand() < 0.6 ? BigInt(Math.floor(rand() * (SIZE / 512)) * 512) : edgeOffset(rand);
  const head = Buffer.alloc(28);
  head.writeUInt32BE(0x25609513);
  head.writeUInt16BE(flags, 4);
  head.writeUInt16BE(type, 6);
  head.writeBigUInt64BE(BigInt(Math.floor(rand() * 2 ** 32)), 8);
  head.writeBigUInt64BE(offset, 16);
  head.writeUInt32BE(length >>> 0, 24);
  let payload = Buffer.alloc(0);
  if (type === 1 && length <= 1 << 20) payload = Buffer.alloc(rand() < 0.9 ? length : Math.floor(rand() * length), Math.floor(rand() * 256));
  return Buffer.concat([head, payload]);
}

/** The bytes of case `i` of `seed`, and how to send them. */
export function nbdCase(seed, i, names = ['disk', 'other', '']) {
  const rand = caseRandom(seed, i);
  const parts = [u32(rand() < 0.9 ? 3 : Math.floor(rand() * 2 ** 32))];
  const opts = 1 + Math.floor(rand() * (rand() < 0.05 ? 400 : 6));
  let transmitting = false;
  for (let k = 0; k < opts; k++) {
    const o = option(rand, [...names, 'x'.repeat(pick(rand, [1, 4096, 5000]))]);
    parts.push(o.bytes);
    if (o.ends) {
      transmitting = true;
      break;
    }
  }
  if (transmitting) for (let k = Math.floor(rand() * 24); k > 0; k--) parts.push(request(rand));
  if (rand() < 0.3) {
    const d = Buffer.alloc(28);
    d.writeUInt32BE(0x25609513);
    d.writeUInt16BE(2, 6);
    parts.push(d);
  }
  let bytes = Buffer.concat(parts);
  const flips = rand() < 0.5 ? 0 : 1 + Math.floor(rand() * 6);
  for (let f = 0; f < flips && bytes.length > 0; f++) bytes[Math.floor(rand() * bytes.length)] ^= 1 << Math.floor(rand() * 8);
  if (rand() < 0.15) bytes = bytes.subarray(0, Math.floor(rand() * bytes.length));
  const trickle = rand() < 0.05;
  const slices = [];
  // A trickle sends its first few hundred bytes one at a time, the rest in slices.
  const trickleEnd = trickle ? 64 + Math.floor(rand() * 256) : 0;
  for (let at = 0; at < bytes.length; ) {
    const n = at < trickleEnd ? 1 : 1 + Math.floor(rand() * 4096);
    slices.push(bytes.subarray(at, at + n));
    at += n;
  }
  return { slices, trickle, halfClose: rand() < 0.7 };
}

/** Send one case; resolves when the server hangs up or `ms` pass (then we hang up). */
function send(port, c, ms) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let received = 0;
    let hung = false;
    // After our end the server must hang up by itself; without it we leave after a short wait.
    const timer = setTimeout(() => {
      hung = c.halfClose;
      s.destroy();
    }, c.halfClose ? ms : 200);
    s.on('data', (d) => {
      received += d.length;
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ received, hung });
    });
    s.on('connect', async () => {
      for (const piece of c.slices) {
        if (s.destroyed) return;
        s.write(piece);
        if (piece.length === 1 && c.trickle) await new Promise((r) => setTimeout(r, 1));
      }
      if (c.halfClose && !s.destroyed) s.end();
    });
  });
}

/** Run `cases` cases from `first`; returns counts, the peak RSS and any failure. */
export async function runNbdFuzz({ cases, seed, first = 0, parallel = 16, memoryMiB = 768, log = () => undefined }) {
  const dir = await mkdtemp(join(tmpdir(), 'vdisk-fuzz-nbd-'));
  const content = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4096) content.writeUInt32BE(i, i);
  await writeFile(join(dir, 'disk.raw'), content);
  await writeFile(join(dir, 'other.raw'), content);
  const disk = await open(join(dir, 'disk.raw'));
  const other = await open(join(dir, 'other.raw'), { readOnly: true });
  let crash;
  const endings = new Map();
  const onCrash = (err) => {
    crash ??= err;
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const server = new NbdServer(
    [
      { name: 'disk', device: disk },
      { name: 'other', device: other },
    ],
    {
      maxPayload: 1 << 20,
      maxInFlight: 8 << 20,
      onConnectionEnd: (_peer, reason) => {
        const key = (reason ?? 'clean end').replace(/0x[0-9a-f]+|\d+/g, 'N').replace(/"[^"]*"/g, '"…"').slice(0, 80);
        endings.set(key, (endings.get(key) ?? 0) + 1);
      },
    },
  );
  const { port } = await server.listen({ port: 0 });
  let peak = process.memoryUsage().rss;
  let bytes = 0;
  try {
    for (let i = first; i < first + cases; i += parallel) {
      const batch = [];
      for (let j = i; j < Math.min(first + cases, i + parallel); j++) batch.push(send(port, nbdCase(seed, j), 3000));
      const results = await Promise.all(batch);
      bytes += results.reduce((a, r) => a + r.received, 0);
      const hung = results.findIndex((r) => r.hung);
      if (hung >= 0) throw new Error(`case ${i + hung} of seed ${seed}: the server kept the connection open ${3000} ms after the client's end`);
      if (crash) throw Object.assign(new Error(`server crashed in cases ${i}..${i + parallel - 1} of seed ${seed}: ${crash?.stack ?? crash}`), { case: i });
      // A well-behaved client still gets the right bytes from the read-only export.
      const s = await NbdStorage.open(`nbd://127.0.0.1:${port}/other`, { timeoutMs: 5000 });
      const b = Buffer.alloc(8192);
      await s.read(b, 8192);
      await s.close();
      if (b.readUInt32BE(0) !== 8192 || b.readUInt32BE(4096) !== 12288) throw new Error(`export read wrong after cases ${i}..${i + parallel - 1}`);
      peak = Math.max(peak, process.memoryUsage().rss);
      if (peak > memoryMiB * 1024 * 1024) throw new Error(`resident size ${Math.round(peak / 1048576)} MiB passed ${memoryMiB} MiB by case ${i}`);
      if ((i - first) % 1000 < parallel) log(`${i - first + parallel} cases, peak RSS ${Math.round(peak / 1048576)} MiB`);
    }
  } finally {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    await server.close();
    await disk.close();
    await other.close();
    await rm(dir, { recursive: true, force: true });
  }
  return { cases, peakRssMiB: Math.round(peak / 1048576), repliedBytes: bytes, endings: [...endings].sort((a, b) => b[1] - a[1]) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { cases: { type: 'string', default: '5000' }, seed: { type: 'string', default: '1' }, case: { type: 'string' }, parallel: { type: 'string', default: '16' }, memory: { type: 'string', default: '768' } } });
  const seed = Number(values.seed);
  const one = values.case !== undefined;
  const t0 = Date.now();
  try {
    const r = await runNbdFuzz({
      cases: one ? 1 : Number(values.cases),
      first: one ? Number(values.case) : 0,
      parallel: one ? 1 : Number(values.parallel),
      seed,
      memoryMiB: Number(values.memory),
      log: (m) => process.stderr.write(`${m}\n`),
    });
    for (const [why, n] of r.endings) process.stdout.write(`${String(n).padStart(7)}  ${why}\n`);
    process.stdout.write(`nbd server: ${r.cases} cases of seed ${seed}, no crash, export intact, peak RSS ${r.peakRssMiB} MiB, ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  } catch (err) {
    process.stderr.write(`${err.stack ?? err}\n`);
    process.exitCode = 1;
  }
}
