/** `vdisk boot` scripting: ordered regular-expression --expect, --keys-after prompts, exit codes. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { itWith } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { bootSectorImage, nasm } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-script-');
});

function vdisk(...args: string[]) {
  return spawnSync('node', [VDISK_BIN, ...args], { encoding: 'latin1', timeout: 60_000 });
}

/** Three lines, then a halt with interrupts off. */
const LINES_GUEST = `
        bits 16
        org 0x7c00
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov si, text
        call print
        jmp finish
%include "print.inc"
text:   db 'alpha 1', 13, 10, 'beta 22', 13, 10, 'gamma 333', 13, 10, 0
        times 510 - ($ - $$) db 0
        dw 0xaa55
`;

/**
 * Polls the keyboard (INT 16h AH=01h) for a while and says EARLY if a key came before
 * any prompt; then reads two lines after the prompts "first> " and "second> " and
 * prints what it got.
 */
const PROMPT_GUEST = `
        bits 16
        org 0x7c00
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7c00
        sti
        mov cx, 0
.poll:  mov ah, 0x01
        int 0x16
        jz .none
        mov si, early
        call print
        jmp .go
.none:  loop .poll
.go:    mov si, p1
        call print
        mov di, buf1
        call readline
        mov si, p2
        call print
        mov di, buf2
        call readline
        mov si, got
        call print
        mov si, buf1
        call print
        mov si, sep
        call print
        mov si, buf2
        call print
        mov si, nl
        call print
        jmp finish
; readline: ES:DI <- a line typed on the keyboard (NUL-terminated, echoed)
readline:
        xor ah, ah
        int 0x16
        cmp al, 13
        je .end
        stosb
        call serial_out
        jmp readline
.end:   mov byte [di], 0
        mov si, nl
        call print
        ret
%include "print.inc"
early:  db 'EARLY', 13, 10, 0
p1:     db 'first> ', 0
p2:     db 'second> ', 0
got:    db 'got ', 0
sep:    db ' and ', 0
nl:     db 13, 10, 0
buf1:   times 16 db 0
buf2:   times 16 db 0
        times 510 - ($ - $$) db 0
        dw 0xaa55
`;

describe('vdisk boot scripting', () => {
  itWith(['nasm'], 'exits 0 when every --expect regex matches in order', () => {
    const img = join(dir, 'lines.img');
    bootSectorImage(img, nasm(dir, 'lines', LINES_GUEST), 16);
    const r = vdisk('boot', img, '--snapshot', '--expect', 'al.ha \\d', '--expect', '^beta 2+$', '--expect', 'gam+a 3{3}', '--timeout', '20');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('alpha 1\nbeta 22\ngamma 333\n');
  });

  itWith(['nasm'], 'exits 1 naming the first --expect not met when they appear out of order', () => {
    const img = join(dir, 'lines2.img');
    bootSectorImage(img, nasm(dir, 'lines2', LINES_GUEST), 16);
    const r = vdisk('boot', img, '--snapshot', '--expect', 'gamma', '--expect', 'alpha', '--timeout', '20');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^vdisk: "alpha" did not appear: the guest halted with interrupts disabled at 0000:7C[0-9A-F]{2}\nlast screen:\n/);
  });

  itWith(['nasm'], 'exits 2 for a bad regular expression or a --keys-after with no --keys', () => {
    const img = join(dir, 'lines3.img');
    bootSectorImage(img, nasm(dir, 'lines3', LINES_GUEST), 16);
    const bad = vdisk('boot', img, '--snapshot', '--expect', 'a(b');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^vdisk: --expect "a\(b" is not a regular expression: /);
    const dangling = vdisk('boot', img, '--snapshot', '--keys-after', 'x');
    expect(dangling.status).toBe(2);
    expect(dangling.stderr).toBe('vdisk: --keys-after must be followed by the --keys it waits for\n');
    const timeout = vdisk('boot', img, '--snapshot', '--timeout', '0');
    expect(timeout.status).toBe(2);
  });

  itWith(['nasm'], '--keys-after types each --keys only once its prompt has appeared', () => {
    const img = join(dir, 'prompt.img');
    bootSectorImage(img, nasm(dir, 'prompt', PROMPT_GUEST), 16);
    // Without waiting, the first key arrives while the guest is still polling.
    const eager = vdisk('boot', img, '--snapshot', '--keys', 'one\\n', '--keys', 'two\\n', '--expect', 'got', '--timeout', '20');
    expect(eager.stdout).toContain('EARLY');
    const r = vdisk('boot', img, '--snapshot', '--keys-after', 'first> $', '--keys', 'one\\n', '--keys-after', 'second> $', '--keys', 'two\\n', '--expect', 'got one and two', '--timeout', '20');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('first> one\nsecond> two\ngot one and two\n');
  });

  itWith(['nasm'], 'documents its exit codes in --help', () => {
    const r = vdisk('boot', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Exit codes:\n {2}0 {2}every --expect matched[^]*\n {2}1 {2}an --expect was not met[^]*\n {2}2 {2}the run could not start/);
  });
});
