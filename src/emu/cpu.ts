/**
 * The CPU: an x86 interpreter covering the 8086 through the 386 in real mode.
 *
 * State lives in flat typed fields; instructions dispatch through handler tables
 * (`ops.ts`); arithmetic flags are computed lazily from the last ALU operation.
 * Faults are thrown as one preallocated sentinel and caught outside the hot loop,
 * so no instruction pays for a try/catch. Every memory access goes through
 * `lin*` helpers taking a linear address, which is where paging plugs in later;
 * segment loads go through `loadSeg`, which is where protected mode plugs in.
 */
import type { Memory } from './memory.js';
import type { IoBus } from './io.js';
import { OPS, alu } from './ops.js';
import { BlockCache } from './jit.js';
import { VdiskError } from '../errors.js';
import type { StateReader, StateWriter, Stateful } from './state/codec.js';

import {
  CS, SS, DS, EBX, ESP, EBP, ESI, EDI, CF, PF, AF, ZF, SF, TF, IF, OF, ARITH, FLAGS_WRITABLE, VEC_DB, VEC_UD, VEC_GP, VEC_DF, L_NONE, L_ADD, L_ADC, L_SUB, L_SBB, L_LOGIC, L_INC, L_DEC, L_SZP, SIGN, MASK, PARITY,
} from './consts.js';

export * from './consts.js';

/** What the CPU asks of the interrupt controller. */
export interface InterruptSource {
  /** The vector of the highest-priority pending interrupt, or -1 (acknowledges it). */
  acknowledge(): number;
}

/** Thrown (one shared instance) to abort an instruction with a fault. */
class Fault {
  vector = 0;
}
const FAULT = new Fault();

const BLOCK_LIMIT = 0;
const BLOCK_STOP = 1;
const BLOCK_HALT = 2;

/** Why the CPU stopped running a batch. */
export type StopReason = 'limit' | 'halt' | 'stop' | 'triple-fault';

/** The processor. */
export class Cpu implements Stateful {
  /** General registers EAX..EDI, ModRM order. */
  readonly reg = new Int32Array(8);
  /** Segment selectors ES, CS, SS, DS, FS, GS. */
  readonly sreg = new Uint16Array(6);
  /** Segment bases (linear). */
  readonly sbase = new Int32Array(6);
  /** `sbase[CS]` as a plain field, read by every instruction fetch. */
  csBase = 0;
  eip = 0;
  /** Static flag bits; the arithmetic ones are valid only when `lop === L_NONE`. */
  flags = 0x0002;
  lop = L_NONE;
  lres = 0;
  ldst = 0;
  lsrc = 0;
  lsz = 1;

  cr0 = 0x00000010;
  /** Set when the guest asks for something stage 1 does not emulate (protected mode). */
  unsupported: string | null = null;
  cr2 = 0;
  cr3 = 0;
  readonly dr = new Int32Array(8);
  gdtBase = 0;
  gdtLimit = 0xffff;
  idtBase = 0;
  idtLimit = 0x3ff;

  // Per-instruction decode state.
  startEip = 0;
  segOv = -1;
  os32 = false;
  as32 = false;
  rep = 0;
  eaBase = 0;
  eaOff = 0;

  /** Set by the interrupt controller when it has a request for the CPU (use {@link setIrq}). */
  irqLine = false;
  /**
   * True when the hot loop must look at interrupts, HLT, the interrupt shadow or TF
   * before the next instruction; one field so the common case tests one thing.
   */
  attention = true;
  halted = false;
  /** Instructions during which interrupts stay blocked (after STI, MOV SS). */
  inhibit = 0;
  /** Set (through {@link requestStop}) to end the current batch after the running instruction. */
  stopRequested = false;
  /** Set when an exception could not be delivered twice over. */
  tripleFault = false;
  /** Instructions retired since reset. */
  instructions = 0;

  /** Handler for the BIOS trap opcode `0F FF nn`; returns false to raise #UD. */
  trap: ((cpu: Cpu, n: number) => boolean) | null = null;
  /** Called for an unknown opcode before #UD is delivered (for --debug logging). */
  onUndefined: ((cpu: Cpu, cs: number, ip: number) => void) | null = null;
  intr: InterruptSource | null = null;

  readonly ram: Uint8Array;
  readonly ramSize: number;
  /** Compiled hot blocks (a cache, not state). */
  private readonly blocks = new BlockCache();
  /** The A20 address mask, mirrored from Memory so the hot path reads one field. */
  amask: number;

  constructor(
    readonly mem: Memory,
    readonly io: IoBus,
  ) {
    this.ram = mem.ram;
    this.ramSize = mem.ram.length;
    this.amask = mem.a20Mask;
    mem.onA20 = (mask) => (this.amask = mask);
    this.reset();
  }

  /** Power-on state: CS:IP = F000:FFF0, real mode. */
  reset(): void {
    this.reg.fill(0);
    for (let i = 0; i < 6; i++) this.loadSeg(i, 0);
    this.loadSeg(CS, 0xf000);
    this.eip = 0xfff0;
    this.flags = 0x0002;
    this.lop = L_NONE;
    this.cr0 = 0x10;
    this.idtBase = 0;
    this.idtLimit = 0x3ff;
    this.halted = false;
    this.attention = true;
    this.tripleFault = false;
  }

  /**
   * The architectural state between two instructions (the lazy flags as they are, so
   * the resumed guest computes the very same FLAGS); per-instruction decode state is
   * idle there and not saved.
   */
  saveState(w: StateWriter): void {
    for (const v of this.reg) w.i32(v);
    for (const v of this.sreg) w.u16(v);
    for (const v of this.sbase) w.i32(v);
    w.u32(this.eip).u32(this.flags).u8(this.lop).i32(this.lres).i32(this.ldst).i32(this.lsrc).u8(this.lsz);
    w.u32(this.cr0).u32(this.cr2).u32(this.cr3);
    for (const v of this.dr) w.i32(v);
    w.i32(this.gdtBase).u32(this.gdtLimit).i32(this.idtBase).u32(this.idtLimit);
    w.bool(this.irqLine).bool(this.halted).u8(this.inhibit).f64(this.instructions);
  }
  loadState(r: StateReader): void {
    for (let i = 0; i < 8; i++) this.reg[i] = r.i32('general register');
    for (let i = 0; i < 6; i++) this.sreg[i] = r.u16('segment selector');
    for (let i = 0; i < 6; i++) this.sbase[i] = r.i32('segment base');
    this.csBase = this.sbase[CS]!;
    this.eip = r.u32('EIP');
    this.flags = r.u32('EFLAGS');
    this.lop = r.u8('lazy flags operation');
    this.lres = r.i32('lazy result');
    this.ldst = r.i32('lazy destination');
    this.lsrc = r.i32('lazy source');
    this.lsz = r.u8('lazy operand size');
    if (this.lop > L_SZP || (this.lsz !== 1 && this.lsz !== 2 && this.lsz !== 4)) {
      throw new VdiskError('E_CORRUPT', `${r.what}: lazy flags (operation ${this.lop}, size ${this.lsz}) out of range`);
    }
    this.cr0 = r.u32('CR0');
    this.cr2 = r.u32('CR2');
    this.cr3 = r.u32('CR3');
    for (let i = 0; i < 8; i++) this.dr[i] = r.i32('debug register');
    this.gdtBase = r.i32('GDT base');
    this.gdtLimit = r.u32('GDT limit');
    this.idtBase = r.i32('IDT base');
    this.idtLimit = r.u32('IDT limit');
    this.irqLine = r.bool('INTR');
    this.halted = r.bool('halted');
    this.inhibit = r.u8('interrupt shadow');
    if (this.inhibit > 1) throw new VdiskError('E_CORRUPT', `${r.what}: interrupt shadow ${this.inhibit} is not 0 or 1`);
    this.instructions = r.f64('instructions retired');
    this.resetPrefixes();
    this.blocks.clear();
    this.unsupported = null;
    this.tripleFault = false;
    this.stopRequested = false;
    // The hot loop recomputes this from the state above before the next instruction.
    this.attention = true;
  }

  // ---------------------------------------------------------------- memory
  // Linear-address accessors; the A20 gate masks here, paging would too.

  /** Read a byte at a linear address. */
  lin8(a: number): number {
    a &= this.amask;
    return a >= 0 && a < this.ramSize ? this.ram[a]! : this.mem.readUnmapped(a >>> 0);
  }
  /** Write a byte at a linear address. */
  linW8(a: number, v: number): void {
    a &= this.amask;
    if (a >= 0 && a < this.ramSize) this.ram[a] = v;
    else this.mem.writeUnmapped(a >>> 0, v);
  }
  lin16(a: number): number {
    const p = a & this.amask;
    if (p >= 0 && p + 1 < this.ramSize) return this.ram[p]! | (this.ram[p + 1]! << 8);
    return this.lin8(a) | (this.lin8(a + 1) << 8);
  }
  linW16(a: number, v: number): void {
    const p = a & this.amask;
    if (p >= 0 && p + 1 < this.ramSize) {
      this.ram[p] = v;
      this.ram[p + 1] = v >> 8;
    } else {
      this.linW8(a, v & 0xff);
      this.linW8(a + 1, (v >> 8) & 0xff);
    }
  }

  // Segment:offset accessors. With 16-bit addressing a word at offset FFFFh wraps
  // to offset 0 of the same segment, as the 8086 does.

  rd8(base: number, off: number): number {
    return this.lin8(base + off);
  }
  wr8(base: number, off: number, v: number): void {
    this.linW8(base + off, v);
  }
  rd16(base: number, off: number): number {
    if (off !== 0xffff) {
      const p = (base + off) & this.amask;
      if (p >= 0 && p + 1 < this.ramSize) return this.ram[p]! | (this.ram[p + 1]! << 8);
      return this.lin16(base + off);
    }
    return this.lin8(base + off) | (this.lin8(base) << 8);
  }
  wr16(base: number, off: number, v: number): void {
    if (off !== 0xffff) {
      const p = (base + off) & this.amask;
      if (p >= 0 && p + 1 < this.ramSize) {
        this.ram[p] = v;
        this.ram[p + 1] = v >> 8;
      } else this.linW16(base + off, v);
      return;
    }
    this.linW8(base + off, v & 0xff);
    this.linW8(base, (v >> 8) & 0xff);
  }
  rd32(base: number, off: number): number {
    if (off <= 0xffff && off > 0xfffc) {
      return this.rd16(base, off) | (this.rd16(base, (off + 2) & 0xffff) << 16);
    }
    return this.lin16(base + off) | (this.lin16(base + off + 2) << 16);
  }
  wr32(base: number, off: number, v: number): void {
    if (off <= 0xffff && off > 0xfffc) {
      this.wr16(base, off, v & 0xffff);
      this.wr16(base, (off + 2) & 0xffff, (v >>> 16) & 0xffff);
      return;
    }
    this.linW16(base + off, v & 0xffff);
    this.linW16(base + off + 2, (v >>> 16) & 0xffff);
  }
  rdSz(sz: number, base: number, off: number): number {
    return sz === 1 ? this.rd8(base, off) : sz === 2 ? this.rd16(base, off) : this.rd32(base, off);
  }
  wrSz(sz: number, base: number, off: number, v: number): void {
    if (sz === 1) this.wr8(base, off, v);
    else if (sz === 2) this.wr16(base, off, v);
    else this.wr32(base, off, v);
  }

  // ---------------------------------------------------------------- fetch

  fetch8(): number {
    const ip = this.eip;
    const a = (this.csBase + ip) & this.amask;
    this.eip = (ip + 1) & 0xffff;
    return a >= 0 && a < this.ramSize ? this.ram[a]! : this.mem.readUnmapped(a >>> 0);
  }
  /** The next instruction byte, without consuming it (a handler choosing its path by ModRM). */
  peek8(): number {
    const a = (this.csBase + this.eip) & this.amask;
    return a >= 0 && a < this.ramSize ? this.ram[a]! : this.mem.readUnmapped(a >>> 0);
  }
  fetch16(): number {
    const ip = this.eip;
    const a = (this.csBase + ip) & this.amask;
    this.eip = (ip + 2) & 0xffff;
    if (ip !== 0xffff && a >= 0 && a + 1 < this.ramSize) return this.ram[a]! | (this.ram[a + 1]! << 8);
    return this.lin8(this.csBase + ip) | (this.lin8(this.csBase + ((ip + 1) & 0xffff)) << 8);
  }
  fetch32(): number {
    const lo = this.fetch16();
    return lo | (this.fetch16() << 16);
  }
  /** Fetch an immediate of operand size `sz`. */
  fetchSz(sz: number): number {
    return sz === 1 ? this.fetch8() : sz === 2 ? this.fetch16() : this.fetch32();
  }
  fetchS8(): number {
    return (this.fetch8() << 24) >> 24;
  }

  // ---------------------------------------------------------------- registers

  r8(i: number): number {
    return i < 4 ? this.reg[i]! & 0xff : (this.reg[i - 4]! >> 8) & 0xff;
  }
  setR8(i: number, v: number): void {
    if (i < 4) this.reg[i] = (this.reg[i]! & ~0xff) | (v & 0xff);
    else this.reg[i - 4] = (this.reg[i - 4]! & ~0xff00) | ((v & 0xff) << 8);
  }
  r16(i: number): number {
    return this.reg[i]! & 0xffff;
  }
  setR16(i: number, v: number): void {
    this.reg[i] = (this.reg[i]! & ~0xffff) | (v & 0xffff);
  }
  r32(i: number): number {
    return this.reg[i]!;
  }
  rSz(sz: number, i: number): number {
    return sz === 1 ? this.r8(i) : sz === 2 ? this.reg[i]! & 0xffff : this.reg[i]!;
  }
  setRSz(sz: number, i: number, v: number): void {
    if (sz === 1) this.setR8(i, v);
    else if (sz === 2) this.reg[i] = (this.reg[i]! & ~0xffff) | (v & 0xffff);
    else this.reg[i] = v;
  }

  /** The interrupt controller's INTR output. */
  setIrq(on: boolean): void {
    this.irqLine = on;
    if (on) this.attention = true;
  }
  /** End the current batch after the running instruction (the hot loop sees it through `attention`). */
  requestStop(): void {
    this.stopRequested = true;
    this.attention = true;
  }
  /** Enter the HLT state. */
  halt(): void {
    this.halted = true;
    this.attention = true;
  }
  /** Block interrupts for one instruction (after STI, MOV SS, POP SS). */
  shadowInterrupts(): void {
    this.inhibit = 1;
    this.attention = true;
  }

  /** Write CR0; PE switches segment loads to descriptors, PG (paging) is stage 2 and stops the machine. */
  setCr0(v: number): void {
    this.cr0 = (v | 0x10) >>> 0;
    if (v & 0x80000000) {
      this.unsupported = 'paging (CR0.PG) is not emulated yet';
      this.requestStop();
    }
  }

  /** CR0.PE: segment loads read descriptors (enough for the "unreal mode" trick DOS memory managers use). */
  get protectedMode(): boolean {
    return (this.cr0 & 1) !== 0;
  }

  /** Load a segment register (real mode: base = selector × 16). */
  loadSeg(seg: number, sel: number): void {
    this.sreg[seg] = sel;
    if (!(this.cr0 & 1)) {
      this.sbase[seg] = sel << 4;
      if (seg === CS) this.csBase = sel << 4;
      return;
    }
    // Protected mode (stage 1 subset): take the base from the GDT; limits are not
    // enforced, 32-bit code segments and the LDT are stage 2.
    if ((sel & ~3) === 0) {
      this.sbase[seg] = 0;
      if (seg === CS) this.csBase = 0;
      return;
    }
    const d = this.gdtBase + (sel & ~7);
    if (sel & 4 || (sel | 7) > this.gdtLimit) this.fault(VEC_GP);
    const base = this.lin16(d + 2) | (this.lin8(d + 4) << 16) | (this.lin8(d + 7) << 24);
    if (seg === CS && this.lin8(d + 6) & 0x40) {
      this.unsupported = '32-bit protected-mode code is not emulated yet';
      this.requestStop();
    }
    this.sbase[seg] = base;
    if (seg === CS) this.csBase = base;
  }

  // ---------------------------------------------------------------- ModRM

  /** Decode the memory operand of `modrm` into eaBase/eaOff (mod ≠ 3). */
  decodeEA(modrm: number): void {
    const mod = modrm >> 6;
    const rm = modrm & 7;
    if (!this.as32) {
      let off: number;
      let seg = DS;
      const r = this.reg;
      switch (rm) {
        case 0: off = r[EBX]! + r[ESI]!; break;
        case 1: off = r[EBX]! + r[EDI]!; break;
        case 2: off = r[EBP]! + r[ESI]!; seg = SS; break;
        case 3: off = r[EBP]! + r[EDI]!; seg = SS; break;
        case 4: off = r[ESI]!; break;
        case 5: off = r[EDI]!; break;
        case 6:
          if (mod === 0) off = this.fetch16();
          else { off = r[EBP]!; seg = SS; }
          break;
        default: off = r[EBX]!; break;
      }
      if (mod === 1) off += this.fetchS8();
      else if (mod === 2) off += this.fetch16();
      this.eaOff = off & 0xffff;
      this.eaBase = this.sbase[this.segOv >= 0 ? this.segOv : seg]!;
      return;
    }
    let off: number;
    let seg = DS;
    if (rm === 4) {
      const sib = this.fetch8();
      const base = sib & 7;
      const index = (sib >> 3) & 7;
      if (base === 5 && mod === 0) off = this.fetch32();
      else {
        off = this.reg[base]!;
        if (base === ESP || base === EBP) seg = SS;
      }
      if (index !== 4) off += this.reg[index]! << (sib >> 6);
    } else if (rm === 5 && mod === 0) {
      off = this.fetch32();
    } else {
      off = this.reg[rm]!;
      if (rm === EBP) seg = SS;
    }
    if (mod === 1) off += this.fetchS8();
    else if (mod === 2) off += this.fetch32();
    this.eaOff = off >>> 0;
    this.eaBase = this.sbase[this.segOv >= 0 ? this.segOv : seg]!;
  }

  /** Read the r/m operand (decoding the address first for memory). */
  readRM(sz: number, modrm: number): number {
    if (modrm >= 0xc0) return this.rSz(sz, modrm & 7);
    this.decodeEA(modrm);
    return this.rdSz(sz, this.eaBase, this.eaOff);
  }
  /** Write the r/m operand; for memory, uses the address decoded by readRM/decodeEA. */
  writeRM(sz: number, modrm: number, v: number): void {
    if (modrm >= 0xc0) this.setRSz(sz, modrm & 7, v);
    else this.wrSz(sz, this.eaBase, this.eaOff, v);
  }

  // ---------------------------------------------------------------- flags

  /** Record an ALU result for lazy flag evaluation. */
  setLazy(op: number, res: number, dst: number, src: number, sz: number): void {
    this.lop = op;
    this.lres = res;
    this.ldst = dst;
    this.lsrc = src;
    this.lsz = sz;
  }

  getCF(): boolean {
    switch (this.lop) {
      case L_ADD: return this.lres >>> 0 < this.ldst >>> 0;
      case L_ADC: return this.lres >>> 0 <= this.ldst >>> 0;
      case L_SUB: return this.ldst >>> 0 < this.lsrc >>> 0;
      case L_SBB: return this.ldst >>> 0 <= this.lsrc >>> 0;
      case L_LOGIC: return false;
      default: return (this.flags & CF) !== 0; // L_NONE, L_INC, L_DEC, L_SZP keep CF in flags
    }
  }
  getZF(): boolean {
    return this.lop !== L_NONE ? this.lres === 0 : (this.flags & ZF) !== 0;
  }
  getSF(): boolean {
    return this.lop !== L_NONE ? (this.lres & SIGN[this.lsz]!) !== 0 : (this.flags & SF) !== 0;
  }
  getOF(): boolean {
    const s = SIGN[this.lsz]!;
    switch (this.lop) {
      case L_ADD:
      case L_ADC: return ((this.ldst ^ this.lres) & (this.lsrc ^ this.lres) & s) !== 0;
      case L_SUB:
      case L_SBB: return ((this.ldst ^ this.lsrc) & (this.ldst ^ this.lres) & s) !== 0;
      case L_LOGIC: return false;
      case L_INC: return this.lres === s;
      case L_DEC: return this.lres === ((s - 1) & MASK[this.lsz]!);
      default: return (this.flags & OF) !== 0; // L_NONE, L_SZP
    }
  }
  getPF(): boolean {
    return this.lop !== L_NONE ? PARITY[this.lres & 0xff] !== 0 : (this.flags & PF) !== 0;
  }
  getAF(): boolean {
    if (this.lop === L_NONE) return (this.flags & AF) !== 0;
    if (this.lop === L_LOGIC) return false;
    if (this.lop === L_SZP) return (this.flags & AF) !== 0;
    return ((this.ldst ^ this.lsrc ^ this.lres) & 0x10) !== 0;
  }

  /** Fold the lazy flags into `flags` (one switch on the operation, not six getters). */
  materialize(): void {
    const op = this.lop;
    if (op === L_NONE) return;
    const res = this.lres;
    const dst = this.ldst;
    const src = this.lsrc;
    const s = SIGN[this.lsz]!;
    let f = PARITY[res & 0xff]! | (res === 0 ? ZF : 0) | (res & s ? SF : 0);
    switch (op) {
      case L_ADD:
        f |= (res >>> 0 < dst >>> 0 ? CF : 0) | ((dst ^ res) & (src ^ res) & s ? OF : 0) | ((dst ^ src ^ res) & AF);
        break;
      case L_ADC:
        f |= (res >>> 0 <= dst >>> 0 ? CF : 0) | ((dst ^ res) & (src ^ res) & s ? OF : 0) | ((dst ^ src ^ res) & AF);
        break;
      case L_SUB:
        f |= (dst >>> 0 < src >>> 0 ? CF : 0) | ((dst ^ src) & (dst ^ res) & s ? OF : 0) | ((dst ^ src ^ res) & AF);
        break;
      case L_SBB:
        f |= (dst >>> 0 <= src >>> 0 ? CF : 0) | ((dst ^ src) & (dst ^ res) & s ? OF : 0) | ((dst ^ src ^ res) & AF);
        break;
      case L_LOGIC:
        break;
      case L_INC:
        f |= (this.flags & CF) | (res === s ? OF : 0) | ((dst ^ src ^ res) & AF);
        break;
      case L_DEC:
        f |= (this.flags & CF) | (res === ((s - 1) & MASK[this.lsz]!) ? OF : 0) | ((dst ^ src ^ res) & AF);
        break;
      default: // L_SZP
        f |= this.flags & (CF | OF | AF);
    }
    this.flags = (this.flags & ~ARITH) | f;
    this.lop = L_NONE;
  }

  /**
   * Set CF and OF to `cfof` (bits CF|OF) leaving SF, ZF, PF and AF as they are, without
   * materialising them (rotates): AF is fixed now, SF/ZF/PF stay lazy in `lres`.
   */
  setCFOF(cfof: number): void {
    const op = this.lop;
    if (op === L_NONE) {
      this.flags = (this.flags & ~(CF | OF)) | cfof;
      return;
    }
    const af = op === L_LOGIC ? 0 : op === L_SZP ? this.flags & AF : (this.ldst ^ this.lsrc ^ this.lres) & AF;
    this.flags = (this.flags & ~(CF | OF | AF)) | cfof | af;
    this.lop = L_SZP;
  }

  /** The whole FLAGS/EFLAGS value. */
  getFlags(): number {
    this.materialize();
    return this.flags;
  }
  /** Set FLAGS from a POPF/IRET value (only bits real mode lets software change). */
  setFlags(v: number, mask = FLAGS_WRITABLE): void {
    this.lop = L_NONE;
    this.flags = ((this.flags & ~mask) | (v & mask) | 2) & 0xffff7fd7;
    if (this.flags & TF || (this.flags & IF && this.irqLine)) this.attention = true;
  }
  /** Set the arithmetic flags to `f` (bits in ARITH), eagerly. */
  setArith(f: number): void {
    this.lop = L_NONE;
    this.flags = (this.flags & ~ARITH) | (f & ARITH);
  }
  /** Set CF, OF and AF from `f` now and SF, ZF, PF lazily from `res` (shifts, multiplies). */
  setSZPLazy(f: number, res: number, sz: number): void {
    this.flags = (this.flags & ~(CF | OF | AF)) | (f & (CF | OF | AF));
    this.lop = L_SZP;
    this.lres = res;
    this.lsz = sz;
  }

  /** SF, ZF and PF of a result, as flag bits. */
  szp(res: number, sz: number): number {
    return (res & SIGN[sz]! ? SF : 0) | (res === 0 ? ZF : 0) | PARITY[res & 0xff]!;
  }
  setCFbit(on: boolean): void {
    this.materialize();
    this.flags = on ? this.flags | CF : this.flags & ~CF;
  }

  /** Evaluate condition code `cc` (the low nibble of Jcc/SETcc). */
  cond(cc: number): boolean {
    let r: boolean;
    switch (cc >> 1) {
      case 0: r = this.getOF(); break;
      case 1: r = this.getCF(); break;
      case 2: r = this.getZF(); break;
      case 3: r = this.getCF() || this.getZF(); break;
      case 4: r = this.getSF(); break;
      case 5: r = this.getPF(); break;
      case 6: r = this.getSF() !== this.getOF(); break;
      default: r = this.getZF() || this.getSF() !== this.getOF(); break;
    }
    return cc & 1 ? !r : r;
  }

  // ---------------------------------------------------------------- stack

  push16(v: number): void {
    const sp = (this.reg[ESP]! - 2) & 0xffff;
    this.wr16(this.sbase[SS]!, sp, v & 0xffff);
    this.reg[ESP] = (this.reg[ESP]! & ~0xffff) | sp;
  }
  push32(v: number): void {
    const sp = (this.reg[ESP]! - 4) & 0xffff;
    this.wr32(this.sbase[SS]!, sp, v);
    this.reg[ESP] = (this.reg[ESP]! & ~0xffff) | sp;
  }
  pop16(): number {
    const sp = this.reg[ESP]! & 0xffff;
    const v = this.rd16(this.sbase[SS]!, sp);
    this.reg[ESP] = (this.reg[ESP]! & ~0xffff) | ((sp + 2) & 0xffff);
    return v;
  }
  pop32(): number {
    const sp = this.reg[ESP]! & 0xffff;
    const v = this.rd32(this.sbase[SS]!, sp);
    this.reg[ESP] = (this.reg[ESP]! & ~0xffff) | ((sp + 4) & 0xffff);
    return v;
  }
  /** Push with the current operand size. */
  pushOs(v: number): void {
    if (this.os32) this.push32(v);
    else this.push16(v);
  }
  popOs(): number {
    return this.os32 ? this.pop32() : this.pop16();
  }

  // ---------------------------------------------------------------- interrupts

  /** Abort the current instruction with exception `vector` (restarts at its first byte). */
  fault(vector: number): never {
    FAULT.vector = vector;
    throw FAULT;
  }
  /** Raise #UD for the current instruction. */
  undefinedOpcode(): never {
    if (this.onUndefined) this.onUndefined(this, this.sreg[CS]!, this.startEip);
    return this.fault(VEC_UD);
  }

  /** Deliver interrupt `vector` through the real-mode IVT. Returns false on a triple fault. */
  interrupt(vector: number): boolean {
    if (this.cr0 & 1) {
      this.unsupported = `interrupt ${vector} in protected mode is not emulated yet`;
      this.requestStop();
      return false;
    }
    if (vector * 4 + 3 > this.idtLimit) {
      // No valid vector: #GP, then double fault, then shutdown.
      if (vector === VEC_DF || vector * 4 + 3 > this.idtLimit) {
        if (VEC_DF * 4 + 3 > this.idtLimit || vector === VEC_DF) {
          this.tripleFault = true;
          this.requestStop();
          return false;
        }
        vector = VEC_DF;
      }
    }
    this.push16(this.getFlags());
    this.push16(this.sreg[CS]!);
    this.push16(this.eip);
    this.flags &= ~(IF | TF);
    const a = this.idtBase + vector * 4;
    this.eip = this.lin16(a);
    this.loadSeg(CS, this.lin16(a + 2));
    return true;
  }

  /** Fault delivery: restart at the faulting instruction and enter the handler. */
  private deliverFault(vector: number): void {
    this.eip = this.startEip;
    this.interrupt(vector);
  }

  /** Execute one instruction (faults are delivered; used by tests). */
  step(): void {
    try {
      this.stepRaw();
    } catch (e) {
      if (e !== FAULT) throw e;
      this.resetPrefixes();
      this.deliverFault(FAULT.vector);
    }
  }

  /** Decode and execute one instruction; may throw the fault sentinel. */
  stepRaw(): void {
    // Prefix handlers restore segOv/os32/as32/rep after their instruction; a fault
    // resets them in the catch path.
    this.startEip = this.eip;
    OPS[this.fetch8()]!(this);
  }

  private resetPrefixes(): void {
    this.segOv = -1;
    this.os32 = false;
    this.as32 = false;
    this.rep = 0;
  }

  /** Run up to `limit` instructions; returns why it stopped. */
  run(limit: number): StopReason {
    const end = this.instructions + limit;
    this.stopRequested = false;
    for (;;) {
      try {
        const r = this.runBlock(end);
        // A stop requested by the batch's last instruction still counts as a stop.
        if (r === BLOCK_LIMIT && !this.stopRequested) return 'limit';
        if (r === BLOCK_HALT) return 'halt';
        return this.tripleFault ? 'triple-fault' : this.halted ? 'halt' : 'stop';
      } catch (e) {
        if (e !== FAULT) throw e;
        this.resetPrefixes();
        this.instructions++;
        this.deliverFault(FAULT.vector);
        if (this.tripleFault) return 'triple-fault';
      }
    }
  }

  /**
   * The hot loop, kept free of try/catch (faults unwind to {@link run}). It returns
   * a number and touches no object after the loop: V8 optimises it on-stack while
   * the loop runs, and code after the loop that never ran before would deoptimise
   * it at every batch ("insufficient type feedback"). Everything rare (interrupts,
   * HLT, the interrupt shadow, TF, a stop request) hides behind one `attention` test.
   */
  private runBlock(end: number): number {
    const ram = this.ram;
    const ramSize = this.ramSize;
    const ops = OPS;
    const reg = this.reg;
    const blocks = this.blocks;
    const jit = blocks.enabled;
    let n = this.instructions;
    while (n < end) {
      if (this.attention) {
        if (this.stopRequested) return BLOCK_STOP;
        if (this.irqLine && this.inhibit === 0 && (this.flags & IF) !== 0 && this.intr) {
          const v = this.intr.acknowledge();
          if (v >= 0) {
            this.halted = false;
            this.interrupt(v);
          }
        }
        if (this.halted) return BLOCK_HALT;
        if (this.inhibit > 0) this.inhibit--;
        // A request stays pending while IF=0; STI, POPF and IRET raise attention again.
        this.attention = (this.irqLine && (this.flags & IF) !== 0) || this.inhibit !== 0 || (this.flags & TF) !== 0;
        if (this.flags & TF) {
          this.stepRaw();
          this.instructions = ++n;
          if (this.flags & TF) this.interrupt(VEC_DB);
          continue;
        }
      }
      const ip = this.eip;
      const a = (this.csBase + ip) & this.amask;
      if (jit && !this.attention) {
        const b = blocks.lookup(this, a, ip);
        if (b !== null && n + b.count <= end) {
          const k = b.fn(this, reg, ram, alu, ops);
          if (k >= 0) {
            this.instructions = n += k;
            continue;
          }
          blocks.drop(a);
        }
      }
      // Inline fetch of the opcode byte.
      this.startEip = ip;
      this.eip = (ip + 1) & 0xffff;
      const op = a >= 0 && a < ramSize ? ram[a]! : this.mem.readUnmapped(a >>> 0);
      // Handlers are called as plain functions (no receiver), which V8's call builtin does a little faster.
      if (op === 0x66) {
        // The operand-size prefix is common in 386 code: handle it here, saving a dispatch.
        this.os32 = true;
        const h = ops[this.fetch8()]!;
        h(this);
        this.os32 = false;
      } else {
        const h = ops[op]!;
        h(this);
      }
      this.instructions = ++n;
    }
    return BLOCK_LIMIT;
  }
}
