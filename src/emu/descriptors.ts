/**
 * Protected-mode segmentation (Intel SDM vol. 3 ch. 3, 5 and 6): descriptor reads from
 * the GDT and LDT, the checks of segment loads with their exceptions and error codes,
 * far JMP/CALL/RETF and IRET within and across privilege levels, LLDT/LTR, and
 * interrupt delivery through IDT interrupt and trap gates with the TSS stack switch.
 *
 * Where the manual leaves an order of checks open, this follows qemu's TCG
 * (target/i386/tcg/seg_helper.c), the oracle our differential tests run against.
 */
import { CS, DS, ES, FS, GS, SS, ESP, IF, TF, NT, RF, VM, IOPL, VEC_GP, VEC_NP, VEC_SS, VEC_TS } from './consts.js';
import type { Cpu } from './cpu.js';

/** Bits of a descriptor's high dword (§3.4.5). */
export const D_ACCESSED = 0x100;
/** Writable (data) or readable (code). */
export const D_RW = 0x200;
/** Expand-down (data) or conforming (code). */
export const D_CONFORMING = 0x400;
export const D_CODE = 0x800;
/** Code or data, not a system descriptor. */
export const D_S = 0x1000;
export const D_PRESENT = 0x8000;
export const D_BIG = 0x400000;
export const D_GRANULAR = 0x800000;
/** The attribute bits kept in a segment register's cache. */
const FLAGS_MASK = 0x00f0ff00;

/** System descriptor and gate types (§3.5, table 3-2). */
export const T_TSS16 = 1;
export const T_LDT = 2;
export const T_TSS16_BUSY = 3;
export const T_CALL16 = 4;
export const T_TASK = 5;
export const T_INT16 = 6;
export const T_TRAP16 = 7;
export const T_TSS32 = 9;
export const T_TSS32_BUSY = 11;
export const T_CALL32 = 12;
export const T_INT32 = 14;
export const T_TRAP32 = 15;

/** A descriptor as read: its two dwords and where it lives (to set the accessed bit). */
interface Descriptor {
  lo: number;
  hi: number;
  addr: number;
}
const desc: Descriptor = { lo: 0, hi: 0, addr: 0 };

/** The base address a descriptor names. */
export function descBase(lo: number, hi: number): number {
  return (lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000);
}
/** The limit in bytes (inclusive), scaled by the granularity bit. */
export function descLimit(lo: number, hi: number): number {
  const l = (lo & 0xffff) | (hi & 0xf0000);
  return hi & D_GRANULAR ? (l << 12) | 0xfff : l;
}
function dpl(hi: number): number {
  return (hi >> 13) & 3;
}

/** Read the descriptor `sel` names from the GDT or LDT into `d`; false when it lies past the table's limit. */
function readDescriptor(c: Cpu, sel: number, d: Descriptor): boolean {
  let base: number;
  let limit: number;
  if (sel & 4) {
    if ((c.ldtr & ~3) === 0) return false;
    base = c.ldtBase;
    limit = c.ldtLimit;
  } else {
    base = c.gdtBase;
    limit = c.gdtLimit;
  }
  const i = sel & ~7;
  if (i + 7 > limit) return false;
  d.addr = base + i;
  d.lo = c.sys32(d.addr);
  d.hi = c.sys32(d.addr + 4);
  return true;
}
function setAccessed(c: Cpu, d: Descriptor): void {
  if (!(d.hi & D_ACCESSED)) {
    d.hi |= D_ACCESSED;
    c.sysW32(d.addr + 4, d.hi);
  }
}
function cacheSegment(c: Cpu, seg: number, sel: number, d: Descriptor): void {
  c.setSegment(seg, sel, descBase(d.lo, d.hi), descLimit(d.lo, d.hi), d.hi & FLAGS_MASK);
}

/** MOV/POP/LDS… to a segment register in protected mode (§5.10.4): CS is loaded only by far transfers. */
export function loadSegProtected(c: Cpu, seg: number, sel: number): void {
  sel &= 0xffff;
  const err = sel & 0xfffc;
  if (err === 0) {
    if (seg === SS) c.fault(VEC_GP, 0);
    // A null selector loads; using it would fault (not checked yet).
    c.setSegment(seg, sel, 0, 0, 0);
    return;
  }
  const d = desc;
  if (!readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  const hi = d.hi;
  if (!(hi & D_S)) c.fault(VEC_GP, err);
  const rpl = sel & 3;
  if (seg === SS) {
    if (rpl !== c.cpl || hi & D_CODE || !(hi & D_RW) || dpl(hi) !== c.cpl) c.fault(VEC_GP, err);
    if (!(hi & D_PRESENT)) c.fault(VEC_SS, err);
  } else {
    if ((hi & (D_CODE | D_RW)) === D_CODE) c.fault(VEC_GP, err);
    // Data and non-conforming code: DPL must be at least CPL and RPL.
    if (!(hi & D_CODE) || !(hi & D_CONFORMING)) {
      if (dpl(hi) < c.cpl || dpl(hi) < rpl) c.fault(VEC_GP, err);
    }
    if (!(hi & D_PRESENT)) c.fault(VEC_NP, err);
  }
  setAccessed(c, d);
  cacheSegment(c, seg, sel, d);
}

/** Checks on a code segment that a far JMP/CALL (or an interrupt) lands in; leaves the descriptor in `desc`. */
function checkCodeTarget(c: Cpu, sel: number): void {
  const err = sel & 0xfffc;
  if (err === 0) c.fault(VEC_GP, 0);
  const d = desc;
  if (!readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  const hi = d.hi;
  if (!(hi & D_S) || !(hi & D_CODE)) c.fault(VEC_GP, err);
  if (hi & D_CONFORMING) {
    if (dpl(hi) > c.cpl) c.fault(VEC_GP, err);
  } else if ((sel & 3) > c.cpl || dpl(hi) !== c.cpl) c.fault(VEC_GP, err);
  if (!(hi & D_PRESENT)) c.fault(VEC_NP, err);
}

/** Far JMP or CALL in protected mode to a code segment at the same privilege level (§5.8.2). */
export function farTransfer(c: Cpu, sel: number, off: number, call: boolean): void {
  sel &= 0xffff;
  const err = sel & 0xfffc;
  if (err === 0) c.fault(VEC_GP, 0);
  const d = desc;
  if (!readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  if (!(d.hi & D_S)) {
    const type = (d.hi >> 8) & 0xf;
    if (type === T_CALL16 || type === T_CALL32) {
      throughCallGate(c, sel, d.lo, d.hi, call);
      return;
    }
    c.unsupported = `far ${call ? 'CALL' : 'JMP'} through a task gate or TSS (selector ${sel.toString(16)}h) is not emulated yet`;
    c.requestStop();
    return;
  }
  checkCodeTarget(c, sel);
  const limit = descLimit(d.lo, d.hi);
  if (off >>> 0 > limit >>> 0) c.fault(VEC_GP, 0);
  if (call) {
    c.pushOs(c.sreg[CS]!);
    c.pushOs(c.eip);
  }
  // qemu sets the accessed bit on data and stack loads only (MOV/POP/LxS), so do we.
  cacheSegment(c, CS, (sel & 0xfffc) | c.cpl, d);
  c.eip = off;
}

/**
 * Far JMP or CALL through a call gate (§5.8.3-5.8.5): a CALL to a more privileged
 * non-conforming segment switches to the TSS's stack for that level and copies the
 * gate's parameter count of words or dwords over from the caller's stack.
 */
function throughCallGate(c: Cpu, gateSel: number, lo: number, hi: number, call: boolean): void {
  const gateErr = gateSel & 0xfffc;
  if (dpl(hi) < c.cpl || dpl(hi) < (gateSel & 3)) c.fault(VEC_GP, gateErr);
  if (!(hi & D_PRESENT)) c.fault(VEC_NP, gateErr);
  const big = ((hi >> 8) & 0xf) === T_CALL32;
  const sel = lo >>> 16;
  const offset = big ? (hi & 0xffff0000) | (lo & 0xffff) : lo & 0xffff;
  const params = hi & 0x1f;
  const err = sel & 0xfffc;
  if (err === 0) c.fault(VEC_GP, 0);
  const d = desc;
  if (!readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  if (!(d.hi & D_S) || !(d.hi & D_CODE)) c.fault(VEC_GP, err);
  const level = dpl(d.hi);
  if (call ? level > c.cpl : d.hi & D_CONFORMING ? level > c.cpl : level !== c.cpl) c.fault(VEC_GP, err);
  if (!(d.hi & D_PRESENT)) c.fault(VEC_NP, err);
  const csLo = d.lo;
  const csHi = d.hi;
  if (!call) {
    if (offset >>> 0 > descLimit(csLo, csHi) >>> 0) c.fault(VEC_GP, 0);
    c.setSegment(CS, err | c.cpl, descBase(csLo, csHi), descLimit(csLo, csHi), csHi & FLAGS_MASK);
    c.eip = offset;
    return;
  }
  const size = big ? 4 : 2;
  if (!(csHi & D_CONFORMING) && level < c.cpl) {
    const t = tssStack(c, level);
    const tsErr = t.ss & 0xfffc;
    if (tsErr === 0 || (t.ss & 3) !== level) c.fault(VEC_TS, tsErr);
    if (!readDescriptor(c, t.ss, d)) c.fault(VEC_TS, tsErr);
    if (dpl(d.hi) !== level || !(d.hi & D_S) || d.hi & D_CODE || !(d.hi & D_RW) || !(d.hi & D_PRESENT)) c.fault(VEC_TS, tsErr);
    const ssLo = d.lo;
    const ssHi = d.hi;
    const ssBase = descBase(ssLo, ssHi);
    const k = ssHi & D_BIG ? -1 : 0xffff;
    const oldK = c.spMask;
    const oldBase = c.sbase[SS]!;
    const oldEsp = c.reg[ESP]!;
    let esp = t.esp;
    const push = (v: number): void => {
      esp = (esp & ~k) | ((esp - size) & k);
      if (big) c.wr32(ssBase, esp & k, v);
      else c.wr16(ssBase, esp & k, v & 0xffff);
    };
    const oldCpl = c.cpl;
    c.cpl = level;
    try {
      push(c.sreg[SS]!);
      push(oldEsp);
      for (let i = params - 1; i >= 0; i--) {
        const at = (oldEsp + i * size) & oldK;
        push(big ? c.rd32(oldBase, at) : c.rd16(oldBase, at));
      }
      push(c.sreg[CS]!);
      push(c.eip);
    } catch (e) {
      c.cpl = oldCpl;
      throw e;
    }
    c.setSegment(SS, (t.ss & 0xfffc) | level, ssBase, descLimit(ssLo, ssHi), ssHi & FLAGS_MASK);
    c.reg[ESP] = esp;
    c.setSegment(CS, err | level, descBase(csLo, csHi), descLimit(csLo, csHi), csHi & FLAGS_MASK);
  } else {
    if (big) {
      c.push32(c.sreg[CS]!);
      c.push32(c.eip);
    } else {
      c.push16(c.sreg[CS]!);
      c.push16(c.eip);
    }
    c.setSegment(CS, err | c.cpl, descBase(csLo, csHi), descLimit(csLo, csHi), csHi & FLAGS_MASK);
  }
  c.eip = offset;
}

/** The selector's code segment for a return to privilege `rpl` (§5.8.6); leaves the descriptor in `desc`. */
function checkReturnTarget(c: Cpu, sel: number): void {
  const err = sel & 0xfffc;
  if (err === 0) c.fault(VEC_GP, 0);
  const d = desc;
  if (!readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  const hi = d.hi;
  if (!(hi & D_S) || !(hi & D_CODE)) c.fault(VEC_GP, err);
  const rpl = sel & 3;
  if (rpl < c.cpl) c.fault(VEC_GP, err);
  if (hi & D_CONFORMING) {
    if (dpl(hi) > rpl) c.fault(VEC_GP, err);
  } else if (dpl(hi) !== rpl) c.fault(VEC_GP, err);
  if (!(hi & D_PRESENT)) c.fault(VEC_NP, err);
}

/** A data segment register whose DPL is below the new CPL after a return outward is nulled (§5.8.6). */
function validateSegment(c: Cpu, seg: number): void {
  if ((seg === FS || seg === GS) && (c.sreg[seg]! & 0xfffc) === 0) return;
  const f = c.sflags[seg]!;
  if ((!(f & D_CODE) || !(f & D_CONFORMING)) && dpl(f) < c.cpl) {
    c.setSegment(seg, 0, c.sbase[seg]!, c.slimit[seg]!, f & ~D_PRESENT);
  }
}

/**
 * RETF (`iret` false, `n` bytes of parameters to drop) or IRET in protected mode:
 * to the same privilege level, or outward with SS:ESP popped too.
 */
export function farReturn(c: Cpu, n: number, iret: boolean): void {
  const os32 = c.os32;
  const k = c.spMask;
  const ssBase = c.sbase[SS]!;
  let sp = c.reg[ESP]! & k;
  const pop = (): number => {
    let v: number;
    if (os32) {
      v = c.rd32(ssBase, sp);
      sp = (sp + 4) & k;
    } else {
      v = c.rd16(ssBase, sp);
      sp = (sp + 2) & k;
    }
    return v;
  };
  if (iret && c.flags & NT) {
    c.unsupported = 'IRET with NT set (a task return) is not emulated yet';
    c.requestStop();
    return;
  }
  const ip = pop();
  const cs = pop() & 0xffff;
  const fl = iret ? pop() : 0;
  if (iret && os32 && fl & VM && c.cpl === 0) {
    c.unsupported = 'IRET to virtual-8086 mode is not emulated yet';
    c.requestStop();
    return;
  }
  checkReturnTarget(c, cs);
  const d = desc;
  const rpl = cs & 3;
  const oldCpl = c.cpl;
  sp = (sp + n) & k;
  if (rpl === oldCpl) {
    cacheSegment(c, CS, cs, d);
    c.reg[ESP] = (c.reg[ESP]! & ~k) | sp;
  } else {
    const newEsp = pop();
    const ss = pop() & 0xffff;
    const csLo = d.lo;
    const csHi = d.hi;
    // The stack segment of the outer level, checked against that level.
    const err = ss & 0xfffc;
    if (err === 0) c.fault(VEC_GP, 0);
    if ((ss & 3) !== rpl) c.fault(VEC_GP, err);
    if (!readDescriptor(c, ss, d)) c.fault(VEC_GP, err);
    if (!(d.hi & D_S) || d.hi & D_CODE || !(d.hi & D_RW) || dpl(d.hi) !== rpl) c.fault(VEC_GP, err);
    if (!(d.hi & D_PRESENT)) c.fault(VEC_NP, err);
    c.cpl = rpl;
    c.setSegment(CS, cs, descBase(csLo, csHi), descLimit(csLo, csHi), csHi & FLAGS_MASK);
    cacheSegment(c, SS, ss, d);
    const k2 = c.spMask;
    c.reg[ESP] = (c.reg[ESP]! & ~k2) | ((newEsp + n) & k2);
    validateSegment(c, ES);
    validateSegment(c, DS);
    validateSegment(c, FS);
    validateSegment(c, GS);
  }
  c.eip = os32 ? ip : ip & 0xffff;
  if (iret) {
    let mask = TF | 0x0dd5 | NT | RF | 0x240000; // with AC and ID (bits 18, 21), as POPFD
    if (oldCpl === 0) mask |= IF | IOPL;
    else if (oldCpl <= ((c.flags >> 12) & 3)) mask |= IF;
    if (!os32) mask &= 0xffff;
    c.setFlags(fl, mask);
  }
}

/** Where the TSS keeps the stack of privilege level `level` (§7.2.1, §7.6). */
function tssStack(c: Cpu, level: number): { ss: number; esp: number } {
  const type = (c.trFlags >> 8) & 0xf;
  if (!(c.trFlags & D_PRESENT)) c.unsupported = 'a privilege change without a task register is not emulated';
  const big = type === T_TSS32 || type === T_TSS32_BUSY;
  const off = big ? 4 + level * 8 : 2 + level * 4;
  const size = big ? 8 : 4;
  if (off + size - 1 > c.trLimit) c.fault(VEC_TS, c.tr & 0xfffc);
  if (big) return { esp: c.sys32(c.trBase + off), ss: c.sys32(c.trBase + off + 4) & 0xffff };
  const w = c.sys32(c.trBase + off);
  return { esp: w & 0xffff, ss: w >>> 16 };
}

/**
 * Deliver `vector` through the IDT (§6.12): an interrupt or trap gate, 16- or 32-bit,
 * switching to the TSS's stack for the handler's level when that is more privileged.
 * Everything is checked and pushed before any register changes, so a fault on the way
 * leaves the interrupted state for the next delivery.
 */
export function protectedInterrupt(c: Cpu, vector: number, soft: boolean, code: number): void {
  const gateErr = vector * 8 + 2;
  if (vector * 8 + 7 > c.idtLimit) c.fault(VEC_GP, gateErr);
  const lo = c.sys32(c.idtBase + vector * 8);
  const hi = c.sys32(c.idtBase + vector * 8 + 4);
  const type = (hi >> 8) & 0x1f;
  switch (type) {
    case T_TASK:
      c.unsupported = `interrupt ${vector} through a task gate is not emulated yet`;
      c.requestStop();
      return;
    case T_INT16:
    case T_TRAP16:
    case T_INT32:
    case T_TRAP32:
      break;
    default:
      c.fault(VEC_GP, gateErr);
  }
  if (soft && dpl(hi) < c.cpl) c.fault(VEC_GP, gateErr);
  if (!(hi & D_PRESENT)) c.fault(VEC_NP, gateErr);
  const sel = lo >>> 16;
  const offset = (hi & 0xffff0000) | (lo & 0xffff);
  const err = sel & 0xfffc;
  if (err === 0) c.fault(VEC_GP, 0);
  const d = desc;
  if (!readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  if (!(d.hi & D_S) || !(d.hi & D_CODE)) c.fault(VEC_GP, err);
  let level = dpl(d.hi);
  if (level > c.cpl) c.fault(VEC_GP, err);
  if (!(d.hi & D_PRESENT)) c.fault(VEC_NP, err);
  if (d.hi & D_CONFORMING) level = c.cpl;
  const csLo = d.lo;
  const csHi = d.hi;
  const big = type >= T_INT32;
  let ssSel = c.sreg[SS]!;
  let ssBase = c.sbase[SS]!;
  let k = c.spMask;
  let esp = c.reg[ESP]!;
  let ssLo = 0;
  let ssHi = 0;
  const inner = level < c.cpl;
  if (inner) {
    const t = tssStack(c, level);
    const tsErr = t.ss & 0xfffc;
    if (tsErr === 0 || (t.ss & 3) !== level) c.fault(VEC_TS, tsErr);
    if (!readDescriptor(c, t.ss, d)) c.fault(VEC_TS, tsErr);
    if (dpl(d.hi) !== level || !(d.hi & D_S) || d.hi & D_CODE || !(d.hi & D_RW)) c.fault(VEC_TS, tsErr);
    if (!(d.hi & D_PRESENT)) c.fault(VEC_TS, tsErr);
    ssLo = d.lo;
    ssHi = d.hi;
    ssSel = t.ss;
    ssBase = descBase(ssLo, ssHi);
    k = ssHi & D_BIG ? -1 : 0xffff;
    esp = t.esp;
  }
  // Pushes on the handler's stack, as the handler's privilege level (supervisor).
  const oldCpl = c.cpl;
  const push = (v: number): void => {
    if (big) {
      esp = (esp & ~k) | ((esp - 4) & k);
      c.wr32(ssBase, esp & k, v);
    } else {
      esp = (esp & ~k) | ((esp - 2) & k);
      c.wr16(ssBase, esp & k, v & 0xffff);
    }
  };
  c.cpl = level;
  try {
    if (inner) {
      push(c.sreg[SS]!);
      push(c.reg[ESP]!);
    }
    push(c.getFlags());
    push(c.sreg[CS]!);
    push(c.eip);
    if (code >= 0) push(code);
  } catch (e) {
    c.cpl = oldCpl;
    throw e;
  }
  if (inner) {
    d.lo = ssLo;
    d.hi = ssHi;
    c.setSegment(SS, ssSel, ssBase, descLimit(ssLo, ssHi), ssHi & FLAGS_MASK);
  }
  c.reg[ESP] = esp;
  c.setSegment(CS, (sel & 0xfffc) | level, descBase(csLo, csHi), descLimit(csLo, csHi), csHi & FLAGS_MASK);
  c.eip = big ? offset : offset & 0xffff;
  c.flags &= ~(TF | VM | RF | NT | (type & 1 ? 0 : IF));
}

/** LLDT (§2.4.1): a null selector leaves no LDT. */
export function loadLdt(c: Cpu, sel: number): void {
  sel &= 0xffff;
  const err = sel & 0xfffc;
  if (err === 0) {
    c.ldtr = sel;
    c.ldtBase = 0;
    c.ldtLimit = 0;
    return;
  }
  const d = desc;
  if (sel & 4 || !readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  if (d.hi & D_S || ((d.hi >> 8) & 0xf) !== T_LDT) c.fault(VEC_GP, err);
  if (!(d.hi & D_PRESENT)) c.fault(VEC_NP, err);
  c.ldtr = sel;
  c.ldtBase = descBase(d.lo, d.hi);
  c.ldtLimit = descLimit(d.lo, d.hi);
}

/** LTR (§7.2.4): an available TSS in the GDT, which becomes busy. */
export function loadTr(c: Cpu, sel: number): void {
  sel &= 0xffff;
  const err = sel & 0xfffc;
  if (err === 0) c.fault(VEC_GP, 0);
  const d = desc;
  if (sel & 4 || !readDescriptor(c, sel, d)) c.fault(VEC_GP, err);
  const type = (d.hi >> 8) & 0xf;
  if (d.hi & D_S || (type !== T_TSS16 && type !== T_TSS32)) c.fault(VEC_GP, err);
  if (!(d.hi & D_PRESENT)) c.fault(VEC_NP, err);
  d.hi |= 0x200;
  c.sysW32(d.addr + 4, d.hi);
  c.tr = sel;
  c.trBase = descBase(d.lo, d.hi);
  c.trLimit = descLimit(d.lo, d.hi);
  c.trFlags = d.hi & FLAGS_MASK;
}

/**
 * LAR (`lsl` false) or LSL: the access rights or limit of the descriptor `sel`
 * names, or null (ZF clear) when it is not visible at the current CPL/RPL.
 */
export function loadAccess(c: Cpu, sel: number, lsl: boolean): number | null {
  sel &= 0xffff;
  if ((sel & 0xfffc) === 0) return null;
  const d = desc;
  if (!readDescriptor(c, sel, d)) return null;
  const hi = d.hi;
  if (hi & D_S) {
    if (!(hi & D_CODE) || !(hi & D_CONFORMING)) {
      if (dpl(hi) < c.cpl || dpl(hi) < (sel & 3)) return null;
    }
  } else {
    const type = (hi >> 8) & 0xf;
    const ok = lsl ? [1, 2, 3, 9, 11] : [1, 2, 3, 4, 5, 9, 11, 12];
    if (!ok.includes(type) || dpl(hi) < c.cpl || dpl(hi) < (sel & 3)) return null;
  }
  return lsl ? descLimit(d.lo, hi) : hi & 0x00f0ff00;
}

/** The TSS I/O permission bitmap check of IN/OUT above IOPL: #GP(0) unless every bit of the ports is clear (qemu's check_io). */
export function ioBitmapCheck(c: Cpu, port: number, size: number): void {
  const type = (c.trFlags >> 8) & 0xf;
  if (!(c.trFlags & D_PRESENT) || (type !== T_TSS32 && type !== T_TSS32_BUSY) || c.trLimit < 103) c.fault(VEC_GP, 0);
  const at = (c.sys32(c.trBase + 0x64) >>> 16) + (port >> 3);
  // Two bytes are read (as the high half of a dword, staying inside the TSS): the ports may straddle a byte.
  if (at + 1 > c.trLimit) c.fault(VEC_GP, 0);
  const bits = (c.sys32(c.trBase + at - 2) >>> 16) >> (port & 7);
  if (bits & ((1 << size) - 1)) c.fault(VEC_GP, 0);
}
