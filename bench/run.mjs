// npm run bench: every benchmark case, ours against a peer on the same input.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sideBySide } from './lib.mjs';

const here = new URL('.', import.meta.url).pathname;
const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), 'vdisk-bench-'));
const only = process.argv[2];
try {
  if (!only || only === 'read') {
    // Case 1: read a 2 GiB raw image through BlockDevice vs cat. Target: >= 0.8x cat's throughput.
    const size = Number(process.env.BENCH_READ_SIZE ?? 2 * 2 ** 30);
    const file = join(dir, 'read.raw');
    const fd = openSync(file, 'w');
    for (let off = 0; off < size; off += 4 * 2 ** 20) writeSync(fd, randomBytes(Math.min(4 * 2 ** 20, size - off)), 0, undefined, off);
    closeSync(fd);
    sideBySide(`read ${size / 2 ** 30} GiB raw: BlockDevice.read in 128 KiB requests (read loop timed in-process) vs cat (whole process), page cache warm`, [process.execPath, join(here, 'read-device.mjs'), file], ['cat', file], {
      bytes: size,
      selfTimed: true,
    });
  }
  // The other cases are scripts of their own (each runs standalone too).
  for (const script of readdirSync(here).filter((f) => f.endsWith('.mjs') && !['run.mjs', 'lib.mjs', 'read-device.mjs'].includes(f) && !f.startsWith('_')).sort()) {
    const name = script.replace(/\.mjs$/, '');
    if (only && only !== name) continue;
    console.log(`\n== bench/${script}`);
    const r = spawnSync(process.execPath, [join(here, script)], { stdio: 'inherit' });
    if (r.status !== 0) console.log(`bench/${script} exited ${r.status}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
