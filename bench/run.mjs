// npm run bench: every benchmark case, ours against a peer on the same input.
import { mkdtempSync, openSync, rmSync, writeSync, closeSync } from 'node:fs';
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
  for (const extra of ['convert', 'emu']) {
    if (only && only !== extra) continue;
    const mod = await import(join(here, `${extra}.mjs`)).catch((e) => (e.code === 'ERR_MODULE_NOT_FOUND' ? null : Promise.reject(e)));
    if (mod?.default) await mod.default({ dir });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
