/** Guests that boot: nasm fixtures, FreeDOS, syslinux's MBR; and the bad-input cases. */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { formatDrivers, open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { FREEDOS, SYSLINUX_MBR, nasm, partitionedImage, qemuSerial, bootSectorImage } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-');
});

const MBR_VBR_SERIAL =
  'MBR drive 0080\r\nMBR ext ok\r\nMBR LBA 00000800\r\nMBR chain\r\n' +
  'VBR: loaded, reading payload with INT 13h AH=42h\r\nVBR: payload sector says hello\r\n' +
  'VBR: disk sectors 00004000\r\nBOOT OK\r\n';

async function bootFile(path: string, opts: Parameters<typeof boot>[1] & { asFloppy?: boolean } = {}) {
  const dev = await open(path, { readOnly: !opts.snapshot ? false : true });
  try {
    const s = opts.asFloppy ? boot(null, { ...opts, floppy: dev }) : boot(dev, opts);
    return await s.result;
  } finally {
    await dev.close();
  }
}

describe('nasm MBR + VBR fixture', () => {
  itWith(['nasm', 'sfdisk'], 'relocates, finds the active partition and chain-loads the VBR over INT 13h extensions', async () => {
    const img = join(dir, 'mbr-vbr.img');
    partitionedImage(img, 8, 2048, '83', nasm(dir, 'mbr'), nasm(dir, 'vbr'));
    const r = await bootFile(img, { timeoutMs: 20_000, snapshot: true });
    expect(r.serial).toBe(MBR_VBR_SERIAL);
    expect(r.screen.join('\n')).toContain('BOOT OK');
    expect(r.screen[0]).toBe('MBR drive 0080');
    expect(r.outcome).toBe('halt');
    expect(r.message).toMatch(/halted with interrupts disabled at 0000:[0-9A-F]{4}/);
  });

  itWith(['nasm', 'sfdisk', 'qemu-system-i386'], 'prints the same on COM1 as qemu-system-i386', async () => {
    const img = join(dir, 'mbr-vbr-q.img');
    partitionedImage(img, 8, 2048, '83', nasm(dir, 'mbr'), nasm(dir, 'vbr'));
    const q = await qemuSerial(img);
    expect(q).toBe(MBR_VBR_SERIAL);
  });

  for (const [fmt, args] of [['vpc', ['-o', 'subformat=dynamic,force_size=on']], ['vdi', []], ['vmdk', []]] as const) {
    const name = fmt === 'vpc' ? 'vhd' : fmt;
    const registered = formatDrivers().some((d) => d.name === name);
    const itConv = registered ? itWith : (_tools: readonly string[], title: string) => it.skip(`${title} [no ${name} driver registered yet]`, () => undefined);
    itConv(['nasm', 'sfdisk', 'qemu-img'], `boots the same disk converted to ${name}`, async () => {
      const raw = join(dir, `conv-${name}.img`);
      partitionedImage(raw, 8, 2048, '83', nasm(dir, 'mbr'), nasm(dir, 'vbr'));
      const out = join(dir, `conv.${name}`);
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, ...args, raw, out]);
      const r = await bootFile(out, { timeoutMs: 20_000, snapshot: true });
      expect(r.serial).toBe(MBR_VBR_SERIAL);
    });
  }
});

describe('FreeDOS floppy', () => {
  it.skipIf(!existsSync(FREEDOS))('boots to the A:\\> prompt', async () => {
    const r = await bootFile(FREEDOS, { asFloppy: true, expect: 'A:\\>', timeoutMs: 60_000, snapshot: true });
    expect(r.outcome).toBe('expect');
    const screen = r.screen.join('\n');
    expect(screen).toContain('FreeDOS kernel');
    expect(screen).toMatch(/^A:\\>/m);
  });

  it.skipIf(!existsSync(FREEDOS))('runs a command typed with keys', async () => {
    const r = await bootFile(FREEDOS, { asFloppy: true, expect: 'Volume in drive A', keys: 'dir\n', timeoutMs: 60_000, snapshot: true });
    expect(r.outcome).toBe('expect');
    expect(r.screen.join('\n')).toMatch(/A:\\>dir/);
  });

  for (const [fmt, args] of [['vpc', ['-o', 'subformat=dynamic,force_size=on']], ['vdi', []], ['vmdk', []]] as const) {
    const name = fmt === 'vpc' ? 'vhd' : fmt;
    const registered = formatDrivers().some((d) => d.name === name);
    const itConv = registered && existsSync(FREEDOS) ? itWith : (_tools: readonly string[], title: string) => it.skip(`${title} [no ${name} driver registered yet, or no FreeDOS image]`, () => undefined);
    itConv(['qemu-img'], `boots FreeDOS converted to ${name}`, async () => {
      const out = join(dir, `freedos.${name}`);
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, ...args, FREEDOS, out]);
      const r = await bootFile(out, { asFloppy: true, expect: 'A:\\>', timeoutMs: 60_000, snapshot: true });
      expect(r.outcome).toBe('expect');
    });
  }
});

describe('syslinux mbr.bin', () => {
  itWith(['sfdisk', 'mkfs.fat'], 'chain-loads a FAT partition boot sector', async () => {
    if (!existsSync(SYSLINUX_MBR)) return;
    const part = join(dir, 'fat.part');
    execFileSync('mkfs.fat', ['-C', '-F', '16', '-n', 'VDISKTEST', part, String(16 * 1024)]);
    const img = join(dir, 'syslinux.img');
    const { readFileSync, writeFileSync } = await import('node:fs');
    partitionedImage(img, 18, 2048, '6', readFileSync(SYSLINUX_MBR), undefined);
    const disk = readFileSync(img);
    readFileSync(part).copy(disk, 2048 * 512);
    writeFileSync(img, disk);
    const r = await bootFile(img, { expect: 'This is not a bootable disk', timeoutMs: 20_000, snapshot: true });
    expect(r.outcome).toBe('expect');
  });
});

describe('syslinux installed in the FAT partition', () => {
  itWith(['sfdisk', 'mkfs.fat', 'syslinux'], 'mbr.bin, the SYSLINUX boot sector and ldlinux.sys (EDD reads, then 32-bit protected mode) reach the boot: prompt', async () => {
    if (!existsSync(SYSLINUX_MBR)) return;
    const { readFileSync, writeFileSync } = await import('node:fs');
    const part = join(dir, 'sl.part');
    execFileSync('mkfs.fat', ['-C', '-F', '16', '-n', 'VDISKSL', part, String(16 * 1024)]);
    execFileSync('syslinux', ['--install', part]);
    const img = join(dir, 'syslinux-installed.img');
    partitionedImage(img, 18, 2048, '6', readFileSync(SYSLINUX_MBR), undefined);
    const disk = readFileSync(img);
    readFileSync(part).copy(disk, 2048 * 512);
    writeFileSync(img, disk);
    const r = await bootFile(img, { expect: 'boot:', timeoutMs: 60_000, snapshot: true });
    expect(r.screen.join('\n')).toMatch(/SYSLINUX \d+\.\d+ EDD/);
    expect(r.screen.join('\n')).toContain('No configuration file found');
    expect(r.outcome).toBe('expect');
  });
});

describe('bad input', () => {
  it('refuses a disk without 55AA', async () => {
    const img = join(dir, 'blank.img');
    bootSectorImage(img, Buffer.alloc(512));
    const r = await bootFile(img, { timeoutMs: 5_000 });
    expect(r.outcome).toBe('no-boot');
    expect(r.message).toBe('not bootable: no 55AA signature in sector 0');
  });

  itWith(['nasm'], 'reports a triple fault with CS:IP', async () => {
    const src = 'bits 16\norg 0x7c00\nxor ax,ax\nmov ds,ax\nlidt [idt]\nint3\nidt: dw 0\ndd 0\ntimes 510-($-$$) db 0\ndw 0xaa55\n';
    const img = join(dir, 'tf.img');
    bootSectorImage(img, nasm(dir, 'tf', src));
    const r = await bootFile(img, { timeoutMs: 5_000 });
    expect(r.outcome).toBe('triple-fault');
    expect(r.message).toBe('triple fault at 0000:7C0A');
  });

  itWith(['nasm'], 'delivers #UD to the guest for an unknown opcode', async () => {
    const src = [
      'bits 16', 'org 0x7c00', 'xor ax,ax', 'mov ds,ax', 'mov word [6*4], ud_handler', 'mov word [6*4+2], 0',
      'bad: db 0x0f, 0x0b', 'jmp $',
      'ud_handler: pop ax', 'cmp ax, bad', 'jne wrong', 'mov al, "U"', 'jmp out', 'wrong: mov al, "X"',
      'out: mov dx, 0x3f8', 'out dx, al', 'cli', 'hlt',
      'times 510-($-$$) db 0', 'dw 0xaa55',
    ].join('\n');
    const img = join(dir, 'ud.img');
    bootSectorImage(img, nasm(dir, 'ud', src));
    const logs: string[] = [];
    const r = await bootFile(img, { timeoutMs: 5_000, debug: (m) => logs.push(m) });
    expect(r.serial).toBe('U');
    expect(logs).toContain('#UD: undefined opcode at 0000:7C10');
  });
});

describe('BIOS services', () => {
  itWith(['nasm'], 'reports memory sizes through INT 12h, 15h (88h, E801h, E820h, C0h) and 11h, and the time through 1Ah', async () => {
    const img = join(dir, 'mem.img');
    bootSectorImage(img, nasm(dir, 'memory'), 64);
    const r = await bootFile(img, { timeoutMs: 10_000, memoryMiB: 32 });
    expect(r.serial).toBe(
      [
        'int12 0280', // 640 KiB
        'int15 88h 7C00', // 31 MiB above 1 MiB, in KiB
        'int15 e801h 3C00', // AX = 15 MiB in KiB
        '01003C000100', // BX, CX, DX: 16 MiB above 16 MiB in 64 KiB units (0100h), 15 MiB again, 0100h again
        'e820 00000000 000A0000 0001',
        'e820 000F0000 00010000 0002',
        'e820 00100000 01F00000 0001',
        'int15 c0h 70FC', // model FCh, feature byte 70h
        'int11 0220', // colour 80x25, one serial port, no floppy
        'int1a bcd time',
        '',
      ].join('\r\n'),
    );
  });

  itWith(['nasm'], 'draws INT 10h characters with their attributes in VGA text memory', async () => {
    const img = join(dir, 'biosprobe.img');
    const code = nasm(dir, 'bios');
    const data = Buffer.alloc(8 * 1024 * 1024);
    code.copy(data);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(img, data);
    const dev = await open(img, { readOnly: true });
    const s = boot(dev, { timeoutMs: 20_000, snapshot: true });
    const r = await s.result;
    await dev.close();
    expect(r.serial).toContain('sector 5 read by CHS');
    // The program's later teletype output overwrites the characters but keeps the
    // attributes: the three 1Eh cells of AH=09h on row 6 and the two 2Fh cells of
    // AH=13h on row 7 have moved up to rows 5 and 6 with the scroll.
    const { attrs } = s.machine.vga.cells();
    expect([...attrs.subarray(5 * 80, 5 * 80 + 4)]).toEqual([0x1e, 0x1e, 0x1e, 0x07]);
    expect([...attrs.subarray(6 * 80, 6 * 80 + 3)]).toEqual([0x2f, 0x2f, 0x07]);
    expect(r.screen[5]).toBe('a20 onE58');
    expect(s.machine.vga.cursorOffset).toBe(r.screen.findLastIndex((l) => l.length > 0) * 80 + 80);
  });
});
