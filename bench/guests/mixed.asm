; The loop of issue 18: 16-bit [si] loads and stores, `and` on an index, `rol`,
; 32-bit adds and xors, dec/jnz. 10 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 9000000
%endif
        BENCH_START
        mov ecx, ITER
        mov si, 0x1000
        mov eax, 0x9e3779b9
        mov ebx, 0x7f4a7c15
        xor edx, edx
.loop:  mov dx, [si]
        add eax, ebx
        xor edx, eax
        rol dx, 3
        mov [si], dx
        add si, 2
        and si, 0x1ffe
        xor ebx, edx
        dec ecx
        jnz .loop
        BENCH_END
        BENCH_PAD
