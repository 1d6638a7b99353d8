/**
 * Code reached through remapped addresses must run as the memory holds it: one routine
 * through two segment aliases patched through a third, the same linear address before
 * and after the A20 gate changes which RAM it reaches (the HMA, then the 1 MiB wrap),
 * and code replaced by a disk read (DMA) under a routine that already ran. A guard for
 * any decode cache keyed by address.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { bootSectorImage, nasm, qemuSerial } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-remap-');
});

/**
 * Each `run` calls a far routine 300 times (hot enough for any block cache) and prints
 * the letter it returned in AL. Routine: `mov al, imm8; retf` (B0 xx CB).
 */
const REMAP_GUEST = `
        bits 16
        org 0x7c00
%macro run 2
        mov cx, 300
%%again: call %1:%2
        loop %%again
        call serial_out
%endmacro
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov [drive], dl
        mov word [0x600], 0x61b0        ; 0000:0600  mov al, 'a'
        mov byte [0x602], 0xcb          ;            retf
        run 0x0000, 0x0600              ; a
        mov ax, 0x0050
        mov es, ax
        mov byte [es:0x101], 'b'        ; patched through 0050:0101 (physical 601h)
        run 0x0060, 0x0000              ; b: the same bytes through CS=0060h
        run 0x0000, 0x0600              ; b: and through CS=0000h
        in al, 0x92                     ; A20 on: FFFF:0610 is physical 100600h (the HMA)
        or al, 2
        and al, 0xfe
        out 0x92, al
        mov ax, 0xffff
        mov es, ax
        mov word [es:0x610], 0x63b0     ; mov al, 'c'
        mov byte [es:0x612], 0xcb
        run 0xffff, 0x0610              ; c: the HMA copy
        in al, 0x92                     ; A20 off: FFFF:0610 wraps to physical 600h
        and al, 0xfc
        out 0x92, al
        run 0xffff, 0x0610              ; b: the same linear address, now low memory
        mov byte [es:0x611], 'd'        ; patched through the wrap (physical 601h)
        run 0x0000, 0x0600              ; d
        in al, 0x92                     ; A20 on again: the HMA copy is still there
        or al, 2
        and al, 0xfe
        out 0x92, al
        run 0xffff, 0x0610              ; c
        xor ax, ax
        mov es, ax
        mov ax, 0x0201                  ; read sector 2 (mov al, 'e'; retf) over 0000:0600
        mov cx, 0x0002
        xor dh, dh
        mov dl, [drive]
        mov bx, 0x0600
        int 0x13
        run 0x0000, 0x0600              ; e
        mov al, 13
        call serial_out
        mov al, 10
        call serial_out
        jmp finish
%include "print.inc"
drive:  db 0
        times 510 - ($ - $$) db 0
        dw 0xaa55
        db 0xb0, 'e', 0xcb
        times 1024 - ($ - $$) db 0
`;

const EXPECTED = 'abbcbdce\r\n';

describe('code in remapped memory', () => {
  itWith(['nasm'], 'runs as memory holds it through segment aliases, the A20 wrap and a disk read over it', async () => {
    const img = join(dir, 'remap.img');
    bootSectorImage(img, nasm(dir, 'remap', REMAP_GUEST), 2880);
    const dev = await open(img, { readOnly: true });
    try {
      const r = await boot(dev, { snapshot: true, timeoutMs: 20_000 }).result;
      expect(r.serial).toBe(EXPECTED);
    } finally {
      await dev.close();
    }
  });

  itWith(['nasm', 'qemu-system-i386'], 'prints what qemu-system-i386 prints', async () => {
    const img = join(dir, 'remap-q.img');
    bootSectorImage(img, nasm(dir, 'remapq', REMAP_GUEST), 2880);
    expect(await qemuSerial(img)).toBe(EXPECTED);
  });
});
