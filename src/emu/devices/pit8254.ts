/**
 * Intel 8254 programmable interval timer (ports 40h-43h): channel 0 drives IRQ 0,
 * channel 2 the speaker gate (port 61h). Time is the machine's virtual clock in
 * PIT input ticks (1.193182 MHz).
 */
import type { IoBus } from '../io.js';
import { VdiskError } from '../../errors.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** PIT input clock in Hz. */
export const PIT_HZ = 1193182;

const ACCESS_LATCH = 0;
const ACCESS_LO = 1;
const ACCESS_HI = 2;

class Channel {
  reload = 0x10000;
  mode = 3;
  access = 3;
  start = 0;
  latched = -1;
  readHi = false;
  writeHi = false;
  gate = true;
  loLatch = 0;
  armed = false;

  count(now: number): number {
    const elapsed = Math.floor(now - this.start);
    if (this.mode === 0 || this.mode === 1) return (this.reload - elapsed) & 0xffff;
    // Modes 2 and 3 reload and count down again every `reload` ticks (mode 3 counts by
    // twos twice per period on the chip; software reading it only needs a falling count).
    return (this.reload - (elapsed % this.reload)) & 0xffff;
  }
  saveState(w: StateWriter): void {
    w.u32(this.reload).u8(this.mode).u8(this.access).f64(this.start).i32(this.latched).bool(this.readHi).bool(this.writeHi).bool(this.gate).u8(this.loLatch).bool(this.armed);
  }
  loadState(r: StateReader): void {
    this.reload = r.uint('reload', 0x10000, 1);
    this.mode = r.u8('mode');
    if (this.mode > 5) throw new VdiskError('E_CORRUPT', `${r.what}: PIT mode ${this.mode} is not 0-5`);
    this.access = r.u8('access') & 3;
    this.start = r.f64('count start');
    this.latched = r.i32('latched count');
    if (this.latched < -1 || this.latched > 0xffff) throw new VdiskError('E_CORRUPT', `${r.what}: latched count ${this.latched} out of range`);
    this.readHi = r.bool('read high byte next');
    this.writeHi = r.bool('write high byte next');
    this.gate = r.bool('gate');
    this.loLatch = r.u8('low byte written');
    this.armed = r.bool('armed');
  }

  output(now: number): boolean {
    const elapsed = now - this.start;
    if (this.mode === 0) return elapsed >= this.reload;
    if (this.mode === 3) return elapsed % this.reload < this.reload / 2;
    return true;
  }
}

/** The timer. */
export class Pit8254 implements Stateful {
  private readonly ch = [new Channel(), new Channel(), new Channel()];
  private lastIrqPeriod = 0;
  private speakerData = 0;

  constructor(
    io: IoBus,
    private readonly now: () => number,
    private readonly irq0: () => void,
  ) {
    io.register([0x40, 0x41, 0x42], { read: (p) => this.read(p - 0x40), write: (p, v) => this.write(p - 0x40, v) });
    io.register([0x43], { write: (_p, v) => this.control(v) });
    io.register([0x61], {
      read: () => {
        const t = this.now();
        // Bit 4 toggles with DRAM refresh (every 15 µs ≈ 18 PIT ticks); bit 5 is channel 2's output.
        const refresh = Math.floor(t / 18) & 1 ? 0x10 : 0;
        return (this.speakerData & 0x0f) | refresh | (this.ch[2]!.output(t) ? 0x20 : 0);
      },
      write: (_p, v) => {
        this.speakerData = v & 0x0f;
        const g = (v & 1) !== 0;
        const c2 = this.ch[2]!;
        if (g && !c2.gate) c2.start = this.now();
        c2.gate = g;
      },
    });
    this.ch[0]!.armed = true;
  }

  private control(v: number): void {
    const sel = v >> 6;
    if (sel === 3) {
      // Read-back (8254 data sheet, "Read-Back Command"): bit 5 clear latches the counts
      // of the channels in bits 1-3, as SeaBIOS's timer does; a status latch (bit 4
      // clear) is not kept: the count alone is read back.
      if (!(v & 0x20)) for (let n = 0; n < 3; n++) if (v & (2 << n) && this.ch[n]!.latched < 0) this.ch[n]!.latched = this.ch[n]!.count(this.now());
      return;
    }
    const c = this.ch[sel]!;
    const access = (v >> 4) & 3;
    if (access === ACCESS_LATCH) {
      if (c.latched < 0) c.latched = c.count(this.now());
      return;
    }
    c.access = access;
    c.mode = (v >> 1) & 7;
    if (c.mode > 5) c.mode -= 4;
    c.readHi = false;
    c.writeHi = false;
    c.latched = -1;
  }

  private write(n: number, v: number): void {
    const c = this.ch[n]!;
    let value: number;
    if (c.access === ACCESS_LO) value = v;
    else if (c.access === ACCESS_HI) value = v << 8;
    else if (!c.writeHi) {
      c.loLatch = v;
      c.writeHi = true;
      return;
    } else {
      c.writeHi = false;
      value = c.loLatch | (v << 8);
    }
    c.reload = value === 0 ? 0x10000 : value;
    c.start = this.now();
    if (n === 0) {
      c.armed = true;
      this.lastIrqPeriod = 0;
    }
  }

  private read(n: number): number {
    const c = this.ch[n]!;
    const v = c.latched >= 0 ? c.latched : c.count(this.now());
    let out: number;
    if (c.access === ACCESS_LO) out = v & 0xff;
    else if (c.access === ACCESS_HI) out = v >> 8;
    else {
      out = c.readHi ? v >> 8 : v & 0xff;
      c.readHi = !c.readHi;
      if (c.readHi) return out;
    }
    c.latched = -1;
    return out & 0xff;
  }

  saveState(w: StateWriter): void {
    for (const c of this.ch) c.saveState(w);
    w.f64(this.lastIrqPeriod).u8(this.speakerData);
  }
  loadState(r: StateReader): void {
    for (const c of this.ch) c.loadState(r);
    this.lastIrqPeriod = r.f64('IRQ 0 periods');
    this.speakerData = r.u8('port 61h') & 0x0f;
  }

  /** Raise IRQ 0 if channel 0 has completed a period since the last call. */
  update(): void {
    const c = this.ch[0]!;
    if (!c.armed) return;
    const t = this.now();
    // The run loop jumps the clock to exactly nextEvent() while halted: a count started at
    // a fractional tick must not round that jump to just short of the period's end.
    const period = Math.floor((t - c.start) / c.reload + 1e-9);
    if (period > this.lastIrqPeriod) {
      this.lastIrqPeriod = period;
      if (c.mode === 0) c.armed = false;
      this.irq0();
    }
  }

  /** Virtual time of the next IRQ 0 (Infinity if none is due). */
  nextEvent(): number {
    const c = this.ch[0]!;
    if (!c.armed) return Infinity;
    return c.start + (this.lastIrqPeriod + 1) * c.reload;
  }
}
