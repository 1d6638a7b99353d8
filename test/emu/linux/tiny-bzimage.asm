; A tiny stand-in for a Linux bzImage: a setup header by the boot protocol (2.15)
; and a 32-bit "kernel" that prints, on COM1, what the loader told it through the
; zero page at ESI: the command line and the initrd's size and first bytes. Booted
; by qemu's -kernel (which enters at the 16-bit setup code at 200h, so that code
; switches to protected mode itself, as Linux's setup does) and by vdisk's direct
; boot (which enters at code32_start through the 32-bit protocol) it must print the
; same text.
bits 16
org 0
        times 0x1f1 db 0
        db 1                    ; 1F1h setup_sects: the 32-bit part starts at 400h
        times 0x1fe-($-$$) db 0
        dw 0xaa55               ; 1FEh boot_flag
        jmp short start16       ; 200h: header ends at 202h + this jump's offset
        db 'HdrS'               ; 202h
        dw 0x020f               ; 206h version 2.15
        dd 0                    ; 208h realmode_swtch
        dw 0                    ; 20Ch start_sys_seg
        dw 0                    ; 20Eh kernel_version
        db 0                    ; 210h type_of_loader
        db 1                    ; 211h loadflags: LOADED_HIGH
        dw 0                    ; 212h setup_move_size
        dd 0x100000             ; 214h code32_start
        dd 0                    ; 218h ramdisk_image
        dd 0                    ; 21Ch ramdisk_size
        dd 0                    ; 220h bootsect_kludge
        dw 0                    ; 224h heap_end_ptr
        db 0, 0                 ; 226h ext_loader_ver/type
        dd 0                    ; 228h cmd_line_ptr
        dd 0x37ffffff           ; 22Ch initrd_addr_max
        dd 0                    ; 230h kernel_alignment
        db 0, 0                 ; 234h relocatable_kernel, min_alignment
        dw 0                    ; 236h xloadflags
        dd 255                  ; 238h cmdline_size
        times 0x264-($-$$) db 0 ; to the end of init_size (260h) = 0
start16:
        ; Real mode, DS = the setup's segment (the zero page), CS = DS + 20h.
        cli
        mov ax, ds
        movzx esi, ax
        shl esi, 4              ; ESI = the zero page, as the 32-bit protocol has it
        mov eax, esi
        add eax, gdt
        mov [gdtr + 2], eax
        lgdt [gdtr]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp dword 0x10:0x100000
        align 8
gdt:    dq 0, 0
        dq 0x00cf9a000000ffff   ; 10h flat code
        dq 0x00cf92000000ffff   ; 18h flat data
gdtr:   dw 0x1f
        dd 0
        times 0x400-($-$$) db 0

bits 32
section pm vstart=0x100000
        mov ax, 0x18
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, 0x90000
        mov ebx, msg_cmdline
        call puts
        mov ebx, [esi + 0x228]
        call puts
        mov ebx, msg_size
        call puts
        mov eax, [esi + 0x21c]
        call puthex
        mov ebx, msg_bytes
        call puts
        mov ebx, [esi + 0x218]
        mov ecx, 16
.bytes: mov al, [ebx]
        call putc
        inc ebx
        loop .bytes
        mov ebx, msg_end
        call puts
        mov al, 0
        out 0xf4, al            ; qemu's isa-debug-exit ends the run
        cli
.halt:  hlt
        jmp .halt

puts:   mov al, [ebx]           ; print the NUL-terminated string at EBX
        test al, al
        jz .done
        call putc
        inc ebx
        jmp puts
.done:  ret

puthex: mov ecx, 8              ; print EAX as 8 hex digits
.digit: rol eax, 4
        push eax
        and al, 0x0f
        add al, '0'
        cmp al, '9'
        jbe .out
        add al, 'A' - '0' - 10
.out:   call putc
        pop eax
        loop .digit
        ret

putc:   push edx                ; COM1, waiting for the transmitter
        push eax
        mov dx, 0x3fd
.wait:  in al, dx
        test al, 0x20
        jz .wait
        pop eax
        mov dx, 0x3f8
        out dx, al
        pop edx
        ret

msg_cmdline: db 'cmdline=[', 0
msg_size:    db ']', 13, 10, 'initrd size=', 0
msg_bytes:   db 13, 10, 'initrd=[', 0
msg_end:     db ']', 13, 10, 'done', 13, 10, 0
