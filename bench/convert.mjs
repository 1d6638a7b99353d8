#!/usr/bin/env node
// bench/convert.mjs — `vdisk convert` against `qemu-img convert`, with `cp --sparse=always`
// as the floor for raw → raw. The tools take turns, in a new random order each round,
// so drift on a shared machine hits all alike; prints medians, their ratios, and the
// ratio of the fastest runs (the least disturbed ones).
//
//   npm run build && node bench/convert.mjs [--disk ext4|random] [--repeat N] [--only NAME]
//                                           [--size 2G] [--data random|text] [--dir /tmp]
//
// --disk ext4 (the default): a real filesystem, the 4 GiB ext4 image bench/_real-disk.mjs
// builds once with `mkfs.ext4 -d` from a copy of /usr/share and /usr/bin and caches
// outside the repo; qemu-img makes VHD, VDI, VMDK sparse, streamOptimized, qcow2 and VHDX copies of
// it, and every pair of raw, VHD, VDI, VMDK, streamOptimized, qcow2 and VHDX (dynamic) is
// timed (49 cases, about 40 minutes at --repeat 3). Prints the whole matrix of vdisk/qemu-img ratios.
// --disk random: the older synthetic case, a --size disk half filled with random bytes
// (or compressible text with --data text), for five pairs.
//
// BENCH_VERBOSE=1 also prints every run's time. --only runs the cases whose name
// contains NAME (e.g. --only stream, --only "raw →").
//
// Output of the first vdisk run of each case is checked with qemu-img compare. Besides the
// matrix, raw → qcow2 -c times compressed output (convert -c) against qemu-img convert -c
// (--only "qcow2 -c" runs it alone).
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, renameSync, rmSync, writeSync, ftruncateSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findDriver } from '../dist/driver.js';
import { cacheDir, realDisk } from './_real-disk.mjs';
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
const DISK = opt('--disk', 'ext4');
if (DISK !== 'ext4' && DISK !== 'random') throw new Error(`bad --disk ${DISK} (ext4 or random)`);
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

/** The formats of the matrix: how vdisk and qemu-img name them, and how qemu-img makes a source of each. */
const FORMATS = {
  raw: { label: 'raw', vdiskF: 'raw', qemu: 'raw', vdisk: ['-O', 'raw'], qemuO: ['-O', 'raw'], ext: 'raw' },
  vhd: { label: 'VHD', vdiskF: 'vhd', qemu: 'vpc', vdisk: ['-O', 'vhd', '-o', 'subformat=dynamic'], qemuO: ['-O', 'vpc', '-o', 'subformat=dynamic,force_size=on'], ext: 'vhd' },
  vdi: { label: 'VDI', vdiskF: 'vdi', qemu: 'vdi', vdisk: ['-O', 'vdi'], qemuO: ['-O', 'vdi'], ext: 'vdi' },
  vmdk: { label: 'VMDK', vdiskF: 'vmdk', qemu: 'vmdk', vdisk: ['-O', 'vmdk'], qemuO: ['-O', 'vmdk', '-o', 'subformat=monolithicSparse'], ext: 'vmdk' },
  stream: { label: 'stream', vdiskF: 'vmdk', qemu: 'vmdk', vdisk: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], qemuO: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], ext: 'vmdk' },
  qcow2: { label: 'qcow2', vdiskF: 'qcow2', qemu: 'qcow2', vdisk: ['-O', 'qcow2'], qemuO: ['-O', 'qcow2'], ext: 'qcow2' },
  vhdx: { label: 'VHDX', vdiskF: 'vhdx', qemu: 'vhdx', vdisk: ['-O', 'vhdx'], qemuO: ['-O', 'vhdx'], ext: 'vhdx' },
};

/** Destinations timed from raw only, outside the matrix: compressed output (`convert -c`). */
const OUTPUTS = {
  ...FORMATS,
  qcow2c: { label: 'qcow2 -c', vdiskF: 'qcow2', qemu: 'qcow2', vdisk: ['-O', 'qcow2', '-c'], qemuO: ['-O', 'qcow2', '-c'], ext: 'qcow2' },
};

let raw;
if (DISK === 'ext4') {
  // The cached image itself (only ever read: every tool opens its source read-only).
  raw = realDisk();
  console.log(`vdisk convert bench: 4 GiB ext4 (mkfs.ext4 -d of /usr/share and /usr/bin); ${REPEAT} alternating runs each; medians in seconds`);
} else {
  raw = join(dir, 'src.raw');
  makeRaw(raw);
  console.log(`vdisk convert bench: ${SIZE / 1024 ** 3} GiB disk, half ${DATA === 'text' ? 'text' : 'random data'}; ${REPEAT} alternating runs each; medians in seconds`);
}
console.log('(vdisk runs with -t unsafe, qemu-img convert\'s default cache mode: neither flushes)');
const sources = { raw: { path: raw } };
const wanted = DISK === 'ext4' ? Object.keys(FORMATS) : ['raw', 'vhd', 'vmdk', 'qcow2'];
for (const f of wanted) {
  if (f === 'raw') continue;
  // The ext4 disk's copies are cached beside it too (only ever read).
  const path = DISK === 'ext4' ? join(cacheDir(), `ext4-usr-4g-${f}.${FORMATS[f].ext}`) : join(dir, `src-${f}.${FORMATS[f].ext}`);
  if (DISK !== 'ext4' || !existsSync(path)) {
    execFileSync('qemu-img', ['convert', '-f', 'raw', ...FORMATS[f].qemuO, raw, `${path}.part`]);
    renameSync(`${path}.part`, path);
  }
  sources[f] = { path };
}

const pair = (from, to) => ({ name: `${OUTPUTS[from].label} → ${OUTPUTS[to].label}`, from, to });
const cases =
  DISK === 'ext4'
    ? Object.keys(FORMATS).flatMap((from) => Object.keys(FORMATS).map((to) => pair(from, to)))
    : [pair('raw', 'raw'), pair('vhd', 'vmdk'), pair('vhd', 'vdi'), pair('vmdk', 'vhd'), pair('vhd', 'stream'), pair('raw', 'qcow2'), pair('qcow2', 'raw'), pair('qcow2', 'vmdk'), pair('vhd', 'qcow2')];
// convert -c: compressed qcow2 clusters from the raw disk (deflate on worker threads against qemu's thread pool).
cases.push(pair('raw', 'qcow2c'));
const rows = [];
const ratios = {};
for (const c of cases) {
  if (ONLY && !c.name.toLowerCase().includes(ONLY.toLowerCase())) continue;
  const missing = [...new Set([OUTPUTS[c.from].vdiskF, OUTPUTS[c.to].vdiskF].filter((f) => !has(f)))];
  if (missing.length) {
    console.log(`${c.name}: skipped (vdisk has no ${missing.join(', ')} driver yet)`);
    continue;
  }
  const src = sources[c.from];
  const from = FORMATS[c.from];
  const to = OUTPUTS[c.to];
  const withCp = c.from === 'raw' && c.to === 'raw';
  const t = { vdisk: [], qemu: [], ...(withCp ? { cp: [] } : {}) };
  const vdiskOut = join(dir, `out-vdisk.${to.ext}`);
  const runs = {
    vdisk: () => sh(process.execPath, [VDISK, 'convert', '-t', 'unsafe', '-f', from.vdiskF, ...to.vdisk, src.path, vdiskOut]),
    qemu: () => sh('qemu-img', ['convert', '-f', from.qemu, ...to.qemuO, src.path, join(dir, `out-qemu.${to.ext}`)]),
    ...(withCp ? { cp: () => sh('cp', ['--sparse=always', src.path, join(dir, `out-cp.${to.ext}`)]) } : {}),
  };
  // The random disk's sources were just written: one untimed run of each first, since
  // the first run after that paid for settling the page cache (2.5 s where the rest
  // took 0.6 s), whichever tool drew it. The ext4 matrix skips it (49 cases).
  if (DISK === 'random') {
    for (const k of Object.keys(runs)) {
      clearOut('out');
      runs[k]();
    }
  }
  for (let i = 0; i < REPEAT; i++) {
    // Each round runs the tools in a fresh random order. On a VM the cost of a run's page
    // allocations drifts in phases (free memory is handed back to the host and faulted in
    // again); a fixed order can lock one tool onto the expensive phase for many rounds.
    // Every timed run also starts the same way: no output file left, no dirty pages.
    for (const k of shuffle(Object.keys(runs))) {
      clearOut('out');
      t[k].push(runs[k]());
      if (k === 'vdisk' && i === 0) {
        const r = spawnSync('qemu-img', ['compare', '-f', from.qemu, '-F', to.qemu, src.path, vdiskOut]);
        if (r.status !== 0) console.log(`WARNING ${c.name}: qemu-img compare says the vdisk output differs from the source: ${String(r.stdout).trim()} ${String(r.stderr).trim()}`);
      }
    }
  }
  clearOut('out');
  if (process.env.BENCH_VERBOSE) for (const k of Object.keys(t)) console.log(`${c.name} ${k}: ${t[k].map((x) => x.toFixed(2)).join(' ')}`);
  const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)]));
  const best = (k) => Math.min(...t[k]);
  ratios[c.name] = m.vdisk / m.qemu;
  const row = {
    case: c.name,
    'vdisk s': m.vdisk.toFixed(2),
    'qemu-img s': m.qemu.toFixed(2),
    'vdisk/qemu': (m.vdisk / m.qemu).toFixed(2),
    'fastest vdisk/qemu': (best('vdisk') / best('qemu')).toFixed(2),
  };
  if (withCp) Object.assign(row, { 'cp s': m.cp.toFixed(2), 'vdisk/cp': (m.vdisk / m.cp).toFixed(2) });
  rows.push(row);
  console.log(`${c.name}: vdisk ${m.vdisk.toFixed(2)} s, qemu-img ${m.qemu.toFixed(2)} s, ratio ${(m.vdisk / m.qemu).toFixed(2)}${withCp ? `; cp ${m.cp.toFixed(2)} s, vdisk/cp ${(m.vdisk / m.cp).toFixed(2)}` : ''}`);
}
console.table(rows);

// The matrix: rows are sources, columns destinations, cells vdisk/qemu-img median time.
const labels = Object.keys(FORMATS).map((f) => FORMATS[f].label);
if (DISK === 'ext4' && Object.keys(ratios).length > 1) {
  console.log('\nvdisk / qemu-img (median wall time; goal <= 0.80), source ↓ destination →');
  console.log(['from \\ to'.padEnd(10), ...labels.map((l) => l.padStart(8))].join(''));
  for (const a of labels) {
    console.log([a.padEnd(10), ...labels.map((b) => (ratios[`${a} → ${b}`] === undefined ? '-' : ratios[`${a} → ${b}`].toFixed(2)).padStart(8))].join(''));
  }
  const over = Object.entries(ratios).filter(([, r]) => r > 0.8);
  console.log(over.length ? `above 0.80: ${over.map(([k, r]) => `${k} ${r.toFixed(2)}`).join(', ')}` : 'every pair at or below 0.80');
}
