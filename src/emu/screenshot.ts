/**
 * Screenshots: the 80×25 text screen drawn with the 8×16 VGA font vdisk ships (or a
 * PC Screen Font (PSF) named by VDISK_FONT) in the 16 standard VGA colours, or the
 * 320×200 mode 13h frame buffer through the DAC palette; and a small PNG encoder over
 * node:zlib.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync, deflateSync } from 'node:zlib';
import { VdiskError, fromSystemError } from '../errors.js';
import { COLS, CP437, GFX_HEIGHT, GFX_WIDTH, GRAPHICS_BASE, ROWS, type Vga } from './devices/vga.js';
import { vga8x16 } from './font-vga16.js';

const CELL_W = 8;
const CELL_H = 16;

/** PSF1 header (kbd's psf.h): magic 36 04, mode, charsize. */
const PSF1_MAGIC = 0x0436;
const PSF1_MODE512 = 0x01;
const PSF1_MODEHASTAB = 0x02;
const PSF1_SEPARATOR = 0xffff;
const PSF1_STARTSEQ = 0xfffe;
/** PSF2 header: magic 72 b5 4a 86, version, headersize, flags, length, charsize, height, width. */
const PSF2_MAGIC = 0x864ab572;
const PSF2_HAS_UNICODE_TABLE = 0x01;

/** 256 glyphs of 16 rows, indexed by code page 437 byte. */
export type Font8x16 = Uint8Array;

/** Decode a PSF1/PSF2 8×16 font (optionally gzip'd) into glyphs for CP437 codes. */
export function decodePsf(data: Uint8Array, name = 'font'): Font8x16 {
  const buf = Buffer.from(data[0] === 0x1f && data[1] === 0x8b ? gunzipSync(data) : data);
  let glyphs: Buffer;
  let count: number;
  const unicode = new Map<number, number>();
  if (buf.length >= 4 && buf.readUInt16LE(0) === PSF1_MAGIC) {
    const mode = buf[2]!;
    const charsize = buf[3]!;
    if (charsize !== CELL_H) throw new VdiskError('E_FORMAT', `${name}: PSF1 charsize is ${charsize}, need 16`);
    count = mode & PSF1_MODE512 ? 512 : 256;
    if (buf.length < 4 + count * charsize) throw new VdiskError('E_CORRUPT', `${name}: PSF1 glyph table truncated`);
    glyphs = buf.subarray(4, 4 + count * charsize);
    if (mode & PSF1_MODEHASTAB) {
      let p = 4 + count * charsize;
      for (let g = 0; g < count && p + 1 < buf.length; g++) {
        let inSeq = false;
        for (;;) {
          if (p + 1 >= buf.length) break;
          const u = buf.readUInt16LE(p);
          p += 2;
          if (u === PSF1_SEPARATOR) break;
          if (u === PSF1_STARTSEQ) inSeq = true;
          else if (!inSeq && !unicode.has(u)) unicode.set(u, g);
        }
      }
    }
  } else if (buf.length >= 32 && buf.readUInt32LE(0) === PSF2_MAGIC) {
    const headerSize = buf.readUInt32LE(8);
    const flags = buf.readUInt32LE(12);
    count = buf.readUInt32LE(16);
    const charsize = buf.readUInt32LE(20);
    const height = buf.readUInt32LE(24);
    const width = buf.readUInt32LE(28);
    if (width !== CELL_W || height !== CELL_H || charsize !== CELL_H) throw new VdiskError('E_FORMAT', `${name}: PSF2 glyphs are ${width}x${height}, need 8x16`);
    if (count > 0x10000 || buf.length < headerSize + count * charsize) throw new VdiskError('E_CORRUPT', `${name}: PSF2 glyph table truncated`);
    glyphs = buf.subarray(headerSize, headerSize + count * charsize);
    if (flags & PSF2_HAS_UNICODE_TABLE) {
      const text = buf.subarray(headerSize + count * charsize);
      let g = 0;
      let start = 0;
      for (let i = 0; i < text.length && g < count; i++) {
        if (text[i] === 0xff) {
          const entry = text.subarray(start, i).toString('utf8');
          const first = entry.split('\ufffe')[0] ?? '';
          for (const ch of first) if (!unicode.has(ch.codePointAt(0)!)) unicode.set(ch.codePointAt(0)!, g);
          g++;
          start = i + 1;
        }
      }
    }
  } else {
    throw new VdiskError('E_FORMAT', `${name}: not a PSF font (bad magic)`);
  }
  const out = new Uint8Array(256 * CELL_H);
  for (let code = 0; code < 256; code++) {
    const u = code === 0 ? 0x20 : CP437.codePointAt(code) ?? code;
    const g = unicode.size ? unicode.get(u) ?? unicode.get(0xfffd) ?? unicode.get(0x3f) ?? 0 : code;
    out.set(glyphs.subarray(g * CELL_H, g * CELL_H + CELL_H), code * CELL_H);
  }
  return out;
}

/**
 * The font screenshots use: the PSF file VDISK_FONT names (in `env`), else the 8×16 VGA
 * font built into vdisk. Nothing on the host is needed.
 */
export function loadFont(env: NodeJS.ProcessEnv = process.env): Font8x16 {
  const path = env.VDISK_FONT;
  if (!path) return vga8x16();
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (e) {
    throw fromSystemError(e, `VDISK_FONT=${path}`);
  }
  return decodePsf(data, path);
}

/** The 16 text-mode colours of the default VGA palette (RGB). */
export const VGA_PALETTE = [
  [0x00, 0x00, 0x00], [0x00, 0x00, 0xaa], [0x00, 0xaa, 0x00], [0x00, 0xaa, 0xaa],
  [0xaa, 0x00, 0x00], [0xaa, 0x00, 0xaa], [0xaa, 0x55, 0x00], [0xaa, 0xaa, 0xaa],
  [0x55, 0x55, 0x55], [0x55, 0x55, 0xff], [0x55, 0xff, 0x55], [0x55, 0xff, 0xff],
  [0xff, 0x55, 0x55], [0xff, 0x55, 0xff], [0xff, 0xff, 0x55], [0xff, 0xff, 0xff],
] as const;

/** Render the screen to RGB pixels (640×400). */
export function renderText(vga: Vga, font: Font8x16): { width: number; height: number; rgb: Uint8Array } {
  const width = COLS * CELL_W;
  const height = ROWS * CELL_H;
  const rgb = new Uint8Array(width * height * 3);
  const { chars, attrs } = vga.cells();
  const cursor = vga.cursorOffset - vga.startAddress;
  const [cs, ce] = vga.cursorShape;
  for (let cell = 0; cell < COLS * ROWS; cell++) {
    const ch = chars[cell]!;
    const at = attrs[cell]!;
    const fg = VGA_PALETTE[at & 0x0f]!;
    const bg = VGA_PALETTE[(at >> 4) & 0x07]!;
    const x0 = (cell % COLS) * CELL_W;
    const y0 = Math.floor(cell / COLS) * CELL_H;
    for (let y = 0; y < CELL_H; y++) {
      let bits = font[ch * CELL_H + y]!;
      if (cell === cursor && vga.cursorVisible && y >= cs && y <= ce) bits = 0xff;
      let p = ((y0 + y) * width + x0) * 3;
      for (let x = 0; x < CELL_W; x++, p += 3) {
        const c = bits & (0x80 >> x) ? fg : bg;
        rgb[p] = c[0];
        rgb[p + 1] = c[1];
        rgb[p + 2] = c[2];
      }
    }
  }
  return { width, height, rgb };
}

const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c;
}
function crc32(parts: Uint8Array[]): number {
  let c = -1;
  for (const b of parts) for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** PNG chunk types and colour type (PNG spec §11.2). */
const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);
const COLOR_TYPE_RGB = 2;

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32([head.subarray(4), data]), 0);
  return Buffer.concat([head, data, crc]);
}

/** Encode 8-bit RGB pixels as a PNG file. */
export function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = COLOR_TYPE_RGB;
  const raw = Buffer.alloc(height * (width * 3 + 1));
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0; // filter: none
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  }
  return Buffer.concat([Buffer.from(PNG_SIGNATURE), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
}

/** Render the mode 13h frame buffer to RGB pixels (320×200), colours from the DAC. */
export function renderGraphics256(vga: Vga, ram: Uint8Array): { width: number; height: number; rgb: Uint8Array } {
  const rgb = new Uint8Array(GFX_WIDTH * GFX_HEIGHT * 3);
  // The DAC holds 6 bits per component: scale to 8 as v * 255 / 63 would, by bit copying.
  const to8 = (v: number): number => (v << 2) | (v >> 4);
  for (let i = 0; i < GFX_WIDTH * GFX_HEIGHT; i++) {
    const c = ram[GRAPHICS_BASE + i]! * 3;
    rgb[i * 3] = to8(vga.dac[c]!);
    rgb[i * 3 + 1] = to8(vga.dac[c + 1]!);
    rgb[i * 3 + 2] = to8(vga.dac[c + 2]!);
  }
  return { width: GFX_WIDTH, height: GFX_HEIGHT, rgb };
}

/** PNG of the current screen: the text screen (640×400), or mode 13h graphics (320×200). */
export function screenshotPng(vga: Vga, font: Font8x16 = loadFont(), ram?: Uint8Array): Buffer {
  const { width, height, rgb } = vga.graphics256 && ram ? renderGraphics256(vga, ram) : renderText(vga, font);
  return encodePng(width, height, rgb);
}
