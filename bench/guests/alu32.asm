; 32-bit ALU with operand-size prefixes: register, immediate (imm8 and imm32)
; and carry-chained forms, a 16-bit op between them. 14 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 6000000
%endif
        BENCH_START
        mov ecx, ITER
        mov eax, 0x12345678
        mov ebx, 0x9abcdef1
        mov edx, 1
        xor esi, esi
        xor edi, edi
.loop:  add eax, ebx
        xor ebx, eax
        sub edx, eax
        adc esi, edx
        and edi, 0x0ffffff0
        or edi, eax
        add eax, 0x01020304
        xor edx, 0x55
        cmp eax, ebx
        sbb edi, 0
        add si, ax
        inc edi
        dec ecx
        jnz .loop
        BENCH_END
        BENCH_PAD
