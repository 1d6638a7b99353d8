#!/usr/bin/env node
// bench/nbd.mjs — `vdisk serve` against `qemu-nbd` serving the same image, read by
// `nbdcopy URI null:` with one and four connections. The image is a real filesystem:
// ext4 made with `mkfs.ext4 -d` from a copy of /usr/share (about 0.7 GB of files) in
// a 2 GiB disk, converted by qemu-img to VHD, VDI, VMDK and raw, so each server walks
// real allocation maps. The two servers take turns (a new random order each round);
// prints medians and the throughput ratio vdisk/qemu-nbd (higher is better).
//
//   npm run build && node bench/nbd.mjs [--repeat N] [--dir /tmp] [--formats vpc,vdi,vmdk,raw] [--from /usr/share]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchEnv, median, shuffle } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const REPEAT = Number(opt('--repeat', '3'));
const BASE = opt('--dir', process.env.BENCH_DIR ?? tmpdir());
const FORMATS = opt('--formats', 'vpc,vdi,vmdk,raw').split(',');
const FROM = opt('--from', '/usr/share');
const VDISK = new URL('../bin/vdisk.js', import.meta.url).pathname;

for (const tool of ['qemu-nbd', 'nbdcopy', 'qemu-img', 'mkfs.ext4']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
    console.log(`bench/nbd: ${tool} is not installed; skipped`);
    process.exit(0);
  }
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Start a server; resolves once its port accepts an NBD client. */
async function startServer(cmd, argv, port) {
  const child = spawn(cmd, argv, { stdio: 'ignore', env: benchEnv() });
  for (let i = 0; i < 200; i++) {
    if (spawnSync('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/`], { stdio: 'ignore' }).status === 0) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`${cmd} did not start`);
}

function copyOnce(uri, connections) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('nbdcopy', [`--connections=${connections}`, uri, 'null:'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`nbdcopy ${uri} exited ${r.status}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const dir = mkdtempSync(join(BASE, 'vdisk-bench-nbd-'));
try {
  const raw = join(dir, 'fs.raw');
  console.log(`building a 2 GiB ext4 image from ${FROM} ...`);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', FROM, raw, '2G'], { stdio: 'inherit' });
  const used = Number(execFileSync('du', ['-B1', raw], { encoding: 'utf8' }).split('\t')[0]);
  console.log(`ext4 image: 2 GiB, ${(used / 2 ** 20).toFixed(0)} MiB allocated`);
  const rows = [];
  for (const fmt of FORMATS) {
    const file = fmt === 'raw' ? raw : join(dir, `fs.${fmt}`);
    if (fmt !== 'raw' && !existsSync(file)) execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, raw, file]);
    const [p1, p2] = [await freePort(), await freePort()];
    const ours = await startServer(process.execPath, [VDISK, 'serve', '-r', '-p', String(p1), file], p1);
    const peer = await startServer('qemu-nbd', ['-r', '-t', '-e', '8', '-f', fmt, '-p', String(p2), '-b', '127.0.0.1', file], p2);
    try {
      for (const conns of [1, 4]) {
        const a = [];
        const b = [];
        copyOnce(`nbd://127.0.0.1:${p1}/`, conns);
        copyOnce(`nbd://127.0.0.1:${p2}/`, conns);
        for (let i = 0; i < REPEAT; i++) {
          for (const who of shuffle(['ours', 'peer'])) {
            if (who === 'ours') a.push(copyOnce(`nbd://127.0.0.1:${p1}/`, conns));
            else b.push(copyOnce(`nbd://127.0.0.1:${p2}/`, conns));
          }
        }
        const row = { format: fmt, connections: conns, vdisk: median(a), qemuNbd: median(b) };
        rows.push(row);
        console.log(`${fmt.padEnd(5)} ${conns} conn: vdisk ${row.vdisk.toFixed(3)} s, qemu-nbd ${row.qemuNbd.toFixed(3)} s, throughput ${(row.qemuNbd / row.vdisk).toFixed(2)}x qemu-nbd`);
      }
    } finally {
      ours.kill('SIGTERM');
      peer.kill('SIGTERM');
    }
  }
  console.log('\nnbdcopy URI null: (medians of %d), throughput vdisk serve / qemu-nbd:', REPEAT);
  console.log('format  1 connection  4 connections');
  for (const fmt of FORMATS) {
    const r = (c) => rows.find((x) => x.format === fmt && x.connections === c);
    console.log(`${fmt.padEnd(6)}  ${(r(1).qemuNbd / r(1).vdisk).toFixed(2).padStart(12)}  ${(r(4).qemuNbd / r(4).vdisk).toFixed(2).padStart(13)}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
