/**
 * `vdisk check` on damaged VHDX images against `qemu-img check` on the same files:
 * the exit code (0 clean, 1 not completed, 2 corruptions) wherever qemu reports
 * something. qemu finds BAT entries past the end of the file (whole or in part) and
 * over the image's own metadata, and refuses a log that needs replaying unless asked
 * to repair (then replays it: one corruption repaired). It reports no leaks for VHDX
 * (space after the last block is not looked at), nor payload blocks sharing space
 * (ours says corrupt: writing one would change the other). Needs `npm run build`.
 */
import { copyFile, open as openFile, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { PAYLOAD_BLOCK_FULLY_PRESENT, encodeBatEntry } from '../../../src/formats/vhdx/layout.js';
import { itWith, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../../helpers/tmp.js';
import { MiB, QEMU } from './helpers.js';

let dir = '';
let base = '';
/** Where qemu puts the BAT of an 8 MiB image with 1 MiB blocks (after headers, log and metadata). */
const BAT_AT = 2 * MiB;

function vdisk(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [VDISK_BIN, ...args], { cwd: dir });
}

/** A copy of the base image with payload block `n`'s BAT entry pointing at `offset`. */
async function withEntry(name: string, n: number, offset: number): Promise<string> {
  const f = join(dir, name);
  await copyFile(base, f);
  const e = Buffer.alloc(8);
  encodeBatEntry(e, 0, PAYLOAD_BLOCK_FULLY_PRESENT, offset);
  const h = await openFile(f, 'r+');
  try {
    await h.write(e, 0, 8, BAT_AT + n * 8);
  } finally {
    await h.close();
  }
  return f;
}

beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-check-');
  base = join(dir, 'base.vhdx');
  await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '8M']);
  await runOk('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 0 3M', base]);
  // Blocks 0..2 follow the BAT region: at 8, 9 and 10 MiB of an 11 MiB file.
  expect((await stat(base)).size).toBe(11 * MiB);
}, 60_000);

/** qemu-img check's and vdisk check's exit codes on `f` (each on its own copy, with `args`). */
async function both(f: string, args: string[] = []): Promise<{ qemu: number; ours: number; out: string }> {
  const q = `${f}.qemu.vhdx`;
  const v = `${f}.vdisk.vhdx`;
  await copyFile(f, q);
  await copyFile(f, v);
  const qr = await run('qemu-img', ['check', ...args, '-f', 'vhdx', q]);
  const vr = await vdisk('check', ...args, v);
  return { qemu: qr.code, ours: vr.code, out: `qemu: ${qr.stdout}${qr.stderr}\nvdisk: ${vr.stdout}${vr.stderr}` };
}

describe('vdisk check on damaged VHDX, judged by qemu-img check', () => {
  itWith(QEMU, 'a BAT entry past the end of the file, a block cut short, a block over the BAT: corruptions (exit 2)', async () => {
    const past = await withEntry('past.vhdx', 1, 64 * MiB);
    const over = await withEntry('over.vhdx', 1, BAT_AT);
    const cut = join(dir, 'cut.vhdx');
    await copyFile(base, cut);
    await truncate(cut, 10 * MiB + 512 * 1024);
    for (const f of [past, over, cut]) {
      const r = await both(f);
      expect(r.qemu, r.out).toBe(2);
      expect(r.ours, r.out).toBe(2);
    }
  });

  itWith(QEMU, 'clean, a file longer than its blocks (qemu counts no leaks) and an entry of an undefined state: exit 0 for both', async () => {
    const long = join(dir, 'long.vhdx');
    await copyFile(base, long);
    await truncate(long, 15 * MiB);
    const odd = join(dir, 'odd.vhdx');
    await copyFile(base, odd);
    const b = await readFile(odd);
    b.writeUInt8((b.readUInt8(BAT_AT + 8) & ~7) | 5, BAT_AT + 8);
    await writeFile(odd, b);
    for (const f of [base, long, odd]) {
      const r = await both(f);
      expect(r.qemu, r.out).toBe(0);
      expect(r.ours, r.out).toBe(0);
    }
  });

  itWith(QEMU, 'two blocks sharing space: qemu says nothing, ours reports a corruption', async () => {
    const r = await both(await withEntry('shared.vhdx', 1, 8 * MiB));
    expect(r.qemu, r.out).toBe(0);
    expect(r.ours, r.out).toBe(2);
  });

  itWith(QEMU, 'a log that needs replaying: not checked without -r (exit 1); -r leaks and -r all replay it, one corruption repaired (exit 0)', async () => {
    const f = join(dir, 'dirty.vhdx');
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', f, '8M']);
    // blkdebug fails the BAT write after the log entry is flushed (the BAT starts at sector 4096).
    const conf = join(dir, 'blkdebug.conf');
    await writeFile(conf, '[inject-error]\nevent = "pwritev"\nsector = "4096"\nerrno = "5"\n');
    await run('qemu-io', ['-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0x6b 3M 4k', `blkdebug:${conf}:${f}`]);
    const plain = await both(f);
    expect(plain.qemu, plain.out).toBe(1);
    expect(plain.ours, plain.out).toBe(1);
    for (const mode of ['leaks', 'all']) {
      const r = await both(f, ['-r', mode]);
      expect(r.qemu, r.out).toBe(0);
      expect(r.ours, r.out).toBe(0);
      expect(r.out.match(/1 corruptions/g)?.length, r.out).toBe(2);
    }
    const j = await vdisk('check', '--output', 'json', f);
    expect(JSON.parse(j.stdout)['check-errors']).toBe(1);
  });
});
