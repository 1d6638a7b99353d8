; Segment-override-heavy memory work: es:, ds:, ss: and cs: overrides on loads,
; stores and read-modify-writes, les/lds of far pointers, segment register moves.
; 16 instructions per iteration.
%include "bench.inc"
%ifndef ITER
%define ITER 4000000
%endif
        BENCH_START
        mov ecx, ITER
        mov word [0x600], 0x0000
        mov word [0x602], 0x3000
        mov word [0x604], 0x0010
        mov word [0x606], 0x4000
        mov ax, 0x2000
        mov es, ax
        mov bp, 0x700
        xor si, si
.loop:  les di, [0x600]
        mov ax, [es:di+2]
        add [ss:bp+2], ax
        mov dx, [cs:kconst]
        xor [es:di+4], dx
        lds bx, [ss:0x604]
        mov [ds:bx+si], ax
        xor ax, ax
        mov ds, ax
        mov ax, [ss:bp]
        add [es:si+6], ax
        mov dx, es
        add si, 2
        and si, 0xfe
        dec ecx
        jnz .loop
        BENCH_END
kconst: dw 0x1234
        BENCH_PAD
