/** Runner for the SingleStepTests 8086 suite (../shared/cpu-tests/8086): one instruction per test. */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Cpu, CS, DS, EAX, EBP, EBX, ECX, EDI, EDX, ES, ESI, ESP, SS } from '../../src/emu/cpu.js';
import { IoBus } from '../../src/emu/io.js';
import { Memory } from '../../src/emu/memory.js';
import { join } from 'node:path';
import { SHARED_DIR } from '../helpers/shared.js';

export const SUITE = join(SHARED_DIR, 'cpu-tests', '8086') + '/';

interface Regs {
  ax?: number; bx?: number; cx?: number; dx?: number; cs?: number; ss?: number; ds?: number; es?: number;
  sp?: number; bp?: number; si?: number; di?: number; ip?: number; flags?: number;
}
interface State {
  regs: Regs;
  ram: [number, number][];
}
/** One test of the suite. */
export interface SingleStepTest {
  name: string;
  bytes: number[];
  initial: State;
  final: State;
}

const GPR: [keyof Regs, number][] = [['ax', EAX], ['cx', ECX], ['dx', EDX], ['bx', EBX], ['sp', ESP], ['bp', EBP], ['si', ESI], ['di', EDI]];
const SEG: [keyof Regs, number][] = [['es', ES], ['cs', CS], ['ss', SS], ['ds', DS]];

/** Load a test file. */
export function loadTests(file: string): SingleStepTest[] {
  return JSON.parse(gunzipSync(readFileSync(SUITE + file)).toString('utf8')) as SingleStepTest[];
}

/** Per-opcode flag masks from metadata.json (undefined flags are left out). */
export function flagMasks(): Map<string, number> {
  const meta = JSON.parse(readFileSync(SUITE + 'metadata.json', 'utf8')) as {
    opcodes: Record<string, { 'flags-mask'?: number; reg?: Record<string, { 'flags-mask'?: number }> }>;
  };
  const out = new Map<string, number>();
  for (const [op, e] of Object.entries(meta.opcodes)) {
    if (e['flags-mask'] !== undefined) out.set(op, e['flags-mask']);
    for (const [r, sub] of Object.entries(e.reg ?? {})) if (sub['flags-mask'] !== undefined) out.set(`${op}.${r}`, sub['flags-mask']);
  }
  return out;
}

/** FLAGS bits 12-15 read as 1 on the 8086 and as IOPL/NT (0 here) on a 386. */
const FLAGS_386 = 0x0fff;

/** Run one test; returns a description of the first mismatch, or null. */
let shared: { mem: Memory; cpu: Cpu } | null = null;

export function runTest(t: SingleStepTest, flagsMask: number): string | null {
  shared ??= (() => {
    const mem = new Memory(1);
    return { mem, cpu: new Cpu(mem, new IoBus()) };
  })();
  const { mem, cpu } = shared;
  mem.ram.fill(0);
  cpu.reset();
  const r = t.initial.regs;
  for (const [k, i] of GPR) cpu.reg[i] = r[k] ?? 0;
  for (const [k, i] of SEG) cpu.loadSeg(i, r[k] ?? 0);
  cpu.eip = r.ip ?? 0;
  cpu.flags = (r.flags ?? 2) & 0xffd7;
  for (const [a, v] of t.initial.ram) mem.ram[a] = v;
  cpu.step();
  const f = t.final.regs;
  for (const [k, i] of GPR) {
    const exp = f[k] ?? r[k] ?? 0;
    if ((cpu.reg[i]! & 0xffff) !== exp) return `${k}=${(cpu.reg[i]! & 0xffff).toString(16)} want ${exp.toString(16)}`;
  }
  for (const [k, i] of SEG) {
    const exp = f[k] ?? r[k] ?? 0;
    if (cpu.sreg[i] !== exp) return `${k}=${cpu.sreg[i]!.toString(16)} want ${exp.toString(16)}`;
  }
  if (cpu.eip !== (f.ip ?? r.ip)) return `ip=${cpu.eip.toString(16)} want ${(f.ip ?? r.ip ?? 0).toString(16)}`;
  const wantF = f.flags ?? r.flags ?? 0;
  const gotF = cpu.getFlags();
  if (((gotF ^ wantF) & flagsMask & FLAGS_386) !== 0) return `flags=${gotF.toString(16)} want ${wantF.toString(16)} (mask ${(flagsMask & FLAGS_386).toString(16)})`;
  for (const [a, v] of t.final.ram) {
    const got = mem.ram[a]!;
    // A pushed FLAGS high byte: the 8086 has bits 12-15 set where the 386 has IOPL/NT clear.
    if (got !== v && !((v & 0xf0) === 0xf0 && (got | 0xf0) === v)) return `ram[${a.toString(16)}]=${got.toString(16)} want ${v.toString(16)}`;
  }
  return null;
}

/** Why a test shows an 8086-vs-386 difference rather than a bug, or null. */
export function known386Difference(file: string, t: SingleStepTest): string | null {
  const op = file.replace('.json.gz', '');
  const r = t.initial.regs;
  const group = GROUP_SKIPS[op] ?? GROUP_SKIPS[op.split('.')[0]!];
  if (group) return group;
  if (/^D[89A-F]$/.test(op)) return 'ESC D8-DF: the 8086 suite has no 8087 (no-ops); this CPU has an x87 FPU';
  const modrm = modrmOf(t.bytes);
  if ((op === '8C' || op === '8E') && modrm !== undefined && ((modrm >> 3) & 7) >= 4) {
    return 'the 8086 decodes 2 bits of the segment register number; on a 386 reg 4/5 are FS/GS and 6/7 are #UD';
  }
  if (op === '8E' && modrm !== undefined && ((modrm >> 3) & 7) === 1) return 'MOV CS is #UD from the 286 on';
  if (/^D[23]\./.test(op) && ((r.cx ?? 0) & 0xff) >= 32) return 'shift counts are masked to 5 bits from the 186 on';
  if (op === 'FF.6' && modrm === 0xf4) return 'PUSH SP pushes the old SP from the 286 on';
  if ((op === '37' || op === '3F') && t.final.regs.ax !== undefined) {
    const al = (r.ax ?? 0) & 0xff;
    if ((op === '37' && al > 0xf9) || (op === '3F' && al < 6)) return 'AAA/AAS adjust AX as a whole from the 286 on (the 8086 leaves AH without the carry/borrow of AL)';
  }
  if (/^F[67]\.[5-7]$/.test(op) && (t.bytes.includes(0xf2) || t.bytes.includes(0xf3)) && modrmOf(t.bytes) !== undefined && (t.bytes[0] === 0xf2 || t.bytes[0] === 0xf3 || t.bytes[1] === 0xf2 || t.bytes[1] === 0xf3)) {
    return 'a REP prefix negates the IMUL/IDIV result on the 8086 only';
  }
  if (/^F[67]\.[67]$/.test(op)) {
    const ivt0 = t.initial.ram.find(([a]) => a === 0);
    const fin = t.final.regs;
    if (ivt0 !== undefined && fin.ip !== undefined && fin.ip === (ivt0[1] | ((t.initial.ram.find(([a]) => a === 1)?.[1] ?? 0) << 8))) {
      return 'divide error: the 386 pushes the address of the DIV/IDIV, the 8086 the next instruction (and IDIV -128 quotients differ)';
    }
  }
  return null;
}

function modrmOf(bytes: number[]): number | undefined {
  let i = 0;
  while ([0x26, 0x2e, 0x36, 0x3e, 0xf0, 0xf2, 0xf3].includes(bytes[i]!)) i++;
  return bytes[i + 1];
}

/** Whole files skipped, with the reason (opcodes the 8086 aliases or treats differently). */
export const GROUP_SKIPS: Record<string, string> = {
  '0F': 'POP CS on the 8086; the two-byte opcode page on a 386',
  '54': 'PUSH SP pushes the old SP from the 286 on',
  ...Object.fromEntries(Array.from({ length: 16 }, (_, i) => [(0x60 + i).toString(16).toUpperCase(), '60h-6Fh alias Jcc 70h-7Fh on the 8086; 186+/386 instructions here'])),
  C0: 'C0h/C1h alias RET C2h/C3h on the 8086; shift by immediate on a 386',
  C1: 'C0h/C1h alias RET C2h/C3h on the 8086; shift by immediate on a 386',
  C8: 'C8h/C9h alias RETF CAh/CBh on the 8086; ENTER/LEAVE on a 386',
  C9: 'C8h/C9h alias RETF CAh/CBh on the 8086; ENTER/LEAVE on a 386',
  'D0.6': 'the 8086 SETMO; /6 is SHL on a 386',
  'D1.6': 'the 8086 SETMO; /6 is SHL on a 386',
  'D2.6': 'the 8086 SETMOC; /6 is SHL on a 386',
  'D3.6': 'the 8086 SETMOC; /6 is SHL on a 386',
  'FF.7': 'FF /7 aliases PUSH on the 8086; #UD on a 386',
};
