#!/usr/bin/env node
// bench/write-slices.mjs — how the size and alignment of buffered writes change the cost of
// writing 1 GiB into a new file: the measurement behind FileStorage's 256 KiB write slices.
// Each round writes the file once per variant, in a new random order, after removing the
// last file and running `sync`; prints each variant's median and fastest time.
//
//   node bench/write-slices.mjs [--rounds 12] [--dir /tmp]
//
// On a VM that hands free memory back to the host (virtio-balloon page reporting),
// big aligned writes are slow in phases: the page cache takes large folios for them,
// from the free blocks the host has taken back. Writes 512 bytes off alignment (as
// qemu-img's VDI data sits) don't get large folios, so that row shows the effect.
// The phases come and go: in a quiet one the big aligned writes are ~10% faster than
// 256 KiB ones (1 GiB: 290 vs 325 ms), in a noisy one 3x slower (1082 vs 304 ms); run
// it more than once before reading anything into one table.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median, shuffle } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const ROUNDS = Number(opt('--rounds', '12'));
const dir = mkdtempSync(join(opt('--dir', tmpdir()), 'vdisk-bench-writes-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const KiB = 1024;
const TOTAL = 1024 ** 3;
const variants = [
  { name: '128 KiB aligned', slice: 128 * KiB, shift: 0 },
  { name: '256 KiB aligned', slice: 256 * KiB, shift: 0 },
  { name: '1 MiB aligned', slice: 1024 * KiB, shift: 0 },
  { name: '2 MiB aligned', slice: 2048 * KiB, shift: 0 },
  { name: '1 MiB, 512 B off', slice: 1024 * KiB, shift: 512 },
];
const data = Buffer.allocUnsafeSlow(2048 * KiB);
randomFillSync(data);
const file = join(dir, 'out');

function once(v) {
  rmSync(file, { force: true });
  spawnSync('sync');
  const fd = openSync(file, 'w');
  const t0 = process.hrtime.bigint();
  for (let off = 0; off < TOTAL; off += v.slice) writeSync(fd, data, 0, v.slice, 1024 * KiB + v.shift + off);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  closeSync(fd);
  return ms;
}

const times = new Map(variants.map((v) => [v, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const v of shuffle([...variants])) times.get(v).push(once(v));
}
console.log(`1 GiB of buffered writes into a new file, ${ROUNDS} rounds in random order (ms)`);
console.table(
  variants.map((v) => {
    const t = times.get(v);
    return { writes: v.name, median: Math.round(median(t)), fastest: Math.round(Math.min(...t)), slowest: Math.round(Math.max(...t)) };
  }),
);
