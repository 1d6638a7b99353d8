/** INT 10h: video services for 80×25 colour text mode and mode 13h (IBM VGA BIOS interface). */
import { ES, EBP, ECX, EDX, EBX, EAX, CF } from '../consts.js';
import type { Cpu } from '../cpu.js';
import { COLS, GFX_HEIGHT, GFX_WIDTH, GRAPHICS_BASE, ROWS, TEXT_BASE, type Vga } from '../devices/vga.js';
import { ROM_SEG, type RomLayout } from './rom.js';
import type { Memory } from '../memory.js';
import {
  BDA_ACTIVE_PAGE, BDA_CHAR_HEIGHT, BDA_CRTC_BASE, BDA_CURSOR_POS, BDA_CURSOR_SHAPE, BDA_VIDEO_COLS, BDA_VIDEO_MODE,
  BDA_VIDEO_PAGE_SIZE, BDA_VIDEO_PAGE_START, BDA_VIDEO_ROWS, BDA_VIDEO_CTL, BDA_VIDEO_SWITCHES, BDA_VIDEO_FLAGS, BDA_VIDEO_MODE_CTL,
} from './bda.js';

/** Bytes per text page (80×25×2 rounded to 4 KiB, as the BIOS lays pages out). */
const PAGE_BYTES = 0x1000;
const DEFAULT_ATTR = 0x07;
/** Mode 13h: 320×200, 256 colours; 40×25 characters of 8×8 for teletype. */
const MODE_13H = 0x13;

/** The video BIOS. */
export class VideoBios {
  constructor(
    private readonly mem: Memory,
    private readonly vga: Vga,
    private readonly tty: (ch: number) => void,
    private readonly rom: RomLayout,
  ) {}

  private get ram(): Uint8Array {
    return this.mem.ram;
  }
  private w16(a: number, v: number): void {
    this.ram[a] = v & 0xff;
    this.ram[a + 1] = (v >> 8) & 0xff;
  }

  /** Set mode 3 (or 13h) state and clear the screen (POST and INT 10h AH=00h). */
  setMode(mode: number, clear = true): void {
    this.ram[BDA_VIDEO_MODE] = mode;
    this.vga.setStandardMode(mode);
    if (mode === MODE_13H) {
      this.w16(BDA_VIDEO_COLS, 40);
      this.ram[BDA_VIDEO_ROWS] = ROWS - 1;
      this.ram[BDA_CHAR_HEIGHT] = 8;
      this.w16(BDA_VIDEO_PAGE_SIZE, 0xfa00);
      for (let p = 0; p < 8; p++) this.w16(BDA_CURSOR_POS + p * 2, 0);
      this.ram[BDA_ACTIVE_PAGE] = 0;
      // Graphics modes take their glyphs through INT 43h (the 8x8 font).
      this.w16(0x43 * 4, this.rom.font8x8);
      this.w16(0x43 * 4 + 2, ROM_SEG);
      if (clear) this.ram.fill(0, GRAPHICS_BASE, GRAPHICS_BASE + GFX_WIDTH * GFX_HEIGHT);
      return;
    }
    this.w16(BDA_VIDEO_COLS, COLS);
    this.w16(BDA_VIDEO_PAGE_SIZE, PAGE_BYTES);
    this.w16(BDA_VIDEO_PAGE_START, 0);
    for (let p = 0; p < 8; p++) this.w16(BDA_CURSOR_POS + p * 2, 0);
    this.w16(BDA_CURSOR_SHAPE, 0x0607);
    this.ram[BDA_ACTIVE_PAGE] = 0;
    this.w16(BDA_CRTC_BASE, 0x3d4);
    this.ram[BDA_VIDEO_MODE_CTL] = 0x29;
    this.ram[BDA_VIDEO_ROWS] = ROWS - 1;
    this.ram[BDA_CHAR_HEIGHT] = 16;
    this.ram[BDA_VIDEO_CTL] = 0x60;
    this.ram[BDA_VIDEO_SWITCHES] = 0xf9;
    this.ram[BDA_VIDEO_FLAGS] = 0x51;
    this.vga.setCursorShape(0x0d, 0x0e);
    this.vga.crtc[0x0c] = 0;
    this.vga.crtc[0x0d] = 0;
    if (clear) {
      for (let i = 0; i < 0x8000; i += 2) {
        this.ram[TEXT_BASE + i] = 0x20;
        this.ram[TEXT_BASE + i + 1] = DEFAULT_ATTR;
      }
    }
    this.syncCursor();
  }

  private cursor(page: number): [number, number] {
    const a = BDA_CURSOR_POS + (page & 7) * 2;
    return [this.ram[a]!, this.ram[a + 1]!];
  }
  private setCursor(page: number, col: number, row: number): void {
    const a = BDA_CURSOR_POS + (page & 7) * 2;
    this.ram[a] = col;
    this.ram[a + 1] = row;
    if ((page & 7) === this.ram[BDA_ACTIVE_PAGE]) this.syncCursor();
  }
  /** Mirror the active page's cursor into the CRTC. */
  private syncCursor(): void {
    const page = this.ram[BDA_ACTIVE_PAGE]! & 7;
    const [col, row] = this.cursor(page);
    this.vga.cursorOffset = (page * PAGE_BYTES) / 2 + row * COLS + col;
  }
  private cellAddr(page: number, col: number, row: number): number {
    return TEXT_BASE + (page & 7) * PAGE_BYTES + (row * COLS + col) * 2;
  }

  private scroll(up: boolean, lines: number, attr: number, r1: number, c1: number, r2: number, c2: number, page: number): void {
    r2 = Math.min(r2, ROWS - 1);
    c2 = Math.min(c2, COLS - 1);
    if (r1 > r2 || c1 > c2) return;
    const height = r2 - r1 + 1;
    if (lines === 0 || lines > height) lines = height;
    const copyRow = (from: number, to: number): void => {
      const s = this.cellAddr(page, c1, from);
      this.ram.copyWithin(this.cellAddr(page, c1, to), s, s + (c2 - c1 + 1) * 2);
    };
    const blankRow = (r: number): void => {
      for (let c = c1; c <= c2; c++) {
        const a = this.cellAddr(page, c, r);
        this.ram[a] = 0x20;
        this.ram[a + 1] = attr;
      }
    };
    if (up) {
      for (let r = r1; r <= r2 - lines; r++) copyRow(r + lines, r);
      for (let r = r2 - lines + 1; r <= r2; r++) blankRow(r);
    } else {
      for (let r = r2; r >= r1 + lines; r--) copyRow(r - lines, r);
      for (let r = r1; r < r1 + lines; r++) blankRow(r);
    }
  }

  /** Teletype output of one character on `page` (INT 10h AH=0Eh). */
  teletype(ch: number, page: number): void {
    this.tty(ch);
    let [col, row] = this.cursor(page);
    switch (ch) {
      case 0x07:
        break;
      case 0x08:
        if (col > 0) col--;
        break;
      case 0x0a:
        row++;
        break;
      case 0x0d:
        col = 0;
        break;
      default: {
        this.ram[this.cellAddr(page, col, row)] = ch;
        col++;
        if (col >= COLS) {
          col = 0;
          row++;
        }
      }
    }
    if (row >= ROWS) {
      const attr = this.ram[this.cellAddr(page, COLS - 1, ROWS - 1) + 1]!;
      this.scroll(true, 1, attr || DEFAULT_ATTR, 0, 0, ROWS - 1, COLS - 1, page);
      row = ROWS - 1;
    }
    this.setCursor(page, col, row);
  }

  /**
   * AX=1130h, get font information: ES:BP the table BH names (0 INT 1Fh, 1 INT 43h,
   * 2 8x14, 3 8x8, 4 upper half of 8x8, 5 9x14 alternates, 6 8x16, 7 9x16 alternates),
   * CX the bytes per character and DL the rows less one of the font on screen (as the
   * IBM VGA BIOS returns them: of the current font, not the requested one).
   */
  private fontInfo(c: Cpu, bh: number): void {
    const vector = (v: number): [number, number] => [this.ram[v * 4 + 2]! | (this.ram[v * 4 + 3]! << 8), this.ram[v * 4]! | (this.ram[v * 4 + 1]! << 8)];
    const rom = this.rom;
    const table: [number, number] | undefined = (
      [vector(0x1f), vector(0x43), [ROM_SEG, rom.font8x14], [ROM_SEG, rom.font8x8], [ROM_SEG, rom.font8x8 + 128 * 8],
        [ROM_SEG, rom.fontAlt9], [ROM_SEG, rom.font8x16], [ROM_SEG, rom.fontAlt9]] as [number, number][]
    )[bh];
    if (!table) return;
    c.loadSeg(ES, table[0]);
    c.setR16(EBP, table[1]);
    c.setR16(ECX, this.ram[BDA_CHAR_HEIGHT]!);
    c.setR8(2, this.ram[BDA_VIDEO_ROWS]!);
  }

  /** AH=10h palette services that matter for mode 13h: set/read one or a block of DAC registers. */
  private palette(c: Cpu, al: number): void {
    const dac = this.vga.dac;
    switch (al) {
      case 0x10: {
        const i = (c.r16(EBX) & 0xff) * 3;
        dac[i] = c.r8(6) & 0x3f; // DH red
        dac[i + 1] = c.r8(5) & 0x3f; // CH green
        dac[i + 2] = c.r8(1) & 0x3f; // CL blue
        return;
      }
      case 0x12:
      case 0x17: {
        const first = c.r16(EBX) & 0xff;
        const n = Math.min(c.r16(ECX), 256 - first);
        let off = c.r16(EDX);
        const seg = c.sbase[ES]!;
        for (let k = 0; k < n * 3; k++) {
          if (al === 0x12) dac[first * 3 + k] = c.lin8(seg + off) & 0x3f;
          else c.linW8(seg + off, dac[first * 3 + k]!);
          off = (off + 1) & 0xffff;
        }
        return;
      }
      case 0x15: {
        const i = (c.r16(EBX) & 0xff) * 3;
        c.setR8(6, dac[i]!);
        c.setR8(5, dac[i + 1]!);
        c.setR8(1, dac[i + 2]!);
        return;
      }
      default: // attribute registers: text colours stay the VGA defaults
    }
  }

  /** Handle INT 10h. */
  handle(c: Cpu): void {
    const ah = c.r8(4);
    const al = c.r8(0);
    const bh = c.r8(7);
    const bl = c.r8(3);
    switch (ah) {
      case 0x00:
        this.setMode(al & 0x7f, (al & 0x80) === 0);
        c.setR8(0, 0x30);
        return;
      case 0x01: {
        const ch = c.r8(5);
        const cl = c.r8(1);
        this.w16(BDA_CURSOR_SHAPE, (ch << 8) | cl);
        this.vga.setCursorShape(ch, cl);
        return;
      }
      case 0x02:
        this.setCursor(bh, c.r8(2), c.r8(6));
        return;
      case 0x03: {
        const [col, row] = this.cursor(bh);
        c.setR16(EDX, (row << 8) | col);
        c.setR16(ECX, this.ram[BDA_CURSOR_SHAPE]! | (this.ram[BDA_CURSOR_SHAPE + 1]! << 8));
        c.setR16(EAX, 0);
        return;
      }
      case 0x05:
        this.ram[BDA_ACTIVE_PAGE] = al & 7;
        this.w16(BDA_VIDEO_PAGE_START, (al & 7) * PAGE_BYTES);
        this.vga.crtc[0x0c] = (((al & 7) * PAGE_BYTES) / 2) >> 8;
        this.vga.crtc[0x0d] = 0;
        this.syncCursor();
        return;
      case 0x06:
      case 0x07:
        this.scroll(ah === 0x06, al, bh, c.r8(5), c.r8(1), c.r8(6), c.r8(2), this.ram[BDA_ACTIVE_PAGE]!);
        return;
      case 0x08: {
        const [col, row] = this.cursor(bh);
        const a = this.cellAddr(bh, col, row);
        c.setR16(EAX, this.ram[a]! | (this.ram[a + 1]! << 8));
        return;
      }
      case 0x09:
      case 0x0a: {
        const [col, row] = this.cursor(bh);
        let n = c.r16(ECX);
        let a = this.cellAddr(bh, col, row);
        const end = this.cellAddr(bh, 0, ROWS);
        while (n-- > 0 && a < end) {
          this.ram[a] = al;
          if (ah === 0x09) this.ram[a + 1] = bl;
          a += 2;
        }
        return;
      }
      case 0x0c:
      case 0x0d: {
        // Write / read a graphics pixel (mode 13h): AL colour, CX column, DX row.
        const x = c.r16(ECX);
        const y = c.r16(EDX);
        if (this.ram[BDA_VIDEO_MODE] !== MODE_13H || x >= GFX_WIDTH || y >= GFX_HEIGHT) return;
        const a = GRAPHICS_BASE + y * GFX_WIDTH + x;
        if (ah === 0x0c) this.ram[a] = al & 0x80 ? this.ram[a]! ^ (al & 0x7f) : al;
        else c.setR8(0, this.ram[a]!);
        return;
      }
      case 0x0e:
        this.teletype(al, this.ram[BDA_ACTIVE_PAGE]!);
        return;
      case 0x0f:
        c.setR8(0, this.ram[BDA_VIDEO_MODE]!);
        c.setR8(4, COLS);
        c.setR8(7, this.ram[BDA_ACTIVE_PAGE]!);
        return;
      case 0x10:
        this.palette(c, al);
        return;
      case 0x11:
        if (al === 0x30) this.fontInfo(c, bh);
        return;
      case 0x12:
        if (bl === 0x10) {
          c.setR16(EBX, 0x0003); // colour, 256 KiB
          c.setR16(ECX, 0x0009);
        }
        return;
      case 0x13: {
        // Write string: AL bit 0 = update cursor, bit 1 = string has attributes.
        let n = c.r16(ECX);
        let off = c.r16(EBP);
        const seg = c.sbase[ES]!;
        const save = this.cursor(bh);
        this.setCursor(bh, c.r8(2), c.r8(6));
        while (n-- > 0) {
          const ch = c.lin8(seg + off);
          off = (off + 1) & 0xffff;
          let attr = bl;
          if (al & 2) {
            attr = c.lin8(seg + off);
            off = (off + 1) & 0xffff;
          }
          if (ch === 7 || ch === 8 || ch === 10 || ch === 13) this.teletype(ch, bh);
          else {
            const [col, row] = this.cursor(bh);
            this.ram[this.cellAddr(bh, col, row) + 1] = attr;
            this.teletype(ch, bh);
          }
        }
        if (!(al & 1)) this.setCursor(bh, save[0], save[1]);
        return;
      }
      case 0x1a:
        if (al === 0) {
          c.setR8(0, 0x1a);
          c.setR16(EBX, 0x0008); // VGA with colour display
        }
        return;
      default:
        c.materialize();
        c.flags |= CF;
    }
  }
}
