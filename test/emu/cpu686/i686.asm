; i486-i686 integer instructions on COM1, for qemu-system-i386 -cpu pentium2 (with
; the features vdisk lacks turned off) and vdisk to print alike: CPUID leaves 0, 1
; and past the last, RDTSC and the TSC MSR, RDMSR/WRMSR of the MSRs Linux reads and
; #GP for an unknown one, CMOVcc on every condition, CMPXCHG, CMPXCHG8B, XADD, BSWAP,
; CR4's bits, DR4/DR6/DR7 and CR4.DE, WBINVD, INVD, CLTS, UD2, NOPL.
%include "common.inc"
main:
        xor eax, eax
        cpuid
        show "cpuid 0 eax"
        mov eax, ebx
        show "vendor"
        mov eax, edx
        show "vendor"
        mov eax, ecx
        show "vendor"
        mov eax, 1
        cpuid
        show "cpuid 1 eax"
        mov eax, ecx
        and eax, 0x7fffffff     ; qemu sets the hypervisor bit
        show "cpuid 1 ecx"
        mov eax, edx
        show "cpuid 1 edx"
        mov eax, 7
        cpuid
        show "cpuid 7 eax"
        mov eax, edx
        show "cpuid 7 edx"

        ; The TSC counts up; WRMSR sets it.
        rdtsc
        mov esi, eax
        mov edi, edx
        rdtsc
        sub eax, esi
        sbb edx, edi
        or eax, edx
        setnz al
        movzx eax, al
        show "tsc advances"
        mov ecx, 0x10
        rdmsr
        sub eax, esi
        sbb edx, edi
        or eax, edx
        setnz al
        movzx eax, al
        show "msr 10 advances"
        mov ecx, 0x1b
        rdmsr
        and eax, 0xfffff000 | 0x800
        show "apic base"
        mov ecx, 0x8b
        xor eax, eax
        xor edx, edx
        wrmsr
        mov eax, 1
        cpuid
        mov ecx, 0x8b
        rdmsr
        mov eax, edx
        show "ucode rev"
        ; CMOVcc under 8 flag patterns: a digest of what moved.
        xor ebx, ebx
        mov ebp, flagpats
.cm:    mov eax, [ebp]
        push eax
        popfd
%assign cc 0
%rep 16
        mov ecx, 1 << cc
        mov edx, 0
        db 0x0f, 0x40 + cc, 0xd1  ; cmovcc edx, ecx
        lea ebx, [ebx + edx]    ; leaves the flags alone
%assign cc cc + 1
%endrep
        mov eax, ebx
        show "cmov"
        xor ebx, ebx
        add ebp, 4
        cmp ebp, flagpats_end
        jb .cm
        mov dword [m32], 0x11223344
        mov eax, 5
        pushfd
        mov esi, 0x55
        and dword [esp], 0
        popfd
        cmova eax, [m32]
        show "cmova mem taken"
        mov ax, 0x7777
        cmovz ax, [m32]
        show "cmovz 16"

        ; CMPXCHG: equal (stores the source) and not (loads the accumulator).
        mov eax, 0x11223344
        mov ecx, 0xdeadbeef
        cmpxchg [m32], ecx
        pushfd
        show "cmpxchg eq eax"
        mov eax, [m32]
        show "cmpxchg eq mem"
        pop eax
        and eax, 0x8d5
        show "flags"
        mov eax, 0x5
        cmpxchg [m32], ecx
        pushfd
        show "cmpxchg ne eax"
        pop eax
        and eax, 0x8d5
        show "flags"
        mov eax, 0x80
        mov ebx, 0x1234ff80
        mov dl, 0x7f
        cmpxchg bl, dl
        pushfd
        show "cmpxchg8 eax"
        mov eax, ebx
        show "cmpxchg8 ebx"
        pop eax
        and eax, 0x8d5
        show "flags"
        mov eax, 0xffff1234
        mov bx, 0x1235
        cmpxchg bx, dx
        pushfd
        show "cmpxchg16 eax"
        pop eax
        and eax, 0x8d5
        show "flags"

        ; CMPXCHG8B
        mov dword [m64], 0xaaaa5555
        mov dword [m64 + 4], 0x12345678
        mov eax, 0xaaaa5555
        mov edx, 0x12345678
        mov ebx, 0x01020304
        mov ecx, 0x05060708
        cmpxchg8b [m64]
        setz al
        movzx eax, al
        show "cmpxchg8b eq zf"
        mov eax, [m64]
        show "m64 lo"
        mov eax, [m64 + 4]
        show "m64 hi"
        xor eax, eax
        xor edx, edx
        cmpxchg8b [m64]
        setz bl
        show "cmpxchg8b ne eax"
        mov eax, edx
        show "cmpxchg8b ne edx"
        movzx eax, bl
        show "zf"
        on_fault .c8
        db 0x0f, 0xc7, 0xc8     ; cmpxchg8b eax: #UD
.c8:
        ; XADD
        mov dword [m32], 0x7fffffff
        mov eax, 1
        xadd [m32], eax
        pushfd
        show "xadd old"
        mov eax, [m32]
        show "xadd new"
        pop eax
        and eax, 0x8d5
        show "flags"
        mov ebx, 0x12345678
        mov ecx, 0x000000f0
        xadd bl, cl
        mov eax, ebx
        show "xadd8 ebx"
        mov eax, ecx
        show "xadd8 ecx"
        mov eax, 3
        xadd eax, eax
        show "xadd same"
        mov eax, 0x11223344
        bswap eax
        show "bswap"
        mov edi, 0x80000001
        bswap edi
        mov eax, edi
        show "bswap edi"

        ; CR4, DR4-DR7
        mov eax, 0x9c
        mov cr4, eax
        mov eax, cr4
        show "cr4"
        xor eax, eax
        mov cr4, eax
        mov dr7, eax
        mov eax, dr7
        show "dr7"
        mov eax, 0x0f
        mov dr6, eax
        mov eax, dr6
        show "dr6"
        mov eax, dr4
        show "dr4 is dr6"
        mov eax, 8
        mov cr4, eax
        on_fault .d4
        mov eax, dr4
.d4:    xor eax, eax
        mov cr4, eax
        mov eax, 0x12345678
        mov dr0, eax
        mov ebx, dr0
        mov eax, ebx
        show "dr0"
        wbinvd
        invd
        mov eax, cr0
        or eax, 8
        mov cr0, eax
        clts
        mov eax, cr0
        and eax, 0x8000000f
        show "cr0 after clts"
        on_fault .u2
        ud2
.u2:    nop dword [eax + eax * 1 + 0]
        db 0x0f, 0x18, 0x00     ; prefetchnta [eax]: a hint, a no-op here
        show "nopl"
        jmp finish

        align 4
flagpats:
        dd 0x002, 0x0c3, 0x801, 0x884, 0x040, 0x080, 0x8c5, 0x005
flagpats_end:
m32:    dd 0
m64:    dd 0, 0
SECTORS equ ($ - body + 511) / 512
