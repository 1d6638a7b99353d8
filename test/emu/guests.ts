/** Helpers for boot tests: assemble nasm fixtures, build partitioned images, run qemu. */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SHARED_DIR } from '../helpers/shared.js';

/** Folder of the nasm sources. */
export const FIXTURES = new URL('../../fixtures/emu/', import.meta.url).pathname;
/** The FreeDOS floppy shared by the project (never copied into the repo). */
export const FREEDOS = join(SHARED_DIR, 'guests', 'freedos722.img');
export const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';

/** Assemble `fixtures/emu/<name>.asm` (or `source` text) into `dir`; returns the bytes. */
export function nasm(dir: string, name: string, source?: string): Buffer {
  const src = source === undefined ? join(FIXTURES, `${name}.asm`) : join(dir, `${name}.asm`);
  if (source !== undefined) writeFileSync(src, source);
  const out = join(dir, `${name}.bin`);
  execFileSync('nasm', ['-f', 'bin', '-I', FIXTURES, '-o', out, src]);
  return readFileSync(out);
}

/**
 * A raw disk of `sizeMiB` with one active partition starting at `startLba`,
 * partitioned by sfdisk; `mbrCode` (≤ 440 bytes) goes into sector 0 and `vbr` at the partition.
 */
export function partitionedImage(path: string, sizeMiB: number, startLba: number, type: string, mbrCode: Buffer, vbr?: Buffer): void {
  writeFileSync(path, Buffer.alloc(sizeMiB * 1024 * 1024));
  execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', path], { input: `label: dos\nstart=${startLba}, type=${type}, bootable\n` });
  const img = readFileSync(path);
  mbrCode.copy(img, 0, 0, Math.min(440, mbrCode.length));
  if (vbr) vbr.copy(img, startLba * 512);
  writeFileSync(path, img);
}

/** A raw disk of `sectors` sectors whose sector 0 is `boot` (padded; 55AA must be in it). */
export function bootSectorImage(path: string, boot: Buffer, sectors = 2880): void {
  const img = Buffer.alloc(sectors * 512);
  boot.copy(img);
  writeFileSync(path, img);
}

/**
 * Boot `image` under qemu-system-i386 with COM1 to a file; returns what COM1 got.
 * The guest ends qemu through isa-debug-exit (port F4h) or the timeout does.
 */
export async function qemuSerial(image: string, opts: { floppy?: boolean; timeoutMs?: number; memoryMiB?: number; cpu?: string } = {}): Promise<string> {
  const out = `${image}.qemu-serial.txt`;
  const drive = opts.floppy ? ['-drive', `file=${image},format=raw,if=floppy`, '-boot', 'a'] : ['-drive', `file=${image},format=raw,if=ide`, '-boot', 'c'];
  const args = ['-display', 'none', '-no-reboot', '-monitor', 'none', '-m', String(opts.memoryMiB ?? 16), '-serial', `file:${out}`, ...drive, '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-snapshot', ...(opts.cpu ? ['-cpu', opts.cpu] : [])];
  await new Promise<void>((resolve, reject) => {
    const p = spawn('qemu-system-i386', args, { stdio: 'ignore' });
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    p.on('error', reject);
    p.on('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return existsSync(out) ? readFileSync(out, 'latin1') : '';
}
