; CPU-bound benchmark loop: prints 'S' on COM1, runs ITER iterations of a
; 10-instruction body (ALU, shifts, memory reads and writes, a taken branch),
; prints 'E', then stops (isa-debug-exit on qemu, cli/hlt elsewhere).
; nasm -f bin -DITER=20000000 -o loop.bin loop.asm
        bits 16
        org 0x7c00
%ifndef ITER
%define ITER 20000000
%endif
        cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        mov di, 0x1000
        mov al, 'S'
        call com1
        mov ecx, ITER
        xor eax, eax
        mov ebx, 0x12345
        xor esi, esi
        mov edi, 0x7fffffff
        xor ebp, ebp
.loop:  add eax, ebx
        xor edx, eax
        inc esi
        mov [di], ax
        add bx, [di + 2]
        shl edx, 1
        sub ebp, eax
        cmp esi, edi
        dec ecx
        jnz .loop
        mov al, 'E'
        call com1
        mov al, 0
        out 0xf4, al
        cli
        hlt
com1:   mov dx, 0x3f8
        out dx, al
        ret
        times 510 - ($ - $$) db 0
        dw 0xaa55
