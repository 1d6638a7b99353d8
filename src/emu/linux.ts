/**
 * Direct Linux boot (`vdisk boot --kernel F --initrd F --append TEXT`), as qemu's
 * `-kernel` does: the bzImage's protected-mode kernel goes to 1 MiB, the initrd to
 * the top of memory, the kernel command line and a "zero page" (`struct boot_params`)
 * below 1 MiB, and the CPU enters the kernel through the 32-bit boot protocol. Facts
 * from Linux's Documentation/arch/x86/boot.rst (the setup header and the 32-bit entry)
 * and arch/x86/include/uapi/asm/bootparam.h (the zero page's offsets).
 *
 * The switch to protected mode is made by the guest itself: a few bytes of real-mode
 * code loaded at {@link TRAMPOLINE} load a flat GDT, set CR0.PE and jump to the
 * kernel's `code32_start` with the registers the protocol names (ESI = the zero page,
 * EBP = EDI = EBX = 0, interrupts off, __BOOT_CS = 10h and __BOOT_DS = 18h flat).
 * That keeps this file free of CPU internals and runs the transition through the
 * same descriptor checks as any guest's.
 */
import { VdiskError } from '../errors.js';

/** What to boot. */
export interface LinuxImage {
  /** The bzImage file's bytes. */
  kernel: Uint8Array;
  /** The initial RAM disk (a cpio archive, optionally compressed), if any. */
  initrd?: Uint8Array;
  /** Kernel command line (e.g. `console=ttyS0`). */
  cmdline?: string;
  /** Names for messages. */
  kernelName?: string;
  initrdName?: string;
}

/** The setup header fields a loader reads (boot.rst, "THE REAL-MODE KERNEL HEADER"). */
export interface BzImageHeader {
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  version: number;
  /** 512-byte sectors of real-mode setup code after the boot sector. */
  setupSects: number;
  /** Where the protected-mode kernel expects to be loaded (normally 1 MiB). */
  code32Start: number;
  /** Highest address the initrd may end at (inclusive). */
  initrdAddrMax: number;
  /** Longest command line, without its NUL. */
  cmdlineSize: number;
  /** Memory the kernel needs from its load address while it decompresses (0 before 2.10). */
  initSize: number;
  /** Bytes of the protected-mode part. */
  kernelBytes: number;
  /** Kernel version string the header points at, when it has one. */
  versionString?: string;
}

// Offsets into the zero page (bootparam.h) and the setup header within it (boot.rst).
const ALT_MEM_K = 0x1e0;
const E820_ENTRIES = 0x1e8;
const SETUP_SECTS = 0x1f1;
const BOOT_FLAG = 0x1fe;
const JUMP = 0x200;
const HEADER_MAGIC = 0x202;
const VERSION = 0x206;
const KERNEL_VERSION = 0x20e;
const TYPE_OF_LOADER = 0x210;
const LOADFLAGS = 0x211;
const CODE32_START = 0x214;
const RAMDISK_IMAGE = 0x218;
const RAMDISK_SIZE = 0x21c;
const CMD_LINE_PTR = 0x228;
const INITRD_ADDR_MAX = 0x22c;
const CMDLINE_SIZE = 0x238;
const INIT_SIZE = 0x260;
const E820_TABLE = 0x2d0;
/** `struct boot_e820_entry`: u64 address, u64 size, u32 type. */
const E820_ENTRY = 20;
/** LOADFLAGS bit 0: the protected-mode code is loaded at 100000h (a bzImage). */
const LOADED_HIGH = 0x01;
/** Protocol 2.06 is the first with `cmdline_size`; every kernel of the last 15 years is newer. */
const MIN_VERSION = 0x0206;

/** Where the loader puts its pieces below 1 MiB (all in conventional memory the kernel does not claim before it copies them). */
export const GDT_ADDR = 0x7000;
export const TRAMPOLINE = 0x7100;
export const ZERO_PAGE = 0x10000;
export const CMDLINE_ADDR = 0x20000;
/** The usable conventional memory the map reports (the BIOS's 640 KiB minus nothing: no EBDA is used). */
const LOW_MEMORY = 0x9fc00;
const KERNEL_ADDR = 0x100000;

const u16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Uint8Array, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}
function put64(b: Uint8Array, o: number, v: number): void {
  put32(b, o, v % 2 ** 32);
  put32(b, o + 4, Math.floor(v / 2 ** 32));
}

/** Read and check a bzImage's setup header: E_FORMAT naming what is wrong when the file is not one this loader can boot. */
export function parseBzImage(kernel: Uint8Array, name = 'kernel'): BzImageHeader {
  const bad = (why: string): never => {
    throw new VdiskError('E_FORMAT', `${name}: not a Linux bzImage (${why})`, { file: name });
  };
  if (kernel.length < 0x400) bad(`${kernel.length} bytes is too short for a boot sector and setup header`);
  if (u16(kernel, BOOT_FLAG) !== 0xaa55) bad('no 55AA boot flag at 1FEh');
  if (u32(kernel, HEADER_MAGIC) !== 0x53726448) bad('no "HdrS" setup header at 202h');
  const version = u16(kernel, VERSION);
  if (version < MIN_VERSION) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: boot protocol ${version >> 8}.${(version & 0xff).toString().padStart(2, '0')} is older than 2.06`, { file: name, field: 'version', value: version });
  }
  if (!(kernel[LOADFLAGS]! & LOADED_HIGH)) throw new VdiskError('E_UNSUPPORTED', `${name}: a zImage (loaded low) rather than a bzImage`, { file: name, field: 'loadflags' });
  const setupSects = kernel[SETUP_SECTS]! || 4;
  const pmStart = (setupSects + 1) * 512;
  if (pmStart >= kernel.length) bad(`its ${setupSects} setup sectors reach past the end of the file`);
  const header: BzImageHeader = {
    version,
    setupSects,
    code32Start: u32(kernel, CODE32_START),
    initrdAddrMax: u32(kernel, INITRD_ADDR_MAX),
    cmdlineSize: u32(kernel, CMDLINE_SIZE),
    initSize: version >= 0x020a ? u32(kernel, INIT_SIZE) : 0,
    kernelBytes: kernel.length - pmStart,
  };
  const vOff = u16(kernel, KERNEL_VERSION);
  if (vOff) {
    const at = vOff + 0x200;
    const end = kernel.indexOf(0, at);
    if (at < pmStart && end > at && end - at < 256) header.versionString = new TextDecoder('latin1').decode(kernel.subarray(at, end));
  }
  return header;
}

/**
 * Lay the kernel, initrd, command line and zero page out in `ram` (the guest's
 * physical memory, `ram.length` bytes of it) and the real-mode trampoline that
 * enters the kernel. Returns the parsed header and the address the CPU must start
 * at, in real mode at 0000:{@link TRAMPOLINE}, with A20 on.
 */
export function loadLinux(ram: Uint8Array, image: LinuxImage): { header: BzImageHeader; entry: number; initrdAddr?: number } {
  const name = image.kernelName ?? 'kernel';
  const kernel = image.kernel;
  const h = parseBzImage(kernel, name);
  const memTop = ram.length;
  const kernelEnd = KERNEL_ADDR + Math.max(h.kernelBytes, h.initSize);
  if (kernelEnd > memTop) {
    throw new VdiskError('E_USAGE', `${name}: the kernel needs ${Math.ceil(kernelEnd / 2 ** 20)} MiB of guest memory (it has ${memTop / 2 ** 20}); give --memory more`, { file: name });
  }
  const cmdline = new TextEncoder().encode(image.cmdline ?? '');
  const cmdMax = h.cmdlineSize || 255;
  if (cmdline.length > cmdMax) throw new VdiskError('E_USAGE', `--append: ${cmdline.length} bytes is longer than this kernel's ${cmdMax}-byte command line`);
  if (cmdline.includes(0)) throw new VdiskError('E_USAGE', '--append: the command line holds a NUL byte');

  // The zero page: all zeros but for the setup header (copied from the file as boot.rst
  // asks, 1F1h to the end the byte at 201h gives) and what the loader fills in.
  const zp = new Uint8Array(4096);
  const headerEnd = Math.min(JUMP + 2 + kernel[JUMP + 1]!, 4096, (h.setupSects + 1) * 512);
  zp.set(kernel.subarray(SETUP_SECTS, headerEnd), SETUP_SECTS);
  zp[TYPE_OF_LOADER] = 0xff; // "undefined" loader, as boot.rst allows
  // LOADFLAGS bit 5 QUIET_FLAG and bit 6 KEEP_SEGMENTS stay as the kernel has them; bit 7 (heap) is for the 16-bit entry only.
  put32(zp, CMD_LINE_PTR, CMDLINE_ADDR);
  put32(zp, ALT_MEM_K, Math.floor((memTop - KERNEL_ADDR) / 1024));
  // The memory map, as the BIOS's INT 15h E820h reports it.
  const e820: Array<[number, number, number]> = [
    [0, LOW_MEMORY, 1],
    [LOW_MEMORY, 0xa0000 - LOW_MEMORY, 2],
    [0xf0000, 0x10000, 2],
    [KERNEL_ADDR, memTop - KERNEL_ADDR, 1],
  ];
  zp[E820_ENTRIES] = e820.length;
  e820.forEach(([base, size, type], i) => {
    const o = E820_TABLE + i * E820_ENTRY;
    put64(zp, o, base);
    put64(zp, o + 8, size);
    put32(zp, o + 16, type);
  });

  let initrdAddr: number | undefined;
  if (image.initrd && image.initrd.length > 0) {
    const size = image.initrd.length;
    // As high as the kernel allows (initrd_addr_max is the last byte it may use), page aligned.
    const ceiling = Math.min(memTop, (h.initrdAddrMax || 0x37ffffff) + 1);
    initrdAddr = Math.floor((ceiling - size) / 4096) * 4096;
    if (initrdAddr < kernelEnd) {
      throw new VdiskError('E_USAGE', `${image.initrdName ?? 'initrd'}: ${size} bytes do not fit in guest memory beside the kernel (${memTop / 2 ** 20} MiB); give --memory more`, { file: image.initrdName });
    }
    ram.set(image.initrd, initrdAddr);
    put32(zp, RAMDISK_IMAGE, initrdAddr);
    put32(zp, RAMDISK_SIZE, size);
  }

  ram.set(kernel.subarray((h.setupSects + 1) * 512), KERNEL_ADDR);
  ram.set(zp, ZERO_PAGE);
  ram.fill(0, CMDLINE_ADDR, CMDLINE_ADDR + cmdMax + 1);
  ram.set(cmdline, CMDLINE_ADDR);

  // GDT: null, unused, 10h flat 4 GiB code (execute/read, 32-bit), 18h flat data (read/write):
  // limit FFFFFh in 4 KiB units, base 0, access 9Ah / 92h, flags G=1 D=1.
  ram.fill(0, GDT_ADDR, GDT_ADDR + 0x10);
  ram.set([0xff, 0xff, 0, 0, 0, 0x9a, 0xcf, 0], GDT_ADDR + 0x10);
  ram.set([0xff, 0xff, 0, 0, 0, 0x92, 0xcf, 0], GDT_ADDR + 0x18);
  // The GDTR image right after the table: limit 1Fh, base GDT_ADDR.
  const gdtr = GDT_ADDR + 0x20;
  ram[gdtr] = 0x1f;
  ram[gdtr + 1] = 0;
  put32(ram, gdtr + 2, GDT_ADDR);

  const entry32 = TRAMPOLINE + 0x20;
  const code16 = [
    0xfa, // cli
    0x0f, 0x01, 0x16, gdtr & 0xff, gdtr >> 8, // lgdt [gdtr]
    0x0f, 0x20, 0xc0, // mov eax, cr0
    0x66, 0x83, 0xc8, 0x01, // or eax, 1
    0x0f, 0x22, 0xc0, // mov cr0, eax
    0x66, 0xea, entry32 & 0xff, (entry32 >> 8) & 0xff, 0, 0, 0x10, 0x00, // jmp dword 10h:entry32
  ];
  const code32 = [
    0xb8, 0x18, 0, 0, 0, // mov eax, 18h
    0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0x8e, 0xe0, 0x8e, 0xe8, // mov ds/es/ss/fs/gs, ax
    0xbe, ...le32(ZERO_PAGE), // mov esi, zero page
    0x31, 0xed, 0x31, 0xff, 0x31, 0xdb, // xor ebp, ebp; xor edi, edi; xor ebx, ebx
    0xbc, ...le32(ZERO_PAGE), // mov esp, zero page (a stack below it; the kernel sets its own at once)
    0xb8, ...le32(h.code32Start), // mov eax, code32_start
    0xff, 0xe0, // jmp eax
  ];
  ram.set(code16, TRAMPOLINE);
  ram.set(code32, entry32);
  return { header: h, entry: TRAMPOLINE, initrdAddr };
}

function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}
