/**
 * National Semiconductor 16550A UART at a PC COM port (COM1: 3F8h, IRQ 4).
 * Transmission is instant; received bytes wait in a 16-byte FIFO.
 */
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Register offsets (16550A datasheet, table 2). */
const RBR_THR = 0;
const IER = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;
const LCR_DLAB = 0x80;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const IER_RDA = 0x01;
const IER_THRE = 0x02;
const IIR_NONE = 0x01;
const IIR_THRE = 0x02;
const IIR_RDA = 0x04;
const MCR_LOOP = 0x10;
const MCR_OUT2 = 0x08;

/** One UART. */
export class Uart16550 implements Stateful {
  private ier = 0;
  private lcr = 0x03;
  private mcr = 0;
  private scr = 0;
  private dll = 0x0c;
  private dlm = 0;
  private fcr = 0;
  private threPending = false;
  private readonly rx: number[] = [];
  /** Called with every byte the guest transmits. */
  onTransmit: (byte: number) => void = () => {};

  constructor(
    io: IoBus,
    readonly base: number,
    private readonly irq: (level: boolean) => void,
  ) {
    io.register(
      Array.from({ length: 8 }, (_, i) => base + i),
      { read: (p) => this.read(p - base), write: (p, v) => this.write(p - base, v) },
    );
  }

  /** Queue bytes for the guest to receive. */
  receive(bytes: Iterable<number>): void {
    for (const b of bytes) if (this.rx.length < 16) this.rx.push(b & 0xff);
    this.update();
  }

  saveState(w: StateWriter): void {
    w.u8(this.ier).u8(this.lcr).u8(this.mcr).u8(this.scr).u8(this.dll).u8(this.dlm).u8(this.fcr).bool(this.threPending);
    w.bytes(Uint8Array.from(this.rx));
  }
  loadState(r: StateReader): void {
    this.ier = r.u8('IER') & 0x0f;
    this.lcr = r.u8('LCR');
    this.mcr = r.u8('MCR') & 0x1f;
    this.scr = r.u8('SCR');
    this.dll = r.u8('DLL');
    this.dlm = r.u8('DLM');
    this.fcr = r.u8('FCR');
    this.threPending = r.bool('THRE pending');
    this.rx.splice(0, this.rx.length, ...r.bytes('receive FIFO', 16));
  }

  private iir(): number {
    if (this.ier & IER_RDA && this.rx.length) return IIR_RDA;
    if (this.ier & IER_THRE && this.threPending) return IIR_THRE;
    return IIR_NONE;
  }

  private update(): void {
    this.irq(this.iir() !== IIR_NONE && (this.mcr & MCR_OUT2) !== 0);
  }

  private read(r: number): number {
    switch (r) {
      case RBR_THR: {
        if (this.lcr & LCR_DLAB) return this.dll;
        const v = this.rx.shift() ?? 0;
        this.update();
        return v;
      }
      case IER: return this.lcr & LCR_DLAB ? this.dlm : this.ier;
      case IIR_FCR: {
        const v = this.iir() | (this.fcr & 1 ? 0xc0 : 0);
        if ((v & 0x0f) === IIR_THRE) {
          this.threPending = false;
          this.update();
        }
        return v;
      }
      case LCR: return this.lcr;
      case MCR: return this.mcr;
      case LSR: return LSR_THRE | LSR_TEMT | (this.rx.length ? LSR_DR : 0);
      case MSR: return this.mcr & MCR_LOOP ? ((this.mcr & 0x0f) << 4) : 0xb0; // CTS, DSR, DCD
      default: return this.scr;
    }
  }

  private write(r: number, v: number): void {
    switch (r) {
      case RBR_THR:
        if (this.lcr & LCR_DLAB) {
          this.dll = v;
          return;
        }
        if (this.mcr & MCR_LOOP) this.receive([v]);
        else this.onTransmit(v);
        this.threPending = true;
        this.update();
        return;
      case IER:
        if (this.lcr & LCR_DLAB) {
          this.dlm = v;
          return;
        }
        this.ier = v & 0x0f;
        if (this.ier & IER_THRE) this.threPending = true;
        this.update();
        return;
      case IIR_FCR:
        this.fcr = v;
        if (v & 2) this.rx.length = 0;
        return;
      case LCR:
        this.lcr = v;
        return;
      case MCR:
        this.mcr = v & 0x1f;
        this.update();
        return;
      case SCR:
        this.scr = v;
        return;
      default:
    }
  }
}
