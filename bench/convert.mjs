#!/usr/bin/env node
// bench/convert.mjs — `vdisk convert` against `qemu-img convert`, with `cp --sparse=always`
// as the floor, on a 2 GiB disk half filled with random data. The three take turns, in a
// new random order each round, so drift on a shared machine hits all alike; prints medians,
// their ratios, and the ratio of the fastest runs (the least disturbed ones).
//
//   npm run build && node bench/convert.mjs [--repeat N] [--size 2G] [--dir /tmp] [--data random|text] [--only NAME]
//
// BENCH_VERBOSE=1 also prints every run's time.
// --data text fills the data half with compressible text instead of random bytes (the
// case where compression does real work: streamOptimized then measures the worker
// threads, not the incompressible-grain screen). --only runs the cases whose name
// contains NAME (e.g. --only stream).
//
// Cases whose formats vdisk has no driver for yet are skipped with a note; raw → raw
// always runs. Output of the first vdisk run of each case is checked with qemu-img compare.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findDriver } from '../dist/index.js';
import { benchEnv, median, shuffle } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const REPEAT = Number(opt('--repeat', process.env.BENCH_REPEAT ?? '3'));
const SIZE = parseSizeArg(opt('--size', '2G'));
const BASE = opt('--dir', process.env.BENCH_DIR ?? tmpdir());
const DATA = opt('--data', 'random');
const ONLY = opt('--only', '');
if (DATA !== 'random' && DATA !== 'text') throw new Error(`bad --data ${DATA} (random or text)`);
const VDISK = new URL('../bin/vdisk.js', import.meta.url).pathname;

function parseSizeArg(s) {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad --size ${s}`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()];
}

function has(format) {
  try {
    findDriver(format);
    return true;
  } catch {
    return false;
  }
}

const dir = mkdtempSync(join(BASE, 'vdisk-bench-convert-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/** Text-like bytes that deflate shrinks about 3:1 (words picked at random). */
function fillText(buf) {
  const words = 'sector block disk image grain table footer header parent child extent volume the of and to in is that for'.split(' ');
  const pick = Buffer.alloc(buf.length);
  randomFillSync(pick);
  let at = 0;
  for (let i = 0; at < buf.length; i++) at += buf.write(`${words[pick[i] % words.length]} `, at);
}

/** Half data: alternate 4 MiB of random bytes (or text, with --data text) and 4 MiB of hole. */
function makeRaw(path) {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, SIZE);
    const chunk = Buffer.alloc(4 * 1024 ** 2);
    for (let off = 0; off < SIZE; off += 2 * chunk.length) {
      if (DATA === 'text') fillText(chunk);
      else randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, SIZE - off), off);
    }
  } finally {
    closeSync(fd);
  }
}

const ENV = benchEnv();

function sh(cmd, argv) {
  // Start every timed run with no dirty pages left by the one before: otherwise the
  // kernel's write-back of the previous output lands in whichever run comes next.
  spawnSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: ENV });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return s;
}

function clearOut(prefix) {
  for (const n of readdirSync(dir)) if (n.startsWith(prefix)) rmSync(join(dir, n), { force: true });
}

console.log(`vdisk convert bench: ${SIZE / 1024 ** 3} GiB disk, half ${DATA === 'text' ? 'text' : 'random data'}; ${REPEAT} alternating runs each; medians in seconds\n(vdisk runs with -t unsafe, qemu-img convert's default cache mode: neither flushes)`);
const raw = join(dir, 'src.raw');
makeRaw(raw);
const sources = {
  raw: { path: raw, qemu: 'raw' },
  vhd: { path: join(dir, 'src.vhd'), qemu: 'vpc', make: ['-O', 'vpc', '-o', 'subformat=dynamic,force_size=on'] },
  vmdk: { path: join(dir, 'src.vmdk'), qemu: 'vmdk', make: ['-O', 'vmdk', '-o', 'subformat=monolithicSparse'] },
  qcow2: { path: join(dir, 'src.qcow2'), qemu: 'qcow2', make: ['-O', 'qcow2'] },
};
for (const s of Object.values(sources)) if (s.make) execFileSync('qemu-img', ['convert', '-f', 'raw', ...s.make, raw, s.path]);

const cases = [
  { name: 'raw → raw', from: 'raw', to: 'raw', vdisk: ['-O', 'raw'], qemu: ['-O', 'raw'], ext: 'raw' },
  { name: 'VHD → VMDK', from: 'vhd', to: 'vmdk', vdisk: ['-O', 'vmdk'], qemu: ['-O', 'vmdk'], ext: 'vmdk' },
  { name: 'VHD → VDI', from: 'vhd', to: 'vdi', vdisk: ['-O', 'vdi'], qemu: ['-O', 'vdi'], ext: 'vdi' },
  { name: 'VMDK → VHD', from: 'vmdk', to: 'vhd', vdisk: ['-O', 'vhd', '-o', 'subformat=dynamic'], qemu: ['-O', 'vpc', '-o', 'subformat=dynamic'], ext: 'vhd', qemuOut: 'vpc' },
  { name: 'raw → qcow2', from: 'raw', to: 'qcow2', vdisk: ['-O', 'qcow2'], qemu: ['-O', 'qcow2'], ext: 'qcow2' },
  { name: 'qcow2 → raw', from: 'qcow2', to: 'raw', vdisk: ['-O', 'raw'], qemu: ['-O', 'raw'], ext: 'raw' },
  { name: 'qcow2 → VMDK', from: 'qcow2', to: 'vmdk', vdisk: ['-O', 'vmdk'], qemu: ['-O', 'vmdk'], ext: 'vmdk' },
  { name: 'VHD → qcow2', from: 'vhd', to: 'qcow2', vdisk: ['-O', 'qcow2'], qemu: ['-O', 'qcow2'], ext: 'qcow2' },
  { name: 'VHD → streamOptimized', from: 'vhd', to: 'vmdk', vdisk: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], qemu: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], ext: 'vmdk' },
];

const rows = [];
for (const c of cases) {
  if (ONLY && !c.name.toLowerCase().includes(ONLY.toLowerCase())) continue;
  const missing = [...new Set([c.from, c.to].filter((f) => !has(f)))];
  if (missing.length) {
    console.log(`${c.name}: skipped (vdisk has no ${missing.join(', ')} driver yet)`);
    continue;
  }
  const src = sources[c.from];
  const t = { vdisk: [], qemu: [], cp: [] };
  const vdiskOut = join(dir, `out-vdisk.${c.ext}`);
  const runs = {
    vdisk: () => sh(process.execPath, [VDISK, 'convert', '-t', 'unsafe', '-f', c.from, ...c.vdisk, src.path, vdiskOut]),
    qemu: () => sh('qemu-img', ['convert', '-f', src.qemu, ...c.qemu, src.path, join(dir, `out-qemu.${c.ext}`)]),
    cp: () => sh('cp', ['--sparse=always', src.path, join(dir, `out-cp.${c.ext}`)]),
  };
  // One untimed run of each first: the first run after the sources were written paid for
  // settling the page cache (2.5 s where the rest took 0.6 s), whichever tool drew it.
  for (const k of Object.keys(runs)) {
    clearOut('out');
    runs[k]();
  }
  for (let i = 0; i < REPEAT; i++) {
    // Each round runs the three in a fresh random order. On a VM the cost of a run's page
    // allocations drifts in phases (free memory is handed back to the host and faulted in
    // again); a fixed order can lock one tool onto the expensive phase for many rounds.
    // Every timed run also starts the same way: no output file left, no dirty pages.
    for (const k of shuffle(Object.keys(runs))) {
      clearOut('out');
      t[k].push(runs[k]());
      if (k === 'vdisk' && i === 0) {
        const r = spawnSync('qemu-img', ['compare', '-f', src.qemu, '-F', c.qemuOut ?? c.to, src.path, vdiskOut]);
        if (r.status !== 0) console.log(`WARNING ${c.name}: qemu-img compare says the vdisk output differs from the source: ${String(r.stdout).trim()} ${String(r.stderr).trim()}`);
      }
    }
  }
  clearOut('out');
  if (process.env.BENCH_VERBOSE) for (const k of Object.keys(t)) console.log(`${c.name} ${k}: ${t[k].map((x) => x.toFixed(2)).join(' ')}`);
  const m = { vdisk: median(t.vdisk), qemu: median(t.qemu), cp: median(t.cp) };
  const best = (k) => Math.min(...t[k]);
  rows.push({
    case: c.name,
    'vdisk s': m.vdisk.toFixed(2),
    'qemu-img s': m.qemu.toFixed(2),
    'cp s': m.cp.toFixed(2),
    'vdisk/qemu': (m.vdisk / m.qemu).toFixed(2),
    'vdisk/cp': (m.vdisk / m.cp).toFixed(2),
    'fastest vdisk/qemu': (best('vdisk') / best('qemu')).toFixed(2),
  });
}
console.table(rows);
