/**
 * Motorola MC146818 real-time clock and CMOS RAM (ports 70h/71h): the clock, the
 * IBM AT configuration bytes (floppy types, memory sizes, equipment).
 */
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Register numbers (IBM AT Technical Reference, "CMOS RAM"). */
export const CMOS_SECONDS = 0x00;
export const CMOS_MINUTES = 0x02;
export const CMOS_HOURS = 0x04;
export const CMOS_WEEKDAY = 0x06;
export const CMOS_DAY = 0x07;
export const CMOS_MONTH = 0x08;
export const CMOS_YEAR = 0x09;
export const CMOS_STATUS_A = 0x0a;
export const CMOS_STATUS_B = 0x0b;
export const CMOS_STATUS_C = 0x0c;
export const CMOS_STATUS_D = 0x0d;
export const CMOS_FLOPPY_TYPES = 0x10;
export const CMOS_DISK_TYPES = 0x12;
export const CMOS_EQUIPMENT = 0x14;
export const CMOS_BASE_MEM_LO = 0x15;
export const CMOS_EXT_MEM_LO = 0x17;
export const CMOS_EXT_MEM2_LO = 0x30;
export const CMOS_MEM_ABOVE_16M_LO = 0x34;
export const CMOS_CENTURY = 0x32;
/** Boot flags and order as qemu and SeaBIOS keep them (SeaBIOS src/hw/rtc.h). */
export const CMOS_BOOT_FLAGS = 0x38;
export const CMOS_BOOT_ORDER = 0x3d;

function bcd(n: number): number {
  return ((Math.floor(n / 10) % 10) << 4) | n % 10;
}

/** The RTC/CMOS chip. */
export class Cmos implements Stateful {
  readonly ram = new Uint8Array(128);
  private index = 0;

  /** `wallClock` gives the guest's current time in ms since the epoch. */
  constructor(
    io: IoBus,
    private readonly wallClock: () => number,
  ) {
    io.register([0x70], { write: (_p, v) => (this.index = v & 0x7f), read: () => this.index });
    io.register([0x71], { read: () => this.read(this.index), write: (_p, v) => this.write(this.index, v) });
    this.ram[CMOS_STATUS_A] = 0x26;
    this.ram[CMOS_STATUS_B] = 0x02; // 24-hour, BCD
    this.ram[CMOS_STATUS_D] = 0x80; // battery good
  }

  /** Read register `i` (clock registers come from the virtual wall clock). */
  read(i: number): number {
    if (i <= CMOS_YEAR || i === CMOS_CENTURY) {
      const d = new Date(this.wallClock());
      const bin = (this.ram[CMOS_STATUS_B]! & 0x04) !== 0;
      const f = (n: number): number => (bin ? n : bcd(n));
      switch (i) {
        case CMOS_SECONDS: return f(d.getUTCSeconds());
        case CMOS_MINUTES: return f(d.getUTCMinutes());
        case CMOS_HOURS: return f(d.getUTCHours());
        case CMOS_WEEKDAY: return f(d.getUTCDay() + 1);
        case CMOS_DAY: return f(d.getUTCDate());
        case CMOS_MONTH: return f(d.getUTCMonth() + 1);
        case CMOS_YEAR: return f(d.getUTCFullYear() % 100);
        case CMOS_CENTURY: return f(Math.floor(d.getUTCFullYear() / 100));
        default: return this.ram[i]!; // alarm registers
      }
    }
    if (i === CMOS_STATUS_C) {
      const v = this.ram[i]!;
      this.ram[i] = 0;
      return v;
    }
    return this.ram[i]!;
  }

  write(i: number, v: number): void {
    if (i === CMOS_STATUS_C || i === CMOS_STATUS_D) return;
    this.ram[i] = v;
  }

  /** The 128 bytes and the index register; the clock is the machine's (it saves the time at boot). */
  saveState(w: StateWriter): void {
    w.raw(this.ram).u8(this.index);
  }
  loadState(r: StateReader): void {
    r.into(this.ram, 'CMOS RAM');
    this.index = r.u8('index') & 0x7f;
  }

  /** Fill the configuration bytes POST would. */
  configure(memBytes: number, floppyType: number, hasDisk: boolean): void {
    this.ram[CMOS_FLOPPY_TYPES] = floppyType << 4;
    this.ram[CMOS_DISK_TYPES] = hasDisk ? 0xf0 : 0;
    this.ram[CMOS_EQUIPMENT] = (floppyType ? 0x01 : 0) | 0x06;
    this.ram[CMOS_BASE_MEM_LO] = 640 & 0xff;
    this.ram[CMOS_BASE_MEM_LO + 1] = 640 >> 8;
    const extKb = Math.min(0xffff, Math.max(0, memBytes / 1024 - 1024));
    this.ram[CMOS_EXT_MEM_LO] = extKb & 0xff;
    this.ram[CMOS_EXT_MEM_LO + 1] = extKb >> 8;
    this.ram[CMOS_EXT_MEM2_LO] = extKb & 0xff;
    this.ram[CMOS_EXT_MEM2_LO + 1] = extKb >> 8;
    const above16 = Math.min(0xffff, Math.max(0, (memBytes - 16 * 1024 * 1024) / 65536));
    this.ram[CMOS_MEM_ABOVE_16M_LO] = above16 & 0xff;
    this.ram[CMOS_MEM_ABOVE_16M_LO + 1] = above16 >> 8;
  }
}
