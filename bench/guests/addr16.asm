; 16-bit addressing: loads, stores and read-modify-writes through [bx+si+d],
; [bp+d], [bp+di], [si] and [di+d], an `and` keeping the index in a 1 KiB window.
; 12 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 6000000
%endif
        BENCH_START
        mov ecx, ITER
        mov bx, 0x1000
        mov bp, 0x2000
        xor si, si
        xor di, di
        xor ax, ax
.loop:  mov ax, [bx+si+4]
        add [bp+6], ax
        mov dx, [si]
        xor [bx+si+8], dx
        mov [bp+di], ax
        add si, 2
        and si, 0x3fe
        mov dx, [bp+di+2]
        add di, dx
        and di, 0x1fe
        mov [si+0x1800], dx
        dec ecx
        jnz .loop
        BENCH_END
        BENCH_PAD
