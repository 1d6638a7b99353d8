/**
 * The CPU's batch loop: how `Cpu.run` reports why it stopped, including a stop
 * requested by the very last instruction a batch allows.
 */
import { describe, expect, it } from 'vitest';
import { Cpu } from '../../src/emu/cpu.js';
import { IoBus } from '../../src/emu/io.js';
import { Memory } from '../../src/emu/memory.js';

/** A CPU at 0000:7C00 with `code` there. */
function cpuWith(code: number[]): Cpu {
  const mem = new Memory(2);
  const cpu = new Cpu(mem, new IoBus());
  mem.ram.set(code, 0x7c00);
  cpu.loadSeg(1, 0); // CS
  cpu.eip = 0x7c00;
  return cpu;
}

const NOP = 0x90;
const HLT = 0xf4;
const CLI = 0xfa;

describe('Cpu.run', () => {
  it('reports a HLT that is the last instruction of the batch as a halt', () => {
    const cpu = cpuWith([CLI, NOP, HLT]);
    expect(cpu.run(3)).toBe('halt');
    expect(cpu.instructions).toBe(3);
    expect(cpu.eip).toBe(0x7c03);
  });

  it('stops at the limit before a later HLT, then halts on the next batch', () => {
    const cpu = cpuWith([CLI, NOP, NOP, HLT]);
    expect(cpu.run(2)).toBe('limit');
    expect(cpu.eip).toBe(0x7c02);
    expect(cpu.run(10)).toBe('halt');
    expect(cpu.instructions).toBe(4);
  });

  it('counts a far jump and keeps fetching from the new code segment', () => {
    // JMP 07C0:0010 lands on the HLT at linear 7C10h.
    const code = [0xea, 0x10, 0x00, 0xc0, 0x07];
    while (code.length < 0x10) code.push(NOP);
    code.push(HLT);
    const cpu = cpuWith(code);
    expect(cpu.run(100)).toBe('halt');
    expect(cpu.sreg[1]).toBe(0x07c0);
    expect(cpu.eip).toBe(0x11);
    expect(cpu.instructions).toBe(2);
  });
});
