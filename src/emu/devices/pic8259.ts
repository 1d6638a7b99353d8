/**
 * Intel 8259A programmable interrupt controllers: the PC/AT master (ports 20h/21h,
 * IRQ 0-7) and slave (A0h/A1h, IRQ 8-15) cascaded on master IRQ 2. Edge triggered,
 * fixed priority, as the BIOS and DOS program them.
 */
import type { InterruptSource } from '../cpu.js';
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** ICW1 bit 4 marks an initialisation command (8259A datasheet, "ICW1"). */
const ICW1_INIT = 0x10;
const ICW1_IC4 = 0x01;
/** OCW3 is told apart from OCW2 by bit 3. */
const OCW3_SEL = 0x08;
const OCW3_RR = 0x02;
const OCW3_RIS = 0x01;
const OCW2_EOI = 0x20;
const OCW2_SL = 0x40;
const ICW4_AEOI = 0x02;

/** One 8259A. */
class Pic {
  irr = 0;
  isr = 0;
  imr = 0xff;
  vectorBase = 0;
  private icwStep = 0;
  private needIcw4 = false;
  private readIsr = false;
  private autoEoi = false;
  private lines = 0;

  constructor(vectorBase: number) {
    this.vectorBase = vectorBase;
  }

  /** Drive input `n` to `level`; a rising edge requests an interrupt. */
  setLine(n: number, level: boolean): void {
    const bit = 1 << n;
    if (level && !(this.lines & bit)) this.irr |= bit;
    this.lines = level ? this.lines | bit : this.lines & ~bit;
  }

  /** The input that would be serviced next, or -1. */
  pending(): number {
    const req = this.irr & ~this.imr;
    for (let i = 0; i < 8; i++) {
      if (this.isr & (1 << i)) return -1; // a higher-or-equal priority one is in service
      if (req & (1 << i)) return i;
    }
    return -1;
  }

  ack(n: number): void {
    this.irr &= ~(1 << n);
    if (!this.autoEoi) this.isr |= 1 << n;
  }

  writeCommand(v: number): void {
    if (v & ICW1_INIT) {
      this.icwStep = 2;
      this.needIcw4 = (v & ICW1_IC4) !== 0;
      this.imr = 0;
      this.isr = 0;
      this.irr = 0;
      this.readIsr = false;
      return;
    }
    if (v & OCW3_SEL) {
      if (v & OCW3_RR) this.readIsr = (v & OCW3_RIS) !== 0;
      return;
    }
    if (v & OCW2_EOI) {
      if (v & OCW2_SL) this.isr &= ~(1 << (v & 7));
      else {
        for (let i = 0; i < 8; i++) {
          if (this.isr & (1 << i)) {
            this.isr &= ~(1 << i);
            break;
          }
        }
      }
    }
  }

  writeData(v: number): void {
    switch (this.icwStep) {
      case 2:
        this.vectorBase = v & 0xf8;
        this.icwStep = 3;
        return;
      case 3:
        this.icwStep = this.needIcw4 ? 4 : 0;
        return;
      case 4:
        this.autoEoi = (v & ICW4_AEOI) !== 0;
        this.icwStep = 0;
        return;
      default:
        this.imr = v;
    }
  }

  readCommand(): number {
    return this.readIsr ? this.isr : this.irr;
  }

  saveState(w: StateWriter): void {
    w.u8(this.irr).u8(this.isr).u8(this.imr).u8(this.vectorBase).u8(this.icwStep).bool(this.needIcw4).bool(this.readIsr).bool(this.autoEoi).u8(this.lines);
  }
  loadState(r: StateReader): void {
    this.irr = r.u8('IRR');
    this.isr = r.u8('ISR');
    this.imr = r.u8('IMR');
    this.vectorBase = r.u8('vector base') & 0xf8;
    const step = r.u8('ICW step');
    this.icwStep = step === 2 || step === 3 || step === 4 ? step : 0;
    this.needIcw4 = r.bool('ICW4 needed');
    this.readIsr = r.bool('read ISR');
    this.autoEoi = r.bool('auto EOI');
    this.lines = r.u8('input lines');
  }
}

/** The cascaded pair; the CPU acknowledges interrupts through it. */
export class Pic8259Pair implements InterruptSource, Stateful {
  readonly master = new Pic(0x08);
  readonly slave = new Pic(0x70);
  /** Called whenever the INTR output may have changed. */
  onChange: (asserted: boolean) => void = () => {};

  constructor(io: IoBus) {
    io.register([0x20], { read: () => this.master.readCommand(), write: (_p, v) => this.cmd(this.master, v) });
    io.register([0x21], { read: () => this.master.imr, write: (_p, v) => this.data(this.master, v) });
    io.register([0xa0], { read: () => this.slave.readCommand(), write: (_p, v) => this.cmd(this.slave, v) });
    io.register([0xa1], { read: () => this.slave.imr, write: (_p, v) => this.data(this.slave, v) });
    // Edge/level control registers (EISA ELCR): all edge.
    io.register([0x4d0, 0x4d1], { read: () => 0, write: () => {} });
  }

  private cmd(p: Pic, v: number): void {
    p.writeCommand(v);
    this.update();
  }
  private data(p: Pic, v: number): void {
    p.writeData(v);
    this.update();
  }

  /** Raise (edge) interrupt request line `irq` 0-15. */
  raise(irq: number): void {
    this.setLine(irq, false);
    this.setLine(irq, true);
  }
  /** Drive line `irq` to a level. */
  setLine(irq: number, level: boolean): void {
    if (irq < 8) this.master.setLine(irq, level);
    else this.slave.setLine(irq - 8, level);
    this.update();
  }

  private update(): void {
    this.master.setLine(2, this.slave.pending() >= 0);
    this.onChange(this.master.pending() >= 0);
  }

  /** Both chips' registers; the CPU's INTR input is saved with the CPU. */
  saveState(w: StateWriter): void {
    this.master.saveState(w);
    this.slave.saveState(w);
  }
  loadState(r: StateReader): void {
    this.master.loadState(r);
    this.slave.loadState(r);
  }

  acknowledge(): number {
    const m = this.master.pending();
    if (m < 0) {
      this.onChange(false);
      return -1;
    }
    let vector: number;
    if (m === 2) {
      const s = this.slave.pending();
      this.master.ack(2);
      if (s < 0) vector = this.slave.vectorBase + 7; // spurious
      else {
        this.slave.ack(s);
        vector = this.slave.vectorBase + s;
      }
    } else {
      this.master.ack(m);
      vector = this.master.vectorBase + m;
    }
    this.update();
    return vector;
  }
}
