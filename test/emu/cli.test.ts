/** `vdisk boot` end to end: exit codes, messages, --snapshot, --screenshot. */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { itWith } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { FREEDOS, bootSectorImage, nasm } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-cli-');
});

function vdisk(...args: string[]) {
  return spawnSync('node', [VDISK_BIN, ...args], { encoding: 'latin1', timeout: 90_000 });
}
function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe('vdisk boot', () => {
  it('exits 1 for an image without a boot signature', () => {
    const img = join(dir, 'blank.img');
    bootSectorImage(img, Buffer.alloc(512), 16);
    const r = vdisk('boot', img, '--timeout', '5');
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('vdisk: not bootable: no 55AA signature in sector 0\n');
  });

  itWith(['nasm'], 'reports a halt with interrupts off with CS:IP and the last screen, exit 1', () => {
    const img = join(dir, 'dw.img');
    bootSectorImage(img, nasm(dir, 'diskwrite'), 16);
    const r = vdisk('boot', img, '--snapshot', '--timeout', '10');
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('WRITTEN BY GUEST');
    expect(r.stderr).toMatch(/^vdisk: the guest halted with interrupts disabled at 0000:7C[0-9A-F]{2}\nlast screen:\n\+-{80}\+\n\|WRITTEN BY GUEST {64}\|/);
  });

  itWith(['nasm'], 'keeps guest writes in memory with --snapshot and writes the image without it', () => {
    const img = join(dir, 'dw2.img');
    bootSectorImage(img, nasm(dir, 'diskwrite'), 16);
    const before = sha(img);
    const snap = vdisk('boot', img, '--snapshot', '--expect', 'WRITTEN BY GUEST', '--timeout', '10');
    expect(snap.status).toBe(0);
    expect(sha(img)).toBe(before);
    const live = vdisk('boot', img, '--expect', 'WRITTEN BY GUEST', '--timeout', '10');
    expect(live.status).toBe(0);
    const sector1 = readFileSync(img).subarray(512, 512 + 16).toString('latin1');
    expect(sector1).toBe('WRITTEN BY GUEST');
  });

  // The screenshot font is the one vdisk ships: no console-font package is needed.
  it.skipIf(!existsSync(FREEDOS))('boots FreeDOS from --floppy to A:\\> and writes a screenshot', () => {
    const png = join(dir, 'fd.png');
    const before = sha(FREEDOS);
    const r = vdisk('boot', '--floppy', FREEDOS, '--snapshot', '--expect', 'A:\\\\>' /* a regular expression: the backslash escaped */, '--timeout', '60', '--screenshot', png);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('A:\\>');
    expect(sha(FREEDOS)).toBe(before);
    const data = readFileSync(png);
    expect(data.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(data.readUInt32BE(16)).toBe(640);
    expect(data.readUInt32BE(20)).toBe(400);
    // The first text row (FreeDOS banner, light grey on black) has lit pixels; the last row is blank.
    const idatLen = data.readUInt32BE(33);
    const raw = inflateSync(data.subarray(41, 41 + idatLen));
    const row = (y: number): Buffer => raw.subarray(y * 1921 + 1, (y + 1) * 1921);
    const lit = (y0: number): number => {
      let n = 0;
      for (let y = y0; y < y0 + 16; y++) for (let i = 0; i < 1920; i += 3) if (row(y)[i] === 0xaa) n++;
      return n;
    };
    expect(lit(0)).toBeGreaterThan(500);
    expect(lit(24 * 16)).toBe(0);
  });

  it.skipIf(!existsSync(FREEDOS))('exits 1 when the expected text does not appear before the timeout', () => {
    const r = vdisk('boot', '--floppy', FREEDOS, '--snapshot', '--expect', 'NEVER PRINTED', '--timeout', '3');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^vdisk: "NEVER PRINTED" did not appear: timed out after 3\.0 s at [0-9A-F]{4}:[0-9A-F]{4}\nlast screen:\n/);
  });
});

/** Prints a line, then a partial line a dot at a time, to both the screen and COM1, then spins with interrupts on. */
const LIVE_GUEST = `
        bits 16
        org 0x7c00
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov si, hello
        call print
        mov si, loading
        call print
        sti
.spin:  jmp .spin
%include "print.inc"
hello:   db 'Hello', 13, 10, 0
loading: db 'Loading.....', 0
        times 510 - ($ - $$) db 0
        dw 0xaa55
`;

describe('vdisk boot console', () => {
  itWith(['nasm'], 'shows a partial line while the guest still runs, and a line on both screen and COM1 once', async () => {
    const img = join(dir, 'live.img');
    bootSectorImage(img, nasm(dir, 'live', LIVE_GUEST), 16);
    const child = spawn('node', [VDISK_BIN, 'boot', img, '--snapshot', '--timeout', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString('latin1')));
    const seen = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no partial line within 20 s; stdout ${JSON.stringify(out)}`)), 20_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        if (out.includes('Loading.....')) {
          clearTimeout(timer);
          resolve(out);
        }
      });
    });
    // The guest is still spinning: the partial line came without a newline or an exit.
    expect(child.exitCode).toBe(null);
    expect(seen).toBe('Hello\nLoading.....');
    const code = await new Promise<number | null>((resolve) => {
      child.on('exit', (c) => resolve(c));
      child.kill('SIGINT');
    });
    expect(code).toBe(0);
    expect(out).toBe('Hello\nLoading.....\n');
    expect(err).toBe('vdisk: stopped\n');
  });
});
