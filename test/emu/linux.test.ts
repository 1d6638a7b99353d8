/**
 * Direct Linux boot (`vdisk boot --kernel --initrd --append`), judged by qemu's own
 * `-kernel`: the tiny bzImage of linux/tiny-bzimage.asm prints on COM1 what its zero
 * page says (command line, initrd size and bytes), and must print the same under both.
 * qemu enters it at its 16-bit setup code, we at code32_start through the 32-bit
 * protocol, so the same text means both loaders put the same things where the
 * protocol says. Bad kernels and initrds get clear errors.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { loadLinux, parseBzImage } from '../../src/emu/linux.js';
import { VdiskError } from '../../src/errors.js';
import { itWith } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { FREEDOS, nasm } from './guests.js';

let dir: string;
let kernel: Buffer;
const initrd = Buffer.from('INITRD-CONTENTS-0123456789abcdef'.repeat(3000));
const CMDLINE = 'console=ttyS0 root=/dev/ram0 vdisk.test="a b"';

beforeAll(async () => {
  dir = await tempDir('vdisk-emu-linux-');
  kernel = nasm(dir, 'tiny-bzimage', readFileSync(new URL('./linux/tiny-bzimage.asm', import.meta.url), 'utf8'));
  writeFileSync(join(dir, 'tiny.bzimage'), kernel);
  writeFileSync(join(dir, 'initrd.bin'), initrd);
});

async function qemuKernel(memoryMiB: number): Promise<string> {
  const out = join(dir, `qemu-${memoryMiB}.txt`);
  const args = ['-display', 'none', '-no-reboot', '-monitor', 'none', '-m', String(memoryMiB), '-serial', `file:${out}`, '-kernel', join(dir, 'tiny.bzimage'), '-initrd', join(dir, 'initrd.bin'), '-append', CMDLINE, '-device', 'isa-debug-exit,iobase=0xf4,iosize=4'];
  await new Promise<void>((resolve, reject) => {
    const p = spawn('qemu-system-i386', args, { stdio: 'ignore' });
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('error', reject);
    p.on('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return existsSync(out) ? readFileSync(out, 'latin1') : '';
}

describe('direct Linux boot', () => {
  for (const mib of [16, 64]) {
    itWith(['qemu-system-i386', 'nasm'], `the tiny bzImage sees the same command line and initrd as under qemu -kernel (${mib} MiB)`, async () => {
      const expected = await qemuKernel(mib);
      expect(expected).toContain('done');
      const s = boot(null, { memoryMiB: mib, linux: { kernel, initrd, cmdline: CMDLINE }, timeoutMs: 20_000 });
      const r = await s.result;
      expect(r.outcome).toBe('halt');
      expect(r.serial).toBe(expected);
    }, 60_000);
  }

  itWith(['qemu-system-i386', 'nasm'], 'vdisk boot --kernel --initrd --append prints it on the terminal', async () => {
    const expected = await qemuKernel(16);
    const r = spawnSync(process.execPath, [VDISK_BIN, 'boot', '--kernel', join(dir, 'tiny.bzimage'), '--initrd', join(dir, 'initrd.bin'), '--append', CMDLINE, '--expect', '^done', '--timeout', '20'], { encoding: 'latin1' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.replace(/\r/g, '')).toContain(expected.replace(/\r/g, '').trim());
  }, 60_000);

  it('refuses a file that is not a bzImage, naming what is missing', () => {
    const err = (f: () => unknown): VdiskError => {
      try {
        f();
      } catch (e) {
        return e as VdiskError;
      }
      throw new Error('no error');
    };
    expect(err(() => parseBzImage(readFileSync(FREEDOS).subarray(0, 64 * 1024), 'dos.img')).message).toMatch(/dos\.img: not a Linux bzImage \(no "HdrS"/);
    expect(err(() => parseBzImage(new Uint8Array(100), 'short')).code).toBe('E_FORMAT');
    const old = Buffer.from(kernel);
    old.writeUInt16LE(0x0204, 0x206);
    expect(err(() => parseBzImage(old, 'old')).code).toBe('E_UNSUPPORTED');
    const low = Buffer.from(kernel);
    low[0x211] = 0;
    expect(err(() => parseBzImage(low, 'zimage')).message).toMatch(/zImage/);
    const cut = Buffer.from(kernel);
    cut[0x1f1] = 200;
    expect(err(() => parseBzImage(cut, 'cut')).message).toMatch(/setup sectors reach past the end/);
  });

  it('refuses an initrd that does not fit beside the kernel, and a command line longer than the kernel takes', () => {
    const ram = new Uint8Array(16 * 2 ** 20);
    expect(() => loadLinux(ram, { kernel, initrd: new Uint8Array(15 * 2 ** 20), initrdName: 'big.cpio' })).toThrow(/big\.cpio: .* do not fit in guest memory/);
    expect(() => loadLinux(ram, { kernel, cmdline: 'x'.repeat(256) })).toThrow(/longer than this kernel's 255-byte command line/);
  });

  it('the CLI says what is wrong with --kernel, --initrd and --append', () => {
    const run = (...a: string[]) => spawnSync(process.execPath, [VDISK_BIN, 'boot', ...a], { encoding: 'utf8' });
    let r = run('--kernel', FREEDOS, '--timeout', '1');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/not a Linux bzImage/);
    r = run(FREEDOS, '--initrd', FREEDOS);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--initrd and --append need --kernel/);
    r = run('--kernel', join(dir, 'no-such-kernel'));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/no such file/);
  });
});
