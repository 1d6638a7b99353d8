; Shifts and rotates by 1, by CL and by an immediate, 8-, 16- and 32-bit:
; rol, ror, shl, shr, sar, rcl, rcr. 16 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 5000000
%endif
        BENCH_START
        mov ebp, ITER
        mov eax, 0x12345678
        mov ebx, 0x9abcdef1
        mov edx, 0x0f0f0f0f
        mov cl, 5
.loop:  rol eax, 1
        shl bx, 1
        sar edx, cl
        rcl ax, 1
        ror ebx, 7
        shr dx, 3
        rol bl, cl
        rcr edx, 1
        shl eax, cl
        sar bx, 1
        xor edx, ebx
        rol dx, 4
        or eax, ebx
        inc cl
        dec ebp
        jnz .loop
        BENCH_END
        BENCH_PAD
