/** Register numbers, FLAGS bits, exception vectors and lazy-flag operations of the CPU. */

/** Segment register numbers, as encoded in the ModRM reg field for 8Ch/8Eh. */
export const ES = 0;
export const CS = 1;
export const SS = 2;
export const DS = 3;
export const FS = 4;
export const GS = 5;

/** Register numbers in ModRM order. */
export const EAX = 0;
export const ECX = 1;
export const EDX = 2;
export const EBX = 3;
export const ESP = 4;
export const EBP = 5;
export const ESI = 6;
export const EDI = 7;

/** FLAGS bits (Intel SDM vol. 1 §3.4.3). */
export const CF = 0x0001;
export const PF = 0x0004;
export const AF = 0x0010;
export const ZF = 0x0040;
export const SF = 0x0080;
export const TF = 0x0100;
export const IF = 0x0200;
export const DF = 0x0400;
export const OF = 0x0800;
/** The six arithmetic flags. */
export const ARITH = CF | PF | AF | ZF | SF | OF;
/** Bits POPF may change in real mode on a 386 (status, TF, IF, DF, IOPL, NT). */
export const FLAGS_WRITABLE = 0x7fd5;

/** Exception vectors (Intel SDM vol. 3 §6.3.1). */
export const VEC_DE = 0;
export const VEC_DB = 1;
export const VEC_BP = 3;
export const VEC_OF = 4;
export const VEC_BR = 5;
export const VEC_UD = 6;
export const VEC_NM = 7;
export const VEC_DF = 8;
export const VEC_TS = 10;
export const VEC_NP = 11;
export const VEC_SS = 12;
export const VEC_GP = 13;
export const VEC_PF = 14;
export const VEC_AC = 17;
/** IOPL (EFLAGS bits 12-13) and NT, RF, VM. */
export const IOPL = 0x3000;
export const NT = 0x4000;
export const RF = 0x10000;
export const VM = 0x20000;

/** Lazy flag operations: which formula derives the arithmetic flags. */
export const L_NONE = 0;
export const L_ADD = 1;
export const L_ADC = 2; // add with carry-in 1
export const L_SUB = 3;
export const L_SBB = 4; // subtract with borrow-in 1
export const L_LOGIC = 5;
export const L_INC = 6;
export const L_DEC = 7;
/** SF/ZF/PF from the result; CF, OF and AF already in `flags`. */
export const L_SZP = 8;

/**
 * Masks and sign bits indexed by operand size in bytes. Int32Arrays, so a lookup
 * yields an int32 (a plain array would hold the 32-bit entries as heap doubles).
 * 32-bit values are kept as signed int32, so the 32-bit mask is -1 and the sign bit -2^31.
 */
export const MASK = Int32Array.of(0, 0xff, 0xffff, 0, -1);
export const SIGN = Int32Array.of(0, 0x80, 0x8000, 0, -0x80000000);

export const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let b = i;
  b ^= b >> 4;
  b ^= b >> 2;
  b ^= b >> 1;
  PARITY[i] = b & 1 ? 0 : PF;
}

