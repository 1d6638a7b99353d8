/**
 * VGA in 80×25 colour text mode and 320×200×256 mode 13h: the CRT controller (cursor,
 * start address), the attribute/sequencer/graphics registers as storage, the DAC
 * palette, the input status register, and the text buffer at B8000h (mode 13h: the
 * linear frame buffer at A0000h) in guest memory.
 */
import type { IoBus } from '../io.js';
import type { Memory } from '../memory.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

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

/** Mode 13h frame buffer: 320×200, one byte per pixel (chain-4), at A0000h. */
export const GRAPHICS_BASE = 0xa0000;
export const GFX_WIDTH = 320;
export const GFX_HEIGHT = 200;
/** Graphics controller Miscellaneous register (index 6) bit 0: graphics mode. */
const GFX_MISC = 0x06;
const GFX_MISC_GRAPHICS = 0x01;
/** Attribute controller Mode Control register (index 10h) bit 6: 8-bit colour (256 colours). */
const ATTR_MODE = 0x10;
const ATTR_MODE_8BIT = 0x40;

/** The IBM VGA BIOS's default 256-colour DAC palette (6-bit R, G, B per entry). */
export function defaultDac(): Uint8Array {
  const dac = new Uint8Array(256 * 3);
  let i = 0;
  const put = (r: number, g: number, b: number): void => {
    dac[i++] = r;
    dac[i++] = g;
    dac[i++] = b;
  };
  // 0-15: the 16 text colours.
  for (let c = 0; c < 16; c++) {
    const hi = c & 8 ? 0x15 : 0;
    const r = (c & 4 ? 0x2a : 0) + hi;
    const g = c === 6 ? 0x15 : (c & 2 ? 0x2a : 0) + hi;
    const b = (c & 1 ? 0x2a : 0) + hi;
    put(r, g, b);
  }
  // 16-31: a grey ramp.
  for (const v of [0x00, 0x05, 0x08, 0x0b, 0x0e, 0x11, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x28, 0x2d, 0x32, 0x38, 0x3f]) put(v, v, v);
  // 32-247: 24 hues round the colour wheel at 3 intensities × 3 saturations (levels low → high).
  const ramps = [
    [0x00, 0x10, 0x1f, 0x2f, 0x3f], [0x1f, 0x27, 0x2f, 0x37, 0x3f], [0x2d, 0x31, 0x36, 0x3a, 0x3f],
    [0x00, 0x07, 0x0e, 0x15, 0x1c], [0x0e, 0x11, 0x15, 0x18, 0x1c], [0x14, 0x16, 0x18, 0x1a, 0x1c],
    [0x00, 0x04, 0x08, 0x0c, 0x10], [0x08, 0x0a, 0x0c, 0x0e, 0x10], [0x0b, 0x0c, 0x0d, 0x0f, 0x10],
  ];
  // Level index of R, G, B for each of the 24 hues, starting at blue.
  const up = [0, 1, 2, 3];
  const hues: [number, number, number][] = [
    ...up.map((k): [number, number, number] => [k, 0, 4]), ...up.map((k): [number, number, number] => [4, 0, 4 - k]),
    ...up.map((k): [number, number, number] => [4, k, 0]), ...up.map((k): [number, number, number] => [4 - k, 4, 0]),
    ...up.map((k): [number, number, number] => [0, 4, k]), ...up.map((k): [number, number, number] => [0, 4 - k, 4]),
  ];
  for (const v of ramps) for (const [r, g, b] of hues) put(v[r]!, v[g]!, v[b]!);
  // 248-255 stay black.
  return dac;
}

/** Code page 437 as Unicode, for showing the screen as text. */
export const CP437 =
  '\u0000☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼' +
  ' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~⌂' +
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

/** The VGA adapter. */
export class Vga implements Stateful {
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
  /** DAC palette, 6 bits per component. */
  readonly dac = defaultDac();
  private dacWrite = 0;
  private dacRead = 0;
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
    // DAC: 3C8h sets the write index, 3C7h the read index; 3C9h moves R, G, B in turn.
    io.register([0x3c7], { write: (_p, v) => (this.dacRead = v * 3), read: () => 0 });
    io.register([0x3c8], { write: (_p, v) => (this.dacWrite = v * 3), read: () => (this.dacWrite / 3) | 0 });
    io.register([0x3c9], {
      read: () => {
        const v = this.dac[this.dacRead]!;
        this.dacRead = (this.dacRead + 1) % this.dac.length;
        return v;
      },
      write: (_p, v) => {
        this.dac[this.dacWrite] = v & 0x3f;
        this.dacWrite = (this.dacWrite + 1) % this.dac.length;
      },
    });
    this.crtc[CRTC_CURSOR_START] = 0x0d;
    this.crtc[CRTC_CURSOR_END] = 0x0e;
  }

  /** Every register file, index and latch, and the DAC; video memory is guest RAM (saved with memory). */
  saveState(w: StateWriter): void {
    w.raw(this.crtc).u8(this.crtcIndex).raw(this.seq).u8(this.seqIndex).raw(this.gfx).u8(this.gfxIndex);
    w.raw(this.attr).u8(this.attrIndex).bool(this.attrFlip).u8(this.statusToggle);
    w.raw(this.dac).u16(this.dacWrite).u16(this.dacRead).u8(this.misc);
  }
  loadState(r: StateReader): void {
    r.into(this.crtc, 'CRTC registers');
    this.crtcIndex = r.u8('CRTC index') & 0x1f;
    r.into(this.seq, 'sequencer registers');
    this.seqIndex = r.u8('sequencer index') & 7;
    r.into(this.gfx, 'graphics registers');
    this.gfxIndex = r.u8('graphics index') % 9;
    r.into(this.attr, 'attribute registers');
    this.attrIndex = r.u8('attribute index') & 0x3f;
    this.attrFlip = r.bool('attribute flip-flop');
    this.statusToggle = r.u8('input status') & 0x09;
    r.into(this.dac, 'DAC palette');
    this.dacWrite = r.u16('DAC write index') % this.dac.length;
    this.dacRead = r.u16('DAC read index') % this.dac.length;
    this.misc = r.u8('miscellaneous output');
  }

  /** Program the registers that tell text from mode 13h graphics, and reset the DAC (INT 10h AH=00h). */
  setStandardMode(mode: number): void {
    const graphics = mode === 0x13;
    this.gfx[GFX_MISC] = graphics ? 0x05 : 0x0e;
    this.attr[ATTR_MODE] = graphics ? 0x41 : 0x0c;
    this.seq[4] = graphics ? 0x0e : 0x02;
    this.dac.set(defaultDac());
  }

  /** Whether the adapter shows 256-colour graphics (mode 13h) rather than text. */
  get graphics256(): boolean {
    return (this.gfx[GFX_MISC]! & GFX_MISC_GRAPHICS) !== 0 && (this.attr[ATTR_MODE]! & ATTR_MODE_8BIT) !== 0;
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
