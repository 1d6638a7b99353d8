/**
 * The CPU: an x86 interpreter covering the 8086 through the 386, in real mode and in
 * protected mode with paging.
 *
 * State lives in flat typed fields; instructions dispatch through handler tables
 * (`ops.ts`); arithmetic flags are computed lazily from the last ALU operation.
 * Faults are thrown as one preallocated sentinel and caught outside the hot loop,
 * so no instruction pays for a try/catch. Every memory access goes through
 * `lin*` helpers taking a linear address; with paging off they index RAM directly
 * and only their slow path ({@link Cpu.physical}) translates through `paging.ts`.
 * Segment loads, far transfers and interrupts in protected mode live in
 * `descriptors.ts`. 16-bit code without paging runs in one hot loop, everything else
 * (32-bit code segments, paging) in a second one: mode-dependent work happens when a
 * mode changes, never per instruction.
 */
import type { Memory } from './memory.js';
import type { IoBus } from './io.js';
import { OPS, alu } from './ops.js';
import { BlockCache } from './jit.js';
import { Fpu } from './fpu.js';
import { Mmu, CR0_PG, CR4_PGE } from './paging.js';
import { farTransfer, ioBitmapCheck, loadSegProtected, protectedInterrupt } from './descriptors.js';
import { VdiskError } from '../errors.js';
import type { StateReader, StateWriter, Stateful } from './state/codec.js';

import {
  CS, SS, DS, EBX, ESP, EBP, ESI, EDI, CF, PF, AF, ZF, SF, TF, IF, OF, ARITH, FLAGS_WRITABLE, VEC_DB, VEC_UD, VEC_GP, VEC_DF, VEC_PF, L_NONE, L_ADD, L_ADC, L_SUB, L_SBB, L_LOGIC, L_INC, L_DEC, L_SZP, SIGN, MASK, PARITY,
} from './consts.js';

export * from './consts.js';

/** What the CPU asks of the interrupt controller. */
export interface InterruptSource {
  /** The vector of the highest-priority pending interrupt, or -1 (acknowledges it). */
  acknowledge(): number;
}

/** CR4 bits software may set: TSD (RDTSC at CPL 0 only), DE, PSE, PGE. */
const CR4_WRITABLE = 0x4 | 0x8 | 0x10 | 0x80;
/** Model-specific registers (Intel SDM vol. 4 table 2-2). */
const MSR_TSC = 0x10;
const MSR_PLATFORM_ID = 0x17;
const MSR_APIC_BASE = 0x1b;
const MSR_BIOS_SIGN_ID = 0x8b;

/** Thrown (one shared instance) to abort an instruction with a fault. */
class Fault {
  vector = 0;
  /** The error code, for the vectors that push one. */
  code = 0;
}
const FAULT = new Fault();

const BLOCK_LIMIT = 0;
const BLOCK_STOP = 1;
const BLOCK_HALT = 2;
/** The code size or paging changed: {@link Cpu.run} picks the loop for the new mode. */
const BLOCK_MODE = 3;
/** {@link Cpu.attend} ran one instruction under TF. */
const ATTEND_STEPPED = -2;
const ATTEND_RUN = -1;

/** Whether exception `v` pushes an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC). */
function hasErrorCode(v: number): boolean {
  return v === 8 || (v >= 10 && v <= 14) || v === 17;
}
/** qemu's "contributory" exceptions for the double-fault rule (§6.15, table 6-5). */
function contributory(v: number): boolean {
  return v === 0 || (v >= 10 && v <= 13);
}

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
  /** Segment limits (bytes, inclusive) as loaded; not enforced on data accesses yet. */
  readonly slimit = new Int32Array(6);
  /** Descriptor attribute bits as loaded (the high dword's bits 8-23: type, S, DPL, P, AVL, D/B, G). */
  readonly sflags = new Int32Array(6);
  /** Current privilege level (0 in real mode). */
  cpl = 0;
  /** CS.D: the code segment defaults to 32-bit operands and addresses. */
  code32 = false;
  /** EIP wraps at this mask: 0xFFFF in 16-bit code segments, all ones in 32-bit ones. */
  ipMask = 0xffff;
  /** SS.B: the stack pointer is ESP (mask all ones) rather than SP (0xFFFF). */
  spMask = 0xffff;
  /** The code size or paging changed during the running instruction (see BLOCK_MODE). */
  modeDirty = false;
  /** LDTR and TR selectors with their bases, limits and attributes. */
  ldtr = 0;
  ldtBase = 0;
  ldtLimit = 0;
  tr = 0;
  trBase = 0;
  trLimit = 0;
  trFlags = 0;
  /** The exception being delivered, for the double-fault rule (-1: none). */
  oldException = -1;
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
  cr4 = 0;
  /** CR0.PG (and PE): linear addresses are translated by {@link mmu}. */
  paging = false;
  /** Bound of the direct RAM path of the accessors: the RAM size with paging off, 0 with it on. */
  directLimit: number;
  /** The page walker and TLB. */
  readonly mmu: Mmu;
  /** The x87 FPU. */
  readonly fpu = new Fpu();
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
  /** Called for an MSR the CPU does not have, before #GP(0) is delivered (for --debug logging). */
  onUnknownMsr: ((cpu: Cpu, msr: number, write: boolean) => void) | null = null;
  /** Added to the instruction count to give the time-stamp counter (WRMSR 10h sets it). */
  tscOffset = 0;
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
    this.directLimit = this.ramSize;
    this.mmu = new Mmu(this);
    this.amask = mem.a20Mask;
    mem.onA20 = (mask) => (this.amask = mask);
    this.reset();
  }

  /** Power-on state: CS:IP = F000:FFF0, real mode. */
  reset(): void {
    this.reg.fill(0);
    this.dr.fill(0);
    this.dr[6] = 0xffff0ff0 | 0;
    this.dr[7] = 0x400;
    this.tscOffset = 0;
    this.fpu.init();
    this.cr0 = 0x10;
    this.cr4 = 0;
    this.setPaging(false);
    this.cpl = 0;
    for (let i = 0; i < 6; i++) {
      this.loadSeg(i, 0);
      this.slimit[i] = 0xffff;
      this.sflags[i] = 0x9300;
    }
    this.loadSeg(CS, 0xf000);
    this.eip = 0xfff0;
    this.flags = 0x0002;
    this.lop = L_NONE;
    this.ldtr = this.ldtBase = this.ldtLimit = 0;
    this.tr = this.trBase = this.trLimit = this.trFlags = 0;
    this.oldException = -1;
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
    w.u32(this.eip >>> 0).u32(this.flags).u8(this.lop).i32(this.lres).i32(this.ldst).i32(this.lsrc).u8(this.lsz);
    w.u32(this.cr0).u32(this.cr2).u32(this.cr3);
    for (const v of this.dr) w.i32(v);
    w.i32(this.gdtBase).u32(this.gdtLimit).i32(this.idtBase).u32(this.idtLimit);
    w.bool(this.irqLine).bool(this.halted).u8(this.inhibit).f64(this.instructions);
    // Since version 3: the protected-mode state (a version-2 file ends before it and loads as real mode).
    w.u8(this.cpl).u32(this.cr4);
    for (let i = 0; i < 6; i++) w.i32(this.slimit[i]!).i32(this.sflags[i]!);
    w.u16(this.ldtr).i32(this.ldtBase).i32(this.ldtLimit).u16(this.tr).i32(this.trBase).i32(this.trLimit).i32(this.trFlags);
    // Since version 4: the time-stamp counter's offset and the FPU.
    w.f64(this.tscOffset);
    this.fpu.saveState(w);
  }
  loadState(r: StateReader): void {
    for (let i = 0; i < 8; i++) this.reg[i] = r.i32('general register');
    for (let i = 0; i < 6; i++) this.sreg[i] = r.u16('segment selector');
    for (let i = 0; i < 6; i++) this.sbase[i] = r.i32('segment base');
    this.csBase = this.sbase[CS]!;
    this.eip = r.u32('EIP') | 0;
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
    // A version-2 state holds real-mode state only: these defaults stand unless the protected-mode part follows.
    this.cpl = 0;
    this.code32 = false;
    this.ipMask = 0xffff;
    this.spMask = 0xffff;
    this.paging = false;
    this.directLimit = this.ramSize;
    this.mmu.flush(false);
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
    if (r.left > 0) {
      this.cpl = r.u8('CPL');
      if (this.cpl > 3) throw new VdiskError('E_CORRUPT', `${r.what}: CPL ${this.cpl} is not 0 to 3`);
      this.cr4 = r.u32('CR4');
      for (let i = 0; i < 6; i++) {
        this.slimit[i] = r.i32('segment limit');
        this.sflags[i] = r.i32('segment attributes');
      }
      this.ldtr = r.u16('LDTR');
      this.ldtBase = r.i32('LDT base');
      this.ldtLimit = r.i32('LDT limit');
      this.tr = r.u16('TR');
      this.trBase = r.i32('TSS base');
      this.trLimit = r.i32('TSS limit');
      this.trFlags = r.i32('TSS attributes');
      if (this.cr0 & 1) {
        this.code32 = (this.sflags[CS]! & 0x400000) !== 0;
        this.ipMask = this.code32 ? -1 : 0xffff;
        this.spMask = this.sflags[SS]! & 0x400000 ? -1 : 0xffff;
      }
      this.paging = (this.cr0 & CR0_PG) !== 0;
      this.directLimit = this.paging ? 0 : this.ramSize;
    }
    // A version-3 file ends here: the counter goes on from the instruction count.
    this.tscOffset = 0;
    this.fpu.init();
    if (r.left > 0) {
      this.tscOffset = r.f64('TSC offset');
      this.fpu.loadState(r);
    }
    this.modeDirty = true;
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
    const p = a & this.amask;
    return p >= 0 && p < this.directLimit ? this.ram[p]! : this.physRead8(this.physical(a, false));
  }
  /** Write a byte at a linear address. */
  linW8(a: number, v: number): void {
    const p = a & this.amask;
    if (p >= 0 && p < this.directLimit) this.ram[p] = v;
    else this.physWrite8(this.physical(a, true), v);
  }
  /** The slow path of every accessor: the physical address of linear `a` (through the page tables when paging is on). */
  physical(a: number, write: boolean): number {
    return this.paging ? this.mmu.translate(a, write, this.cpl === 3) : a & this.amask;
  }
  /** A byte of physical memory (past the end of RAM: the open bus). */
  physRead8(p: number): number {
    return p >= 0 && p < this.ramSize ? this.ram[p]! : this.mem.readUnmapped(p >>> 0);
  }
  physWrite8(p: number, v: number): void {
    if (p >= 0 && p < this.ramSize) this.ram[p] = v;
    else this.mem.writeUnmapped(p >>> 0, v);
  }
  /** A dword at linear `a` read or written as the system (descriptor tables, TSS, IDT): supervisor access whatever the CPL. */
  sys32(a: number): number {
    const cpl = this.cpl;
    this.cpl = 0;
    try {
      return this.lin16(a) | (this.lin16(a + 2) << 16);
    } finally {
      this.cpl = cpl;
    }
  }
  sysW32(a: number, v: number): void {
    const cpl = this.cpl;
    this.cpl = 0;
    try {
      this.linW16(a, v & 0xffff);
      this.linW16(a + 2, (v >>> 16) & 0xffff);
    } finally {
      this.cpl = cpl;
    }
  }
  /** Raise #PF for linear address `linear` with error code `code` (CR2 takes the address). */
  pageFault(linear: number, code: number): never {
    this.cr2 = linear >>> 0;
    return this.fault(VEC_PF, code);
  }
  lin16(a: number): number {
    const p = a & this.amask;
    if (p >= 0 && p + 1 < this.directLimit) return this.ram[p]! | (this.ram[p + 1]! << 8);
    if (this.paging && (a & 0xfff) !== 0xfff) {
      // Both bytes in one page: one translation.
      const q = this.mmu.translate(a, false, this.cpl === 3);
      if (q >= 0 && q + 1 < this.ramSize) return this.ram[q]! | (this.ram[q + 1]! << 8);
    }
    return this.lin8(a) | (this.lin8(a + 1) << 8);
  }
  linW16(a: number, v: number): void {
    const p = a & this.amask;
    if (p >= 0 && p + 1 < this.directLimit) {
      this.ram[p] = v;
      this.ram[p + 1] = v >> 8;
      return;
    }
    if (this.paging && (a & 0xfff) !== 0xfff) {
      const q = this.mmu.translate(a, true, this.cpl === 3);
      if (q >= 0 && q + 1 < this.ramSize) {
        this.ram[q] = v;
        this.ram[q + 1] = v >> 8;
        return;
      }
    }
    this.linW8(a, v & 0xff);
    this.linW8(a + 1, (v >> 8) & 0xff);
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
      if (p >= 0 && p + 1 < this.directLimit) return this.ram[p]! | (this.ram[p + 1]! << 8);
      return this.lin16(base + off);
    }
    return this.lin8(base + off) | (this.lin8(base) << 8);
  }
  wr16(base: number, off: number, v: number): void {
    if (off !== 0xffff) {
      const p = (base + off) & this.amask;
      if (p >= 0 && p + 1 < this.directLimit) {
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
    this.eip = (ip + 1) & this.ipMask;
    return a >= 0 && a < this.directLimit ? this.ram[a]! : this.physRead8(this.physical(this.csBase + ip, false));
  }
  /** The next instruction byte, without consuming it (a handler choosing its path by ModRM). */
  peek8(): number {
    const a = (this.csBase + this.eip) & this.amask;
    return a >= 0 && a < this.directLimit ? this.ram[a]! : this.physRead8(this.physical(this.csBase + this.eip, false));
  }
  fetch16(): number {
    const ip = this.eip;
    const a = (this.csBase + ip) & this.amask;
    this.eip = (ip + 2) & this.ipMask;
    if (ip !== 0xffff && a >= 0 && a + 1 < this.directLimit) return this.ram[a]! | (this.ram[a + 1]! << 8);
    return this.lin8(this.csBase + ip) | (this.lin8(this.csBase + ((ip + 1) & this.ipMask)) << 8);
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

  /** Write CR0 (MOV CR0, LMSW): PE selects protected-mode segment loads, PG turns paging on. */
  setCr0(v: number): void {
    v = (v | 0x10) | 0;
    if (v & CR0_PG && !(v & 1)) this.fault(VEC_GP, 0);
    const old = this.cr0;
    this.cr0 = v >>> 0;
    if ((old ^ v) & 0x80010000) this.mmu.flush(false);
    this.setPaging((v & CR0_PG) !== 0);
  }
  /** Write CR3: a new page directory; the TLB keeps only global pages (with CR4.PGE). */
  setCr3(v: number): void {
    this.cr3 = v >>> 0;
    this.mmu.flush((this.cr4 & CR4_PGE) !== 0);
  }
  /** Write CR4: TSD, DE, PSE and PGE are implemented; any other bit is #GP(0). */
  setCr4(v: number): void {
    if (v & ~CR4_WRITABLE) this.fault(VEC_GP, 0);
    if ((this.cr4 ^ v) & 0x90) this.mmu.flush(false);
    this.cr4 = v >>> 0;
  }
  private setPaging(on: boolean): void {
    if (on === this.paging) return;
    this.paging = on;
    // With paging on every access takes the slow path, which translates.
    this.directLimit = on ? 0 : this.ramSize;
    this.modeChanged();
  }
  /** The running instruction changed the code size or paging: the loop for the new mode takes over after it. */
  modeChanged(): void {
    this.modeDirty = true;
    this.attention = true;
  }

  /** The time-stamp counter: instructions retired plus the offset WRMSR gave it. */
  tsc(): number {
    return (this.instructions + this.tscOffset) % 2 ** 64;
  }
  /** RDMSR of `msr` (the ones a Linux 6.1 686 kernel reads on this CPU); an unknown one is #GP(0). */
  readMsr(msr: number): { lo: number; hi: number } {
    switch (msr) {
      case MSR_TSC: {
        const t = this.tsc();
        return { lo: t % 0x100000000 | 0, hi: Math.floor(t / 0x100000000) | 0 };
      }
      case MSR_PLATFORM_ID:
      case MSR_APIC_BASE: // No local APIC (CPUID says so): base 0, globally disabled.
        return { lo: 0, hi: 0 };
      case MSR_BIOS_SIGN_ID: // Microcode revision 1 in the high half, as qemu reports.
        return { lo: 0, hi: 1 };
      default:
        this.onUnknownMsr?.(this, msr, false);
        return this.fault(VEC_GP, 0);
    }
  }
  /** WRMSR of `msr` with EDX:EAX = `hi`:`lo`. */
  writeMsr(msr: number, lo: number, hi: number): void {
    switch (msr) {
      case MSR_TSC:
        this.tscOffset = (hi >>> 0) * 0x100000000 + (lo >>> 0) - this.instructions;
        return;
      case MSR_APIC_BASE:
      case MSR_BIOS_SIGN_ID: // Linux writes 0 before reading the microcode revision.
        return;
      default:
        this.onUnknownMsr?.(this, msr, true);
        this.fault(VEC_GP, 0);
    }
  }

  /** CR0.PE. */
  get protectedMode(): boolean {
    return (this.cr0 & 1) !== 0;
  }

  /** Load a segment register (real mode: base = selector × 16; protected mode: from a descriptor, with its checks). */
  loadSeg(seg: number, sel: number): void {
    if (this.cr0 & 1) {
      loadSegProtected(this, seg, sel);
      return;
    }
    this.sreg[seg] = sel;
    this.sbase[seg] = sel << 4;
    if (seg === CS) {
      this.csBase = sel << 4;
      if (this.code32) this.setCodeSize(false);
    } else if (seg === SS) this.spMask = 0xffff;
  }
  /** CS.D changed: operand and address sizes default to it, EIP wraps by it. */
  setCodeSize(d32: boolean): void {
    this.code32 = d32;
    this.ipMask = d32 ? -1 : 0xffff;
    this.modeChanged();
  }
  /** Fill one segment register and its descriptor cache. */
  setSegment(seg: number, sel: number, base: number, limit: number, flags: number): void {
    this.sreg[seg] = sel;
    this.sbase[seg] = base;
    this.slimit[seg] = limit;
    this.sflags[seg] = flags;
    if (seg === CS) {
      this.csBase = base;
      const d32 = (flags & 0x400000) !== 0;
      if (d32 !== this.code32) this.setCodeSize(d32);
    } else if (seg === SS) this.spMask = flags & 0x400000 ? -1 : 0xffff;
  }
  /** A far JMP (or CALL, pushing the return address) to `sel`:`off`. */
  jumpFar(sel: number, off: number, call: boolean): void {
    if (this.cr0 & 1) {
      farTransfer(this, sel, off, call);
      return;
    }
    if (call) {
      this.pushOs(this.sreg[CS]!);
      this.pushOs(this.eip);
    }
    this.loadSeg(CS, sel);
    this.eip = off;
  }
  /** #GP(0) unless CPL is 0 (the privileged instructions). */
  requireCpl0(): void {
    if (this.cpl !== 0) this.fault(VEC_GP, 0);
  }
  /** #GP(0) when CPL > IOPL (CLI, STI). */
  requireIopl(): void {
    if (this.cpl > ((this.flags >> 12) & 3)) this.fault(VEC_GP, 0);
  }
  /** IN/OUT/INS/OUTS of `size` bytes at `port`: above IOPL, allowed only by the 32-bit TSS's I/O permission bitmap (§18.5.2). */
  requireIo(port: number, size: number): void {
    if (this.cpl > ((this.flags >> 12) & 3)) ioBitmapCheck(this, port, size);
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

  // SP or ESP by SS.B (`spMask`).
  push16(v: number): void {
    const k = this.spMask;
    const sp = (this.reg[ESP]! - 2) & k;
    this.wr16(this.sbase[SS]!, sp, v & 0xffff);
    this.reg[ESP] = (this.reg[ESP]! & ~k) | sp;
  }
  push32(v: number): void {
    const k = this.spMask;
    const sp = (this.reg[ESP]! - 4) & k;
    this.wr32(this.sbase[SS]!, sp, v);
    this.reg[ESP] = (this.reg[ESP]! & ~k) | sp;
  }
  pop16(): number {
    const k = this.spMask;
    const sp = this.reg[ESP]! & k;
    const v = this.rd16(this.sbase[SS]!, sp);
    this.reg[ESP] = (this.reg[ESP]! & ~k) | ((sp + 2) & k);
    return v;
  }
  pop32(): number {
    const k = this.spMask;
    const sp = this.reg[ESP]! & k;
    const v = this.rd32(this.sbase[SS]!, sp);
    this.reg[ESP] = (this.reg[ESP]! & ~k) | ((sp + 4) & k);
    return v;
  }
  /** Add `n` to SP or ESP (by SS.B). */
  addSp(n: number): void {
    const k = this.spMask;
    this.reg[ESP] = (this.reg[ESP]! & ~k) | ((this.reg[ESP]! + n) & k);
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

  /** Abort the current instruction with exception `vector` (restarts at its first byte); `code` is the error code, for the vectors that push one. */
  fault(vector: number, code = 0): never {
    FAULT.vector = vector;
    FAULT.code = code;
    throw FAULT;
  }
  /** Raise #UD for the current instruction. */
  undefinedOpcode(): never {
    if (this.onUndefined) this.onUndefined(this, this.sreg[CS]!, this.startEip);
    return this.fault(VEC_UD);
  }

  /**
   * Deliver interrupt `vector`: through the real-mode IVT, or in protected mode through
   * the IDT (`soft` for INT n/INT3/INTO, which check the gate's DPL; `code` ≥ 0 is an
   * error code to push). Returns false on a triple fault (real mode).
   */
  interrupt(vector: number, soft = false, code = -1): boolean {
    if (this.cr0 & 1) {
      protectedInterrupt(this, vector, soft, code);
      return true;
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
  private deliverFault(vector: number, code: number): void {
    this.eip = this.startEip;
    this.exception(vector, code);
  }

  /**
   * Deliver an exception, turning a second fault during delivery into #DF and a
   * fault while delivering #DF into a shutdown, by qemu's rule (its check_exception).
   */
  private exception(vector: number, code: number): void {
    const first = this.oldException;
    if (first === VEC_DF) {
      this.tripleFault = true;
      this.requestStop();
      return;
    }
    const second = contributory(vector);
    if ((contributory(first) && second) || (first === VEC_PF && (second || vector === VEC_PF))) {
      vector = VEC_DF;
      code = 0;
    }
    if (second || vector === VEC_PF || vector === VEC_DF) this.oldException = vector;
    try {
      this.interrupt(vector, false, hasErrorCode(vector) ? code : -1);
    } catch (e) {
      if (e !== FAULT) throw e;
      this.resetPrefixes();
      this.exception(FAULT.vector, FAULT.code);
    }
    this.oldException = -1;
  }

  /** Execute one instruction (faults are delivered; used by tests). */
  step(): void {
    try {
      this.stepRaw();
    } catch (e) {
      if (e !== FAULT) throw e;
      this.resetPrefixes();
      this.deliverFault(FAULT.vector, FAULT.code);
    }
    if (this.modeDirty) {
      this.modeDirty = false;
      this.resetPrefixes();
    }
  }

  /** Decode and execute one instruction; may throw the fault sentinel. */
  stepRaw(): void {
    // Prefix handlers restore segOv/os32/as32/rep after their instruction; a fault
    // resets them in the catch path.
    this.startEip = this.eip;
    OPS[this.fetch8()]!(this);
  }

  /** Back to the idle decode state: no overrides, operand and address size by CS.D. */
  private resetPrefixes(): void {
    this.segOv = -1;
    this.os32 = this.code32;
    this.as32 = this.code32;
    this.rep = 0;
  }

  /** Run up to `limit` instructions; returns why it stopped. */
  run(limit: number): StopReason {
    const end = this.instructions + limit;
    this.stopRequested = false;
    for (;;) {
      try {
        if (this.modeDirty) {
          this.modeDirty = false;
          this.resetPrefixes();
        }
        const r = this.code32 || this.paging ? this.runBlockGeneric(end) : this.runBlock(end);
        if (r === BLOCK_MODE) continue;
        // A stop requested by the batch's last instruction still counts as a stop.
        if (r === BLOCK_LIMIT && !this.stopRequested) return 'limit';
        if (r === BLOCK_HALT) return 'halt';
        return this.tripleFault ? 'triple-fault' : this.halted ? 'halt' : 'stop';
      } catch (e) {
        if (e !== FAULT) throw e;
        this.resetPrefixes();
        this.instructions++;
        this.deliverFault(FAULT.vector, FAULT.code);
        if (this.tripleFault) return 'triple-fault';
      }
    }
  }

  /**
   * Everything rare between two instructions, behind the one `attention` test of the
   * loops: a stop request, a mode change, interrupts, HLT, the interrupt shadow, TF.
   * Returns a BLOCK_* reason to leave the loop, ATTEND_STEPPED after running one
   * instruction under TF, or ATTEND_RUN.
   */
  private attend(): number {
    if (this.stopRequested) return BLOCK_STOP;
    if (this.modeDirty) return BLOCK_MODE;
    if (this.irqLine && this.inhibit === 0 && (this.flags & IF) !== 0 && this.intr) {
      const v = this.intr.acknowledge();
      if (v >= 0) {
        this.halted = false;
        // A fault while delivering restarts here, not at the instruction before.
        this.startEip = this.eip;
        this.interrupt(v);
      }
    }
    if (this.halted) return BLOCK_HALT;
    if (this.inhibit > 0) this.inhibit--;
    // A request stays pending while IF=0; STI, POPF and IRET raise attention again.
    this.attention = (this.irqLine && (this.flags & IF) !== 0) || this.inhibit !== 0 || (this.flags & TF) !== 0;
    if (this.flags & TF) {
      this.stepRaw();
      this.instructions++;
      if (this.flags & TF) this.interrupt(VEC_DB);
      return ATTEND_STEPPED;
    }
    return ATTEND_RUN;
  }

  /**
   * The hot loop for 16-bit code without paging, kept free of try/catch (faults unwind
   * to {@link run}). It returns a number and touches no object after the loop: V8
   * optimises it on-stack while the loop runs, and code after the loop that never ran
   * before would deoptimise it at every batch ("insufficient type feedback").
   * Everything rare hides behind one `attention` test.
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
        const r = this.attend();
        if (r === ATTEND_STEPPED) {
          n = this.instructions;
          continue;
        }
        if (r >= 0) return r;
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

  /**
   * The loop for 32-bit code segments and for paging: operand and address sizes
   * default to CS.D through the idle decode state, fetches go through the accessors
   * (and so through the TLB). No compiled blocks here.
   */
  private runBlockGeneric(end: number): number {
    const ops = OPS;
    let n = this.instructions;
    while (n < end) {
      if (this.attention) {
        const r = this.attend();
        if (r === ATTEND_STEPPED) {
          n = this.instructions;
          continue;
        }
        if (r >= 0) return r;
      }
      this.startEip = this.eip;
      const h = ops[this.fetch8()]!;
      h(this);
      this.instructions = ++n;
    }
    return BLOCK_LIMIT;
  }
}
