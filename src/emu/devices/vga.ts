/**
 * VGA in 80×25 colour text mode: the CRT controller (cursor, start address), the
 * attribute/sequencer/graphics/DAC registers as storage, the input status register,
 * and the text buffer at B8000h in guest memory.
 */
import type { IoBus } from '../io.js';
import type { Memory } from '../memory.js';

/** Text buffer address and geometry of mode 3. */
export const TEXT_BASE = 0xb8000;
export const COLS = 80;
export const ROWS = 25;
/** CRTC registers (IBM VGA Technical Reference, "CRT Controller Registers"). */
const CRTC_CURSOR_START = 0x0a;
const CRTC_CURSOR_END = 0x0b;
const CRTC_START_HI = 0x0c;
const CRTC_START_LO = 0x0d;
const CRTC_CURSOR_HI = 0x0e;
const CRTC_CURSOR_LO = 0x0f;

/** Code page 437 as Unicode, for showing the screen as text. */
export const CP437 =
  '\u0000☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼' +
  ' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~⌂' +
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

/** The VGA adapter. */
export class Vga {
  readonly crtc = new Uint8Array(0x19);
  private crtcIndex = 0;
  private readonly seq = new Uint8Array(8);
  private seqIndex = 0;
  private readonly gfx = new Uint8Array(9);
  private gfxIndex = 0;
  private readonly attr = new Uint8Array(0x15);
  private attrIndex = 0;
  private attrFlip = false;
  private statusToggle = 0;
  private dacIndex = 0;
  private misc = 0x67;

  constructor(
    io: IoBus,
    private readonly mem: Memory,
  ) {
    for (const base of [0x3d4, 0x3b4]) {
      io.register([base], { read: () => this.crtcIndex, write: (_p, v) => (this.crtcIndex = v & 0x1f) });
      io.register([base + 1], {
        read: () => (this.crtcIndex < this.crtc.length ? this.crtc[this.crtcIndex]! : 0xff),
        write: (_p, v) => {
          if (this.crtcIndex < this.crtc.length) this.crtc[this.crtcIndex] = v;
        },
      });
    }
    io.register([0x3da, 0x3ba], {
      read: () => {
        this.attrFlip = false;
        this.statusToggle ^= 0x09; // display enable and vertical retrace alternate
        return this.statusToggle;
      },
    });
    io.register([0x3c0], {
      read: () => this.attrIndex,
      write: (_p, v) => {
        if (!this.attrFlip) this.attrIndex = v & 0x3f;
        else if ((this.attrIndex & 0x1f) < this.attr.length) this.attr[this.attrIndex & 0x1f] = v;
        this.attrFlip = !this.attrFlip;
      },
    });
    io.register([0x3c1], { read: () => this.attr[this.attrIndex & 0x1f] ?? 0 });
    io.register([0x3c4], { read: () => this.seqIndex, write: (_p, v) => (this.seqIndex = v & 7) });
    io.register([0x3c5], { read: () => this.seq[this.seqIndex]!, write: (_p, v) => (this.seq[this.seqIndex] = v) });
    io.register([0x3ce], { read: () => this.gfxIndex, write: (_p, v) => (this.gfxIndex = v % 9) });
    io.register([0x3cf], { read: () => this.gfx[this.gfxIndex]!, write: (_p, v) => (this.gfx[this.gfxIndex] = v) });
    io.register([0x3c2], { write: (_p, v) => (this.misc = v) });
    io.register([0x3cc], { read: () => this.misc });
    io.register([0x3c7, 0x3c8], { write: (_p, v) => (this.dacIndex = v), read: () => this.dacIndex });
    io.register([0x3c9], { read: () => 0, write: () => {} });
    this.crtc[CRTC_CURSOR_START] = 0x0d;
    this.crtc[CRTC_CURSOR_END] = 0x0e;
  }

  /** Offset of the displayed page in the text buffer, in characters. */
  get startAddress(): number {
    return (this.crtc[CRTC_START_HI]! << 8) | this.crtc[CRTC_START_LO]!;
  }
  /** Cursor position in characters from the start of the buffer. */
  get cursorOffset(): number {
    return (this.crtc[CRTC_CURSOR_HI]! << 8) | this.crtc[CRTC_CURSOR_LO]!;
  }
  set cursorOffset(v: number) {
    this.crtc[CRTC_CURSOR_HI] = (v >> 8) & 0xff;
    this.crtc[CRTC_CURSOR_LO] = v & 0xff;
  }
  /** Whether the cursor is shown (CRTC cursor start bit 5 clear). */
  get cursorVisible(): boolean {
    return (this.crtc[CRTC_CURSOR_START]! & 0x20) === 0;
  }
  /** Cursor scan lines [start, end] within the 16-line cell. */
  get cursorShape(): [number, number] {
    return [this.crtc[CRTC_CURSOR_START]! & 0x1f, this.crtc[CRTC_CURSOR_END]! & 0x1f];
  }
  setCursorShape(start: number, end: number): void {
    this.crtc[CRTC_CURSOR_START] = start;
    this.crtc[CRTC_CURSOR_END] = end;
  }

  /** The visible cells: character and attribute bytes, row-major. */
  cells(): { chars: Uint8Array; attrs: Uint8Array } {
    const chars = new Uint8Array(COLS * ROWS);
    const attrs = new Uint8Array(COLS * ROWS);
    const base = TEXT_BASE + this.startAddress * 2;
    for (let i = 0; i < COLS * ROWS; i++) {
      chars[i] = this.mem.ram[base + i * 2]!;
      attrs[i] = this.mem.ram[base + i * 2 + 1]!;
    }
    return { chars, attrs };
  }

  /** The visible screen as 25 lines of text (trailing blanks trimmed). */
  text(): string[] {
    const { chars } = this.cells();
    const lines: string[] = [];
    for (let r = 0; r < ROWS; r++) {
      let s = '';
      for (let c = 0; c < COLS; c++) {
        const ch = chars[r * COLS + c]!;
        s += ch === 0 ? ' ' : CP437[ch]!;
      }
      lines.push(s.replace(/\s+$/, ''));
    }
    return lines;
  }
}
