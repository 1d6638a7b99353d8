/**
 * Compression of whole grains and clusters on worker threads, for VMDK
 * stream-optimized grains (zlib streams) and qcow2 compressed clusters (raw deflate
 * with qemu's 4 KiB window: qemu inflates them with windowBits -12, so a larger
 * window would make clusters it cannot read). Each worker runs
 * zlib synchronously on whole grains, so a grain costs one message each way instead
 * of the several thread-pool round trips (and a zlib stream object) that the async
 * zlib API spends per call; the main thread keeps reading and writing meanwhile.
 *
 * Data that is already compressed or random (media, archives, encrypted volumes)
 * does not shrink, and deflate spends the most time on exactly that data, searching
 * for matches that are not there (about 2.4 ms per 64 KiB grain here, against 0.05 ms
 * to store it). So a grain is screened first, the way btrfs decides whether to
 * compress: three 4 KiB samples (start, middle, end) are counted byte by byte, and
 * when each sample's order-0 entropy is at least 7.9 bits per byte (uniform random
 * bytes measure about 7.95 over 4 KiB; text 4-5, machine code about 6), the grain is
 * stored: deflate's uncompressed blocks, still a valid zlib stream every inflater
 * reads. Everything else is compressed at the requested level. What the screen cannot
 * see is repetition of random-looking bytes inside a grain (the same 4 KiB of
 * ciphertext twice); such a grain is stored too, about 0.1% larger than the data.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Bytes of each sample a grain is screened with. */
const SAMPLE_BYTES = 4096;
/** Order-0 entropy (bits per byte) from which a sample counts as incompressible. */
const INCOMPRESSIBLE_BITS = 7.9;
/** Grains a worker compresses between two garbage collections (8 MiB of input). */
const GC_EVERY_GRAINS = 128;
/** Most workers started, whatever the core count. */
const MAX_WORKERS = 8;

// The worker's code, as a script: it runs from source and from dist alike, with no
// file of its own to locate.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { deflateSync, deflateRawSync } = require('node:zlib');
const SAMPLE = ${SAMPLE_BYTES}, BITS = ${INCOMPRESSIBLE_BITS};
// zlib's sync calls leave their buffers to the garbage collector, and V8 lets an
// isolate hold tens of MiB of such memory before it collects; a worker that only
// compresses reaches that fast (about 45 MiB per worker). The buffers die young, so a
// minor collection (a scavenge, ~0.1 ms) every GC_EVERY grains frees them; a full one
// (~4 ms) did the same and cost each worker 0.7 s per GiB of input.
let collect = typeof globalThis.gc === 'function' ? globalThis.gc : undefined;
if (!collect) {
  try {
    require('node:v8').setFlagsFromString('--expose-gc');
    collect = require('node:vm').runInNewContext('gc');
  } catch {}
}
const GC_EVERY = ${GC_EVERY_GRAINS};
let sinceGc = 0;
const counts = new Uint32Array(256);
function entropy(b) {
  counts.fill(0);
  for (let i = 0; i < b.length; i++) counts[b[i]]++;
  let e = 0;
  for (let i = 0; i < 256; i++) if (counts[i] !== 0) { const p = counts[i] / b.length; e -= p * Math.log2(p); }
  return e;
}
function incompressible(g) {
  if (g.length < 4 * SAMPLE) return false;
  const middle = Math.floor((g.length - SAMPLE) / 2 / 512) * 512;
  return [0, middle, g.length - SAMPLE].every((at) => entropy(g.subarray(at, at + SAMPLE)) >= BITS);
}
parentPort.on('message', ({ id, grain, level, raw }) => {
  let z;
  try {
    if (raw) {
      // A cluster that would not shrink is written as it is: say so with no bytes.
      z = incompressible(grain) ? new Uint8Array(0) : deflateRawSync(grain, { level, windowBits: 12, memLevel: 9 });
    } else {
      // Storing needs no match search, so the smallest hash tables do (memLevel 1).
      z = level > 0 && incompressible(grain) ? deflateSync(grain, { level: 0, memLevel: 1 }) : deflateSync(grain, { level });
    }
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
    return;
  }
  const out = new Uint8Array(z.length);
  out.set(z);
  parentPort.postMessage({ id, z: out }, [out.buffer]);
  if (collect && ++sinceGc >= GC_EVERY) {
    sinceGc = 0;
    collect({ type: 'minor' });
  }
});
`;

interface Job {
  resolve(z: Buffer): void;
  reject(err: Error): void;
}

/** A small pool of compression workers; idle workers do not keep the process alive. */
class CompressPool {
  private readonly workers: Array<{ worker: Worker; busy: number }> = [];
  private readonly jobs = new Map<number, Job>();
  private nextId = 0;
  private broken: Error | undefined;

  constructor(private readonly size: number) {}

  compress(grain: Uint8Array, level: number, raw: boolean): Promise<Buffer> {
    if (this.broken) return Promise.reject(this.broken);
    const slot = this.pick();
    const id = this.nextId++;
    // A copy in its own buffer, handed over without another copy (the caller's may be part of a bigger one).
    const copy = new Uint8Array(grain);
    return new Promise<Buffer>((resolve, reject) => {
      this.jobs.set(id, { resolve, reject });
      if (slot.busy++ === 0) slot.worker.ref();
      slot.worker.postMessage({ id, grain: copy, level, raw }, [copy.buffer]);
    });
  }

  /** The least busy worker, starting one while fewer than `size` run. */
  private pick(): { worker: Worker; busy: number } {
    let best = this.workers[0];
    for (const w of this.workers) if (w.busy < best!.busy) best = w;
    if (best && (best.busy === 0 || this.workers.length >= this.size)) return best;
    const slot = { worker: new Worker(WORKER_SOURCE, { eval: true }), busy: 0 };
    slot.worker.unref();
    slot.worker.on('message', (m: { id: number; z?: Uint8Array; error?: string }) => {
      const job = this.jobs.get(m.id);
      this.jobs.delete(m.id);
      if (--slot.busy === 0) slot.worker.unref();
      if (!job) return;
      if (m.z) job.resolve(Buffer.from(m.z.buffer, m.z.byteOffset, m.z.byteLength));
      else job.reject(new Error(`grain compression failed: ${m.error ?? 'unknown error'}`));
    });
    slot.worker.on('error', (err) => this.fail(err));
    slot.worker.on('exit', (code) => {
      if (code !== 0) this.fail(new Error(`a compression worker stopped (exit code ${code})`));
    });
    this.workers.push(slot);
    return slot;
  }

  /** A worker died: fail every job in flight and every later one (no silent hang). */
  private fail(err: Error): void {
    this.broken ??= err;
    for (const job of this.jobs.values()) job.reject(err);
    this.jobs.clear();
  }
}

let pool: CompressPool | undefined;

function sharedPool(): CompressPool {
  pool ??= new CompressPool(Math.max(1, Math.min(MAX_WORKERS, availableParallelism())));
  return pool;
}

/** Compress one grain for a stream-optimized extent (a zlib stream) on the shared worker pool. */
export function compressGrain(grain: Uint8Array, level: number): Promise<Buffer> {
  return sharedPool().compress(grain, level, false);
}

/**
 * Compress one qcow2 cluster (raw deflate, 4 KiB window, as qemu's qcow2_compress)
 * on the shared worker pool; an empty buffer when the cluster looks incompressible.
 */
export function compressCluster(cluster: Uint8Array, level: number): Promise<Buffer> {
  return sharedPool().compress(cluster, level, true);
}
