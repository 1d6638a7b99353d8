/**
 * The BIOS ROM image at F0000h: interrupt entry stubs that trap into the
 * TypeScript BIOS (`0F FF nn`, an opcode the 386 leaves undefined), tables the
 * BIOS hands out (diskette parameters, configuration), and the reset vector.
 */

/** ROM segment and physical base. */
export const ROM_SEG = 0xf000;
export const ROM_BASE = 0xf0000;
/** Trap number the reset vector uses (a jump to FFFF:0000 means reboot). */
export const TRAP_RESET = 0xf0;

const TRAP = [0x0f, 0xff];
const IRET = 0xcf;
/** push ax; mov al,20h; out 20h,al; pop ax — end of a master-PIC interrupt. */
const EOI_MASTER = [0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58];
/** push ax; mov al,20h; out 0A0h,al; out 20h,al; pop ax — end of a slave-PIC interrupt. */
const EOI_BOTH = [0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58];

/** Where things are in the ROM (offsets in segment F000h). */
export interface RomLayout {
  image: Uint8Array;
  /** Entry offset per interrupt vector 0-255. */
  vectors: number[];
  diskParamTable: number;
  configTable: number;
  hdParamTable: number;
  /** Character generator tables (INT 10h AX=1130h), 256 glyphs each, bit 7 leftmost. */
  font8x16: number;
  font8x14: number;
  font8x8: number;
  /** An empty 9-dot alternate table (a lone terminating 00h): all glyphs are 8 wide. */
  fontAlt9: number;
}

/** Offsets fixed by the PC/AT ROM for compatibility. */
const RESET_VECTOR = 0xfff0;
const ROM_DATE = 0xfff5;
const MODEL_BYTE = 0xfffe;
const POST_ENTRY = 0xe05b;

/**
 * The 8x14 and 8x8 tables made from the 8x16 one (the shipped font has no smaller
 * cuts): 8x14 drops the top and bottom rows, which VGA glyphs leave blank; 8x8 ORs
 * each pair of rows so thin strokes survive.
 */
export function smallerFonts(font16: Uint8Array): { font14: Uint8Array; font8: Uint8Array } {
  const font14 = new Uint8Array(256 * 14);
  const font8 = new Uint8Array(256 * 8);
  for (let g = 0; g < 256; g++) {
    font14.set(font16.subarray(g * 16 + 1, g * 16 + 15), g * 14);
    for (let r = 0; r < 8; r++) font8[g * 8 + r] = font16[g * 16 + 2 * r]! | font16[g * 16 + 2 * r + 1]!;
  }
  return { font14, font8 };
}

/** Build the ROM. `services` are the vectors handled by the TypeScript BIOS; `font16` the 8x16 glyphs. */
export function buildRom(services: readonly number[], font16: Uint8Array): RomLayout {
  const image = new Uint8Array(0x10000);
  let at = 0x1000;
  const emit = (bytes: number[]): number => {
    const start = at;
    image.set(bytes, at);
    at += bytes.length;
    return start;
  };
  const text = 'vdisk BIOS (stage 1, real mode)\0';
  emit([...text].map((c) => c.charCodeAt(0)));

  const iretStub = emit([IRET]);
  const masterIrq = emit([...EOI_MASTER, IRET]);
  const slaveIrq = emit([...EOI_BOTH, IRET]);
  const vectors = new Array<number>(256).fill(iretStub);
  for (let v = 0x08; v <= 0x0f; v++) vectors[v] = masterIrq;
  for (let v = 0x70; v <= 0x77; v++) vectors[v] = slaveIrq;
  // IRQ 0: count the tick in TypeScript, then call the user hook INT 1Ch, then EOI.
  vectors[0x08] = emit([...TRAP, 0x08, 0xcd, 0x1c, ...EOI_MASTER, IRET]);
  vectors[0x09] = emit([...TRAP, 0x09, ...EOI_MASTER, IRET]);
  for (const s of services) {
    if (s === 0x08 || s === 0x09) continue;
    vectors[s] = emit([...TRAP, s, IRET]);
  }

  // Diskette parameter table (INT 1Eh): 1.44 MB values; DOS copies and patches it.
  const diskParamTable = emit([0xdf, 0x02, 0x25, 0x02, 0x12, 0x1b, 0xff, 0x6c, 0xf6, 0x0f, 0x08]);
  // INT 15h C0h configuration table: length 8, model FCh, submodel 01h, revision 0,
  // feature byte 1: 70h = second PIC, RTC, INT 15h/4Fh keyboard intercept.
  const configTable = emit([0x08, 0x00, 0xfc, 0x01, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00]);
  const hdParamTable = emit(new Array<number>(16).fill(0));
  const fontAlt9 = emit([0x00]);
  at = (at + 15) & ~15;
  const { font14, font8 } = smallerFonts(font16);
  const font8x16 = emit([...font16]);
  const font8x14 = emit([...font14]);
  const font8x8 = emit([...font8]);
  if (at > POST_ENTRY) throw new Error('BIOS ROM layout overflows the POST entry');

  // Reset vector: jmp far F000:E05B, where a trap reports the reboot.
  image.set([...TRAP, TRAP_RESET, 0xf4, 0xeb, 0xfd], POST_ENTRY);
  image.set([0xea, POST_ENTRY & 0xff, POST_ENTRY >> 8, 0x00, 0xf0], RESET_VECTOR);
  image.set([...'01/01/26'].map((c) => c.charCodeAt(0)), ROM_DATE);
  image[MODEL_BYTE] = 0xfc;
  return { image, vectors, diskParamTable, configTable, hdParamTable, font8x16, font8x14, font8x8, fontAlt9 };
}
