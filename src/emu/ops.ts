/**
 * Instruction handlers: `OPS[opcode]` for one-byte opcodes and `OPS0F[opcode]` for
 * the 0Fh page. Each handler decodes its own operands from the instruction stream.
 * Semantics follow the Intel 386 manual; what differs in protected mode is in
 * `descriptors.ts` (segment loads, far transfers, IRET) and `cpu.ts` (interrupts).
 */
import {
  AF, CF, CS, DF, DS, EAX, EBP, EBX, ECX, EDI, EDX, ES, ESI, ESP, FS, GS, IF, L_ADC, L_ADD, L_DEC, L_INC, L_LOGIC, L_SBB, L_SUB,
  OF, SIGN, SS, VEC_BP, VEC_BR, VEC_DB, VEC_DE, VEC_GP, VEC_OF, ZF,
} from './consts.js';
import type { Cpu } from './cpu.js';
import { farReturn, loadAccess, loadLdt, loadTr } from './descriptors.js';
import { esc, fwait } from './fpu.js';

/** An instruction handler. */
export type Op = (c: Cpu) => void;

/** One-byte opcode handlers. */
export const OPS: Op[] = new Array<Op>(256);
/** Two-byte (0Fh xx) opcode handlers. */
export const OPS0F: Op[] = new Array<Op>(256);

/** Trap opcode of the built-in BIOS: `0F FF nn`. */
export const TRAP_OPCODE = 0xff;

const ud: Op = (c) => c.undefinedOpcode();
for (let i = 0; i < 256; i++) {
  OPS[i] = ud;
  OPS0F[i] = ud;
}

/** `v` truncated to `sz` bytes (no table load: with a constant `sz` this folds to one AND). */
function m(v: number, sz: number): number {
  return sz === 1 ? v & 0xff : sz === 2 ? v & 0xffff : v | 0;
}
function sx8(v: number): number {
  return (v << 24) >> 24;
}
function sx16(v: number): number {
  return (v << 16) >> 16;
}
function sxSz(v: number, sz: number): number {
  return sz === 1 ? sx8(v) : sz === 2 ? sx16(v) : v | 0;
}
function osz(c: Cpu): number {
  return c.os32 ? 4 : 2;
}

// ------------------------------------------------------------------ ALU

/** ADD OR ADC SBB AND SUB XOR CMP (op = ModRM reg / opcode bits 5..3). */
export function alu(c: Cpu, op: number, a: number, b: number, sz: number): number {
  let r: number;
  switch (op) {
    case 0:
      r = m(a + b, sz);
      c.setLazy(L_ADD, r, a, b, sz);
      return r;
    case 1:
      r = m(a | b, sz);
      c.setLazy(L_LOGIC, r, a, b, sz);
      return r;
    case 2: {
      const cin = c.getCF() ? 1 : 0;
      r = m(a + b + cin, sz);
      c.setLazy(cin ? L_ADC : L_ADD, r, a, b, sz);
      return r;
    }
    case 3: {
      const cin = c.getCF() ? 1 : 0;
      r = m(a - b - cin, sz);
      c.setLazy(cin ? L_SBB : L_SUB, r, a, b, sz);
      return r;
    }
    case 4:
      r = m(a & b, sz);
      c.setLazy(L_LOGIC, r, a, b, sz);
      return r;
    case 6:
      r = m(a ^ b, sz);
      c.setLazy(L_LOGIC, r, a, b, sz);
      return r;
    default:
      r = m(a - b, sz);
      c.setLazy(L_SUB, r, a, b, sz);
      return r;
  }
}

function keepCF(c: Cpu): void {
  const cf = c.getCF();
  c.flags = cf ? c.flags | CF : c.flags & ~CF;
}
function inc(c: Cpu, v: number, sz: number): number {
  keepCF(c);
  const r = m(v + 1, sz);
  c.setLazy(L_INC, r, v, 1, sz);
  return r;
}
function dec(c: Cpu, v: number, sz: number): number {
  keepCF(c);
  const r = m(v - 1, sz);
  c.setLazy(L_DEC, r, v, 1, sz);
  return r;
}

/** An ALU operation: returns the result and records the flags. */
type AluFn = (c: Cpu, a: number, b: number, sz: number) => number;
/** ADD OR ADC SBB AND SUB XOR CMP as separate functions, so each opcode's handler calls one target. */
const ALU_FNS: AluFn[] = Array.from({ length: 8 }, (_, op): AluFn => {
  switch (op) {
    case 0: return (c, a, b, sz) => { const r = m(a + b, sz); c.setLazy(L_ADD, r, a, b, sz); return r; };
    case 1: return (c, a, b, sz) => { const r = m(a | b, sz); c.setLazy(L_LOGIC, r, a, b, sz); return r; };
    case 4: return (c, a, b, sz) => { const r = m(a & b, sz); c.setLazy(L_LOGIC, r, a, b, sz); return r; };
    case 6: return (c, a, b, sz) => { const r = m(a ^ b, sz); c.setLazy(L_LOGIC, r, a, b, sz); return r; };
    case 5:
    case 7: return (c, a, b, sz) => { const r = m(a - b, sz); c.setLazy(L_SUB, r, a, b, sz); return r; };
    default: return (c, a, b, sz) => alu(c, op, a, b, sz);
  }
});

/**
 * The six forms of one ALU opcode row (r/m8,r8 · r/m,r · r8,r/m8 · r,r/m · AL,imm8 ·
 * eAX,imm). Written without free variables so {@link specialize} can copy it.
 */
function aluRow(fn: AluFn, write: boolean): Op[] {
  return [
    (c) => {
      const modrm = c.fetch8();
      const r = fn(c, c.readRM(1, modrm), c.r8((modrm >> 3) & 7), 1);
      if (write) c.writeRM(1, modrm, r);
    },
    (c) => {
      const sz = c.os32 ? 4 : 2;
      const modrm = c.fetch8();
      if (modrm >= 0xc0) {
        const d = modrm & 7;
        const reg = c.reg;
        if (sz === 4) {
          const r = fn(c, reg[d]!, reg[(modrm >> 3) & 7]!, 4);
          if (write) reg[d] = r;
        } else {
          const r = fn(c, reg[d]! & 0xffff, reg[(modrm >> 3) & 7]! & 0xffff, 2);
          if (write) reg[d] = (reg[d]! & ~0xffff) | r;
        }
        return;
      }
      const r = fn(c, c.readRM(sz, modrm), c.rSz(sz, (modrm >> 3) & 7), sz);
      if (write) c.writeRM(sz, modrm, r);
    },
    (c) => {
      const modrm = c.fetch8();
      const reg = (modrm >> 3) & 7;
      const r = fn(c, c.r8(reg), c.readRM(1, modrm), 1);
      if (write) c.setR8(reg, r);
    },
    (c) => {
      const sz = c.os32 ? 4 : 2;
      const modrm = c.fetch8();
      const reg = (modrm >> 3) & 7;
      if (modrm >= 0xc0) {
        const rr = c.reg;
        if (sz === 4) {
          const r = fn(c, rr[reg]!, rr[modrm & 7]!, 4);
          if (write) rr[reg] = r;
        } else {
          const r = fn(c, rr[reg]! & 0xffff, rr[modrm & 7]! & 0xffff, 2);
          if (write) rr[reg] = (rr[reg]! & ~0xffff) | r;
        }
        return;
      }
      const r = fn(c, c.rSz(sz, reg), c.readRM(sz, modrm), sz);
      if (write) c.setRSz(sz, reg, r);
    },
    (c) => {
      const r = fn(c, c.reg[0]! & 0xff, c.fetch8(), 1);
      if (write) c.setR8(0, r);
    },
    (c) => {
      const sz = c.os32 ? 4 : 2;
      const r = fn(c, c.rSz(sz, 0), c.fetchSz(sz), sz);
      if (write) c.setRSz(sz, 0, r);
    },
  ];
}

/**
 * A fresh copy of a handler factory. V8 shares type feedback between all closures
 * of one function literal, so handlers made in a loop see every opcode's callee
 * and cannot inline it; a copy per opcode row gets its own feedback. The factory
 * must not use free variables (everything comes in as arguments).
 */
export function specialize<F extends (...args: never[]) => unknown>(factory: F): F {
  return new Function(`return (${factory.toString()});`)() as F;
}

for (let op = 0; op < 8; op++) {
  const row = specialize(aluRow)(ALU_FNS[op]!, op !== 7);
  for (let i = 0; i < 6; i++) OPS[(op << 3) + i] = row[i]!;
}

// ------------------------------------------------------------------ prefixes

/** Run the handler of the next opcode byte (after a prefix), called without a receiver. */
function dispatchNext(c: Cpu): void {
  const h = OPS[c.fetch8()]!;
  h(c);
}
function prefixSeg(seg: number): Op {
  return (c) => {
    const prev = c.segOv;
    c.segOv = seg;
    dispatchNext(c);
    c.segOv = prev;
  };
}
OPS[0x26] = prefixSeg(ES);
OPS[0x2e] = prefixSeg(CS);
OPS[0x36] = prefixSeg(SS);
OPS[0x3e] = prefixSeg(DS);
OPS[0x64] = prefixSeg(FS);
OPS[0x65] = prefixSeg(GS);
// 66h/67h select the size CS.D does not; the idle state is CS.D's.
OPS[0x66] = (c) => {
  c.os32 = !c.code32;
  dispatchNext(c);
  c.os32 = c.code32;
};
OPS[0x67] = (c) => {
  c.as32 = !c.code32;
  dispatchNext(c);
  c.as32 = c.code32;
};
OPS[0xf0] = (c) => dispatchNext(c);
OPS[0xf2] = (c) => {
  c.rep = 0xf2;
  dispatchNext(c);
  c.rep = 0;
};
OPS[0xf3] = (c) => {
  c.rep = 0xf3;
  dispatchNext(c);
  c.rep = 0;
};
OPS[0x0f] = (c) => {
  const h = OPS0F[c.fetch8()]!;
  h(c);
};

// ------------------------------------------------------------------ segment push/pop

function pushSeg(seg: number): Op {
  return (c) => c.pushOs(c.sreg[seg]!);
}
function popSeg(seg: number): Op {
  return (c) => {
    c.loadSeg(seg, c.popOs() & 0xffff);
    if (seg === SS) c.shadowInterrupts();
  };
}
OPS[0x06] = pushSeg(ES);
OPS[0x07] = popSeg(ES);
OPS[0x0e] = pushSeg(CS);
OPS[0x16] = pushSeg(SS);
OPS[0x17] = popSeg(SS);
OPS[0x1e] = pushSeg(DS);
OPS[0x1f] = popSeg(DS);
OPS0F[0xa0] = pushSeg(FS);
OPS0F[0xa1] = popSeg(FS);
OPS0F[0xa8] = pushSeg(GS);
OPS0F[0xa9] = popSeg(GS);

// ------------------------------------------------------------------ BCD

OPS[0x27] = (c) => {
  // DAA
  const al = c.reg[EAX]! & 0xff;
  const cf = c.getCF();
  let af = c.getAF();
  let v = al;
  let ncf = false;
  if ((al & 0xf) > 9 || af) {
    v = al + 6;
    ncf = cf || v > 0xff;
    af = true;
  } else af = false;
  if (al > 0x99 || cf) {
    v += 0x60;
    ncf = true;
  }
  v &= 0xff;
  c.setR8(0, v);
  c.setArith(c.szp(v, 1) | (ncf ? CF : 0) | (af ? AF : 0));
};
OPS[0x2f] = (c) => {
  // DAS
  const al = c.reg[EAX]! & 0xff;
  const cf = c.getCF();
  let af = c.getAF();
  let v = al;
  let ncf = false;
  if ((al & 0xf) > 9 || af) {
    v = al - 6;
    ncf = cf || v < 0;
    af = true;
  } else af = false;
  if (al > 0x99 || cf) {
    v -= 0x60;
    ncf = true;
  }
  v &= 0xff;
  c.setR8(0, v);
  c.setArith(c.szp(v, 1) | (ncf ? CF : 0) | (af ? AF : 0));
};
OPS[0x37] = (c) => {
  // AAA
  let ax = c.reg[EAX]! & 0xffff;
  let f = 0;
  if ((ax & 0xf) > 9 || c.getAF()) {
    ax = (ax + 0x106) & 0xffff;
    f = AF | CF;
  }
  ax &= 0xff0f;
  c.setR16(EAX, ax);
  c.setArith(f | c.szp(ax & 0xff, 1));
};
OPS[0x3f] = (c) => {
  // AAS
  let ax = c.reg[EAX]! & 0xffff;
  let f = 0;
  if ((ax & 0xf) > 9 || c.getAF()) {
    const al = (ax & 0xff) - 6;
    const ah = ((ax >> 8) - 1 - (al < 0 ? 1 : 0)) & 0xff;
    ax = (ah << 8) | (al & 0xff);
    f = AF | CF;
  }
  ax &= 0xff0f;
  c.setR16(EAX, ax);
  c.setArith(f | c.szp(ax & 0xff, 1));
};
OPS[0xd4] = (c) => {
  // AAM
  const base = c.fetch8();
  if (base === 0) c.fault(VEC_DE);
  const al = c.reg[EAX]! & 0xff;
  const r = al % base;
  c.setR16(EAX, ((Math.floor(al / base) & 0xff) << 8) | r);
  c.setArith(c.szp(r, 1));
};
OPS[0xd5] = (c) => {
  // AAD
  const base = c.fetch8();
  const ax = c.reg[EAX]! & 0xffff;
  const r = ((ax & 0xff) + (ax >> 8) * base) & 0xff;
  c.setR16(EAX, r);
  c.setArith(c.szp(r, 1));
};
OPS[0xd6] = (c) => c.setR8(0, c.getCF() ? 0xff : 0); // SALC

// ------------------------------------------------------------------ inc/dec/push/pop reg

for (let r = 0; r < 8; r++) {
  OPS[0x40 + r] = (c) => {
    const reg = c.reg;
    if (c.os32) reg[r] = inc(c, reg[r]!, 4);
    else reg[r] = (reg[r]! & ~0xffff) | inc(c, reg[r]! & 0xffff, 2);
  };
  OPS[0x48 + r] = (c) => {
    const reg = c.reg;
    if (c.os32) reg[r] = dec(c, reg[r]!, 4);
    else reg[r] = (reg[r]! & ~0xffff) | dec(c, reg[r]! & 0xffff, 2);
  };
  OPS[0x50 + r] = (c) => {
    if (c.os32) c.push32(c.reg[r]!);
    else c.push16(c.reg[r]! & 0xffff);
  };
  OPS[0x58 + r] = (c) => {
    if (c.os32) c.reg[r] = c.pop32();
    else c.setR16(r, c.pop16());
  };
  OPS[0x90 + r] = (c) => {
    const sz = osz(c);
    const t = c.rSz(sz, r);
    c.setRSz(sz, r, c.rSz(sz, EAX));
    c.setRSz(sz, EAX, t);
  };
  OPS[0xb0 + r] = (c) => c.setR8(r, c.fetch8());
  OPS[0xb8 + r] = (c) => {
    if (c.os32) c.reg[r] = c.fetch32();
    else c.setR16(r, c.fetch16());
  };
}
OPS[0x90] = () => {};

OPS[0x60] = (c) => {
  // PUSHA/PUSHAD
  const sp = c.reg[ESP]!;
  for (let r = 0; r < 8; r++) c.pushOs(r === ESP ? sp : c.reg[r]!);
};
OPS[0x61] = (c) => {
  for (let r = 7; r >= 0; r--) {
    const v = c.popOs();
    if (r !== ESP) c.setRSz(osz(c), r, v);
  }
};
OPS[0x62] = (c) => {
  // BOUND
  const modrm = c.fetch8();
  if (modrm >= 0xc0) c.undefinedOpcode();
  const sz = osz(c);
  c.decodeEA(modrm);
  const idx = sxSz(c.rSz(sz, (modrm >> 3) & 7), sz);
  const lo = sxSz(c.rdSz(sz, c.eaBase, c.eaOff), sz);
  const hi = sxSz(c.rdSz(sz, c.eaBase, m(c.eaOff + sz, c.as32 ? 4 : 2)), sz);
  if (idx < lo || idx > hi) c.fault(VEC_BR);
};
OPS[0x68] = (c) => c.pushOs(c.fetchSz(osz(c)));
OPS[0x6a] = (c) => c.pushOs(m(c.fetchS8(), osz(c)));
function imul3(c: Cpu, a: number, b: number, sz: number): number {
  let r: number;
  let ok: boolean;
  if (sz === 2) {
    r = sx16(a) * sx16(b);
    ok = r === sx16(r & 0xffff);
    r &= 0xffff;
  } else {
    const p = BigInt(a | 0) * BigInt(b | 0);
    r = Number(BigInt.asIntN(32, p));
    ok = BigInt.asIntN(32, p) === p;
  }
  c.setArith(c.szp(r & 0xff ? r : r, sz) | (ok ? 0 : CF | OF));
  return r;
}
OPS[0x69] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  const a = c.readRM(sz, modrm);
  c.setRSz(sz, (modrm >> 3) & 7, imul3(c, a, c.fetchSz(sz), sz));
};
OPS[0x6b] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  const a = c.readRM(sz, modrm);
  c.setRSz(sz, (modrm >> 3) & 7, imul3(c, a, m(c.fetchS8(), sz), sz));
};
OPS0F[0xaf] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  const reg = (modrm >> 3) & 7;
  c.setRSz(sz, reg, imul3(c, c.rSz(sz, reg), c.readRM(sz, modrm), sz));
};

// ------------------------------------------------------------------ jumps

function jmpRel(c: Cpu, rel: number): void {
  c.eip = c.os32 ? (c.eip + rel) | 0 : (c.eip + rel) & 0xffff;
}
for (let cc = 0; cc < 16; cc++) {
  OPS[0x70 + cc] =
    cc === 4 || cc === 5
      ? (c) => {
          // JZ/JNZ: the commonest branches, without the generic condition switch.
          const rel = c.fetchS8();
          if (c.getZF() === (cc === 4)) c.eip = (c.eip + rel) & c.ipMask;
        }
      : (c) => {
          const rel = c.fetchS8();
          if (c.cond(cc)) c.eip = (c.eip + rel) & c.ipMask;
        };
  OPS0F[0x80 + cc] = (c) => {
    const rel = c.os32 ? c.fetch32() | 0 : sx16(c.fetch16());
    if (c.cond(cc)) jmpRel(c, rel);
  };
  OPS0F[0x90 + cc] = (c) => {
    const modrm = c.fetch8();
    if (modrm < 0xc0) c.decodeEA(modrm);
    c.writeRM(1, modrm, c.cond(cc) ? 1 : 0);
  };
}
OPS[0xeb] = (c) => {
  const rel = c.fetchS8();
  c.eip = (c.eip + rel) & c.ipMask;
};
OPS[0xe9] = (c) => jmpRel(c, c.os32 ? c.fetch32() | 0 : sx16(c.fetch16()));
OPS[0xe8] = (c) => {
  const rel = c.os32 ? c.fetch32() | 0 : sx16(c.fetch16());
  c.pushOs(c.eip);
  jmpRel(c, rel);
};
OPS[0xea] = (c) => {
  const off = c.fetchSz(osz(c));
  c.jumpFar(c.fetch16(), off, false);
};
OPS[0x9a] = (c) => {
  const off = c.fetchSz(osz(c));
  c.jumpFar(c.fetch16(), off, true);
};
function counter(c: Cpu): number {
  return c.as32 ? c.reg[ECX]! >>> 0 : c.reg[ECX]! & 0xffff;
}
function decCounter(c: Cpu): number {
  if (c.as32) {
    c.reg[ECX] = c.reg[ECX]! - 1;
    return c.reg[ECX]!;
  }
  const v = (c.reg[ECX]! - 1) & 0xffff;
  c.setR16(ECX, v);
  return v;
}
OPS[0xe0] = (c) => {
  const rel = c.fetchS8();
  if (decCounter(c) !== 0 && !c.getZF()) c.eip = (c.eip + rel) & c.ipMask;
};
OPS[0xe1] = (c) => {
  const rel = c.fetchS8();
  if (decCounter(c) !== 0 && c.getZF()) c.eip = (c.eip + rel) & c.ipMask;
};
OPS[0xe2] = (c) => {
  const rel = c.fetchS8();
  if (decCounter(c) !== 0) c.eip = (c.eip + rel) & c.ipMask;
};
OPS[0xe3] = (c) => {
  const rel = c.fetchS8();
  if (counter(c) === 0) c.eip = (c.eip + rel) & c.ipMask;
};
OPS[0xc3] = (c) => {
  c.eip = c.popOs() & (c.os32 ? -1 : 0xffff);
};
OPS[0xc2] = (c) => {
  const n = c.fetch16();
  c.eip = c.popOs() & (c.os32 ? -1 : 0xffff);
  c.addSp(n);
};
function retf(c: Cpu, n: number): void {
  if (c.cr0 & 1) {
    farReturn(c, n, false);
    return;
  }
  const ip = c.popOs();
  const cs = c.popOs() & 0xffff;
  c.loadSeg(CS, cs);
  c.eip = ip;
  c.addSp(n);
}
OPS[0xcb] = (c) => retf(c, 0);
OPS[0xca] = (c) => retf(c, c.fetch16());
OPS[0xcf] = (c) => {
  // IRET
  if (c.cr0 & 1) {
    farReturn(c, 0, true);
    return;
  }
  if (c.os32) {
    const ip = c.pop32();
    const cs = c.pop32() & 0xffff;
    const fl = c.pop32();
    c.loadSeg(CS, cs);
    c.eip = ip;
    c.setFlags(fl);
  } else {
    const ip = c.pop16();
    const cs = c.pop16();
    const fl = c.pop16();
    c.loadSeg(CS, cs);
    c.eip = ip;
    c.setFlags(fl);
  }
};
OPS[0xcc] = (c) => {
  c.interrupt(VEC_BP, true);
};
OPS[0xcd] = (c) => {
  c.interrupt(c.fetch8(), true);
};
OPS[0xce] = (c) => {
  if (c.getOF()) c.interrupt(VEC_OF, true);
};
OPS[0xf1] = (c) => {
  c.interrupt(VEC_DB);
};

// ------------------------------------------------------------------ grp1, test, xchg, mov

function grp1(c: Cpu, sz: number, immSz: number): void {
  const modrm = c.fetch8();
  const op = (modrm >> 3) & 7;
  const a = c.readRM(sz, modrm);
  const b = immSz === 1 && sz !== 1 ? m(c.fetchS8(), sz) : c.fetchSz(sz);
  const r = alu(c, op, a, b, sz);
  if (op !== 7) c.writeRM(sz, modrm, r);
}
/** Grp1 on a word or dword register (the common `and si, 1FFEh`, `add eax, 4`), without the generic r/m helpers. */
function grp1Reg(c: Cpu, modrm: number, b: number): void {
  const op = (modrm >> 3) & 7;
  const d = modrm & 7;
  const reg = c.reg;
  if (c.os32) {
    const r = alu(c, op, reg[d]!, b, 4);
    if (op !== 7) reg[d] = r;
  } else {
    const r = alu(c, op, reg[d]! & 0xffff, b & 0xffff, 2);
    if (op !== 7) reg[d] = (reg[d]! & ~0xffff) | r;
  }
}
OPS[0x80] = (c) => grp1(c, 1, 1);
OPS[0x82] = (c) => grp1(c, 1, 1);
OPS[0x81] = (c) => {
  if (c.peek8() >= 0xc0) {
    const modrm = c.fetch8();
    grp1Reg(c, modrm, c.os32 ? c.fetch32() : c.fetch16());
  } else grp1(c, osz(c), osz(c));
};
OPS[0x83] = (c) => {
  if (c.peek8() >= 0xc0) {
    const modrm = c.fetch8();
    grp1Reg(c, modrm, c.fetchS8());
  } else grp1(c, osz(c), 1);
};
OPS[0x84] = (c) => {
  const modrm = c.fetch8();
  alu(c, 4, c.readRM(1, modrm), c.r8((modrm >> 3) & 7), 1);
};
OPS[0x85] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  alu(c, 4, c.readRM(sz, modrm), c.rSz(sz, (modrm >> 3) & 7), sz);
};
OPS[0xa8] = (c) => {
  alu(c, 4, c.reg[EAX]! & 0xff, c.fetch8(), 1);
};
OPS[0xa9] = (c) => {
  const sz = osz(c);
  alu(c, 4, c.rSz(sz, EAX), c.fetchSz(sz), sz);
};
OPS[0x86] = (c) => {
  const modrm = c.fetch8();
  const reg = (modrm >> 3) & 7;
  const a = c.readRM(1, modrm);
  c.writeRM(1, modrm, c.r8(reg));
  c.setR8(reg, a);
};
OPS[0x87] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  const reg = (modrm >> 3) & 7;
  const a = c.readRM(sz, modrm);
  c.writeRM(sz, modrm, c.rSz(sz, reg));
  c.setRSz(sz, reg, a);
};
OPS[0x88] = (c) => {
  const modrm = c.fetch8();
  if (modrm < 0xc0) c.decodeEA(modrm);
  c.writeRM(1, modrm, c.r8((modrm >> 3) & 7));
};
OPS[0x89] = (c) => {
  const modrm = c.fetch8();
  const reg = c.reg;
  const v = reg[(modrm >> 3) & 7]!;
  if (modrm >= 0xc0) {
    const d = modrm & 7;
    reg[d] = c.os32 ? v : (reg[d]! & ~0xffff) | (v & 0xffff);
    return;
  }
  c.decodeEA(modrm);
  if (c.os32) c.wr32(c.eaBase, c.eaOff, v);
  else c.wr16(c.eaBase, c.eaOff, v & 0xffff);
};
OPS[0x8a] = (c) => {
  const modrm = c.fetch8();
  c.setR8((modrm >> 3) & 7, c.readRM(1, modrm));
};
OPS[0x8b] = (c) => {
  const modrm = c.fetch8();
  const reg = c.reg;
  const d = (modrm >> 3) & 7;
  let v: number;
  if (modrm >= 0xc0) v = reg[modrm & 7]!;
  else {
    c.decodeEA(modrm);
    v = c.os32 ? c.rd32(c.eaBase, c.eaOff) : c.rd16(c.eaBase, c.eaOff);
  }
  reg[d] = c.os32 ? v : (reg[d]! & ~0xffff) | (v & 0xffff);
};
OPS[0x8c] = (c) => {
  const modrm = c.fetch8();
  const seg = (modrm >> 3) & 7;
  if (seg > 5) c.undefinedOpcode();
  if (modrm >= 0xc0) c.setRSz(osz(c), modrm & 7, c.sreg[seg]!);
  else {
    c.decodeEA(modrm);
    c.wr16(c.eaBase, c.eaOff, c.sreg[seg]!);
  }
};
OPS[0x8d] = (c) => {
  const modrm = c.fetch8();
  if (modrm >= 0xc0) c.undefinedOpcode();
  c.decodeEA(modrm);
  c.setRSz(osz(c), (modrm >> 3) & 7, c.eaOff);
};
OPS[0x8e] = (c) => {
  const modrm = c.fetch8();
  const seg = (modrm >> 3) & 7;
  if (seg > 5 || seg === CS) c.undefinedOpcode();
  c.loadSeg(seg, c.readRM(2, modrm));
  if (seg === SS) c.shadowInterrupts();
};
OPS[0x8f] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  const v = c.popOs();
  if (modrm < 0xc0) c.decodeEA(modrm);
  c.writeRM(sz, modrm, v);
};
OPS[0x98] = (c) => {
  if (c.os32) c.reg[EAX] = sx16(c.reg[EAX]! & 0xffff);
  else c.setR16(EAX, sx8(c.reg[EAX]! & 0xff));
};
OPS[0x99] = (c) => {
  if (c.os32) c.reg[EDX] = c.reg[EAX]! >> 31;
  else c.setR16(EDX, c.reg[EAX]! & 0x8000 ? 0xffff : 0);
};
OPS[0x9c] = (c) => {
  const f = c.getFlags();
  if (c.os32) c.push32(f & 0x00fcffff);
  else c.push16(f & 0xffff);
};
OPS[0x9d] = (c) => {
  const v = c.popOs();
  const wasIF = c.flags & IF;
  // Outside ring 0 IOPL stays; IF changes only at CPL <= IOPL.
  // POPFD also sets AC and ID (bits 18 and 21): Linux tells a 486 from a 386 by toggling
  // AC and finds CPUID by toggling ID, and takes a CPU where neither sticks for a 386.
  let mask = c.os32 ? 0x247fd5 : 0x7fd5;
  if (c.cpl > 0) mask &= c.cpl > ((c.flags >> 12) & 3) ? ~(0x3000 | IF) : ~0x3000;
  c.setFlags(v, mask);
  if (!wasIF && c.flags & IF) c.shadowInterrupts();
};
OPS[0x9e] = (c) => {
  c.materialize();
  c.flags = (c.flags & ~0xd5) | ((c.reg[EAX]! >> 8) & 0xd5);
};
OPS[0x9f] = (c) => {
  c.setR8(4, c.getFlags() & 0xff);
};
function moffs(c: Cpu): number {
  return c.as32 ? c.fetch32() : c.fetch16();
}
function dseg(c: Cpu): number {
  return c.sbase[c.segOv >= 0 ? c.segOv : DS]!;
}
OPS[0xa0] = (c) => {
  const off = moffs(c);
  c.setR8(0, c.rd8(dseg(c), off));
};
OPS[0xa1] = (c) => {
  const sz = osz(c);
  const off = moffs(c);
  c.setRSz(sz, EAX, c.rdSz(sz, dseg(c), off));
};
OPS[0xa2] = (c) => {
  const off = moffs(c);
  c.wr8(dseg(c), off, c.reg[EAX]! & 0xff);
};
OPS[0xa3] = (c) => {
  const sz = osz(c);
  const off = moffs(c);
  c.wrSz(sz, dseg(c), off, c.rSz(sz, EAX));
};
OPS[0xc6] = (c) => {
  const modrm = c.fetch8();
  if (modrm < 0xc0) c.decodeEA(modrm);
  c.writeRM(1, modrm, c.fetch8());
};
OPS[0xc7] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  if (modrm < 0xc0) c.decodeEA(modrm);
  c.writeRM(sz, modrm, c.fetchSz(sz));
};
function loadFar(seg: number): Op {
  return (c) => {
    const modrm = c.fetch8();
    if (modrm >= 0xc0) c.undefinedOpcode();
    const sz = osz(c);
    c.decodeEA(modrm);
    const off = c.rdSz(sz, c.eaBase, c.eaOff);
    const sel = c.rd16(c.eaBase, m(c.eaOff + sz, c.as32 ? 4 : 2));
    c.loadSeg(seg, sel);
    c.setRSz(sz, (modrm >> 3) & 7, off);
    if (seg === SS) c.shadowInterrupts();
  };
}
OPS[0xc4] = loadFar(ES);
OPS[0xc5] = loadFar(DS);
OPS0F[0xb2] = loadFar(SS);
OPS0F[0xb4] = loadFar(FS);
OPS0F[0xb5] = loadFar(GS);
OPS[0xc8] = (c) => {
  // ENTER
  const size = c.fetch16();
  const level = c.fetch8() & 31;
  const sz = osz(c);
  c.pushOs(c.rSz(sz, EBP));
  const frame = c.rSz(sz, ESP);
  if (level > 0) {
    for (let i = 1; i < level; i++) {
      const bp = m(c.rSz(sz, EBP) - sz, sz);
      c.setRSz(sz, EBP, bp);
      c.pushOs(c.rdSz(sz, c.sbase[SS]!, bp & c.spMask));
    }
    c.pushOs(frame);
  }
  c.setRSz(sz, EBP, frame);
  c.addSp(-size);
};
OPS[0xc9] = (c) => {
  const k = c.spMask;
  c.reg[ESP] = (c.reg[ESP]! & ~k) | (c.reg[EBP]! & k);
  c.setRSz(osz(c), EBP, c.popOs());
};
OPS[0xd7] = (c) => {
  const off = c.as32 ? ((c.reg[EBX]! >>> 0) + (c.reg[EAX]! & 0xff)) >>> 0 : ((c.reg[EBX]! & 0xffff) + (c.reg[EAX]! & 0xff)) & 0xffff;
  c.setR8(0, c.rd8(dseg(c), off));
};
// The x87 ESC opcodes and FWAIT live in fpu.ts.
for (let op = 0xd8; op <= 0xdf; op++) OPS[op] = (c) => esc(c, op);
OPS[0x9b] = fwait;

// ------------------------------------------------------------------ I/O

OPS[0xe4] = (c) => {
  const p = c.fetch8();
  c.requireIo(p, 1);
  c.setR8(0, c.io.in8(p));
};
OPS[0xe5] = (c) => {
  const p = c.fetch8();
  c.requireIo(p, osz(c));
  if (c.os32) c.reg[EAX] = c.io.in32(p);
  else c.setR16(EAX, c.io.in16(p));
};
OPS[0xe6] = (c) => {
  const p = c.fetch8();
  c.requireIo(p, 1);
  c.io.out8(p, c.reg[EAX]! & 0xff);
};
OPS[0xe7] = (c) => {
  const p = c.fetch8();
  c.requireIo(p, osz(c));
  if (c.os32) c.io.out32(p, c.reg[EAX]! >>> 0);
  else c.io.out16(p, c.reg[EAX]! & 0xffff);
};
OPS[0xec] = (c) => {
  const p = c.reg[EDX]! & 0xffff;
  c.requireIo(p, 1);
  c.setR8(0, c.io.in8(p));
};
OPS[0xed] = (c) => {
  const p = c.reg[EDX]! & 0xffff;
  c.requireIo(p, osz(c));
  if (c.os32) c.reg[EAX] = c.io.in32(p);
  else c.setR16(EAX, c.io.in16(p));
};
OPS[0xee] = (c) => {
  const p = c.reg[EDX]! & 0xffff;
  c.requireIo(p, 1);
  c.io.out8(p, c.reg[EAX]! & 0xff);
};
OPS[0xef] = (c) => {
  const p = c.reg[EDX]! & 0xffff;
  c.requireIo(p, osz(c));
  if (c.os32) c.io.out32(p, c.reg[EAX]! >>> 0);
  else c.io.out16(p, c.reg[EAX]! & 0xffff);
};

// ------------------------------------------------------------------ string operations

function idx(c: Cpu, r: number): number {
  return c.as32 ? c.reg[r]! >>> 0 : c.reg[r]! & 0xffff;
}
function setIdx(c: Cpu, r: number, v: number): void {
  if (c.as32) c.reg[r] = v;
  else c.setR16(r, v);
}
function setCounter(c: Cpu, v: number): void {
  if (c.as32) c.reg[ECX] = v;
  else c.setR16(ECX, v);
}
const S_MOVS = 0;
const S_CMPS = 1;
const S_STOS = 2;
const S_LODS = 3;
const S_SCAS = 4;
const S_INS = 5;
const S_OUTS = 6;

/**
 * REP MOVS/STOS/CMPS done in bulk on the RAM array when nothing can differ from the
 * element-by-element loop: 16-bit addressing, DF=0, neither SI nor DI wraps at 64 KiB,
 * both ranges lie wholly in RAM with the A20 gate not folding them, and a MOVS whose
 * destination starts inside its source (a forward, pattern-repeating copy) is left
 * to the loop. Returns false to fall back to the loop. `ls`/`ld` are linear addresses.
 */
function repInRam(c: Cpu, kind: number, size: number, n: number, ls: number, ld: number, si: number, di: number): boolean {
  const bytes = n * size;
  if (di + bytes > 0x10000 || ld < 0 || ld + bytes > c.directLimit || (ld & ~c.amask) !== 0 || ((ld + bytes - 1) & ~c.amask) !== 0) return false;
  if (kind !== S_STOS && (si + bytes > 0x10000 || ls < 0 || ls + bytes > c.directLimit || (ls & ~c.amask) !== 0 || ((ls + bytes - 1) & ~c.amask) !== 0)) return false;
  const ram = c.ram;
  if (kind === S_MOVS) {
    if (ld > ls && ld < ls + bytes) return false;
    ram.copyWithin(ld, ls, ls + bytes);
    setCounter(c, 0);
    c.setR16(ESI, si + bytes);
    c.setR16(EDI, di + bytes);
    return true;
  }
  if (kind === S_STOS) {
    const v = c.reg[EAX]!;
    if (size === 1) ram.fill(v & 0xff, ld, ld + bytes);
    else {
      for (let i = 0; i < bytes; i += size) {
        ram[ld + i] = v;
        ram[ld + i + 1] = v >> 8;
        if (size === 4) {
          ram[ld + i + 2] = v >> 16;
          ram[ld + i + 3] = v >> 24;
        }
      }
    }
    setCounter(c, 0);
    c.setR16(EDI, di + bytes);
    return true;
  }
  // CMPS: find the first element that ends the repeat, then let the ALU set the flags from it.
  const untilEqual = c.rep === 0xf2;
  let i = 0;
  let a = 0;
  let b = 0;
  for (;;) {
    if (size === 1) {
      a = ram[ls + i]!;
      b = ram[ld + i]!;
    } else {
      a = ram[ls + i]! | (ram[ls + i + 1]! << 8);
      b = ram[ld + i]! | (ram[ld + i + 1]! << 8);
      if (size === 4) {
        a |= (ram[ls + i + 2]! << 16) | (ram[ls + i + 3]! << 24);
        b |= (ram[ld + i + 2]! << 16) | (ram[ld + i + 3]! << 24);
      }
    }
    i += size;
    if (i === bytes || (a === b) === untilEqual) break;
  }
  alu(c, 7, a, b, size);
  setCounter(c, n - i / size);
  c.setR16(ESI, si + i);
  c.setR16(EDI, di + i);
  return true;
}

function strop(kind: number, sz: number): Op {
  return (c) => {
    const size = sz === 0 ? osz(c) : sz;
    const delta = c.flags & DF ? -size : size;
    const amask = c.as32 ? -1 : 0xffff;
    const src = dseg(c);
    const dst = c.sbase[ES]!;
    const rep = c.rep;
    let n = rep ? counter(c) : 1;
    if (n === 0) return;
    let si = idx(c, ESI);
    let di = idx(c, EDI);
    if (rep && delta > 0 && !c.as32 && kind <= S_STOS && repInRam(c, kind, size, n, src + si, dst + di, si, di)) return;
    const port = c.reg[EDX]! & 0xffff;
    if (kind >= S_INS) c.requireIo(port, size);
    for (;;) {
      switch (kind) {
        case S_MOVS:
          c.wrSz(size, dst, di, c.rdSz(size, src, si));
          si = (si + delta) & amask;
          di = (di + delta) & amask;
          break;
        case S_STOS:
          c.wrSz(size, dst, di, c.rSz(size, EAX));
          di = (di + delta) & amask;
          break;
        case S_LODS:
          c.setRSz(size, EAX, c.rdSz(size, src, si));
          si = (si + delta) & amask;
          break;
        case S_CMPS:
          alu(c, 7, c.rdSz(size, src, si), c.rdSz(size, dst, di), size);
          si = (si + delta) & amask;
          di = (di + delta) & amask;
          break;
        case S_SCAS:
          alu(c, 7, c.rSz(size, EAX), c.rdSz(size, dst, di), size);
          di = (di + delta) & amask;
          break;
        case S_INS:
          c.wrSz(size, dst, di, size === 1 ? c.io.in8(port) : size === 2 ? c.io.in16(port) : c.io.in32(port));
          di = (di + delta) & amask;
          break;
        default: {
          const v = c.rdSz(size, src, si);
          if (size === 1) c.io.out8(port, v);
          else if (size === 2) c.io.out16(port, v);
          else c.io.out32(port, v);
          si = (si + delta) & amask;
        }
      }
      if (!rep) break;
      n = c.as32 ? (n - 1) >>> 0 : (n - 1) & 0xffff;
      if (n === 0) break;
      if (kind === S_CMPS || kind === S_SCAS) {
        if (rep === 0xf3 ? !c.getZF() : c.getZF()) break;
      }
    }
    if (rep) setCounter(c, n);
    setIdx(c, ESI, c.as32 ? si : si & 0xffff);
    setIdx(c, EDI, c.as32 ? di : di & 0xffff);
  };
}
OPS[0xa4] = strop(S_MOVS, 1);
OPS[0xa5] = strop(S_MOVS, 0);
OPS[0xa6] = strop(S_CMPS, 1);
OPS[0xa7] = strop(S_CMPS, 0);
OPS[0xaa] = strop(S_STOS, 1);
OPS[0xab] = strop(S_STOS, 0);
OPS[0xac] = strop(S_LODS, 1);
OPS[0xad] = strop(S_LODS, 0);
OPS[0xae] = strop(S_SCAS, 1);
OPS[0xaf] = strop(S_SCAS, 0);
OPS[0x6c] = strop(S_INS, 1);
OPS[0x6d] = strop(S_INS, 0);
OPS[0x6e] = strop(S_OUTS, 1);
OPS[0x6f] = strop(S_OUTS, 0);

// ------------------------------------------------------------------ shifts and rotates

/** ROL ROR RCL RCR SHL SHR SAL SAR of `v` by `cnt` (masked to 5 bits, as from the 186 on). */
export function shift(c: Cpu, op: number, v: number, cnt: number, sz: number): number {
  cnt &= 0x1f;
  if (cnt === 0) return v;
  switch (op) {
    case 0: return rol(c, v, cnt, sz);
    case 1: return ror(c, v, cnt, sz);
    case 2: return rcl(c, v, cnt, sz);
    case 3: return rcr(c, v, cnt, sz);
    default: return shiftLinear(c, op, v, cnt, sz);
  }
}
// Rotates change only CF and OF: setCFOF leaves SF, ZF, PF lazy instead of materialising all six.
function rol(c: Cpu, v: number, cnt: number, sz: number): number {
  const bits = sz * 8;
  const n = cnt & (bits - 1);
  const r = n === 0 ? v : m((v << n) | (v >>> (bits - n)), sz);
  const cf = r & 1;
  c.setCFOF((cf ? CF : 0) | ((r & SIGN[sz]! ? 1 : 0) ^ cf ? OF : 0));
  return r;
}
function ror(c: Cpu, v: number, cnt: number, sz: number): number {
  const bits = sz * 8;
  const n = cnt & (bits - 1);
  const r = n === 0 ? v : m((v >>> n) | (v << (bits - n)), sz);
  const S = SIGN[sz]!;
  const cf = r & S ? 1 : 0;
  c.setCFOF((cf ? CF : 0) | (cf ^ (r & (S >>> 1) ? 1 : 0) ? OF : 0));
  return r;
}
function rcl(c: Cpu, v: number, cnt: number, sz: number): number {
  const n = sz === 4 ? cnt : cnt % (sz * 8 + 1);
  const S = SIGN[sz]!;
  let cf = c.getCF() ? 1 : 0;
  let r = v;
  for (let i = 0; i < n; i++) {
    const out = r & S ? 1 : 0;
    r = m((r << 1) | cf, sz);
    cf = out;
  }
  c.setCFOF((cf ? CF : 0) | ((r & S ? 1 : 0) ^ cf ? OF : 0));
  return r;
}
function rcr(c: Cpu, v: number, cnt: number, sz: number): number {
  const n = sz === 4 ? cnt : cnt % (sz * 8 + 1);
  const S = SIGN[sz]!;
  let cf = c.getCF() ? 1 : 0;
  let r = v;
  for (let i = 0; i < n; i++) {
    const out = r & 1;
    r = m((r >>> 1) | (cf ? S : 0), sz);
    cf = out;
  }
  c.setCFOF((cf ? CF : 0) | ((r & S ? 1 : 0) ^ (r & (S >>> 1) ? 1 : 0) ? OF : 0));
  return r;
}

/** SHL/SAL, SHR, SAR (op 4..7) of `v` by `cnt` in 1..31: CF and OF now, SF/ZF/PF lazily. */
function shiftLinear(c: Cpu, op: number, v: number, cnt: number, sz: number): number {
  const bits = sz * 8;
  const S = SIGN[sz]!;
  let r: number;
  if (op === 5) {
    r = m(v >>> cnt, sz);
    const cf = (v >>> (cnt - 1)) & 1;
    c.setSZPLazy((cf ? CF : 0) | (v & S ? OF : 0), r, sz);
  } else if (op === 7) {
    const sv = sxSz(v, sz);
    r = m(sv >> cnt, sz);
    const cf = (sv >> (cnt - 1)) & 1;
    c.setSZPLazy(cf ? CF : 0, r, sz);
  } else {
    r = m(v << cnt, sz);
    const cf = cnt <= bits ? (v >>> (bits - cnt)) & 1 : 0;
    c.setSZPLazy((cf ? CF : 0) | ((r & S ? 1 : 0) ^ cf ? OF : 0), r, sz);
  }
  return r;
}
/** A shift or rotate of one operand size by a count in 1..31. */
type ShiftFn = (c: Cpu, v: number, n: number) => number;
/**
 * ROL ROR RCL RCR SHL SHR SAL SAR (ModRM reg order) for one operand size: each entry is
 * its own small function calling one operation with a constant size, so V8 inlines that
 * operation into it and folds the size (a shared `shift` body runs out of inlining budget).
 */
const SHIFT8: ShiftFn[] = [
  (c, v, n) => rol(c, v, n, 1), (c, v, n) => ror(c, v, n, 1), (c, v, n) => rcl(c, v, n, 1), (c, v, n) => rcr(c, v, n, 1),
  (c, v, n) => shiftLinear(c, 4, v, n, 1), (c, v, n) => shiftLinear(c, 5, v, n, 1), (c, v, n) => shiftLinear(c, 6, v, n, 1), (c, v, n) => shiftLinear(c, 7, v, n, 1),
];
const SHIFT16: ShiftFn[] = [
  (c, v, n) => rol(c, v, n, 2), (c, v, n) => ror(c, v, n, 2), (c, v, n) => rcl(c, v, n, 2), (c, v, n) => rcr(c, v, n, 2),
  (c, v, n) => shiftLinear(c, 4, v, n, 2), (c, v, n) => shiftLinear(c, 5, v, n, 2), (c, v, n) => shiftLinear(c, 6, v, n, 2), (c, v, n) => shiftLinear(c, 7, v, n, 2),
];
const SHIFT32: ShiftFn[] = [
  (c, v, n) => rol(c, v, n, 4), (c, v, n) => ror(c, v, n, 4), (c, v, n) => rcl(c, v, n, 4), (c, v, n) => rcr(c, v, n, 4),
  (c, v, n) => shiftLinear(c, 4, v, n, 4), (c, v, n) => shiftLinear(c, 5, v, n, 4), (c, v, n) => shiftLinear(c, 6, v, n, 4), (c, v, n) => shiftLinear(c, 7, v, n, 4),
];

/**
 * Shift or rotate the r/m operand of `modrm` by `n`, one function per operand size: each
 * calls {@link shift} with a constant size, which V8 inlines and folds (masks, sign bits)
 * instead of running one shared body for every size.
 */
function shiftRM8(c: Cpu, modrm: number, n: number): void {
  if (modrm >= 0xc0) {
    const i = modrm & 7;
    if (n & 0x1f) c.setR8(i, SHIFT8[(modrm >> 3) & 7]!(c, c.r8(i), n & 0x1f));
  } else shiftMem(c, modrm, n, 1);
}
function shiftRM16(c: Cpu, modrm: number, n: number): void {
  if (modrm >= 0xc0) {
    const i = modrm & 7;
    const reg = c.reg;
    if (n & 0x1f) reg[i] = (reg[i]! & ~0xffff) | SHIFT16[(modrm >> 3) & 7]!(c, reg[i]! & 0xffff, n & 0x1f);
  } else shiftMem(c, modrm, n, 2);
}
function shiftRM32(c: Cpu, modrm: number, n: number): void {
  if (modrm >= 0xc0) {
    const i = modrm & 7;
    const reg = c.reg;
    if (n & 0x1f) reg[i] = SHIFT32[(modrm >> 3) & 7]!(c, reg[i]!, n & 0x1f);
  } else shiftMem(c, modrm, n, 4);
}
/** The memory form, kept out of the register paths above so their inlining budget goes to {@link shift}. */
function shiftMem(c: Cpu, modrm: number, n: number, sz: number): void {
  c.decodeEA(modrm);
  c.wrSz(sz, c.eaBase, c.eaOff, shift(c, (modrm >> 3) & 7, c.rdSz(sz, c.eaBase, c.eaOff), n, sz));
}
// The count is read after the ModRM operand's displacement (an imm8 count follows it).
OPS[0xc0] = (c) => {
  const modrm = c.fetch8();
  if (modrm >= 0xc0) shiftRM8(c, modrm, c.fetch8());
  else {
    c.decodeEA(modrm);
    const n = c.fetch8();
    c.wr8(c.eaBase, c.eaOff, shift(c, (modrm >> 3) & 7, c.rd8(c.eaBase, c.eaOff), n, 1));
  }
};
OPS[0xc1] = (c) => {
  const modrm = c.fetch8();
  if (modrm >= 0xc0) {
    if (c.os32) shiftRM32(c, modrm, c.fetch8());
    else shiftRM16(c, modrm, c.fetch8());
    return;
  }
  c.decodeEA(modrm);
  const n = c.fetch8();
  if (c.os32) c.wr32(c.eaBase, c.eaOff, shift(c, (modrm >> 3) & 7, c.rd32(c.eaBase, c.eaOff), n, 4));
  else c.wr16(c.eaBase, c.eaOff, shift(c, (modrm >> 3) & 7, c.rd16(c.eaBase, c.eaOff), n, 2));
};
OPS[0xd0] = (c) => shiftRM8(c, c.fetch8(), 1);
OPS[0xd1] = (c) => {
  const modrm = c.fetch8();
  if (c.os32) shiftRM32(c, modrm, 1);
  else shiftRM16(c, modrm, 1);
};
OPS[0xd2] = (c) => {
  const modrm = c.fetch8();
  shiftRM8(c, modrm, c.reg[ECX]! & 0xff);
};
OPS[0xd3] = (c) => {
  const modrm = c.fetch8();
  if (c.os32) shiftRM32(c, modrm, c.reg[ECX]! & 0xff);
  else shiftRM16(c, modrm, c.reg[ECX]! & 0xff);
};

function shd(left: boolean, imm: boolean): Op {
  return (c) => {
    const sz = osz(c);
    const modrm = c.fetch8();
    const dst = c.readRM(sz, modrm);
    const src = c.rSz(sz, (modrm >> 3) & 7);
    const cnt = (imm ? c.fetch8() : c.reg[ECX]! & 0xff) & 31;
    if (cnt === 0) return;
    const bits = sz * 8;
    const S = SIGN[sz]!;
    let r: number;
    let cf: number;
    if (sz === 2) {
      // Shift the 32-bit pair; counts above 16 are undefined and give what a 32-bit shift gives.
      if (left) {
        const pair = ((dst << 16) | src) >>> 0;
        r = ((pair << cnt) >>> 16) & 0xffff;
        cf = cnt <= 16 ? (dst >>> (16 - cnt)) & 1 : (src >>> (32 - cnt)) & 1;
      } else {
        const pair = ((src << 16) | dst) >>> 0;
        r = (pair >>> cnt) & 0xffff;
        cf = (pair >>> (cnt - 1)) & 1;
      }
    } else if (left) {
      r = (dst << cnt) | (src >>> (bits - cnt));
      cf = (dst >>> (bits - cnt)) & 1;
    } else {
      r = (dst >>> cnt) | (src << (bits - cnt));
      cf = (dst >>> (cnt - 1)) & 1;
    }
    const of = ((r ^ dst) & S) !== 0;
    c.setArith(c.szp(r, sz) | (cf ? CF : 0) | (of ? OF : 0));
    c.writeRM(sz, modrm, r);
  };
}
OPS0F[0xa4] = shd(true, true);
OPS0F[0xa5] = shd(true, false);
OPS0F[0xac] = shd(false, true);
OPS0F[0xad] = shd(false, false);

// ------------------------------------------------------------------ grp3: test/not/neg/mul/imul/div/idiv

function mulU32(a: number, b: number): [number, number] {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const ll = al * bl;
  const lh = al * bh;
  const hl = ah * bl;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  const lo = ((mid << 16) | (ll & 0xffff)) >>> 0;
  const hi = (ah * bh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
  return [lo, hi];
}

function grp3(c: Cpu, sz: number): void {
  const modrm = c.fetch8();
  const op = (modrm >> 3) & 7;
  const v = c.readRM(sz, modrm);
  switch (op) {
    case 0:
    case 1:
      alu(c, 4, v, c.fetchSz(sz), sz);
      return;
    case 2:
      c.writeRM(sz, modrm, m(~v, sz));
      return;
    case 3: {
      const r = m(-v, sz);
      c.setLazy(L_SUB, r, 0, v, sz);
      c.writeRM(sz, modrm, r);
      return;
    }
    case 4: {
      // MUL
      let hiNZ: boolean;
      let lo: number;
      if (sz === 1) {
        const r = (c.reg[EAX]! & 0xff) * v;
        c.setR16(EAX, r);
        hiNZ = r > 0xff;
        lo = r & 0xff;
      } else if (sz === 2) {
        const r = (c.reg[EAX]! & 0xffff) * v;
        lo = r & 0xffff;
        c.setR16(EAX, lo);
        c.setR16(EDX, r >>> 16);
        hiNZ = r > 0xffff;
      } else {
        const [l, h] = mulU32(c.reg[EAX]! >>> 0, v >>> 0);
        c.reg[EAX] = l;
        c.reg[EDX] = h;
        lo = l;
        hiNZ = h !== 0;
      }
      c.setArith(c.szp(lo, sz) | (hiNZ ? CF | OF : 0));
      return;
    }
    case 5: {
      // IMUL
      let ok: boolean;
      let lo: number;
      if (sz === 1) {
        const r = sx8(c.reg[EAX]! & 0xff) * sx8(v);
        c.setR16(EAX, r & 0xffff);
        ok = r === sx8(r & 0xff);
        lo = r & 0xff;
      } else if (sz === 2) {
        const r = sx16(c.reg[EAX]! & 0xffff) * sx16(v);
        lo = r & 0xffff;
        c.setR16(EAX, lo);
        c.setR16(EDX, (r >> 16) & 0xffff);
        ok = r === sx16(lo);
      } else {
        const p = BigInt(c.reg[EAX]! | 0) * BigInt(v | 0);
        lo = Number(BigInt.asIntN(32, p));
        c.reg[EAX] = lo;
        c.reg[EDX] = Number(BigInt.asUintN(32, p >> 32n));
        ok = BigInt.asIntN(32, p) === p;
      }
      c.setArith(c.szp(lo, sz) | (ok ? 0 : CF | OF));
      return;
    }
    case 6: {
      // DIV
      if (v === 0) c.fault(VEC_DE);
      if (sz === 1) {
        const n = c.reg[EAX]! & 0xffff;
        const q = Math.floor(n / v);
        if (q > 0xff) c.fault(VEC_DE);
        c.setR16(EAX, ((n % v) << 8) | q);
      } else if (sz === 2) {
        const n = (c.reg[EDX]! & 0xffff) * 65536 + (c.reg[EAX]! & 0xffff);
        const q = Math.floor(n / v);
        if (q > 0xffff) c.fault(VEC_DE);
        c.setR16(EAX, q);
        c.setR16(EDX, n % v);
      } else {
        const n = (BigInt(c.reg[EDX]! >>> 0) << 32n) | BigInt(c.reg[EAX]! >>> 0);
        const q = n / BigInt(v >>> 0);
        if (q > 0xffffffffn) c.fault(VEC_DE);
        c.reg[EAX] = Number(q);
        c.reg[EDX] = Number(n % BigInt(v >>> 0));
      }
      return;
    }
    default: {
      // IDIV
      if (v === 0) c.fault(VEC_DE);
      const d = sxSz(v, sz);
      if (sz === 1) {
        const n = sx16(c.reg[EAX]! & 0xffff);
        const q = Math.trunc(n / d);
        if (q > 127 || q < -128) c.fault(VEC_DE);
        c.setR16(EAX, (((n - q * d) & 0xff) << 8) | (q & 0xff));
      } else if (sz === 2) {
        const n = ((c.reg[EDX]! & 0xffff) << 16) | (c.reg[EAX]! & 0xffff);
        const q = Math.trunc(n / d);
        if (q > 32767 || q < -32768) c.fault(VEC_DE);
        c.setR16(EAX, q);
        c.setR16(EDX, n - q * d);
      } else {
        const n = BigInt.asIntN(64, (BigInt(c.reg[EDX]! >>> 0) << 32n) | BigInt(c.reg[EAX]! >>> 0));
        const q = n / BigInt(d);
        if (q > 2147483647n || q < -2147483648n) c.fault(VEC_DE);
        c.reg[EAX] = Number(BigInt.asIntN(32, q));
        c.reg[EDX] = Number(BigInt.asIntN(32, n % BigInt(d)));
      }
    }
  }
}
OPS[0xf6] = (c) => grp3(c, 1);
OPS[0xf7] = (c) => grp3(c, osz(c));

// ------------------------------------------------------------------ grp4/grp5

OPS[0xfe] = (c) => {
  const modrm = c.fetch8();
  const op = (modrm >> 3) & 7;
  if (op > 1) c.undefinedOpcode();
  const v = c.readRM(1, modrm);
  c.writeRM(1, modrm, op === 0 ? inc(c, v, 1) : dec(c, v, 1));
};
OPS[0xff] = (c) => {
  const sz = osz(c);
  const modrm = c.fetch8();
  const op = (modrm >> 3) & 7;
  switch (op) {
    case 0:
    case 1: {
      const v = c.readRM(sz, modrm);
      c.writeRM(sz, modrm, op === 0 ? inc(c, v, sz) : dec(c, v, sz));
      return;
    }
    case 2: {
      const t = c.readRM(sz, modrm);
      c.pushOs(c.eip);
      c.eip = t;
      return;
    }
    case 4:
      c.eip = c.readRM(sz, modrm);
      return;
    case 3:
    case 5: {
      if (modrm >= 0xc0) c.undefinedOpcode();
      c.decodeEA(modrm);
      const off = c.rdSz(sz, c.eaBase, c.eaOff);
      const sel = c.rd16(c.eaBase, m(c.eaOff + sz, c.as32 ? 4 : 2));
      c.jumpFar(sel, off, op === 3);
      return;
    }
    case 6:
      c.pushOs(c.readRM(sz, modrm));
      return;
    default:
      c.undefinedOpcode();
  }
};

// ------------------------------------------------------------------ flag instructions, hlt

OPS[0xf4] = (c) => {
  c.requireCpl0();
  c.halt();
  c.requestStop();
};
OPS[0xf5] = (c) => c.setCFbit(!c.getCF());
OPS[0xf8] = (c) => c.setCFbit(false);
OPS[0xf9] = (c) => c.setCFbit(true);
OPS[0xfa] = (c) => {
  c.requireIopl();
  c.flags &= ~IF;
};
OPS[0xfb] = (c) => {
  c.requireIopl();
  if (!(c.flags & IF)) c.shadowInterrupts();
  c.flags |= IF;
};
OPS[0xfc] = (c) => {
  c.flags &= ~DF;
};
OPS[0xfd] = (c) => {
  c.flags |= DF;
};

// ------------------------------------------------------------------ 0F page (386)

OPS0F[0x01] = (c) => {
  const modrm = c.fetch8();
  const op = (modrm >> 3) & 7;
  if (op === 4) {
    // SMSW
    if (modrm >= 0xc0) c.setRSz(osz(c), modrm & 7, c.os32 ? c.cr0 : c.cr0 & 0xffff);
    else {
      c.decodeEA(modrm);
      c.wr16(c.eaBase, c.eaOff, c.cr0 & 0xffff);
    }
    return;
  }
  if (op === 6) {
    // LMSW: cannot clear PE
    const v = c.readRM(2, modrm);
    c.requireCpl0();
    c.setCr0((c.cr0 & ~0xe) | (v & 0xf) | (c.cr0 & 1));
    return;
  }
  if (modrm >= 0xc0 || op === 5) c.undefinedOpcode();
  c.decodeEA(modrm);
  if (op === 7) {
    // INVLPG
    c.requireCpl0();
    c.mmu.invalidate(c.eaBase + c.eaOff);
    return;
  }
  if (op >= 2) c.requireCpl0();
  const b = c.eaBase;
  const o = c.eaOff;
  const o2 = m(o + 2, c.as32 ? 4 : 2);
  switch (op) {
    case 0:
      c.wr16(b, o, c.gdtLimit);
      c.wr32(b, o2, c.os32 ? c.gdtBase : c.gdtBase & 0xffffff);
      return;
    case 1:
      c.wr16(b, o, c.idtLimit);
      c.wr32(b, o2, c.os32 ? c.idtBase : c.idtBase & 0xffffff);
      return;
    case 2:
      c.gdtLimit = c.rd16(b, o);
      c.gdtBase = c.rd32(b, o2) & (c.os32 ? -1 : 0xffffff);
      return;
    default:
      c.idtLimit = c.rd16(b, o);
      c.idtBase = c.rd32(b, o2) & (c.os32 ? -1 : 0xffffff);
  }
};
OPS0F[0x06] = (c) => {
  c.requireCpl0();
  c.cr0 &= ~8;
};
OPS0F[0x20] = (c) => {
  const modrm = c.fetch8();
  const n = (modrm >> 3) & 7;
  if (n === 1 || n > 4) c.undefinedOpcode();
  c.requireCpl0();
  c.reg[modrm & 7] = n === 0 ? c.cr0 : n === 2 ? c.cr2 : n === 3 ? c.cr3 : c.cr4;
};
OPS0F[0x22] = (c) => {
  const modrm = c.fetch8();
  const n = (modrm >> 3) & 7;
  if (n === 1 || n > 4) c.undefinedOpcode();
  c.requireCpl0();
  const v = c.reg[modrm & 7]! >>> 0;
  if (n === 0) c.setCr0(v);
  else if (n === 2) c.cr2 = v;
  else if (n === 3) c.setCr3(v);
  else c.setCr4(v);
};
const DR6_FIXED = 0xffff0ff0 | 0;
const DR7_FIXED = 0x400;
/** The debug register MOV DRn names: DR4/DR5 alias DR6/DR7 unless CR4.DE, which makes them #UD. */
function debugRegister(c: Cpu, modrm: number): number {
  const n = (modrm >> 3) & 7;
  if (n === 4 || n === 5) {
    if (c.cr4 & 8) c.undefinedOpcode();
    return n + 2;
  }
  return n;
}
OPS0F[0x21] = (c) => {
  const modrm = c.fetch8();
  c.requireCpl0();
  c.reg[modrm & 7] = c.dr[debugRegister(c, modrm)]!;
};
OPS0F[0x23] = (c) => {
  const modrm = c.fetch8();
  c.requireCpl0();
  const n = debugRegister(c, modrm);
  const v = c.reg[modrm & 7]!;
  // DR6 and DR7 read back with their reserved bits fixed (DR6 bits 4-11, 16-31 set; DR7 bit 10).
  c.dr[n] = n === 6 ? v | DR6_FIXED : n === 7 ? (v | DR7_FIXED) & ~0xd800 : v;
};
OPS0F[0x00] = (c) => {
  // SLDT, STR, LLDT, LTR, VERR, VERW: protected mode only.
  const modrm = c.fetch8();
  const op = (modrm >> 3) & 7;
  if (!(c.cr0 & 1) || op > 5) c.undefinedOpcode();
  if (op < 2) {
    const v = op === 0 ? c.ldtr : c.tr;
    if (modrm >= 0xc0) c.setRSz(osz(c), modrm & 7, v);
    else {
      c.decodeEA(modrm);
      c.wr16(c.eaBase, c.eaOff, v);
    }
    return;
  }
  const sel = c.readRM(2, modrm);
  if (op === 2 || op === 3) {
    c.requireCpl0();
    if (op === 2) loadLdt(c, sel);
    else loadTr(c, sel);
    return;
  }
  // VERR/VERW: ZF says whether the segment could be read/written at this CPL.
  const rights = loadAccess(c, sel, false);
  const ok = rights !== null && (rights & 0x1000) !== 0 && (op === 4 ? (rights & 0x800) === 0 || (rights & 0x200) !== 0 : (rights & 0xa00) === 0x200);
  c.materialize();
  c.flags = ok ? c.flags | ZF : c.flags & ~ZF;
};
function larLsl(lsl: boolean): Op {
  return (c) => {
    if (!(c.cr0 & 1)) c.undefinedOpcode();
    const sz = osz(c);
    const modrm = c.fetch8();
    const v = loadAccess(c, c.readRM(2, modrm), lsl);
    c.materialize();
    if (v === null) {
      c.flags &= ~ZF;
      return;
    }
    c.flags |= ZF;
    c.setRSz(sz, (modrm >> 3) & 7, v);
  };
}
OPS0F[0x02] = larLsl(false);
OPS0F[0x03] = larLsl(true);
OPS[0x63] = (c) => {
  // ARPL
  if (!(c.cr0 & 1)) c.undefinedOpcode();
  const modrm = c.fetch8();
  const dst = c.readRM(2, modrm);
  const src = c.r16((modrm >> 3) & 7);
  c.materialize();
  if ((dst & 3) < (src & 3)) {
    c.writeRM(2, modrm, (dst & ~3) | (src & 3));
    c.flags |= ZF;
  } else c.flags &= ~ZF;
};
OPS0F[0xb6] = (c) => {
  const modrm = c.fetch8();
  c.setRSz(osz(c), (modrm >> 3) & 7, c.readRM(1, modrm));
};
OPS0F[0xb7] = (c) => {
  const modrm = c.fetch8();
  c.setRSz(osz(c), (modrm >> 3) & 7, c.readRM(2, modrm));
};
OPS0F[0xbe] = (c) => {
  const modrm = c.fetch8();
  const sz = osz(c);
  c.setRSz(sz, (modrm >> 3) & 7, m(sx8(c.readRM(1, modrm)), sz));
};
OPS0F[0xbf] = (c) => {
  const modrm = c.fetch8();
  const sz = osz(c);
  c.setRSz(sz, (modrm >> 3) & 7, m(sx16(c.readRM(2, modrm)), sz));
};

/** BT (0), BTS (1), BTR (2), BTC (3). */
function bitOp(c: Cpu, kind: number, modrm: number, bitoff: number, imm: boolean): void {
  const sz = osz(c);
  const bits = sz * 8;
  let v: number;
  if (modrm >= 0xc0) v = c.rSz(sz, modrm & 7);
  else {
    c.decodeEA(modrm);
    if (!imm) {
      const disp = sz === 2 ? (sx16(bitoff) >> 4) * 2 : ((bitoff | 0) >> 5) * 4;
      c.eaOff = m(c.eaOff + disp, c.as32 ? 4 : 2);
    }
    v = c.rdSz(sz, c.eaBase, c.eaOff);
  }
  const bit = bitoff & (bits - 1);
  const mask = sz === 4 ? (1 << bit) >>> 0 : 1 << bit;
  c.setCFbit((v & mask) !== 0);
  if (kind === 0) return;
  const r = kind === 1 ? v | mask : kind === 2 ? v & ~mask : v ^ mask;
  c.writeRM(sz, modrm, m(r, sz));
}
OPS0F[0xa3] = (c) => {
  const modrm = c.fetch8();
  bitOp(c, 0, modrm, c.rSz(osz(c), (modrm >> 3) & 7), false);
};
OPS0F[0xab] = (c) => {
  const modrm = c.fetch8();
  bitOp(c, 1, modrm, c.rSz(osz(c), (modrm >> 3) & 7), false);
};
OPS0F[0xb3] = (c) => {
  const modrm = c.fetch8();
  bitOp(c, 2, modrm, c.rSz(osz(c), (modrm >> 3) & 7), false);
};
OPS0F[0xbb] = (c) => {
  const modrm = c.fetch8();
  bitOp(c, 3, modrm, c.rSz(osz(c), (modrm >> 3) & 7), false);
};
OPS0F[0xba] = (c) => {
  const modrm = c.fetch8();
  const kind = (modrm >> 3) & 7;
  if (kind < 4) c.undefinedOpcode();
  // The immediate follows the displacement: decode the address first.
  const sz = osz(c);
  let v: number;
  if (modrm >= 0xc0) v = c.rSz(sz, modrm & 7);
  else {
    c.decodeEA(modrm);
    v = c.rdSz(sz, c.eaBase, c.eaOff);
  }
  const bit = c.fetch8() & (sz * 8 - 1);
  const mask = sz === 4 ? (1 << bit) >>> 0 : 1 << bit;
  c.setCFbit((v & mask) !== 0);
  if (kind === 4) return;
  const r = kind === 5 ? v | mask : kind === 6 ? v & ~mask : v ^ mask;
  c.writeRM(sz, modrm, m(r, sz));
};
function bitScan(reverse: boolean): Op {
  return (c) => {
    const sz = osz(c);
    const modrm = c.fetch8();
    const v = c.readRM(sz, modrm);
    c.materialize();
    if (v === 0) {
      c.flags |= ZF;
      return;
    }
    c.flags &= ~ZF;
    const i = reverse ? 31 - Math.clz32(v) : 31 - Math.clz32(v & -v);
    c.setRSz(sz, (modrm >> 3) & 7, i);
  };
}
OPS0F[0xbc] = bitScan(false);
OPS0F[0xbd] = bitScan(true);
OPS0F[0x08] = () => {};
OPS0F[0x09] = () => {};
OPS0F[TRAP_OPCODE] = (c) => {
  const n = c.fetch8();
  if (!c.trap || !c.trap(c, n)) c.undefinedOpcode();
};


// ------------------------------------------------------------------ 0F page (486 to 686)

/**
 * What CPUID reports: a GenuineIntel family 6 model 5 stepping 2 (qemu's `pentium2`
 * signature) with exactly the features implemented here: FPU, PSE, TSC, MSR, CX8, PGE,
 * CMOV. No PAE, APIC, SEP, MTRR, MCE, MMX, FXSR or SSE.
 */
export const CPUID_SIGNATURE = 0x652;
export const CPUID_FEATURES =
  (1 << 0) | // FPU
  (1 << 3) | // PSE
  (1 << 4) | // TSC
  (1 << 5) | // MSR
  (1 << 8) | // CX8
  (1 << 13) | // PGE
  (1 << 15); // CMOV
/** "GenuineIntel" as EBX, EDX, ECX. */
const VENDOR = [0x756e6547, 0x49656e69, 0x6c65746e];
OPS0F[0xa2] = (c) => {
  let leaf = c.reg[EAX]! >>> 0;
  const r = c.reg;
  // A leaf past the highest one (1) answers as the highest one, as Intel CPUs and qemu do.
  if (leaf > 1) leaf = 1;
  if (leaf === 0) {
    r[EAX] = 1;
    r[EBX] = VENDOR[0]!;
    r[EDX] = VENDOR[1]!;
    r[ECX] = VENDOR[2]!;
  } else {
    r[EAX] = CPUID_SIGNATURE;
    r[EBX] = 0;
    r[ECX] = 0;
    r[EDX] = CPUID_FEATURES;
  }
};
/** RDTSC: the time-stamp counter is the count of instructions retired (deterministic). */
OPS0F[0x31] = (c) => {
  if (c.cr4 & 4 && c.cpl !== 0) c.fault(VEC_GP, 0);
  const t = c.tsc();
  c.reg[EAX] = t % 0x100000000;
  c.reg[EDX] = Math.floor(t / 0x100000000);
};
OPS0F[0x32] = (c) => {
  c.requireCpl0();
  const v = c.readMsr(c.reg[ECX]! >>> 0);
  c.reg[EAX] = v.lo;
  c.reg[EDX] = v.hi;
};
OPS0F[0x30] = (c) => {
  c.requireCpl0();
  c.writeMsr(c.reg[ECX]! >>> 0, c.reg[EAX]!, c.reg[EDX]!);
};
// CMOVcc: the source is read (and may fault) whatever the condition.
for (let cc = 0; cc < 16; cc++) {
  OPS0F[0x40 + cc] = (c) => {
    const sz = osz(c);
    const modrm = c.fetch8();
    const v = c.readRM(sz, modrm);
    if (c.cond(cc)) c.setRSz(sz, (modrm >> 3) & 7, v);
  };
}
function cmpxchg(c: Cpu, sz: number): void {
  const modrm = c.fetch8();
  const dst = c.readRM(sz, modrm);
  const acc = c.rSz(sz, EAX);
  alu(c, 7, acc, dst, sz);
  if (acc === dst) c.writeRM(sz, modrm, c.rSz(sz, (modrm >> 3) & 7));
  else {
    // The destination is written back unchanged (a locked read-modify-write on the 486).
    if (modrm < 0xc0) c.writeRM(sz, modrm, dst);
    c.setRSz(sz, EAX, dst);
  }
}
OPS0F[0xb0] = (c) => cmpxchg(c, 1);
OPS0F[0xb1] = (c) => cmpxchg(c, osz(c));
function xadd(c: Cpu, sz: number): void {
  const modrm = c.fetch8();
  const dst = c.readRM(sz, modrm);
  const r = (modrm >> 3) & 7;
  const sum = alu(c, 0, dst, c.rSz(sz, r), sz);
  c.setRSz(sz, r, dst);
  c.writeRM(sz, modrm, sum);
}
OPS0F[0xc0] = (c) => xadd(c, 1);
OPS0F[0xc1] = (c) => xadd(c, osz(c));
OPS0F[0xc7] = (c) => {
  // CMPXCHG8B m64
  const modrm = c.fetch8();
  if (modrm >= 0xc0 || ((modrm >> 3) & 7) !== 1) c.undefinedOpcode();
  c.decodeEA(modrm);
  const b = c.eaBase;
  const o = c.eaOff;
  const o4 = m(o + 4, c.as32 ? 4 : 2);
  const lo = c.rd32(b, o);
  const hi = c.rd32(b, o4);
  c.materialize();
  if (lo === c.reg[EAX] && hi === c.reg[EDX]) {
    c.wr32(b, o, c.reg[EBX]!);
    c.wr32(b, o4, c.reg[ECX]!);
    c.flags |= ZF;
  } else {
    c.wr32(b, o, lo);
    c.wr32(b, o4, hi);
    c.reg[EAX] = lo;
    c.reg[EDX] = hi;
    c.flags &= ~ZF;
  }
};
for (let r = 0; r < 8; r++) {
  OPS0F[0xc8 + r] = (c) => {
    const v = c.reg[r]!;
    // With a 16-bit operand the result is undefined; qemu and real CPUs give 0.
    if (!c.os32) c.setR16(r, 0);
    else c.reg[r] = ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
  };
}
// UD2, and the hint NOPs 0F 18..1F with a ModRM operand (the P6 multi-byte NOP is 0F 1F /0).
OPS0F[0x0b] = (c) => c.undefinedOpcode();
for (let op = 0x18; op <= 0x1f; op++) {
  OPS0F[op] = (c) => {
    const modrm = c.fetch8();
    if (modrm < 0xc0) c.decodeEA(modrm);
  };
}
