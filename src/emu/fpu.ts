/**
 * The x87 FPU: the register stack, tag, status and control words, and the ESC
 * opcodes D8h-DFh (`esc` is their one entry from the CPU's handler table).
 *
 * Values are held as float64, not 80-bit extended: arithmetic rounds to double
 * precision whatever the control word's precision and rounding fields say (FRNDINT,
 * FIST and FBSTP do honour the rounding field), so results agree with an x87 on
 * ordinary values stored as float64 or narrower, and differ in the last bits of
 * extended results, of values beyond the double range (they overflow to infinity or
 * underflow to zero) and of 64-bit integers and 18-digit BCD beyond 2^53. The
 * precision exception (PE) and C1's round-up meaning are not computed. FLD/FSTP
 * m80, FNSAVE/FRSTOR and FNSTENV/FLDENV use the true 80-bit encoding. With CR0.NE
 * clear an unmasked exception sets ES and B but raises no IRQ 13 (no FERR# pin).
 */
import type { Cpu } from './cpu.js';
import { AF, CF, OF, PF, SF, VEC_NM, ZF } from './consts.js';
import type { StateReader, StateWriter } from './state/codec.js';

/** Status word bits (SDM vol. 1 §8.1.3). */
const IE = 0x01;
const ZE = 0x04;
const SF_STACK = 0x40;
const ES = 0x80;
const C0 = 0x100;
const C1 = 0x200;
const C2 = 0x400;
const C3 = 0x4000;
const BUSY = 0x8000;
const EXC = 0x3f;
/** #MF, the x87 floating-point error. */
const VEC_MF = 16;
const CR0_MP = 2;
const CR0_EM = 4;
const CR0_TS = 8;
const CR0_NE = 0x20;

const TWO32 = 0x100000000;
/** The real indefinite (a negative quiet NaN) as float64. */
const INDEFINITE = (() => {
  const b = new DataView(new ArrayBuffer(8));
  b.setUint32(4, 0xfff80000, true);
  return b.getFloat64(0, true);
})();
const scratch = new DataView(new ArrayBuffer(8));

/** 2^n for any integer n, as a product that neither overflows nor flushes on the way. */
function scale(v: number, n: number): number {
  if (n > 3000) n = 3000;
  if (n < -3000) n = -3000;
  while (n > 1000) {
    v *= 2 ** 1000;
    n -= 1000;
  }
  while (n < -1000) {
    v *= 2 ** -1000;
    n += 1000;
  }
  return v * 2 ** n;
}

/** Decode an 80-bit extended real (mantissa high/low dwords, sign+exponent word) to the nearest float64. */
export function decodeExtended(lo: number, hi: number, se: number): number {
  const sign = se & 0x8000 ? -1 : 1;
  const e = se & 0x7fff;
  lo >>>= 0;
  hi >>>= 0;
  if (e === 0x7fff) {
    if ((hi & 0x7fffffff) === 0 && lo === 0) return sign * Infinity;
    // A NaN: keep the sign and the top of the payload, quiet.
    scratch.setUint32(4, (se & 0x8000 ? 0x80000000 : 0) | 0x7ff80000 | ((hi >>> 11) & 0x7ffff), true);
    scratch.setUint32(0, ((hi << 21) | (lo >>> 11)) >>> 0, true);
    return scratch.getFloat64(0, true);
  }
  // hi * 2^32 + lo rounds once to 53 bits (round to nearest even), the scaling is exact in range.
  const m = hi * TWO32 + lo;
  return sign * scale(m, (e === 0 ? 1 : e) - 16383 - 63);
}

/** Encode a float64 as an 80-bit extended real: [mantissa low, mantissa high, sign+exponent]. */
export function encodeExtended(v: number): [number, number, number] {
  scratch.setFloat64(0, v, true);
  const dhi = scratch.getUint32(4, true);
  const dlo = scratch.getUint32(0, true);
  const sign = dhi & 0x80000000 ? 0x8000 : 0;
  const e = (dhi >>> 20) & 0x7ff;
  const frac = (dhi & 0xfffff) * TWO32 + dlo;
  if (e === 0x7ff) {
    return [(dlo << 11) >>> 0, (0x80000000 | ((dhi & 0xfffff) << 11) | (dlo >>> 21)) >>> 0, sign | 0x7fff];
  }
  if (e === 0 && frac === 0) return [0, 0, sign];
  let m: number;
  let exp: number;
  if (e === 0) {
    // A float64 denormal is a normal extended real.
    const n = Math.floor(Math.log2(frac));
    const top = 2 ** n > frac ? n - 1 : 2 ** (n + 1) <= frac ? n + 1 : n;
    m = frac * 2 ** (63 - top);
    exp = top - 1074 + 16383;
  } else {
    m = (2 ** 52 + frac) * 2 ** 11;
    exp = e - 1023 + 16383;
  }
  const hi = Math.floor(m / TWO32);
  return [m - hi * TWO32, hi, sign | exp];
}

/** Round `v` to an integer by the rounding-control field `rc` (0 nearest even, 1 down, 2 up, 3 toward zero). */
function roundInt(v: number, rc: number): number {
  if (!Number.isFinite(v)) return v;
  switch (rc) {
    case 1: return Math.floor(v);
    case 2: return Math.ceil(v);
    case 3: return Math.trunc(v);
    default: {
      const f = Math.floor(v);
      const d = v - f;
      const r = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
      return r === 0 && (v < 0 || Object.is(v, -0)) ? -0 : r;
    }
  }
}

/** The x87 state. */
export class Fpu {
  /** Physical registers R0-R7; ST(i) is `regs[(top + i) & 7]`. */
  readonly regs = new Float64Array(8);
  /** Bit i set: physical register i is empty. */
  empty = 0xff;
  top = 0;
  /** Control word. */
  cw = 0x37f;
  /** Status word without TOP (bits 11-13), which lives in `top`. */
  sw = 0;
  /** Last instruction and operand pointers (FSTENV's FIP, FCS, FOP, FDP, FDS). */
  fip = 0;
  fcs = 0;
  fop = 0;
  fdp = 0;
  fds = 0;

  /** FNINIT. */
  init(): void {
    this.cw = 0x37f;
    this.sw = 0;
    this.top = 0;
    this.empty = 0xff;
    this.fip = this.fcs = this.fop = this.fdp = this.fds = 0;
  }
  /** The status word as FNSTSW stores it. */
  status(): number {
    return (this.sw & ~0x3800) | (this.top << 11);
  }
  setStatus(v: number): void {
    this.top = (v >> 11) & 7;
    this.sw = v & ~0x3800 & 0xffff;
    this.updateSummary();
  }
  /** ES and B follow the unmasked exception flags. */
  updateSummary(): void {
    if (this.sw & ~this.cw & EXC) this.sw |= ES | BUSY;
    else this.sw &= ~(ES | BUSY);
  }
  /** The full tag word (00 valid, 01 zero, 10 special, 11 empty per physical register). */
  tagWord(): number {
    let t = 0;
    for (let i = 0; i < 8; i++) {
      let k: number;
      if (this.empty & (1 << i)) k = 3;
      else {
        const v = this.regs[i]!;
        k = v === 0 ? 1 : Number.isFinite(v) ? 0 : 2;
      }
      t |= k << (i * 2);
    }
    return t;
  }
  setTagWord(t: number): void {
    let e = 0;
    for (let i = 0; i < 8; i++) if (((t >> (i * 2)) & 3) === 3) e |= 1 << i;
    this.empty = e;
  }
  /** Raise exception flags `f` (IE, ZE, ...). Returns true when they are masked (the default response applies). */
  raise(f: number): boolean {
    this.sw |= f;
    if (f & ~this.cw & EXC) {
      this.sw |= ES | BUSY;
      return false;
    }
    return true;
  }

  isEmpty(i: number): boolean {
    return (this.empty & (1 << ((this.top + i) & 7))) !== 0;
  }
  /** ST(i), or (stack underflow) the indefinite if the invalid exception is masked, or null. */
  get(i: number): number | null {
    const p = (this.top + i) & 7;
    if (this.empty & (1 << p)) {
      this.sw &= ~C1;
      return this.raise(IE | SF_STACK) ? INDEFINITE : null;
    }
    return this.regs[p]!;
  }
  set(i: number, v: number): void {
    const p = (this.top + i) & 7;
    this.regs[p] = v;
    this.empty &= ~(1 << p);
  }
  /** Push `v`; on stack overflow the masked response pushes the indefinite. Returns false when an unmasked fault stopped it. */
  push(v: number): boolean {
    const p = (this.top - 1) & 7;
    if (!(this.empty & (1 << p))) {
      this.sw |= C1;
      if (!this.raise(IE | SF_STACK)) return false;
      v = INDEFINITE;
    }
    this.top = p;
    this.regs[p] = v;
    this.empty &= ~(1 << p);
    return true;
  }
  pop(): void {
    this.empty |= 1 << this.top;
    this.top = (this.top + 1) & 7;
  }

  saveState(w: StateWriter): void {
    w.u16(this.cw);
    w.u16(this.status());
    w.u8(this.empty);
    for (const v of this.regs) w.f64(v);
    w.u32(this.fip >>> 0);
    w.u16(this.fcs);
    w.u16(this.fop);
    w.u32(this.fdp >>> 0);
    w.u16(this.fds);
  }
  loadState(r: StateReader): void {
    this.cw = r.u16('FPU control word');
    this.setStatus(r.u16('FPU status word'));
    this.empty = r.u8('FPU empty tags');
    for (let i = 0; i < 8; i++) this.regs[i] = r.f64('FPU register');
    this.fip = r.u32('FPU instruction pointer');
    this.fcs = r.u16('FPU code selector');
    this.fop = r.u16('FPU opcode');
    this.fdp = r.u32('FPU operand pointer');
    this.fds = r.u16('FPU data selector');
  }
}

// ------------------------------------------------------------------ the instructions

/** A waiting FPU instruction first takes a pending unmasked exception: #MF with CR0.NE (without it, no FERR# wiring: nothing). */
function prologue(c: Cpu): void {
  if (c.fpu.sw & ES && c.cr0 & CR0_NE) c.fault(VEC_MF);
}

/** FWAIT (9Bh): #NM when CR0.MP and TS, #MF for a pending unmasked exception. */
export function fwait(c: Cpu): void {
  if ((c.cr0 & (CR0_MP | CR0_TS)) === (CR0_MP | CR0_TS)) c.fault(VEC_NM);
  if (c.fpu.sw & ES && c.cr0 & CR0_NE) c.fault(VEC_MF);
}

/** x op y for the arithmetic group (reg field: 0 add, 1 mul, 4 sub, 5 subr, 6 div, 7 divr); null when an unmasked exception stops the instruction. */
function arith(f: Fpu, op: number, x: number, y: number): number | null {
  let a = x;
  let b = y;
  if (op === 5 || op === 7) {
    a = y;
    b = x;
  }
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) ? a : b;
  let r: number;
  switch (op) {
    case 0: r = a + b; break;
    case 1: r = a * b; break;
    case 4:
    case 5: r = a - b; break;
    default:
      if (b === 0 && a !== 0 && Number.isFinite(a)) {
        if (!f.raise(ZE)) return null;
        return (Math.sign(a) * (Object.is(b, -0) ? -1 : 1)) * Infinity;
      }
      r = a / b;
  }
  if (Number.isNaN(r)) return f.raise(IE) ? INDEFINITE : null;
  return r;
}

/** C3, C2, C0 of comparing x with y (unordered: all three, and IE if `signalling` or a NaN was signalling). */
function compare(f: Fpu, x: number, y: number, quiet: boolean): number {
  if (Number.isNaN(x) || Number.isNaN(y)) {
    if (!quiet) f.raise(IE);
    return C3 | C2 | C0;
  }
  return x > y ? 0 : x < y ? C0 : C3;
}
function setCC(f: Fpu, cc: number): void {
  f.sw = (f.sw & ~(C0 | C1 | C2 | C3)) | cc;
}
/** FCOMI/FUCOMI: the result into ZF, PF, CF; OF, SF, AF cleared. */
function setEflagsFromCC(c: Cpu, cc: number): void {
  c.materialize();
  c.flags = (c.flags & ~(CF | PF | ZF | OF | SF | AF)) | (cc & C3 ? ZF : 0) | (cc & C2 ? PF : 0) | (cc & C0 ? CF : 0);
}

/** Record FIP/FCS/FOP (and FDP for a memory operand) as the x87 does for non-control instructions. */
function record(c: Cpu, esc: number, modrm: number): void {
  const f = c.fpu;
  f.fip = c.startEip;
  f.fcs = c.sreg[1]!;
  f.fop = ((esc & 7) << 8) | modrm;
  if (modrm < 0xc0) f.fdp = c.eaOff;
}

function rdF32(c: Cpu, b: number, o: number): number {
  scratch.setInt32(0, c.rd32(b, o), true);
  return scratch.getFloat32(0, true);
}
function rdF64(c: Cpu, b: number, o: number, o4: number): number {
  scratch.setInt32(0, c.rd32(b, o), true);
  scratch.setInt32(4, c.rd32(b, o4), true);
  return scratch.getFloat64(0, true);
}
function wrF32(c: Cpu, b: number, o: number, v: number): void {
  if (Number.isNaN(v)) {
    // Narrow the NaN by hand, keeping its sign and the top of its payload (a DataView may canonicalise it).
    scratch.setFloat64(0, v, true);
    const hi = scratch.getUint32(4, true);
    const lo = scratch.getUint32(0, true);
    c.wr32(b, o, (hi & 0x80000000) | 0x7fc00000 | ((hi & 0x7ffff) << 3) | (lo >>> 29));
    return;
  }
  scratch.setFloat32(0, v, true);
  c.wr32(b, o, scratch.getInt32(0, true));
}
function wrF64(c: Cpu, b: number, o: number, o4: number, v: number): void {
  scratch.setFloat64(0, v, true);
  c.wr32(b, o, scratch.getInt32(0, true));
  c.wr32(b, o4, scratch.getInt32(4, true));
}

/** Add `n` to an offset with the address size's wrap. */
function off(c: Cpu, o: number, n: number): number {
  return c.as32 ? (o + n) >>> 0 : (o + n) & 0xffff;
}

/** A memory operand of the arithmetic group: m32fp (D8), m32int (DA), m64fp (DC), m16int (DE). */
function memOperand(c: Cpu, esc: number): number {
  const b = c.eaBase;
  const o = c.eaOff;
  switch (esc) {
    case 0xd8: return quietLoad(c.fpu, rdF32(c, b, o));
    case 0xda: return c.rd32(b, o) | 0;
    case 0xdc: return quietLoad(c.fpu, rdF64(c, b, o, off(c, o, 4)));
    default: return (c.rd16(b, o) << 16) >> 16;
  }
}
/** A signalling NaN loaded from memory raises IE and becomes quiet (the float64 conversion quiets it already). */
function quietLoad(f: Fpu, v: number): number {
  if (Number.isNaN(v)) {
    scratch.setFloat64(0, v, true);
    // float32 → float64 and DataView reads keep the quiet bit as loaded: a clear one was signalling.
    if (!(scratch.getUint32(4, true) & 0x80000)) f.raise(IE);
  }
  return v;
}

/** The integer stores FIST/FISTP: round by RC, out of range is IE and the integer indefinite. */
function storeInt(c: Cpu, bytes: number, v: number): boolean {
  const f = c.fpu;
  const r = roundInt(v, (f.cw >> 10) & 3);
  const lim = bytes === 2 ? 0x8000 : bytes === 4 ? 0x80000000 : 2 ** 63;
  const b = c.eaBase;
  const o = c.eaOff;
  if (!(r >= -lim && r < lim)) {
    if (!f.raise(IE)) return false;
    if (bytes === 2) c.wr16(b, o, 0x8000);
    else if (bytes === 4) c.wr32(b, o, 0x80000000 | 0);
    else {
      c.wr32(b, o, 0);
      c.wr32(b, off(c, o, 4), 0x80000000 | 0);
    }
    return true;
  }
  if (bytes === 2) c.wr16(b, o, r & 0xffff);
  else if (bytes === 4) c.wr32(b, o, r | 0);
  else {
    const u = BigInt.asUintN(64, BigInt(r));
    c.wr32(b, o, Number(u & 0xffffffffn) | 0);
    c.wr32(b, off(c, o, 4), Number(u >> 32n) | 0);
  }
  return true;
}

function loadExtended(c: Cpu, b: number, o: number): number {
  return decodeExtended(c.rd32(b, o), c.rd32(b, off(c, o, 4)), c.rd16(b, off(c, o, 8)));
}
function storeExtended(c: Cpu, b: number, o: number, v: number): void {
  const [lo, hi, se] = encodeExtended(v);
  c.wr32(b, o, lo | 0);
  c.wr32(b, off(c, o, 4), hi | 0);
  c.wr16(b, off(c, o, 8), se);
}

/** FLDENV/FRSTOR's environment (protected-mode layout, 14 or 28 bytes); returns its size. */
function loadEnv(c: Cpu, b: number, o: number): number {
  const f = c.fpu;
  const big = c.os32;
  const w = big ? 4 : 2;
  f.cw = c.rd16(b, o);
  f.setStatus(c.rd16(b, off(c, o, w)));
  f.setTagWord(c.rd16(b, off(c, o, 2 * w)));
  if (big) {
    f.fip = c.rd32(b, off(c, o, 12));
    const x = c.rd32(b, off(c, o, 16));
    f.fcs = x & 0xffff;
    f.fop = (x >>> 16) & 0x7ff;
    f.fdp = c.rd32(b, off(c, o, 20));
    f.fds = c.rd16(b, off(c, o, 24));
  } else {
    f.fip = c.rd16(b, off(c, o, 6));
    f.fcs = c.rd16(b, off(c, o, 8));
    f.fdp = c.rd16(b, off(c, o, 10));
    f.fds = c.rd16(b, off(c, o, 12));
  }
  f.updateSummary();
  return big ? 28 : 14;
}
/** FNSTENV/FNSAVE's environment; returns its size. */
function storeEnv(c: Cpu, b: number, o: number): number {
  const f = c.fpu;
  if (c.os32) {
    c.wr32(b, o, f.cw | 0xffff0000);
    c.wr32(b, off(c, o, 4), f.status() | 0xffff0000);
    c.wr32(b, off(c, o, 8), f.tagWord() | 0xffff0000);
    c.wr32(b, off(c, o, 12), f.fip);
    c.wr32(b, off(c, o, 16), f.fcs | (f.fop << 16));
    c.wr32(b, off(c, o, 20), f.fdp);
    c.wr32(b, off(c, o, 24), f.fds | 0xffff0000);
    return 28;
  }
  c.wr16(b, o, f.cw);
  c.wr16(b, off(c, o, 2), f.status());
  c.wr16(b, off(c, o, 4), f.tagWord());
  c.wr16(b, off(c, o, 6), f.fip & 0xffff);
  c.wr16(b, off(c, o, 8), f.fcs);
  c.wr16(b, off(c, o, 10), f.fdp & 0xffff);
  c.wr16(b, off(c, o, 12), f.fds);
  return 14;
}

/** FBLD: 18 packed BCD digits and a sign byte. */
function loadBcd(c: Cpu, b: number, o: number): number {
  // Exact in a BigInt, then one rounding to a double.
  let n = 0n;
  for (let i = 8; i >= 0; i--) {
    const d = c.rd8(b, off(c, o, i));
    n = n * 100n + BigInt((d >> 4) * 10 + (d & 15));
  }
  const v = Number(n);
  return c.rd8(b, off(c, o, 9)) & 0x80 ? -v : v;
}
/** FBSTP: round by RC; beyond 18 digits it is IE and the BCD indefinite. */
function storeBcd(c: Cpu, v: number): boolean {
  const f = c.fpu;
  const b = c.eaBase;
  const o = c.eaOff;
  const r = roundInt(v, (f.cw >> 10) & 3);
  if (!(Math.abs(r) < 1e18)) {
    if (!f.raise(IE)) return false;
    for (let i = 0; i < 7; i++) c.wr8(b, off(c, o, i), 0);
    c.wr8(b, off(c, o, 7), 0xc0);
    c.wr8(b, off(c, o, 8), 0xff);
    c.wr8(b, off(c, o, 9), 0xff);
    return true;
  }
  let n = BigInt(Math.abs(r));
  for (let i = 0; i < 9; i++) {
    const lo = Number(n % 10n);
    n /= 10n;
    const hi = Number(n % 10n);
    n /= 10n;
    c.wr8(b, off(c, o, i), (hi << 4) | lo);
  }
  c.wr8(b, off(c, o, 9), r < 0 || Object.is(r, -0) ? 0x80 : 0);
  return true;
}

/** The unbiased exponent and significand (in [1, 2)) of a finite nonzero `v`. */
function frexp(v: number): [number, number] {
  let e = Math.floor(Math.log2(Math.abs(v)));
  let m = scale(v, -e);
  if (Math.abs(m) >= 2) {
    m /= 2;
    e++;
  } else if (Math.abs(m) < 1) {
    m *= 2;
    e--;
  }
  return [e, m];
}

/** The register forms of D9h: loads of constants, FXCH, the one-operand and transcendental operations. */
function d9reg(c: Cpu, modrm: number): void {
  const f = c.fpu;
  const i = modrm & 7;
  switch (modrm >> 3) {
    case 0x18: { // FLD ST(i)
      const v = f.get(i);
      if (v !== null) f.push(v);
      return;
    }
    case 0x19: { // FXCH
      const a = f.get(0);
      const b = f.get(i);
      if (a === null || b === null) return;
      f.set(0, b);
      f.set(i, a);
      f.sw &= ~C1;
      return;
    }
    case 0x1a: // FNOP (D0), reserved D1-D7
      if (modrm !== 0xd0) c.undefinedOpcode();
      return;
    case 0x1b: { // FSTP1 (undocumented alias of FSTP ST(i))
      const v = f.get(0);
      if (v === null) return;
      f.set(i, v);
      f.pop();
      return;
    }
    default:
  }
  const ld = (v: number): void => {
    f.sw &= ~C1;
    f.push(v);
  };
  switch (modrm) {
    case 0xe0: case 0xe1: case 0xe4: case 0xe5: {
      if (modrm === 0xe5) {
        // FXAM: classifies even an empty register.
        const p = f.top;
        const v = f.regs[p]!;
        let cc = v < 0 || Object.is(v, -0) ? C1 : 0;
        if (f.empty & (1 << p)) cc |= C3 | C0;
        else if (Number.isNaN(v)) cc |= C0;
        else if (!Number.isFinite(v)) cc |= C2 | C0;
        else if (v === 0) cc |= C3;
        else cc |= C2;
        f.sw = (f.sw & ~(C0 | C1 | C2 | C3)) | cc;
        return;
      }
      const v = f.get(0);
      if (v === null) return;
      if (modrm === 0xe0) f.set(0, -v);
      else if (modrm === 0xe1) f.set(0, Math.abs(v));
      else setCC(f, compare(f, v, 0, false));
      if (modrm !== 0xe4) f.sw &= ~C1;
      return;
    }
    case 0xe8: ld(1); return;
    case 0xe9: ld(3.321928094887362); return; // log2(10)
    case 0xea: ld(Math.LOG2E); return;
    case 0xeb: ld(Math.PI); return;
    case 0xec: ld(0.3010299956639812); return; // log10(2)
    case 0xed: ld(Math.LN2); return;
    case 0xee: ld(0); return;
    case 0xf6: // FDECSTP
      f.top = (f.top - 1) & 7;
      f.sw &= ~C1;
      return;
    case 0xf7: // FINCSTP
      f.top = (f.top + 1) & 7;
      f.sw &= ~C1;
      return;
    default:
  }
  if (modrm < 0xf0) c.undefinedOpcode();
  const x = f.get(0);
  if (x === null) return;
  f.sw &= ~C1;
  switch (modrm) {
    case 0xf0: // F2XM1 (defined for -1 ≤ x ≤ 1)
      f.set(0, Math.expm1(x * Math.LN2));
      return;
    case 0xf1: // FYL2X
    case 0xf9: { // FYL2XP1
      const y = f.get(1);
      if (y === null) return;
      let r: number;
      if (modrm === 0xf1) {
        if (x === 0 && Number.isFinite(y) && y !== 0) {
          if (!f.raise(ZE)) return;
          r = (y > 0 ? -1 : 1) * Infinity;
        } else r = y * Math.log2(x);
      } else r = (y * Math.log1p(x)) / Math.LN2;
      if (Number.isNaN(r) && !Number.isNaN(x) && !Number.isNaN(y)) {
        if (!f.raise(IE)) return;
        r = INDEFINITE;
      }
      f.set(1, r);
      f.pop();
      return;
    }
    case 0xf2: // FPTAN
      if (Math.abs(x) >= 2 ** 63) {
        f.sw |= C2;
        return;
      }
      f.sw &= ~C2;
      f.set(0, Number.isFinite(x) ? Math.tan(x) : f.raise(IE) ? INDEFINITE : x);
      f.push(1);
      return;
    case 0xf3: { // FPATAN
      const y = f.get(1);
      if (y === null) return;
      f.set(1, Math.atan2(y, x));
      f.pop();
      return;
    }
    case 0xf4: { // FXTRACT
      if (x === 0) {
        if (!f.raise(ZE)) return;
        f.set(0, -Infinity);
        f.push(x);
        return;
      }
      if (!Number.isFinite(x)) {
        f.set(0, Number.isNaN(x) ? x : Infinity);
        f.push(x);
        return;
      }
      const [e, m] = frexp(x);
      f.set(0, e);
      f.push(m);
      return;
    }
    case 0xf5: // FPREM1
    case 0xf8: { // FPREM
      const y = f.get(1);
      if (y === null) return;
      if (!Number.isFinite(x) || y === 0 || Number.isNaN(y)) {
        if (Number.isNaN(x) || Number.isNaN(y)) f.set(0, Number.isNaN(x) ? x : y);
        else if (f.raise(IE)) f.set(0, INDEFINITE);
        f.sw &= ~C2;
        return;
      }
      if (!Number.isFinite(y) || x === 0) {
        f.sw &= ~(C0 | C1 | C2 | C3);
        return;
      }
      const d = frexp(x)[0] - frexp(y)[0];
      if (d >= 64) {
        // Partial remainder: reduce the exponent difference by up to 63 (C2 says "not done").
        const n = d - 32;
        const q = Math.trunc(x / scale(y, n));
        f.set(0, x - q * scale(y, n));
        f.sw |= C2;
        return;
      }
      let r = x % y;
      let q = Math.round((x - r) / y);
      if (modrm === 0xf5) {
        const ar = Math.abs(r) * 2;
        const ay = Math.abs(y);
        if (ar > ay || (ar === ay && Math.abs(q) % 2 === 1)) {
          r -= Math.sign(r) * ay;
          q += Math.sign(q === 0 ? x / y : q);
        }
      }
      if (r === 0) r = x < 0 || Object.is(x, -0) ? -0 : 0;
      f.set(0, r);
      const qa = Math.abs(q) % 8;
      f.sw = (f.sw & ~(C0 | C1 | C2 | C3)) | (qa & 4 ? C0 : 0) | (qa & 2 ? C3 : 0) | (qa & 1 ? C1 : 0);
      return;
    }
    case 0xfa: // FSQRT
      if (x < 0) {
        if (f.raise(IE)) f.set(0, INDEFINITE);
        return;
      }
      f.set(0, Math.sqrt(x));
      return;
    case 0xfb: // FSINCOS
      if (Math.abs(x) >= 2 ** 63) {
        f.sw |= C2;
        return;
      }
      f.sw &= ~C2;
      if (!Number.isFinite(x)) {
        if (Number.isNaN(x) || f.raise(IE)) {
          f.set(0, Number.isNaN(x) ? x : INDEFINITE);
          f.push(Number.isNaN(x) ? x : INDEFINITE);
        }
        return;
      }
      f.set(0, Math.sin(x));
      f.push(Math.cos(x));
      return;
    case 0xfc: // FRNDINT
      f.set(0, roundInt(x, (f.cw >> 10) & 3));
      return;
    case 0xfd: { // FSCALE
      const y = f.get(1);
      if (y === null) return;
      if (Number.isNaN(y)) f.set(0, y);
      else if (!Number.isFinite(y)) {
        if ((y < 0 && x === Infinity) || (y > 0 && x === 0)) {
          if (f.raise(IE)) f.set(0, INDEFINITE);
        } else f.set(0, y > 0 ? x * Infinity : x * 0);
      } else f.set(0, scale(x, Math.trunc(y)));
      return;
    }
    default: // FSIN, FCOS
      if (Math.abs(x) >= 2 ** 63) {
        f.sw |= C2;
        return;
      }
      f.sw &= ~C2;
      if (!Number.isFinite(x)) {
        if (Number.isNaN(x)) return;
        if (f.raise(IE)) f.set(0, INDEFINITE);
        return;
      }
      f.set(0, modrm === 0xfe ? Math.sin(x) : Math.cos(x));
  }
}

/** FCMOVcc (DA/DB C0-DF): the condition from CF, ZF, PF by the reg field. */
function fcmov(c: Cpu, modrm: number, negate: boolean): void {
  const f = c.fpu;
  const v = f.get(modrm & 7);
  if (v === null) return;
  let t: boolean;
  switch ((modrm >> 3) & 3) {
    case 0: t = c.getCF(); break;
    case 1: t = c.getZF(); break;
    case 2: t = c.getCF() || c.getZF(); break;
    default: t = c.getPF();
  }
  if (t !== negate) f.set(0, v);
  f.sw &= ~C1;
}

/** The ESC opcodes: `esc` is D8h-DFh, the ModRM byte follows in the instruction stream. */
export function esc(c: Cpu, esc: number): void {
  const modrm = c.fetch8();
  if (c.cr0 & (CR0_EM | CR0_TS)) c.fault(VEC_NM);
  const f = c.fpu;
  const reg = (modrm >> 3) & 7;
  if (modrm >= 0xc0) {
    const i = modrm & 7;
    // The non-waiting register forms: FNCLEX, FNINIT (DB E2, E3), FNSTSW AX (DF E0).
    if (esc === 0xdb && (modrm === 0xe2 || modrm === 0xe3)) {
      if (modrm === 0xe3) f.init();
      else f.sw &= ~(EXC | SF_STACK | ES | BUSY);
      return;
    }
    if (esc === 0xdf && modrm === 0xe0) {
      c.reg[0] = (c.reg[0]! & ~0xffff) | f.status();
      return;
    }
    prologue(c);
    record(c, esc, modrm);
    switch (esc) {
      case 0xd8:
      case 0xdc:
      case 0xde: {
        const a = f.get(esc === 0xd8 ? 0 : i);
        const b = f.get(esc === 0xd8 ? i : 0);
        if (a === null || b === null) return;
        if (reg === 2 || reg === 3) {
          // FCOM/FCOMP (DC D0/D8 and DE D0 are aliases; DE D9 is FCOMPP).
          if (esc === 0xde && reg === 3 && i !== 1) c.undefinedOpcode();
          setCC(f, compare(f, f.get(0)!, f.get(i)!, false));
          if (reg === 3 || esc === 0xde) f.pop();
          if (esc === 0xde && reg === 3) f.pop();
          return;
        }
        // D8: ST(0) = ST(0) op ST(i); DC/DE: ST(i) = ST(i) op ST(0) with sub/subr and div/divr swapped.
        const op = esc === 0xd8 ? reg : reg >= 4 ? reg ^ 1 : reg;
        const r = arith(f, op, a, b);
        if (r === null) return;
        f.sw &= ~C1;
        f.set(esc === 0xd8 ? 0 : i, r);
        if (esc === 0xde) f.pop();
        return;
      }
      case 0xd9:
        d9reg(c, modrm);
        return;
      case 0xda:
        if (reg < 4) fcmov(c, modrm, false);
        else if (modrm === 0xe9) {
          // FUCOMPP
          const a = f.get(0);
          const b = f.get(1);
          if (a === null || b === null) return;
          setCC(f, compare(f, a, b, true));
          f.pop();
          f.pop();
        } else c.undefinedOpcode();
        return;
      case 0xdb:
        if (reg < 4) fcmov(c, modrm, true);
        else if (reg === 5 || reg === 6) {
          // FUCOMI, FCOMI
          const a = f.get(0);
          const b = f.get(i);
          if (a === null || b === null) return;
          setEflagsFromCC(c, compare(f, a, b, reg === 5));
          f.sw &= ~C1;
        } else if (modrm === 0xe0 || modrm === 0xe1 || modrm === 0xe4) {
          // FENI, FDISI, FSETPM: no-ops on a 387 and later.
        } else c.undefinedOpcode();
        return;
      case 0xdd:
        switch (reg) {
          case 0: // FFREE
            f.empty |= 1 << ((f.top + i) & 7);
            return;
          case 1: { // FXCH4 (alias)
            const a = f.get(0);
            const b = f.get(i);
            if (a === null || b === null) return;
            f.set(0, b);
            f.set(i, a);
            return;
          }
          case 2: // FST ST(i)
          case 3: { // FSTP ST(i)
            const v = f.get(0);
            if (v === null) return;
            f.set(i, v);
            if (reg === 3) f.pop();
            return;
          }
          case 4: // FUCOM
          case 5: { // FUCOMP
            const a = f.get(0);
            const b = f.get(i);
            if (a === null || b === null) return;
            setCC(f, compare(f, a, b, true));
            if (reg === 5) f.pop();
            return;
          }
          default:
            c.undefinedOpcode();
        }
        return;
      default: // DF
        switch (reg) {
          case 0: // FFREEP
            f.empty |= 1 << ((f.top + i) & 7);
            f.pop();
            return;
          case 1: { // FXCH7 (alias)
            const a = f.get(0);
            const b = f.get(i);
            if (a === null || b === null) return;
            f.set(0, b);
            f.set(i, a);
            return;
          }
          case 2:
          case 3: { // FSTP8, FSTP9 (aliases)
            const v = f.get(0);
            if (v === null) return;
            f.set(i, v);
            f.pop();
            return;
          }
          case 5: // FUCOMIP
          case 6: { // FCOMIP
            const a = f.get(0);
            const b = f.get(i);
            if (a === null || b === null) return;
            setEflagsFromCC(c, compare(f, a, b, reg === 5));
            f.sw &= ~C1;
            f.pop();
            return;
          }
          default:
            c.undefinedOpcode();
        }
    }
    return;
  }

  c.decodeEA(modrm);
  const b = c.eaBase;
  const o = c.eaOff;
  // The non-waiting memory forms: FNSTENV, FNSTCW (D9 /6 /7), FNSAVE, FNSTSW (DD /6 /7).
  if (esc === 0xd9 && reg >= 6) {
    if (reg === 7) c.wr16(b, o, f.cw);
    else {
      storeEnv(c, b, o);
      // FNSTENV masks every exception afterwards.
      f.cw |= EXC;
    }
    return;
  }
  if (esc === 0xdd && reg >= 6) {
    if (reg === 7) c.wr16(b, o, f.status());
    else {
      let p = off(c, o, storeEnv(c, b, o));
      for (let k = 0; k < 8; k++) {
        storeExtended(c, b, p, f.regs[(f.top + k) & 7]!);
        p = off(c, p, 10);
      }
      f.init();
    }
    return;
  }
  // FLDCW, FLDENV and FRSTOR do not wait for a pending exception (they may clear it).
  const control = (esc === 0xd9 && (reg === 4 || reg === 5)) || (esc === 0xdd && reg === 4);
  if (!control) {
    prologue(c);
    record(c, esc, modrm);
  }
  switch (esc) {
    case 0xd8:
    case 0xda:
    case 0xdc:
    case 0xde: {
      const v = memOperand(c, esc);
      const st = f.get(0);
      if (st === null) return;
      if (reg === 2 || reg === 3) {
        setCC(f, compare(f, st, v, false));
        if (reg === 3) f.pop();
        return;
      }
      const r = arith(f, reg, st, v);
      if (r === null) return;
      f.sw &= ~C1;
      f.set(0, r);
      return;
    }
    case 0xd9:
      switch (reg) {
        case 0:
          f.sw &= ~C1;
          f.push(quietLoad(f, rdF32(c, b, o)));
          return;
        case 2:
        case 3: {
          const v = f.get(0);
          if (v === null) return;
          wrF32(c, b, o, v);
          if (reg === 3) f.pop();
          return;
        }
        case 4:
          loadEnv(c, b, o);
          return;
        case 5:
          f.cw = c.rd16(b, o);
          f.updateSummary();
          return;
        default:
          c.undefinedOpcode();
      }
      return;
    case 0xdb:
      switch (reg) {
        case 0:
          f.sw &= ~C1;
          f.push(c.rd32(b, o) | 0);
          return;
        case 2:
        case 3: {
          const v = f.get(0);
          if (v === null) return;
          if (storeInt(c, 4, v) && reg === 3) f.pop();
          return;
        }
        case 5:
          f.sw &= ~C1;
          f.push(loadExtended(c, b, o));
          return;
        case 7: {
          const v = f.get(0);
          if (v === null) return;
          storeExtended(c, b, o, v);
          f.pop();
          return;
        }
        default: // FISTTP needs SSE3
          c.undefinedOpcode();
      }
      return;
    case 0xdd:
      switch (reg) {
        case 0:
          f.sw &= ~C1;
          f.push(quietLoad(f, rdF64(c, b, o, off(c, o, 4))));
          return;
        case 2:
        case 3: {
          const v = f.get(0);
          if (v === null) return;
          wrF64(c, b, o, off(c, o, 4), v);
          if (reg === 3) f.pop();
          return;
        }
        case 4: { // FRSTOR
          let p = off(c, o, loadEnv(c, b, o));
          for (let k = 0; k < 8; k++) {
            f.regs[(f.top + k) & 7] = loadExtended(c, b, p);
            p = off(c, p, 10);
          }
          return;
        }
        default:
          c.undefinedOpcode();
      }
      return;
    default: // DF
      switch (reg) {
        case 0:
          f.sw &= ~C1;
          f.push((c.rd16(b, o) << 16) >> 16);
          return;
        case 2:
        case 3:
        case 7: {
          const v = f.get(0);
          if (v === null) return;
          if (storeInt(c, reg === 7 ? 8 : 2, v) && reg !== 2) f.pop();
          return;
        }
        case 4:
          f.sw &= ~C1;
          f.push(loadBcd(c, b, o));
          return;
        case 5: {
          const lo = c.rd32(b, o) >>> 0;
          const hi = c.rd32(b, off(c, o, 4)) | 0;
          f.sw &= ~C1;
          f.push(hi * TWO32 + lo);
          return;
        }
        case 6: {
          const v = f.get(0);
          if (v === null) return;
          if (storeBcd(c, v)) f.pop();
          return;
        }
        default:
          c.undefinedOpcode();
      }
  }
}
