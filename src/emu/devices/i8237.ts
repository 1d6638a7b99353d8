/**
 * Intel 8237A DMA controllers as a PC/AT wires them: the 8-bit one (channels 0-3,
 * ports 00h-0Fh) and the 16-bit one (channels 4-7, ports C0h-DFh), with the page
 * registers at 81h-8Fh. Only the 8-bit channels move data (the floppy uses channel
 * 2); a device asks for a transfer with {@link I8237.transfer}, which copies at once
 * (single-cycle timing is not modelled) and counts the channel down to terminal count.
 */
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Page register port of each 8-bit channel (IBM PC/AT Technical Reference). */
const PAGE_PORTS = [0x87, 0x83, 0x81, 0x82];
/** Mode register transfer type (bits 2-3): 01b writes memory (device to memory), 10b reads it. */
const MODE_WRITE_MEMORY = 0x04;
const MODE_READ_MEMORY = 0x08;

/** The DMA controllers. */
export class I8237 implements Stateful {
  private readonly base = new Uint16Array(4);
  private readonly count = new Uint16Array(4);
  private readonly address = new Uint16Array(4);
  private readonly left = new Uint16Array(4);
  private readonly mode = new Uint8Array(4);
  private readonly page = new Uint8Array(4);
  /** Mask bits of channels 0-3 (set: the channel does not transfer); all masked at reset. */
  private mask = 0x0f;
  private status = 0;
  private flipFlop = false;
  /** The 16-bit controller's registers, kept so software reads back what it wrote (channels 4-7 move no data). */
  private readonly high = new Uint8Array(0x20);

  constructor(
    io: IoBus,
    private readonly ram: Uint8Array,
  ) {
    for (let ch = 0; ch < 4; ch++) {
      io.register([ch * 2], { read: () => this.readWord(this.address, ch), write: (_p, v) => this.writeWord(ch, v, true) });
      io.register([ch * 2 + 1], { read: () => this.readWord(this.left, ch), write: (_p, v) => this.writeWord(ch, v, false) });
      io.register([PAGE_PORTS[ch]!], { read: () => this.page[ch]!, write: (_p, v) => (this.page[ch] = v) });
    }
    io.register([0x08], {
      read: () => {
        const s = this.status;
        this.status &= 0xf0; // reading clears the terminal-count bits
        return s;
      },
      write: () => {},
    });
    io.register([0x09], { write: () => {} }); // request register: software requests are not modelled
    io.register([0x0a], { write: (_p, v) => (this.mask = v & 4 ? this.mask | (1 << (v & 3)) : this.mask & ~(1 << (v & 3))) });
    io.register([0x0b], { write: (_p, v) => (this.mode[v & 3] = v) });
    io.register([0x0c], { write: () => (this.flipFlop = false) });
    io.register([0x0d], {
      read: () => 0,
      write: () => {
        // Master clear: as a reset.
        this.mask = 0x0f;
        this.status = 0;
        this.flipFlop = false;
      },
    });
    io.register([0x0e], { write: () => (this.mask = 0) });
    io.register([0x0f], { read: () => this.mask | 0xf0, write: (_p, v) => (this.mask = v & 0x0f) });
    for (let p = 0xc0; p < 0xe0; p++) io.register([p], { read: (port) => this.high[port - 0xc0]!, write: (port, v) => (this.high[port - 0xc0] = v) });
    for (const p of [0x80, 0x84, 0x85, 0x86, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f]) io.register([p], { read: () => 0xff, write: () => {} });
  }

  private readWord(regs: Uint16Array, ch: number): number {
    const v = regs[ch]!;
    this.flipFlop = !this.flipFlop;
    return this.flipFlop ? v & 0xff : v >> 8;
  }

  /** Address or count register write: low byte, then high, through the flip-flop; base and current both. */
  private writeWord(ch: number, v: number, isAddress: boolean): void {
    const regs = isAddress ? this.base : this.count;
    const cur = regs[ch]!;
    regs[ch] = this.flipFlop ? (cur & 0xff) | (v << 8) : (cur & 0xff00) | v;
    this.flipFlop = !this.flipFlop;
    if (isAddress) this.address[ch] = this.base[ch]!;
    else this.left[ch] = this.count[ch]!;
  }

  /**
   * Move bytes for channel `ch` (0-3): `data` into memory when the channel is set to
   * write memory, or memory into `data` when set to read it. Returns how many bytes
   * moved (up to the count programmed plus one), or -1 if the channel is masked or
   * set the other way round.
   */
  transfer(ch: number, data: Uint8Array, toMemory: boolean): number {
    if (this.mask & (1 << ch)) return -1;
    const type = this.mode[ch]! & 0x0c;
    if (type !== (toMemory ? MODE_WRITE_MEMORY : MODE_READ_MEMORY)) return -1;
    const n = Math.min(data.length, this.left[ch]! + 1);
    const down = (this.mode[ch]! & 0x20) !== 0;
    for (let i = 0; i < n; i++) {
      // The page register is not incremented: an address wraps inside its 64 KiB page.
      const a = (this.page[ch]! << 16) | this.address[ch]!;
      if (a < this.ram.length) {
        if (toMemory) this.ram[a] = data[i]!;
        else data[i] = this.ram[a]!;
      }
      this.address[ch] = down ? this.address[ch]! - 1 : this.address[ch]! + 1;
    }
    const remaining = this.left[ch]! + 1 - n;
    if (remaining === 0) {
      this.status |= 1 << ch;
      if (this.mode[ch]! & 0x10) {
        // Autoinitialize: back to the base registers.
        this.address[ch] = this.base[ch]!;
        this.left[ch] = this.count[ch]!;
      } else {
        this.left[ch] = 0xffff;
        this.mask |= 1 << ch;
      }
    } else this.left[ch] = remaining - 1;
    return n;
  }

  /** Bytes channel `ch` is programmed to move (count plus one), or 0 while it is masked. */
  pendingBytes(ch: number): number {
    return this.mask & (1 << ch) ? 0 : this.left[ch]! + 1;
  }

  saveState(w: StateWriter): void {
    for (let ch = 0; ch < 4; ch++) w.u16(this.base[ch]!).u16(this.count[ch]!).u16(this.address[ch]!).u16(this.left[ch]!).u8(this.mode[ch]!).u8(this.page[ch]!);
    w.u8(this.mask).u8(this.status).bool(this.flipFlop).raw(this.high);
  }
  loadState(r: StateReader): void {
    for (let ch = 0; ch < 4; ch++) {
      this.base[ch] = r.u16('DMA base address');
      this.count[ch] = r.u16('DMA base count');
      this.address[ch] = r.u16('DMA address');
      this.left[ch] = r.u16('DMA count');
      this.mode[ch] = r.u8('DMA mode');
      this.page[ch] = r.u8('DMA page');
    }
    this.mask = r.u8('DMA mask') & 0x0f;
    this.status = r.u8('DMA status');
    this.flipFlop = r.bool('DMA flip-flop');
    r.into(this.high, 'DMA controller 2 registers');
  }
}
