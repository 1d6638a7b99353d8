/**
 * Boot-ladder rung 1 (issue 17): `--bios seabios` runs Debian's SeaBIOS
 * (/usr/share/seabios/bios.bin, with vgabios-stdvga.bin in a PCI VGA's ROM) and the
 * stage-1 guests print what they print under qemu-system-i386 running the same
 * files. qemu is started as the machine vdisk models: `-nodefaults -vga std -no-acpi`
 * (no NIC option ROM, no parallel port, no empty floppy drive, no ACPI tables taken
 * from fw_cfg), COM1 to a file. The fixtures are judged on COM1; FreeDOS, which only
 * writes the screen, on the text buffer at B8000h (qemu's monitor `pmemsave`).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { boot, type BootOptions, type BootResult } from '../../src/emu/boot.js';
import { open } from '../../src/formats/registry.js';
import { REQUIRE_ORACLES, itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { FREEDOS, nasm, partitionedImage } from './guests.js';

const SEABIOS = '/usr/share/seabios/bios.bin';
const VGABIOS = '/usr/share/seabios/vgabios-stdvga.bin';
const haveSeabios = existsSync(SEABIOS) && existsSync(VGABIOS);
/** `itWith` that also needs Debian's seabios package (failing under VDISK_REQUIRE_ORACLES=1 without it). */
function itSeabios(tools: readonly string[], name: string, fn: () => Promise<void>, timeout = 60_000): void {
  if (haveSeabios) itWith(tools, name, fn, timeout);
  else if (REQUIRE_ORACLES) it(name, () => { throw new Error(`oracle missing: ${SEABIOS} (VDISK_REQUIRE_ORACLES=1)`); });
  else it.skip(`${name} [skipped: ${SEABIOS} not installed]`, () => undefined);
}

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-seabios-');
});

/** The qemu machine vdisk's `--bios seabios` PC models. */
function qemuArgs(image: string, floppy: boolean): string[] {
  const drive = floppy ? ['-drive', `file=${image},format=raw,if=floppy`, '-boot', 'a'] : ['-drive', `file=${image},format=raw,if=ide`, '-boot', 'c'];
  return ['-nodefaults', '-vga', 'std', '-no-acpi', '-display', 'none', '-no-reboot', '-m', '16', ...drive, '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-snapshot', '-bios', SEABIOS];
}

/** COM1 under qemu until the guest exits through port F4h (or the timeout). */
async function qemuSerial(image: string): Promise<string> {
  const out = `${image}.qemu-serial.txt`;
  await new Promise<void>((resolve, reject) => {
    const p = spawn('qemu-system-i386', [...qemuArgs(image, false), '-serial', `file:${out}`], { stdio: 'ignore' });
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('error', reject);
    p.on('exit', () => (clearTimeout(timer), resolve()));
  });
  return existsSync(out) ? readFileSync(out, 'latin1') : '';
}

/** The 80x25 text screen's characters (latin1, rows trimmed) from a copy of B8000h. */
function textRows(buf: Uint8Array): string[] {
  const rows: string[] = [];
  for (let r = 0; r < 25; r++) {
    let s = '';
    for (let c = 0; c < 80; c++) s += String.fromCharCode(buf[(r * 80 + c) * 2]!);
    rows.push(s.replace(/[\0 ]+$/, ''));
  }
  return rows;
}

/** Boot a floppy under qemu and return its text screen once `until` shows on it (polled through the monitor). */
async function qemuScreen(image: string, until: string): Promise<string[]> {
  const dump = `${image}.b8000`;
  const p = spawn('qemu-system-i386', [...qemuArgs(image, true), '-monitor', 'stdio'], { stdio: ['pipe', 'ignore', 'ignore'] });
  try {
    const t0 = Date.now();
    for (;;) {
      p.stdin.write(`pmemsave 0xb8000 4000 "${dump}"\n`);
      await new Promise((r) => setTimeout(r, 300));
      if (existsSync(dump)) {
        const rows = textRows(readFileSync(dump));
        if (rows.some((l) => l.includes(until))) return rows;
        if (Date.now() - t0 > 30_000) return rows;
      }
    }
  } finally {
    p.stdin.write('quit\n');
    p.kill('SIGKILL');
  }
}

/** Boot under vdisk with SeaBIOS; `elapsedMs` says how long the boot took. */
async function vdiskBoot(image: string, opts: BootOptions & { asFloppy?: boolean } = {}): Promise<BootResult & { textBuffer: Uint8Array }> {
  const dev = await open(image, { readOnly: true });
  try {
    const o = { ...opts, snapshot: true, firmware: readFileSync(SEABIOS), vgaBios: readFileSync(VGABIOS), timeoutMs: opts.timeoutMs ?? 30_000 };
    const s = opts.asFloppy ? boot(null, { ...o, floppy: dev }) : boot(dev, o);
    const r = await s.result;
    const ms = r.elapsedMs.toFixed(0);
    process.stderr.write(`seabios boot of ${image.split('/').pop()}: ${r.outcome} in ${ms} ms, ${r.instructions} instructions\n`);
    return { ...r, textBuffer: s.machine.mem.ram.slice(0xb8000, 0xb8000 + 4000) };
  } finally {
    await dev.close();
  }
}

/** A disk of `mib` MiB whose first sectors are `code`. */
function diskWith(name: string, code: Buffer, mib = 8): string {
  const img = join(dir, `${name}.img`);
  const data = Buffer.alloc(mib * 1024 * 1024);
  code.copy(data);
  writeFileSync(img, data);
  return img;
}

/** Line-by-line equality, reporting the first line that differs. */
function sameLines(ours: string, theirs: string): void {
  const a = ours.split('\r\n');
  const b = theirs.split('\r\n');
  const i = a.findIndex((l, k) => l !== b[k]);
  expect(i === -1 && a.length === b.length ? null : { line: i, ours: a[i], qemu: b[i] }).toBeNull();
}

describe('--bios seabios: the stage-1 fixtures print on COM1 what they print under qemu-system-i386 with the same bios.bin', () => {
  itSeabios(['nasm', 'sfdisk', 'qemu-system-i386'], 'MBR + VBR: relocation, the active partition, INT 13h extensions through SeaBIOS\'s ATA driver', async () => {
    const img = join(dir, 'mbr-vbr.img');
    partitionedImage(img, 8, 2048, '83', nasm(dir, 'mbr'), nasm(dir, 'vbr'));
    const [ours, theirs] = await Promise.all([vdiskBoot(img), qemuSerial(img)]);
    expect(theirs).toContain('BOOT OK');
    expect(ours.outcome).toBe('halt');
    sameLines(ours.serial, theirs);
    expect(ours.screen.join('\n')).toContain('BOOT OK'); // through SeaVGABIOS's teletype into B8000h
  });

  for (const [name, mark] of [
    ['bios', 'sector 5 read by CHS'], // INT 10h from SeaVGABIOS, A20, IRQ 0, RTC, INT 13h CHS
    ['ata', 'taskfile 0001 0001 0001 0000 0000'], // PCI config and ATA PIO, after SeaBIOS programmed both
    ['memory', 'e820'], // SeaBIOS's memory map from the CMOS sizes, INT 11h equipment
    ['diskwrite', 'WRITTEN BY GUEST'], // INT 13h AH=43h through ATA WRITE
  ] as const) {
    itSeabios(['nasm', 'qemu-system-i386'], `${name}.asm`, async () => {
      const img = diskWith(name, nasm(dir, name));
      const [ours, theirs] = await Promise.all([vdiskBoot(img), qemuSerial(img)]);
      expect(theirs).toContain(mark);
      expect(ours.outcome).toBe('halt');
      sameLines(ours.serial, theirs);
    });
  }
});

describe('--bios seabios: FreeDOS from the floppy (82077AA + 8237 DMA)', () => {
  const itFd = existsSync(FREEDOS) ? itSeabios : (_t: readonly string[], name: string) => it.skip(`${name} [no ${FREEDOS}]`, () => undefined);
  itFd(['qemu-system-i386'], 'boots to A:\\> with the same screen as qemu', async () => {
    const [ours, theirs] = await Promise.all([vdiskBoot(FREEDOS, { asFloppy: true, expect: 'A:\\>' }), qemuScreen(FREEDOS, 'A:\\>')]);
    expect(ours.outcome).toBe('expect');
    expect(theirs.join('\n')).toContain('FreeDOS kernel');
    // What the guest wrote (character bytes, as the qemu side is read).
    expect(textRows(ours.textBuffer)).toEqual(theirs);
  });
});

describe('--bios seabios: saved states', () => {
  const itFd = existsSync(FREEDOS) ? itSeabios : (_t: readonly string[], name: string) => it.skip(`${name} [no ${FREEDOS}]`, () => undefined);
  itFd([], 'FreeDOS saved at A:\\> resumes (shadow RAM, DMA, floppy controller, fw_cfg) and runs a typed command; other firmware or none is refused', async () => {
    const firmware = readFileSync(SEABIOS);
    const vgaBios = readFileSync(VGABIOS);
    const dev = await open(FREEDOS, { readOnly: true });
    let state: Uint8Array;
    try {
      const s = boot(null, { floppy: dev, snapshot: true, firmware, vgaBios, expect: 'A:\\>', timeoutMs: 30_000 });
      expect((await s.result).outcome).toBe('expect');
      state = await s.machine.saveState();
    } finally {
      await dev.close();
    }
    const again = await open(FREEDOS, { readOnly: true });
    try {
      const restoreState = { bytes: state, name: 'fd.state' };
      const r = await boot(null, { floppy: again, snapshot: true, firmware, vgaBios, restoreState, keys: 'dir\n', expect: 'bytes free', timeoutMs: 30_000 }).result;
      expect(r.outcome).toBe('expect');
      expect(r.screen.join('\n')).toContain('COMMAND  COM'); // the listing (the command line has scrolled off)
      await expect(boot(null, { floppy: again, snapshot: true, restoreState }).result).rejects.toMatchObject({ code: 'E_MISMATCH' });
      const other = Buffer.from(firmware);
      other[0] ^= 1;
      await expect(boot(null, { floppy: again, snapshot: true, firmware: other, vgaBios, restoreState }).result).rejects.toMatchObject({ code: 'E_MISMATCH' });
    } finally {
      await again.close();
    }
  });
});
