/** The shipped VGA font (INT 10h AX=1130h, screenshots) and mode 13h graphics screenshots. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { defaultDac } from '../../src/emu/devices/vga.js';
import { vga8x16 } from '../../src/emu/font-vga16.js';
import { smallerFonts } from '../../src/emu/bios/rom.js';
import { loadFont } from '../../src/emu/screenshot.js';
import { open } from '../../src/formats/registry.js';
import { isVdiskError } from '../../src/errors.js';
import { itWith } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { bootSectorImage, nasm, qemuSerial } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-video-');
});

/** Asks for the 8x16 (BH=6) and 8x8 (BH=3) tables, copies them to 0:8000h/0:9000h, prints CX DX ES BP. */
const FONT_GUEST = `
        bits 16
        org 0x7c00
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov ax, 0x1130
        mov bh, 6
        int 0x10
        mov [cxv], cx
        mov [dxv], dx
        mov [esv], es
        mov [bpv], bp
        push ds
        push es
        pop ds
        mov si, bp
        xor ax, ax
        mov es, ax
        mov di, 0x8000
        mov cx, 4096
        rep movsb
        pop ds
        mov ax, 0x1130
        mov bh, 3
        int 0x10
        push ds
        push es
        pop ds
        mov si, bp
        xor ax, ax
        mov es, ax
        mov di, 0x9000
        mov cx, 2048
        rep movsb
        pop ds
        mov ax, [cxv]
        call print_hex16
        mov al, ' '
        call serial_out
        mov ax, [dxv]
        and ax, 0xff
        call print_hex16
        mov si, nl
        call print
        mov ax, [esv]
        call print_hex16
        mov ax, [bpv]
        call print_hex16
        mov si, nl
        call print
        jmp finish
%include "print.inc"
nl:     db 13, 10, 0
cxv:    dw 0
dxv:    dw 0
esv:    dw 0
bpv:    dw 0
        times 510 - ($ - $$) db 0
        dw 0xaa55
`;

/** Mode 13h: default colour 4 at (0,0), DAC entry 200 set to (63,0,31) and a 10x10 block of it at (100,50), INT 10h AH=0Ch colour 14 at (319,199). */
const MODE13_GUEST = `
        bits 16
        org 0x7c00
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov ax, 0x0013
        int 0x10
        mov dx, 0x3c8
        mov al, 200
        out dx, al
        inc dx
        mov al, 63
        out dx, al
        mov al, 0
        out dx, al
        mov al, 31
        out dx, al
        mov ax, 0xa000
        mov es, ax
        mov byte [es:0], 4
        mov di, 50 * 320 + 100
        mov bx, 10
.row:   mov cx, 10
        mov al, 200
        rep stosb
        add di, 320 - 10
        dec bx
        jnz .row
        mov ah, 0x0c
        mov al, 14
        xor bh, bh
        mov cx, 319
        mov dx, 199
        int 0x10
        mov si, done
        call print
        jmp finish
%include "print.inc"
done:   db 'DRAWN', 13, 10, 0
        times 510 - ($ - $$) db 0
        dw 0xaa55
`;

async function runGuest(name: string, source: string) {
  const img = join(dir, `${name}.img`);
  bootSectorImage(img, nasm(dir, name, source), 16);
  const dev = await open(img, { readOnly: true });
  try {
    const s = boot(dev, { timeoutMs: 10_000, snapshot: true });
    const r = await s.result;
    return { r, machine: s.machine };
  } finally {
    await dev.close();
  }
}

/** Decode an 8-bit RGB PNG written by our encoder (one IDAT, filter 0 rows). */
function decodePng(data: Buffer): { width: number; height: number; pixel: (x: number, y: number) => number[] } {
  const width = data.readUInt32BE(16);
  const height = data.readUInt32BE(20);
  const idatLen = data.readUInt32BE(33);
  expect(data.subarray(37, 41).toString('latin1')).toBe('IDAT');
  const raw = inflateSync(data.subarray(41, 41 + idatLen));
  const stride = width * 3 + 1;
  return { width, height, pixel: (x, y) => [...raw.subarray(y * stride + 1 + x * 3, y * stride + 1 + x * 3 + 3)] };
}

describe('the shipped 8x16 font', () => {
  it('is the default with no VDISK_FONT and no host font', () => {
    const font = loadFont({});
    expect(font).toEqual(vga8x16());
    expect(font.length).toBe(4096);
    // 'A' (41h) has lit rows and a blank top row; space is blank; full block (DBh) is solid.
    const glyph = (c: number) => [...font.subarray(c * 16, c * 16 + 16)];
    expect(glyph(0x41).some((b) => b !== 0)).toBe(true);
    expect(glyph(0x41)[0]).toBe(0);
    expect(glyph(0x20).every((b) => b === 0)).toBe(true);
    expect(glyph(0xdb).every((b) => b === 0xff)).toBe(true);
  });

  it('names a VDISK_FONT that cannot be read', () => {
    let err: unknown;
    try {
      loadFont({ VDISK_FONT: join(dir, 'missing.psf') });
    } catch (e) {
      err = e;
    }
    expect(isVdiskError(err, 'E_NOENT')).toBe(true);
    expect(String(err)).toContain('missing.psf');
  });
});

describe('INT 10h AX=1130h', () => {
  itWith(['nasm'], 'points ES:BP at the font in ROM with CX = bytes per char and DL = rows - 1', async () => {
    const { r, machine } = await runGuest('font1130', FONT_GUEST);
    const lines = r.serial.split('\r\n');
    expect(lines[0]).toBe('0010 0018');
    expect(lines[1]).toMatch(/^F000[0-9A-F]{4}$/);
    const ram = machine.mem.ram;
    expect(ram.subarray(0x8000, 0x9000)).toEqual(vga8x16());
    expect(ram.subarray(0x9000, 0x9800)).toEqual(smallerFonts(vga8x16()).font8);
  });

  itWith(['nasm', 'qemu-system-i386'], 'returns the same CX and DL as qemu\'s VGA BIOS', async () => {
    const img = join(dir, 'font1130-q.img');
    bootSectorImage(img, nasm(dir, 'font1130q', FONT_GUEST), 16);
    const q = await qemuSerial(img);
    const { r } = await runGuest('font1130', FONT_GUEST);
    expect(q.split('\r\n')[0]).toBe(r.serial.split('\r\n')[0]);
  });
});

describe('mode 13h screenshots', () => {
  itWith(['nasm'], '--screenshot draws 320x200x256 graphics through the DAC palette, with no font package', () => {
    const img = join(dir, 'mode13.img');
    bootSectorImage(img, nasm(dir, 'mode13', MODE13_GUEST), 16);
    const png = join(dir, 'mode13.png');
    const env = { ...process.env };
    delete env.VDISK_FONT;
    const r = spawnSync('node', [VDISK_BIN, 'boot', img, '--snapshot', '--expect', 'DRAWN', '--timeout', '20', '--screenshot', png], { encoding: 'latin1', env });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const { width, height, pixel } = decodePng(readFileSync(png));
    expect([width, height]).toEqual([320, 200]);
    const dac = defaultDac();
    const rgb = (i: number) => [...dac.subarray(i * 3, i * 3 + 3)].map((v) => (v << 2) | (v >> 4));
    expect(pixel(0, 0)).toEqual(rgb(4));
    expect(pixel(0, 0)).toEqual([0xaa, 0x00, 0x00]);
    expect(pixel(100, 50)).toEqual([0xff, 0x00, 0x7d]);
    expect(pixel(109, 59)).toEqual([0xff, 0x00, 0x7d]);
    expect(pixel(110, 59)).toEqual([0, 0, 0]);
    expect(pixel(319, 199)).toEqual([0xff, 0xff, 0x55]);
    expect(pixel(1, 0)).toEqual([0, 0, 0]);
  });
});
