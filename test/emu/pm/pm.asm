; Protected-mode probe, printed on COM1 so that qemu-system-i386 and vdisk can be
; compared line by line: 32-bit and 16-bit code segments, 66h/67h, SS.B, far
; CALL/RETF, LGDT/LIDT/SGDT/SIDT/LLDT/SLDT/LTR/STR/LAR/LSL/VERR/VERW, segment-load
; faults with their error codes, IDT interrupt and trap gates (16/32-bit), rings 0
; and 3 with the TSS stack switch (IRET and RETF outward; INT, IRQ 0 and a call gate
; with parameters inward), the TSS I/O bitmap, #DF; then paging: 4 KiB and 4 MiB
; pages, accessed/dirty bits, #PF with CR2 and error codes, CR0.WP, INVLPG and CR3
; reloads; then back to real mode and its IVT. Every exception handler prints vector,
; error code, EIP and CS (and CR2 for #PF) and resumes at the address in [resume].
        bits 16
        org 0x7c00
SECTORS equ 24
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7c00
        mov ax, 0x0200 | SECTORS ; CHS read: the rest of the program to 0:7E00
        mov cx, 0x0002
        mov dh, 0
        mov bx, 0x7e00
        int 0x13
        jc $
        in al, 0x92             ; A20 on
        or al, 2
        and al, 0xfe
        out 0x92, al
        lgdt [gdtr]
        mov eax, cr0
        or eax, 1
        mov cr0, eax
        jmp dword 0x08:pm32
        times 510 - ($ - $$) db 0
        dw 0xaa55

; ---------------------------------------------------------------- tables
        align 8
gdt:    dq 0
        dq 0x00cf9a000000ffff   ; 08 code32 DPL0
        dq 0x00cf92000000ffff   ; 10 data32 DPL0
        dq 0x00009a000000ffff   ; 18 code16 DPL0
        dq 0x000092000000ffff   ; 20 data16 (B=0) DPL0
        dq 0x00cffa000000ffff   ; 28 code32 DPL3
        dq 0x00cff2000000ffff   ; 30 data32 DPL3
tss_d:  dq 0                    ; 38 TSS (filled in)
        dq 0x00cf12000000ffff   ; 40 data, not present
        dq 0x00cf90000000ffff   ; 48 data, read-only
        dq 0x00cf98000000ffff   ; 50 code, execute-only
ldt_d:  dq 0                    ; 58 LDT (filled in)
        dq 0x00409203000000ff   ; 60 data32 base 30000h limit FFh (byte granular)
gate_d: dq 0                    ; 68 32-bit call gate, DPL 3, two parameters (filled in)
gdt_end:
gdtr:   dw gdt_end - gdt - 1
        dd gdt

ldt:    dq 0
        dq 0x004f92030100ffff   ; LDT 0Ch: data base 30100h

IDT     equ 0x10000
NVEC    equ 0x34
idtr:   dw NVEC * 8 - 1
        dd IDT

        align 4
tss:    times 0x66 db 0
        dw iomap - tss           ; the I/O permission bitmap follows
iomap:  times 0x80 db 0xff       ; ports 0-3FFh denied ...
        db 0xff
TSS_LIMIT equ $ - tss - 1
resume: dd 0
ticks:  dd 0
scratch: dd 0, 0

; ---------------------------------------------------------------- output
        bits 32
; serial_out: AL to COM1
serial_out:
        push edx
        push eax
        mov dx, 0x3fd
.w:     in al, dx
        test al, 0x20
        jz .w
        pop eax
        mov dx, 0x3f8
        out dx, al
        pop edx
        ret
; print: ESI -> NUL-terminated string
print:
        push eax
        push esi
.n:     lodsb
        test al, al
        jz .d
        call serial_out
        jmp .n
.d:     pop esi
        pop eax
        ret
; hex32: EAX as 8 hex digits and a space
hex32:
        push eax
        push ecx
        mov ecx, 8
.g:     rol eax, 4
        push eax
        and al, 0x0f
        add al, '0'
        cmp al, '9'
        jbe .o
        add al, 'A' - '0' - 10
.o:     call serial_out
        pop eax
        loop .g
        mov al, ' '
        call serial_out
        pop ecx
        pop eax
        ret
crlf:
        push eax
        mov al, 13
        call serial_out
        mov al, 10
        call serial_out
        pop eax
        ret
%macro say 1
        jmp %%over
%%s:    db %1, 0
%%over: push esi
        mov esi, %%s
        call print
        pop esi
%endmacro
; show name, value: print "name value\r\n" (value any r/m32 or immediate)
%macro show 2
        say %1
        say " "
        push eax
        mov eax, %2
        call hex32
        pop eax
        call crlf
%endmacro
; expect a fault: resume at the next label after the faulting instruction
%macro try 1
        mov dword [resume], %%next
        %1
        say "no fault"
        call crlf
%%next:
%endmacro

; ---------------------------------------------------------------- exception entry
%macro stub 1
vec%1:
%if %1 = 8 || (%1 >= 10 && %1 <= 14) || %1 = 17
        push dword %1
%else
        push dword 0
        push dword %1
%endif
        jmp exc_common
%endmacro
%assign i 0
%rep 32
        stub i
%assign i i + 1
%endrep
stubs:
%assign i 0
%rep 32
        dd vec %+ i
%assign i i + 1
%endrep

exc_common: pushad                  ; vec at +32, error at +36, EIP +40, CS +44
        say "exc "
        mov eax, [esp + 32]
        call hex32
        mov eax, [esp + 36]
        call hex32
        mov eax, [esp + 40]
        call hex32
        mov eax, [esp + 44]
        call hex32
        cmp dword [esp + 32], 14
        jne .nopf
        mov eax, cr2
        call hex32
.nopf:  call crlf
        mov eax, [resume]
        mov [esp + 40], eax
        popad
        add esp, 8
        iret

; a gate: EAX handler, BL vector, CX type/attribute word (e.g. 8E00h), selector DX
setgate:
        push eax
        push edi
        movzx edi, bl
        lea edi, [IDT + edi * 8]
        mov [edi], ax
        mov [edi + 2], dx
        mov [edi + 4], cx
        shr eax, 16
        mov [edi + 6], ax
        pop edi
        pop eax
        ret

; ---------------------------------------------------------------- 32-bit protected mode
pm32:   mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov gs, ax
        mov ss, ax
        mov esp, 0x90000
        say "pm32"
        call crlf
        ; the IDT: exception stubs, then the test gates
        xor ebx, ebx
.fill:  mov eax, [stubs + ebx * 4]
        mov cx, 0x8e00
        mov dx, 0x08
        call setgate
        inc bl
        cmp bl, 32
        jb .fill
        mov eax, h2f
        mov bl, 0x2f
        mov cx, 0x8700           ; 16-bit trap gate
        call setgate
        mov eax, h31
        mov bl, 0x30
        mov cx, 0x8e00           ; DPL0: INT 30h from ring 3 is #GP
        call setgate
        mov bl, 0x31
        mov cx, 0xee00           ; DPL3 interrupt gate
        call setgate
        mov eax, h32
        mov bl, 0x32
        mov cx, 0xee00
        call setgate
        mov bl, 0x33
        mov cx, 0x0e00           ; not present
        call setgate
        lidt [idtr]
        ; TSS and LDT descriptors
        mov eax, tss
        mov word [tss_d], TSS_LIMIT
        mov byte [iomap + 0x3f8 / 8], 0xc0 ; ... but COM1's 3F8h-3FDh
        mov [tss_d + 2], ax
        shr eax, 16
        mov [tss_d + 4], al
        mov byte [tss_d + 5], 0x89
        mov [tss_d + 7], ah
        mov eax, ldt
        mov word [ldt_d], 0x0f
        mov [ldt_d + 2], ax
        shr eax, 16
        mov [ldt_d + 4], al
        mov byte [ldt_d + 5], 0x82
        mov [ldt_d + 7], ah
        mov eax, cgate
        mov [gate_d], ax
        mov word [gate_d + 2], 0x08
        mov word [gate_d + 4], 0xec02
        shr eax, 16
        mov [gate_d + 6], ax
        mov dword [tss + 4], 0x80000 ; ESP0
        mov dword [tss + 8], 0x10    ; SS0

        ; ------------------------------------------------ registers and sizes
        mov eax, 0x12345678
        show "eax", eax
        mov ax, 0xbeef           ; 66h in 32-bit code: 16-bit operand
        show "ax", eax
        mov dword [scratch], 0x11111111
        a16 mov byte [scratch], 0x22 ; 67h: 16-bit address
        show "a16", [scratch]
        sgdt [scratch]
        show "sgdt limit", [scratch]
        show "sgdt base", [scratch + 2]
        sidt [scratch]
        show "sidt", [scratch]
        ; far CALL/RETF at the same level
        call 0x08:farfn
        show "after far call", esp
        ; into a 16-bit code segment and back
        jmp 0x18:code16
back32: show "from code16", eax
        show "esp", esp
        ; SS.B: a 16-bit stack keeps ESP's high half
        mov ax, 0x20
        mov ss, ax
        mov esp, 0x12348000
        push dword 0xa5a5a5a5
        mov ebx, esp
        mov ax, 0x10
        mov ss, ax
        mov esp, 0x90000
        show "esp after 16-bit push", ebx
        show "pushed at 7FFC", [0x7ffc]
        ; a segment with a base
        mov dword [0x30010], 0x600d0060
        mov ax, 0x60
        mov fs, ax
        show "fs:10", [fs:0x10]
        ; LLDT, SLDT, a data segment from the LDT
        mov ax, 0x58
        lldt ax
        sldt eax
        show "sldt", eax
        mov dword [0x30110], 0x1d7d1d7d
        mov ax, 0x0c
        mov gs, ax
        show "gs:10", [gs:0x10]
        ; LTR, STR, busy bit
        mov ax, 0x38
        ltr ax
        str eax
        show "str", eax
        show "tss descriptor", [tss_d + 4]
        ; LAR, LSL, VERR, VERW
        mov ax, 0x08
        lar eax, ax
        show "lar 08", eax
        mov ax, 0x60
        lsl eax, ax
        show "lsl 60", eax
        xor eax, eax
        xor ecx, ecx
        mov bx, 0x50
        verr bx
        setz al
        mov bx, 0x48
        verw bx
        setz ah
        mov bx, 0x10
        verw bx
        setz cl
        shl ecx, 16
        mov cx, ax
        show "verr/verw", ecx

        ; ------------------------------------------------ segment-load faults
        mov ax, 0x70
        try {mov ds, ax}          ; past the GDT limit: #GP(70)
        mov ax, 0x38
        try {mov ds, ax}          ; a TSS: #GP(38)
        mov ax, 0x40
        try {mov es, ax}          ; not present: #NP(40)
        try {mov ss, ax}          ; not present stack: #SS(40)
        mov ax, 0x48
        try {mov ss, ax}          ; read-only stack: #GP(48)
        mov ax, 0x50
        try {mov ds, ax}          ; execute-only code: #GP(50)
        mov ax, 0x13
        try {mov ss, ax}          ; RPL 3 for SS at CPL 0: #GP(10)
        xor eax, eax
        try {mov ss, ax}          ; null SS: #GP(0)
        try {mov ds, ax}          ; null DS loads
        mov ax, 0x10
        mov ds, ax
        mov ax, 0x14              ; LDT index 2, past its limit
        try {mov es, ax}
        mov ax, 0x10
        mov es, ax
        try {jmp 0x10:0}          ; far JMP to data: #GP(10)
        try {jmp 0x28:0}          ; to DPL3 non-conforming code from CPL 0: #GP(28)
        try {int 0x40}            ; past the IDT limit: #GP(402)
        try {int 0x33}            ; gate not present: #NP(19A)
        try {ud2}
        xor edx, edx
        xor ecx, ecx
        try {div ecx}
        ; a 16-bit trap gate
        mov ebx, esp
        int 0x2f
        show "int 2f", eax
        ; #NP while delivering #NP: double fault
        mov byte [IDT + 11 * 8 + 5], 0x0e
        try {int 0x33}
        mov byte [IDT + 11 * 8 + 5], 0x8e

        ; ------------------------------------------------ IRQ 0 through the IDT (PIC moved to 20h)
        mov al, 0x11
        out 0x20, al
        mov al, 0x20
        out 0x21, al
        mov al, 4
        out 0x21, al
        mov al, 1
        out 0x21, al
        mov al, 0xfe              ; the timer only
        out 0x21, al
        mov eax, hirq
        mov bl, 0x20
        mov cx, 0x8e00
        mov dx, 0x08
        call setgate
        mov dword [ticks], 0
        sti
.tick:  hlt
        cmp dword [ticks], 2
        jb .tick
        cli
        show "ring 0 ticks", [ticks]

        ; ------------------------------------------------ ring 3 through IRET
        push dword 0x33
        push dword 0x70000
        push dword 0x3002         ; IOPL 3
        push dword 0x2b
        push dword ring3
        iret
ring0a: mov esp, 0x90000
        say "back in ring 0"
        call crlf

        ; ------------------------------------------------ paging
        mov dword [0x33000], 0xcafebabe
        mov dword [0x34000], 0x00001234
        ; page directory 20000h: 0-4M by PT 21000h, 4-8M by PT 22000h, 8-12M one 4 MiB page
        mov edi, 0x20000
        mov ecx, 3 * 1024
        xor eax, eax
        rep stosd
        mov dword [0x20000], 0x21007
        mov dword [0x20004], 0x22007
        mov dword [0x20008], 0x00000083 ; PS, supervisor, writable
        mov edi, 0x21000
        mov eax, 0x7
.pt:    stosd
        add eax, 0x1000
        cmp edi, 0x22000
        jb .pt
        mov dword [0x21000 + 0x31 * 4], 0x31003 ; supervisor only
        mov dword [0x21000 + 0x32 * 4], 0x32005 ; user read-only
        mov dword [0x22000], 0x33007            ; 400000h -> 33000h
        mov eax, cr4
        or eax, 0x10              ; PSE
        mov cr4, eax
        mov eax, 0x20000
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        jmp .pg
.pg:    say "paging on"
        call crlf
        show "400000", [0x400000]
        show "pte 400000", [0x22000]
        show "pde 400000", [0x20004]
        mov dword [0x400004], 0x99
        show "pte after write", [0x22000]
        show "4M page", [0x800000 + 0x33000]
        show "pde 4M", [0x20008]
        try {mov eax, [0xc00000]}       ; no page table
        try {mov eax, [0x401000]}       ; no page
        try {mov dword [0x401000], 1}
        mov dword [0x32000], 0x77       ; read-only page, WP=0: allowed
        show "ro write WP=0", [0x32000]
        mov eax, cr0
        or eax, 0x10000
        mov cr0, eax
        try {mov dword [0x32000], 0x78} ; WP=1: #PF(3)
        show "ro after", [0x32000]
        ; remap 400000h with INVLPG, and back with a CR3 reload
        mov dword [0x22000], 0x34007
        invlpg [0x400000]
        show "after invlpg", [0x400000]
        mov dword [0x22000], 0x33007
        mov eax, cr3
        mov cr3, eax
        show "after cr3", [0x400000]
        ; ring 3 through RETF, with paging
        pushfd
        and dword [esp], ~0x3000 ; IOPL 0: COM1 through the TSS's I/O bitmap
        popfd
        push dword 0x33
        push dword 0x70000
        push dword 0x2b
        push dword ring3pg
        retf
ring0b: mov esp, 0x90000
        say "back in ring 0"
        call crlf
        ; back to real mode: paging off, a 16-bit segment, PE off, a far jump
        mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        jmp 0x18:pm16back

farfn:  show "in far fn", [esp + 4]
        retf

; ---------------------------------------------------------------- handlers
h2f:    ; 16-bit trap gate: a 6-byte frame
        mov eax, ebx
        sub eax, esp
        o16 iret

hirq:   push eax
        inc dword [ticks]
        mov al, 0x20
        out 0x20, al
        pop eax
        iret

cgate:  show "gate cs", [esp + 8]   ; (show pushes EAX first)
        show "gate p0", [esp + 12]
        show "gate p1", [esp + 16]
        show "gate esp", [esp + 20]
        show "gate ss", [esp + 24]
        show "gate cpl0 esp", esp
        retf 8

h31:    show "int 31 cs", [esp + 8]   ; (show pushes EAX first)
        show "int 31 ss", [esp + 20]
        show "int 31 esp", esp
        iret

h32:    mov ax, 0x10              ; back to ring 0 for good
        mov ds, ax
        mov es, ax
        show "int 32 from", [esp + 4]
        mov eax, [esp + 12]       ; ring 3 pushed where to go on
        jmp [eax]

; ---------------------------------------------------------------- ring 3
ring3:  mov eax, ds
        show "r3 ds", eax
        mov eax, cs
        show "r3 cs", eax
        mov ax, 0x33
        mov ds, ax
        mov es, ax
        int 0x31
        show "r3 esp", esp
        push dword 0x1111         ; through the call gate to ring 0, two parameters
        push dword 0x2222
        call 0x6b:0
        show "r3 after gate", esp
        try {int 0x30}            ; gate DPL 0: #GP(182)
        try {hlt}                 ; privileged: #GP(0)
        mov ax, 0x10
        try {mov es, ax}          ; DPL 0 data: #GP(10)
        try {mov eax, cr0}
        mov dword [ticks], 0      ; IRQ 0 in ring 3: the handler runs on the TSS stack
        sti
.r3w:   cmp dword [ticks], 2
        jb .r3w
        cli
        show "ring 3 ticks", [ticks]
        mov dword [resume], ring0a
        push ring0a
        int 0x32

ring3pg:
        mov ax, 0x33
        mov ds, ax
        mov es, ax
        say "r3 paging"
        call crlf
        try {mov eax, [0x31000]}        ; supervisor page: #PF(5)
        try {mov dword [0x32000], 1}    ; read-only page: #PF(7)
        show "r3 read ro", [0x32000]
        try {mov eax, [0x800000]}       ; supervisor 4 MiB page: #PF(5)
        mov dword [0x400008], 3
        show "r3 write", [0x400008]
        try {in al, 0x80}               ; not in the bitmap: #GP(0)
        mov dx, 0x3fe
        try {in al, dx}                 ; 3FEh: #GP(0)
        mov dx, 0x3fc
        try {in ax, dx}                 ; 3FCh-3FDh allowed
        try {in eax, dx}                ; 3FCh-3FFh: #GP(0)
        try {cli}                       ; IOPL 0: #GP(0)
        push ring0b
        int 0x32

pm16back:
        bits 16
        mov ax, 0x20
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        mov eax, cr0
        and al, 0xfe
        mov cr0, eax
        jmp 0:real16
real16: xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7000
        lidt [ivtr]
        mov word [3 * 4], int3h
        mov word [3 * 4 + 2], 0
        mov si, m_real
        call print16
        int3
        mov ax, sp
        call hex16
        mov si, m_done
        call print16
        mov al, 0
        out 0xf4, al
        cli
.h:     hlt
        jmp .h
int3h:  mov si, m_int3
        call print16
        iret
print16:
        lodsb
        test al, al
        jz .d
        call serial_out16
        jmp print16
.d:     ret
serial_out16:
        push dx
        push ax
        mov dx, 0x3fd
.w:     in al, dx
        test al, 0x20
        jz .w
        pop ax
        mov dx, 0x3f8
        out dx, al
        pop dx
        ret
hex16:  mov cx, 4
.g:     rol ax, 4
        push ax
        and al, 0x0f
        add al, '0'
        cmp al, '9'
        jbe .o
        add al, 'A' - '0' - 10
.o:     call serial_out16
        pop ax
        loop .g
        ret
ivtr:   dw 0x3ff
        dd 0
m_real: db "real mode again", 13, 10, 0
m_int3: db "int3 through the IVT", 13, 10, 0
m_done: db 13, 10, "done", 13, 10, 0

code16: bits 16
        mov eax, 0x55667788      ; 66h in 16-bit code: 32-bit operand
        mov bx, ax
        jmp dword 0x08:back32
