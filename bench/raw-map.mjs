#!/usr/bin/env node
// bench/raw-map.mjs — `vdisk map` of a raw ext4 image against `qemu-img map`, and the
// same data in a 64 GiB raw (the 4 GiB image with 60 GiB more hole at the end), to
// show map time does not grow with the holes. Whole processes, taking turns in a new
// random order each round; prints medians and ratios. `vdisk info` of the same file is
// the start-up floor.
//
//   npm run build && node bench/raw-map.mjs [--repeat N] [--scan]
//
// Goals (issue 19): map 64 GiB / map 4 GiB <= 1.2; map 4 GiB <= 3x `vdisk info`.
// --scan also times the pure-JS fallback (VDISK_NO_NATIVE=1) on the 4 GiB image, once
// per round (it reads the whole file). BENCH_VERBOSE=1 prints every run.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir, realDisk } from './_real-disk.mjs';
import { median, shuffle, timeOnce } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const REPEAT = Number(opt('--repeat', process.env.BENCH_REPEAT ?? '7'));
const SCAN = args.includes('--scan');
const VDISK = new URL('../bin/vdisk.js', import.meta.url).pathname;

const small = realDisk();
const big = join(cacheDir(), 'ext4-usr-64g.raw');
if (!existsSync(big) || statSync(big).size !== 64 * 2 ** 30) {
  // Copy the allocated ranges as they are, written zeros included (cp would punch
  // them), so both files hold the same extents; qemu-img map says where they are.
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output', 'json', '-f', 'raw', small], { encoding: 'utf8' }));
  const from = openSync(small, 'r');
  const to = openSync(big, 'w');
  const buf = Buffer.alloc(4 * 2 ** 20);
  for (const e of map.filter((x) => x.data)) {
    for (let off = e.start; off < e.start + e.length; off += buf.length) {
      const n = readSync(from, buf, 0, Math.min(buf.length, e.start + e.length - off), off);
      writeSync(to, buf, 0, n, off);
    }
  }
  ftruncateSync(to, 64 * 2 ** 30);
  closeSync(from);
  closeSync(to);
}

const node = process.execPath;
const cases = {
  'vdisk map 4G': [node, VDISK, 'map', '--output', 'json', small],
  'vdisk map 64G': [node, VDISK, 'map', '--output', 'json', big],
  'qemu-img map 4G': ['qemu-img', 'map', '--output', 'json', '-f', 'raw', small],
  'qemu-img map 64G': ['qemu-img', 'map', '--output', 'json', '-f', 'raw', big],
  'vdisk info 4G': [node, VDISK, 'info', small],
};
const scanCmd = ['env', 'VDISK_NO_NATIVE=1', node, VDISK, 'map', '--output', 'json', small];
if (SCAN) cases['vdisk map 4G (scan fallback)'] = scanCmd;

// The same answer from both before timing anything: data ranges of vdisk and qemu-img.
const dataOf = (cmd) =>
  JSON.parse(execFileSync(cmd[0], cmd.slice(1), { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 }))
    .filter((e) => e.data)
    .map((e) => `${e.start}+${e.length}`)
    .join(',');
const ours = dataOf(cases['vdisk map 4G']);
if (ours !== dataOf(cases['qemu-img map 4G'])) console.log('WARNING: vdisk and qemu-img map disagree on the data ranges of the 4 GiB image');
if (dataOf(cases['vdisk map 64G']) !== ours) console.log('WARNING: the 64 GiB image maps different data from the 4 GiB one');

const times = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (const k of Object.keys(cases)) timeOnce(cases[k]); // warm the page cache and the binaries
for (let r = 0; r < REPEAT; r++) {
  for (const k of shuffle(Object.keys(cases))) {
    const t = timeOnce(cases[k]);
    times[k].push(t);
    if (process.env.BENCH_VERBOSE === '1') console.log(`  ${k}: ${t.toFixed(4)} s`);
  }
}
const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
const ms = (s) => `${(s * 1000).toFixed(1)} ms`;
const entries = JSON.parse(execFileSync(node, cases['vdisk map 4G'].slice(1), { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 })).length;
console.log(`raw map, ${(statSync(small).blocks * 512 / 2 ** 20).toFixed(0)} MiB of ext4 data (${entries} map entries), medians of ${REPEAT} (whole processes):`);
for (const [k, v] of Object.entries(m)) console.log(`  ${k.padEnd(30)} ${ms(v)}`);
console.log(`  vdisk map 64G / vdisk map 4G:   ${(m['vdisk map 64G'] / m['vdisk map 4G']).toFixed(2)}  (goal <= 1.2)`);
console.log(`  vdisk map 4G / vdisk info 4G:   ${(m['vdisk map 4G'] / m['vdisk info 4G']).toFixed(2)}  (goal <= 3)`);
console.log(`  vdisk map 4G / qemu-img map 4G: ${(m['vdisk map 4G'] / m['qemu-img map 4G']).toFixed(2)}`);
console.log(`  vdisk map 64G / qemu-img map 64G: ${(m['vdisk map 64G'] / m['qemu-img map 64G']).toFixed(2)}`);
if (SCAN) console.log(`  scan fallback / seek, 4G:       ${(m['vdisk map 4G (scan fallback)'] / m['vdisk map 4G']).toFixed(1)}`);
