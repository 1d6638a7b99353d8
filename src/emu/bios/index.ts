/**
 * Our BIOS: POST fills the IVT and BIOS Data Area; services run in TypeScript,
 * entered from ROM stubs through the trap opcode (high-level emulation, as many
 * emulators do). Services that touch the disk are asynchronous: the trap stops the
 * CPU's batch and the machine awaits `pending` before resuming.
 */
import { ARITH, ZF, EAX, EBX, ECX, EDX, ES, ESP, SS, IF } from '../consts.js';
import type { Cpu } from '../cpu.js';
import type { Cmos } from '../devices/cmos.js';
import type { Vga } from '../devices/vga.js';
import type { IoBus } from '../io.js';
import type { Memory } from '../memory.js';
import {
  BDA_COM_PORTS, BDA_DISK_COUNT, BDA_EQUIPMENT, BDA_KBD_BUF_END, BDA_KBD_BUF_START, BDA_KBD_FLAGS, BDA_KBD_HEAD, BDA_KBD_TAIL,
  BDA_MEMORY_KB, BDA_TIMER_OVERFLOW, BDA_TIMER_TICKS, BDA_FLOPPY_MOTOR_TIMEOUT, TICKS_PER_DAY, BDA_KBD_FLAGS2, BDA_KBD_FLAGS3,
} from './bda.js';
import { DiskBios, type Drive } from './disk.js';
import { ROM_BASE, ROM_SEG, TRAP_RESET, buildRom, type RomLayout } from './rom.js';
import { VideoBios } from './video.js';
import { vga8x16 } from '../font-vga16.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Vectors served by TypeScript. */
const SERVICES = [0x08, 0x09, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a];
/** Services that return results in FLAGS (CF/ZF are copied into the flags the IRET pops). */
const RETURNS_FLAGS = new Set([0x10, 0x13, 0x14, 0x15, 0x16, 0x17, 0x1a]);
/** Where the boot sector goes. */
export const BOOT_ADDR = 0x7c00;
const BASE_MEMORY_KB = 640;

/** What the BIOS needs from the machine around it. */
export interface BiosHost {
  cpu: Cpu;
  mem: Memory;
  io: IoBus;
  vga: Vga;
  cmos: Cmos;
  memoryBytes: number;
  /** Teletype output (INT 10h AH=0Eh), for the console mirror. */
  tty(ch: number): void;
  /** The guest is waiting for a key and the buffer is empty. */
  keyWanted(): void;
  /** End the run: the guest asked for something that ends it. */
  stop(outcome: 'reset' | 'no-boot', message: string): void;
  /** Log under --debug. */
  debug(msg: string): void;
}

/** Scan code set 1 → ASCII (unshifted, shifted) for the keys the BIOS translates. */
const KEYMAP: [string, string][] = [];
{
  const put = (code: number, plain: string, shifted: string): void => {
    for (let i = 0; i < plain.length; i++) KEYMAP[code + i] = [plain[i]!, shifted[i]!];
  };
  put(0x02, '1234567890-=', '!@#$%^&*()_+');
  put(0x10, 'qwertyuiop[]', 'QWERTYUIOP{}');
  put(0x1e, "asdfghjkl;'`", 'ASDFGHJKL:"~');
  put(0x2b, '\\zxcvbnm,./', '|ZXCVBNM<>?');
  KEYMAP[0x39] = [' ', ' '];
  KEYMAP[0x1c] = ['\r', '\r'];
  KEYMAP[0x0f] = ['\t', '\t'];
  KEYMAP[0x0e] = ['\b', '\b'];
  KEYMAP[0x01] = ['\x1b', '\x1b'];
}

/** The BIOS. */
export class Bios implements Stateful {
  readonly rom: RomLayout;
  readonly video: VideoBios;
  readonly disk: DiskBios;
  /** An asynchronous service in flight; the machine awaits it before running on. */
  pending: Promise<void> | null = null;
  private e0 = false;

  constructor(
    private readonly host: BiosHost,
    readonly drives: Map<number, Drive>,
  ) {
    this.rom = buildRom(SERVICES, vga8x16());
    this.video = new VideoBios(host.mem, host.vga, (ch) => host.tty(ch), this.rom);
    this.disk = new DiskBios(drives, () => [ROM_SEG, this.rom.diskParamTable], (m) => host.debug(m));
  }

  private get ram(): Uint8Array {
    return this.host.mem.ram;
  }

  /** What the BIOS keeps outside guest memory (its data area and ROM are RAM, saved with memory). */
  saveState(w: StateWriter): void {
    w.bool(this.e0);
    this.disk.saveState(w);
  }
  loadState(r: StateReader): void {
    this.e0 = r.bool('E0h prefix seen');
    this.disk.loadState(r);
  }
  private w16(a: number, v: number): void {
    this.ram[a] = v & 0xff;
    this.ram[a + 1] = (v >> 8) & 0xff;
  }
  private r16(a: number): number {
    return this.ram[a]! | (this.ram[a + 1]! << 8);
  }

  /** Power-on self test: ROM, IVT, BDA, CMOS, PIC/PIT programming, video mode 3. */
  post(): void {
    const { cpu, io } = this.host;
    this.ram.fill(0, 0, 0x100000);
    this.ram.set(this.rom.image, ROM_BASE);
    for (let v = 0; v < 256; v++) {
      this.w16(v * 4, this.rom.vectors[v]!);
      this.w16(v * 4 + 2, ROM_SEG);
    }
    // Vectors that hold data pointers, not code.
    this.w16(0x1e * 4, this.rom.diskParamTable);
    this.w16(0x41 * 4, this.rom.hdParamTable);
    this.w16(0x46 * 4, this.rom.hdParamTable);
    // Graphics character tables, as a VGA BIOS sets them for mode 3: INT 1Fh the upper
    // half of the 8x8 font, INT 43h the whole 8x8 font.
    this.w16(0x1f * 4, this.rom.font8x8 + 128 * 8);
    this.w16(0x43 * 4, this.rom.font8x8);
    for (const v of [0x1d, 0x44]) {
      this.w16(v * 4, 0);
      this.w16(v * 4 + 2, 0);
    }
    for (let v = 0x60; v < 0x68; v++) {
      // User vectors start out null, as DOS programs probing for TSRs expect.
      this.w16(v * 4, 0);
      this.w16(v * 4 + 2, 0);
    }

    const floppies = [...this.drives.keys()].filter((k) => k < 0x80).length;
    const disks = [...this.drives.keys()].filter((k) => k >= 0x80).length;
    this.w16(BDA_COM_PORTS, 0x3f8);
    // Equipment: bit 0 floppy present, bits 6-7 floppies-1, bits 4-5 = 10b (80×25 colour), bits 9-11 serial ports, bit 2 PS/2 mouse no.
    let equip = 0x0020 | (1 << 9);
    if (floppies) equip |= 0x0001 | ((floppies - 1) << 6);
    this.w16(BDA_EQUIPMENT, equip);
    this.w16(BDA_MEMORY_KB, BASE_MEMORY_KB);
    this.w16(BDA_KBD_HEAD, 0x1e);
    this.w16(BDA_KBD_TAIL, 0x1e);
    this.w16(BDA_KBD_BUF_START, 0x1e);
    this.w16(BDA_KBD_BUF_END, 0x3e);
    this.ram[BDA_KBD_FLAGS3] = 0x10; // enhanced keyboard
    this.ram[BDA_DISK_COUNT] = disks;
    const floppy = this.drives.get(0);
    this.host.cmos.configure(this.host.memoryBytes, floppy?.floppyType ?? 0, disks > 0);

    // PICs as the AT BIOS programs them: master at 08h, slave at 70h, all unmasked but unused lines.
    for (const [cmd, data, base, cascade] of [[0x20, 0x21, 0x08, 0x04], [0xa0, 0xa1, 0x70, 0x02]] as const) {
      io.out8(cmd, 0x11);
      io.out8(data, base);
      io.out8(data, cascade);
      io.out8(data, 0x01);
    }
    io.out8(0x21, 0xb8); // IRQ 0, 1, 2, 6 unmasked
    io.out8(0xa1, 0x8f); // IRQ 12/13/14 left as on most BIOSes; RTC masked
    // PIT channel 0: mode 3, divisor 65536 (18.2 Hz).
    io.out8(0x43, 0x36);
    io.out8(0x40, 0);
    io.out8(0x40, 0);
    this.video.setMode(3);
    cpu.reset();
    cpu.idtBase = 0;
    cpu.idtLimit = 0x3ff;
  }

  /** Trap entry from the ROM stubs (`0F FF nn`). */
  trap(c: Cpu, n: number): boolean {
    switch (n) {
      case 0x08: this.timerTick(); return true;
      case 0x09: this.keyboardIrq(); return true;
      case 0x10: this.video.handle(c); break;
      case 0x11: c.setR16(EAX, this.r16(BDA_EQUIPMENT)); return true;
      case 0x12: c.setR16(EAX, this.r16(BDA_MEMORY_KB)); return true;
      case 0x13: {
        const p = this.disk.handle(c);
        if (p) {
          this.pending = p.then(() => this.mergeFlags(c));
          c.requestStop();
          return true;
        }
        break;
      }
      case 0x14: this.serial(c); break;
      case 0x15: this.system(c); break;
      case 0x16: this.keyboard(c); break;
      case 0x17: c.setR8(4, 0x00); c.setCFbit(false); break;
      case 0x18: this.host.stop('no-boot', 'no bootable device (INT 18h)'); return true;
      case 0x19: this.pending = this.bootstrap(); c.requestStop(); return true;
      case 0x1a: this.time(c); break;
      case TRAP_RESET: this.host.stop('reset', 'the guest reset the machine'); return true;
      default: return false;
    }
    if (RETURNS_FLAGS.has(n)) this.mergeFlags(c);
    return true;
  }

  /** Copy the arithmetic flags a service set into the FLAGS image its IRET pops. */
  private mergeFlags(c: Cpu): void {
    const a = c.sbase[SS]! + ((c.reg[ESP]! + 4) & 0xffff);
    const stacked = c.lin16(a);
    c.linW16(a, (stacked & ~ARITH) | (c.getFlags() & ARITH));
  }

  // ----------------------------------------------------------- boot

  /** Load the boot sector of the first bootable drive (floppy, then hard disk) and jump to it. */
  async bootstrap(): Promise<void> {
    const order = [...this.drives.keys()].sort((a, b) => a - b);
    const c = this.host.cpu;
    for (const n of order) {
      const d = this.drives.get(n)!;
      const sector = new Uint8Array(512);
      if (d.device.size < 512) continue;
      await d.device.read(sector, 0);
      if (sector[510] !== 0x55 || sector[511] !== 0xaa) continue;
      this.ram.set(sector, BOOT_ADDR);
      c.reg.fill(0);
      c.setR8(2, n);
      for (const s of [0, 2, 3, 4, 5]) c.loadSeg(s, 0);
      c.loadSeg(1, 0);
      c.eip = BOOT_ADDR;
      c.reg[ESP] = BOOT_ADDR;
      c.setFlags(IF | 2, 0xffff);
      return;
    }
    this.host.stop('no-boot', 'not bootable: no 55AA signature in sector 0');
  }

  // ----------------------------------------------------------- timer, keyboard

  private timerTick(): void {
    let t = (this.r16(BDA_TIMER_TICKS) | (this.r16(BDA_TIMER_TICKS + 2) << 16)) + 1;
    if (t >= TICKS_PER_DAY) {
      t = 0;
      this.ram[BDA_TIMER_OVERFLOW] = 1;
    }
    this.w16(BDA_TIMER_TICKS, t & 0xffff);
    this.w16(BDA_TIMER_TICKS + 2, t >>> 16);
    if (this.ram[BDA_FLOPPY_MOTOR_TIMEOUT]! > 0) this.ram[BDA_FLOPPY_MOTOR_TIMEOUT]!--;
  }

  private keyboardIrq(): void {
    const code = this.host.io.in8(0x60);
    if (code === 0xe0) {
      this.e0 = true;
      return;
    }
    const ext = this.e0;
    this.e0 = false;
    const brk = (code & 0x80) !== 0;
    const key = code & 0x7f;
    let flags = this.ram[BDA_KBD_FLAGS]!;
    const bit = key === 0x2a ? 0x02 : key === 0x36 ? 0x01 : key === 0x1d ? 0x04 : key === 0x38 ? 0x08 : 0;
    if (bit) {
      flags = brk ? flags & ~bit : flags | bit;
      this.ram[BDA_KBD_FLAGS] = flags;
      this.ram[BDA_KBD_FLAGS2] = brk ? this.ram[BDA_KBD_FLAGS2]! & ~bit : this.ram[BDA_KBD_FLAGS2]!;
      return;
    }
    if (brk) return;
    const shift = (flags & 0x03) !== 0;
    const ctrl = (flags & 0x04) !== 0;
    const m = KEYMAP[key];
    let ascii = m ? (shift ? m[1] : m[0]).charCodeAt(0) : 0;
    if (ctrl && ascii >= 0x61 && ascii <= 0x7a) ascii -= 0x60;
    else if (ctrl && ascii >= 0x41 && ascii <= 0x5a) ascii -= 0x40;
    if (ext) ascii = key === 0x1c ? 0x0d : 0xe0;
    this.enqueueKey((key << 8) | ascii);
  }

  private enqueueKey(word: number): boolean {
    const start = this.r16(BDA_KBD_BUF_START);
    const end = this.r16(BDA_KBD_BUF_END);
    const head = this.r16(BDA_KBD_HEAD);
    const tail = this.r16(BDA_KBD_TAIL);
    let next = tail + 2;
    if (next >= end) next = start;
    if (next === head) return false;
    this.w16(0x400 + tail, word);
    this.w16(BDA_KBD_TAIL, next);
    return true;
  }

  private keyboard(c: Cpu): void {
    const ah = c.r8(4);
    const head = this.r16(BDA_KBD_HEAD);
    const tail = this.r16(BDA_KBD_TAIL);
    const empty = head === tail;
    switch (ah) {
      case 0x00:
      case 0x10:
        if (empty) {
          // Wait: re-run this trap after the next interrupt, with interrupts enabled.
          this.host.keyWanted();
          c.eip = c.startEip;
          c.flags |= IF;
          c.halt();
          c.requestStop();
          return;
        }
        {
          let next = head + 2;
          if (next >= this.r16(BDA_KBD_BUF_END)) next = this.r16(BDA_KBD_BUF_START);
          this.w16(BDA_KBD_HEAD, next);
          c.setR16(EAX, this.r16(0x400 + head));
        }
        return;
      case 0x01:
      case 0x11:
        c.materialize();
        if (empty) {
          this.host.keyWanted();
          c.flags |= ZF;
        } else {
          c.flags &= ~ZF;
          c.setR16(EAX, this.r16(0x400 + head));
        }
        return;
      case 0x02:
        c.setR8(0, this.ram[BDA_KBD_FLAGS]!);
        return;
      case 0x12:
        c.setR16(EAX, this.ram[BDA_KBD_FLAGS]! | (this.ram[BDA_KBD_FLAGS2]! << 8));
        return;
      case 0x03:
        return;
      case 0x05:
        c.setR8(0, this.enqueueKey(c.r16(ECX)) ? 0 : 1);
        return;
      default:
    }
  }

  // ----------------------------------------------------------- int 14h, 15h, 1Ah

  private serial(c: Cpu): void {
    const ah = c.r8(4);
    const io = this.host.io;
    if (c.r16(EDX) !== 0) {
      c.setR8(4, 0x80);
      return;
    }
    switch (ah) {
      case 0x00:
        io.out8(0x3fb, 0x80);
        io.out8(0x3f8, [0x17, 0x0c, 0x06, 0x03, 0x01, 0x01, 0x01, 0x01][c.r8(0) >> 5] ?? 0x0c);
        io.out8(0x3f9, 0x00);
        io.out8(0x3fb, c.r8(0) & 0x1f);
        break;
      case 0x01:
        io.out8(0x3f8, c.r8(0));
        break;
      case 0x02:
        if (io.in8(0x3fd) & 1) c.setR8(0, io.in8(0x3f8));
        else {
          c.setR8(4, 0x80);
          return;
        }
        break;
      default:
    }
    c.setR8(4, io.in8(0x3fd));
    if (ah !== 0x02) c.setR8(0, io.in8(0x3fe));
  }

  private system(c: Cpu): void {
    const ax = c.r16(EAX);
    const ah = ax >> 8;
    const extKb = Math.max(0, this.host.memoryBytes / 1024 - 1024);
    const ok = (): void => c.setCFbit(false);
    const unsupported = (): void => {
      c.setR8(4, 0x86);
      c.setCFbit(true);
    };
    switch (ah) {
      case 0x24:
        switch (ax & 0xff) {
          case 0: this.host.mem.a20 = false; c.setR8(4, 0); return ok();
          case 1: this.host.mem.a20 = true; c.setR8(4, 0); return ok();
          case 2: c.setR8(4, 0); c.setR8(0, this.host.mem.a20 ? 1 : 0); return ok();
          case 3: c.setR8(4, 0); c.setR16(EBX, 0x0003); return ok(); // keyboard controller and port 92h
          default: return unsupported();
        }
      case 0x4f:
        return c.setCFbit(true); // keyboard intercept: process the key
      case 0x86: {
        return ok(); // wait: returns at once (virtual time)
      }
      case 0x87:
      case 0x89:
        return unsupported(); // protected-mode services are stage 2
      case 0x88:
        c.setR16(EAX, Math.min(extKb, 0xfc00));
        return ok();
      case 0x90:
      case 0x91:
        c.setR8(4, 0);
        return ok();
      case 0xc0:
        c.loadSeg(ES, ROM_SEG);
        c.setR16(EBX, this.rom.configTable);
        c.setR8(4, 0);
        return ok();
      case 0xc1:
        return unsupported(); // no EBDA
      case 0xe8:
        if (ax === 0xe801) {
          const below16 = Math.min(extKb, 15 * 1024);
          const above16 = Math.max(0, Math.floor((this.host.memoryBytes - 16 * 1024 * 1024) / 65536));
          c.setR16(EAX, below16);
          c.setR16(ECX, below16);
          c.setR16(EBX, above16);
          c.setR16(EDX, above16);
          return ok();
        }
        if (ax === 0xe820 && c.reg[EDX] === 0x534d4150) return this.e820(c);
        return unsupported();
      default:
        return unsupported();
    }
  }

  /** INT 15h E820h: the memory map, one entry per call (ACPI spec §15.1). */
  private e820(c: Cpu): void {
    // [base, length, type]: 1 = usable RAM, 2 = reserved (the BIOS ROM).
    const map: [number, number, number][] = [
      [0, BASE_MEMORY_KB * 1024, 1],
      [ROM_BASE, 0x10000, 2],
      [0x100000, this.host.memoryBytes - 0x100000, 1],
    ];
    const i = c.reg[EBX]!;
    const e = map[i];
    if (!e || c.r32(ECX) < 20) {
      c.setR8(4, 0x86);
      return c.setCFbit(true);
    }
    const a = c.sbase[ES]! + c.r16(7);
    const w32 = (o: number, v: number): void => {
      c.linW16(a + o, v & 0xffff);
      c.linW16(a + o + 2, Math.floor(v / 65536) & 0xffff);
    };
    w32(0, e[0]);
    w32(4, 0);
    w32(8, e[1]);
    w32(12, 0);
    w32(16, e[2]);
    c.reg[EAX] = 0x534d4150;
    c.reg[ECX] = 20;
    c.reg[EBX] = i + 1 < map.length ? i + 1 : 0;
    c.setCFbit(false);
  }

  private time(c: Cpu): void {
    const ah = c.r8(4);
    const cmos = this.host.cmos;
    switch (ah) {
      case 0x00:
        c.setR16(ECX, this.r16(BDA_TIMER_TICKS + 2));
        c.setR16(EDX, this.r16(BDA_TIMER_TICKS));
        c.setR8(0, this.ram[BDA_TIMER_OVERFLOW]!);
        this.ram[BDA_TIMER_OVERFLOW] = 0;
        return;
      case 0x01:
        this.w16(BDA_TIMER_TICKS + 2, c.r16(ECX));
        this.w16(BDA_TIMER_TICKS, c.r16(EDX));
        this.ram[BDA_TIMER_OVERFLOW] = 0;
        return;
      case 0x02:
        c.setR8(5, cmos.read(4));
        c.setR8(1, cmos.read(2));
        c.setR8(6, cmos.read(0));
        c.setR8(2, 0);
        c.setCFbit(false);
        return;
      case 0x04:
        c.setR8(5, cmos.read(0x32));
        c.setR8(1, cmos.read(9));
        c.setR8(6, cmos.read(8));
        c.setR8(2, cmos.read(7));
        c.setCFbit(false);
        return;
      case 0x03:
      case 0x05:
        c.setCFbit(false);
        return; // setting the clock is accepted and ignored: the host clock stays authoritative
      default:
        c.setCFbit(true);
    }
  }
}
