#!/usr/bin/env node
// bench/pool.mjs — sequential write then read of a 1 GiB LV, linear (spanning) or
// striped (3 × 64 KiB) over a VHD, a VDI and a VMDK member, against writing and
// reading the same bytes in the members directly (each member opened by vdisk's own
// format driver, the bytes it holds for the LV taken in its own order, 1 MiB per
// request). The payload is the first 1 GiB of a real ext4 disk (bench/_real-disk.mjs).
// Each run is its own process on fresh members, ours and direct taking turns in a
// new random order each round; prints medians and throughput ratios.
//
//   npm run build && node bench/pool.mjs [--repeat N]
//
// Goal (issue 15): LV throughput at least 0.9x the members' direct throughput, for
// both layouts and both directions. BENCH_VERBOSE=1 prints every run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir, realDisk } from './_real-disk.mjs';
import { benchEnv, median, shuffle } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const REPEAT = Number(opt('--repeat', process.env.BENCH_REPEAT ?? '3'));
const WORKER = new URL('./pool-worker.mjs', import.meta.url).pathname;
const disk = realDisk();
const work = mkdtempSync(join(cacheDir(), 'pool-'));

function runOnce(mode, layout) {
  const dir = join(work, `${mode}-${layout}`);
  rmSync(dir, { recursive: true, force: true });
  const r = spawnSync(process.execPath, [WORKER, mode, layout, dir, disk], { encoding: 'utf8', env: benchEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`pool-worker ${mode} ${layout} exited ${r.status}`);
  const t = JSON.parse(r.stdout.trim().split('\n').pop());
  if (process.env.BENCH_VERBOSE) console.log(`  ${mode} ${layout}: write ${t.write.toFixed(3)} s (${t.writeLoop.toFixed(3)} s before the flush), read ${t.read.toFixed(3)} s`);
  return t;
}

console.log(`vdisk pool bench: 1 GiB LV over VHD + VDI + VMDK, payload = first 1 GiB of ${disk}; ${REPEAT} rounds; medians in seconds`);
const rows = [];
try {
  for (const layout of ['linear', 'striped']) {
    const t = { lv: [], direct: [] };
    for (let i = 0; i < REPEAT; i++) for (const mode of shuffle(['lv', 'direct'])) t[mode].push(runOnce(mode, layout));
    for (const op of ['write', 'writeLoop', 'read']) {
      const lv = median(t.lv.map((x) => x[op]));
      const direct = median(t.direct.map((x) => x[op]));
      rows.push({ layout, op, lv, direct, ratio: direct / lv });
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
const MiB = 1024;
console.log('\nlayout   op        LV s     LV MiB/s  direct s  direct MiB/s  LV/direct throughput');
for (const r of rows) {
  console.log(`${r.layout.padEnd(8)} ${(r.op === 'writeLoop' ? 'w-noflush' : r.op).padEnd(9)} ${r.lv.toFixed(3).padStart(7)}  ${(MiB / r.lv).toFixed(0).padStart(8)}  ${r.direct.toFixed(3).padStart(8)}  ${(MiB / r.direct).toFixed(0).padStart(12)}  ${r.ratio.toFixed(2).padStart(8)}${r.ratio >= 0.9 ? '' : '   < 0.9 goal'}`);
}
