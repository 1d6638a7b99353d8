/** Self-modifying guest code must run as written at the moment it runs (a guard for any decode cache). */
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { bootSectorImage, nasm, qemuSerial } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-smc-');
});

/**
 * A loop that patches the immediate of an instruction it is about to run (the next
 * iteration sees the new byte), and a patch of the very next instruction's opcode
 * inside a straight line; prints the letters it produced on COM1.
 */
const SMC_GUEST = `
        bits 16
        org 0x7c00
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov cx, 5
top:
patch:  mov al, 'A'
        call serial_out
        inc byte [patch + 1]
        loop top
        mov byte [next], 0x40       ; turn 'nop' into 'inc ax'
        mov ax, 'x' - 1
next:   nop
        call serial_out
        mov al, 13
        call serial_out
        mov al, 10
        call serial_out
        jmp finish
%include "print.inc"
        times 510 - ($ - $$) db 0
        dw 0xaa55
`;

describe('self-modifying code', () => {
  itWith(['nasm'], 'sees each patched byte the next time it runs', async () => {
    const img = join(dir, 'smc.img');
    bootSectorImage(img, nasm(dir, 'smc', SMC_GUEST), 16);
    const dev = await open(img, { readOnly: true });
    try {
      const r = await boot(dev, { snapshot: true, timeoutMs: 10_000 }).result;
      expect(r.serial).toBe('ABCDEx\r\n');
    } finally {
      await dev.close();
    }
  });

  itWith(['nasm', 'qemu-system-i386'], 'prints what qemu-system-i386 prints', async () => {
    const img = join(dir, 'smc-q.img');
    bootSectorImage(img, nasm(dir, 'smcq', SMC_GUEST), 16);
    expect(await qemuSerial(img)).toBe('ABCDEx\r\n');
  });
});
