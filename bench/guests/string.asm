; rep movsb, rep movsw, rep stosw and repe cmpsb over buffers of a few hundred
; bytes, and single movsw/stosw/lodsb. 24 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 150000
%endif
        BENCH_START
        mov ebp, ITER
        mov ax, 0x1000
        mov ds, ax
        mov ax, 0x2000
        mov es, ax
.loop:  xor si, si
        mov di, 0x100
        mov cx, 256
        rep movsb
        xor si, si
        mov di, 0x400
        mov cx, 200
        rep movsw
        mov di, 0x800
        mov ax, bp
        mov cx, 160
        rep stosw
        mov si, 0x400
        mov di, 0x100
        mov cx, 300
        repe cmpsb
        xor si, si
        xor di, di
        movsw
        stosw
        lodsb
        dec ebp
        jnz .loop
        BENCH_END
        BENCH_PAD
