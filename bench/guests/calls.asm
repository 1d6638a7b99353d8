; Near and far calls and returns: call rel16, call through a register and
; memory, ret, ret imm16, call far ptr16:16, call far [mem], retf, push/pop.
; 22 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 3000000
%endif
        BENCH_START
        mov ecx, ITER
        mov word [fptr], far1
        mov word [fptr+2], 0
        mov word [nptr], near2
        mov bx, near1
        xor ax, ax
.loop:  call near1
        call bx
        call word [nptr]
        push ax
        call near3
        call 0:far1
        call far [fptr]
        dec ecx
        jnz .loop
        BENCH_END
near1:  inc ax
        ret
near2:  add ax, 3
        ret
near3:  push bp
        mov bp, sp
        add ax, [bp+4]
        pop bp
        ret 2
far1:   xor ax, 0x5a5a
        retf
fptr:   dd 0
nptr:   dw 0
        BENCH_PAD
