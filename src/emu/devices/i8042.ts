/**
 * Intel 8042 keyboard controller (ports 60h/64h) with a PS/2 keyboard behind it,
 * plus the A20 and reset lines it controls (and port 92h, "fast A20").
 * The keyboard speaks scan code set 1 (what the 8042 hands the PC after translation).
 */
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Bytes the controller may hold queued for the host (replies and scan codes). */
const MAX_QUEUED = 4096;

/** Status register bits (IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device Controller"). */
const ST_OBF = 0x01;
const ST_SYS = 0x04;
const ST_CMD = 0x08;
const ST_UNLOCKED = 0x10;
const ST_AUX = 0x20;
/** Command byte bits. */
const CB_KBD_INT = 0x01;
const CB_AUX_INT = 0x02;
const CB_SYS = 0x04;
const CB_KBD_DISABLE = 0x10;
const CB_XLAT = 0x40;
/** Output port bits. */
const OP_RESET = 0x01;
const OP_A20 = 0x02;

/** Keyboard controller and keyboard. */
export class I8042 implements Stateful {
  private readonly out: { v: number; aux: boolean }[] = [];
  private obf = -1;
  private obfAux = false;
  private commandByte = CB_KBD_INT | CB_SYS | CB_XLAT;
  private pendingCmd = -1;
  private kbdPendingCmd = -1;
  private lastWasCmd = false;
  private outputPort = OP_RESET | OP_A20;
  private scanning = true;

  constructor(
    io: IoBus,
    private readonly irq1: () => void,
    private readonly irq12: () => void,
    private readonly setA20: (on: boolean) => void,
    private readonly getA20: () => boolean,
    private readonly reset: () => void,
  ) {
    io.register([0x60], { read: () => this.readData(), write: (_p, v) => this.writeData(v) });
    io.register([0x64], { read: () => this.status(), write: (_p, v) => this.command(v) });
    io.register([0x92], {
      read: () => (this.getA20() ? 0x02 : 0),
      write: (_p, v) => {
        this.setA20((v & 0x02) !== 0);
        if (v & 0x01) this.reset();
      },
    });
  }

  /** Registers and the output queue; the A20 line is saved with memory. */
  saveState(w: StateWriter): void {
    w.u32(this.out.length);
    for (const o of this.out) w.u8(o.v).bool(o.aux);
    w.i32(this.obf).bool(this.obfAux).u8(this.commandByte).i32(this.pendingCmd).i32(this.kbdPendingCmd).bool(this.lastWasCmd).u8(this.outputPort).bool(this.scanning);
  }
  loadState(r: StateReader): void {
    const n = r.uint('output queue length', MAX_QUEUED);
    this.out.length = 0;
    for (let i = 0; i < n; i++) this.out.push({ v: r.u8('queued byte'), aux: r.bool('queued byte is from the aux port') });
    const byteOrNone = (field: string): number => {
      const v = r.i32(field);
      return v >= 0 && v <= 0xff ? v : -1;
    };
    this.obf = byteOrNone('output buffer');
    this.obfAux = r.bool('output buffer is from the aux port');
    this.commandByte = r.u8('command byte');
    this.pendingCmd = byteOrNone('pending controller command');
    this.kbdPendingCmd = byteOrNone('pending keyboard command');
    this.lastWasCmd = r.bool('last write was a command');
    this.outputPort = r.u8('output port');
    this.scanning = r.bool('scanning');
  }

  /** Whether the keyboard can take another scan code now (nothing waiting). */
  get idle(): boolean {
    return this.obf < 0 && this.out.length === 0;
  }

  /** Queue scan-code bytes from the keyboard. */
  keyboardBytes(bytes: number[]): void {
    if (!this.scanning) return;
    for (const b of bytes) this.out.push({ v: b, aux: false });
    this.fill();
  }

  private status(): number {
    return (this.obf >= 0 ? ST_OBF | (this.obfAux ? ST_AUX : 0) : 0) | ST_UNLOCKED | (this.commandByte & CB_SYS ? ST_SYS : 0) | (this.lastWasCmd ? ST_CMD : 0);
  }

  private fill(): void {
    if (this.obf >= 0) return;
    const next = this.out.shift();
    if (!next) return;
    this.obf = next.v;
    this.obfAux = next.aux;
    if (next.aux) {
      if (this.commandByte & CB_AUX_INT) this.irq12();
    } else if (this.commandByte & CB_KBD_INT && !(this.commandByte & CB_KBD_DISABLE)) this.irq1();
  }

  private reply(...bytes: number[]): void {
    for (const v of bytes) this.out.push({ v, aux: false });
    this.fill();
  }

  private readData(): number {
    const v = this.obf >= 0 ? this.obf : 0;
    this.obf = -1;
    this.fill();
    return v;
  }

  private command(v: number): void {
    this.lastWasCmd = true;
    switch (v) {
      case 0x20: this.reply(this.commandByte); return;
      case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4: this.pendingCmd = v; return;
      case 0xa7: this.commandByte |= 0x20; return;
      case 0xa8: this.commandByte &= ~0x20; return;
      case 0xa9: this.reply(0x00); return;
      case 0xaa: this.reply(0x55); return;
      case 0xab: this.reply(0x00); return;
      case 0xad: this.commandByte |= CB_KBD_DISABLE; return;
      case 0xae: this.commandByte &= ~CB_KBD_DISABLE; this.fill(); return;
      case 0xc0: this.reply(0xbf); return;
      case 0xd0: this.reply(this.outputPort | (this.getA20() ? OP_A20 : 0)); return;
      case 0xdd: this.setA20(false); return;
      case 0xdf: this.setA20(true); return;
      default:
        if ((v & 0xf0) === 0xf0 && !(v & OP_RESET)) this.reset(); // pulse output port: bit 0 = reset
    }
  }

  private writeData(v: number): void {
    this.lastWasCmd = false;
    const cmd = this.pendingCmd;
    this.pendingCmd = -1;
    switch (cmd) {
      case 0x60: this.commandByte = v; return;
      case 0xd1:
        this.outputPort = v;
        this.setA20((v & OP_A20) !== 0);
        if (!(v & OP_RESET)) this.reset();
        return;
      case 0xd2: this.reply(v); return;
      case 0xd3: this.out.push({ v, aux: true }); this.fill(); return;
      case 0xd4: this.out.push({ v: 0xfe, aux: true }); this.fill(); return; // no mouse
      default: this.keyboardCommand(v);
    }
  }

  /** Commands to the PS/2 keyboard itself. */
  private keyboardCommand(v: number): void {
    if (this.kbdPendingCmd >= 0) {
      this.kbdPendingCmd = -1;
      this.reply(0xfa);
      return;
    }
    switch (v) {
      case 0xed: case 0xf0: case 0xf3: this.kbdPendingCmd = v; this.reply(0xfa); return;
      case 0xee: this.reply(0xee); return;
      case 0xf2: this.reply(0xfa, 0xab, 0x41); return;
      case 0xf4: this.scanning = true; this.reply(0xfa); return;
      case 0xf5: this.scanning = false; this.reply(0xfa); return;
      case 0xff: this.scanning = true; this.reply(0xfa, 0xaa); return;
      default: this.reply(0xfa);
    }
  }
}

/** Scan code set 1 make codes for US-layout characters: [code, shift]. */
const SET1: Record<string, [number, boolean]> = {};
{
  const rows: [string, string, number][] = [
    ['1234567890-=', '!@#$%^&*()_+', 0x02],
    ['qwertyuiop[]', 'QWERTYUIOP{}', 0x10],
    ["asdfghjkl;'`", 'ASDFGHJKL:"~', 0x1e],
    ['\\zxcvbnm,./', '|ZXCVBNM<>?', 0x2b],
  ];
  for (const [plain, shifted, first] of rows) {
    for (let i = 0; i < plain.length; i++) {
      SET1[plain[i]!] = [first + i, false];
      SET1[shifted[i]!] = [first + i, true];
    }
  }
  SET1[' '] = [0x39, false];
  SET1['\n'] = [0x1c, false];
  SET1['\r'] = [0x1c, false];
  SET1['\t'] = [0x0f, false];
  SET1['\b'] = [0x0e, false];
  SET1['\x1b'] = [0x01, false];
}
const LSHIFT = 0x2a;

/** Scan code set 1 bytes (make and break) that type `text` on a US keyboard. */
export function typeText(text: string): number[][] {
  const out: number[][] = [];
  for (const ch of text) {
    const k = SET1[ch];
    if (!k) continue;
    const [code, shift] = k;
    out.push(shift ? [LSHIFT, code, code | 0x80, LSHIFT | 0x80] : [code, code | 0x80]);
  }
  return out;
}
