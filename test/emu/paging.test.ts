/**
 * The TLB where qemu cannot judge it: qemu flushes global pages on every CR3 write,
 * the SDM keeps them (vol. 3 §4.10.4.1). These drive the CPU's accessors directly.
 */
import { describe, expect, it } from 'vitest';
import { Cpu } from '../../src/emu/cpu.js';
import { IoBus } from '../../src/emu/io.js';
import { Memory } from '../../src/emu/memory.js';
import { PTE_A, PTE_D, PTE_G, PTE_P, PTE_U, PTE_W } from '../../src/emu/paging.js';

const PD = 0x10000;
const PT = 0x11000;

/** A CPU with paging on: the first 4 MiB identity-mapped, page 400000h-ward entries for the tests. */
function pagedCpu(pge: boolean): { cpu: Cpu; dv: DataView } {
  const mem = new Memory(8);
  const cpu = new Cpu(mem, new IoBus());
  const dv = new DataView(mem.ram.buffer);
  mem.a20 = true;
  for (let i = 0; i < 1024; i++) dv.setUint32(PT + i * 4, (i << 12) | PTE_P | PTE_W, true);
  dv.setUint32(PD, PT | PTE_P | PTE_W | PTE_U, true);
  cpu.setCr0(0x11);
  cpu.setCr4(pge ? 0x80 : 0);
  cpu.setCr3(PD);
  cpu.setCr0(0x80000011);
  return { cpu, dv };
}

describe('TLB', () => {
  it('keeps a global page across a CR3 write with CR4.PGE and drops the others; INVLPG drops a global one', () => {
    const { cpu, dv } = pagedCpu(true);
    cpu.mem.ram[0x5000] = 0x55;
    cpu.mem.ram[0x6000] = 0x66;
    cpu.mem.ram[0x7000] = 0x77;
    dv.setUint32(PT + 0x20 * 4, 0x5000 | PTE_P | PTE_G, true); // 20000h -> 5000h, global
    dv.setUint32(PT + 0x21 * 4, 0x5000 | PTE_P, true); // 21000h -> 5000h
    expect(cpu.lin8(0x20000)).toBe(0x55);
    expect(cpu.lin8(0x21000)).toBe(0x55);
    dv.setUint32(PT + 0x20 * 4, 0x6000 | PTE_P | PTE_G, true);
    dv.setUint32(PT + 0x21 * 4, 0x6000 | PTE_P, true);
    cpu.setCr3(PD);
    expect(cpu.lin8(0x20000)).toBe(0x55); // still the cached global translation
    expect(cpu.lin8(0x21000)).toBe(0x66);
    cpu.mmu.invalidate(0x20000);
    expect(cpu.lin8(0x20000)).toBe(0x66);
    // Turning PGE off flushes everything.
    dv.setUint32(PT + 0x20 * 4, 0x7000 | PTE_P | PTE_G, true);
    cpu.setCr4(0);
    expect(cpu.lin8(0x20000)).toBe(0x77);
  });

  it('without CR4.PGE a CR3 write drops global pages too', () => {
    const { cpu, dv } = pagedCpu(false);
    cpu.mem.ram[0x5000] = 0x55;
    cpu.mem.ram[0x6000] = 0x66;
    dv.setUint32(PT + 0x20 * 4, 0x5000 | PTE_P | PTE_G, true);
    expect(cpu.lin8(0x20000)).toBe(0x55);
    dv.setUint32(PT + 0x20 * 4, 0x6000 | PTE_P | PTE_G, true);
    cpu.setCr3(PD);
    expect(cpu.lin8(0x20000)).toBe(0x66);
  });

  it('sets the accessed bit on a read and the dirty bit on the first write after it, even with the read cached', () => {
    const { cpu, dv } = pagedCpu(false);
    const e = PT + 0x30 * 4;
    dv.setUint32(e, 0x30000 | PTE_P | PTE_W, true);
    cpu.lin8(0x30010);
    expect(dv.getUint32(e, true) & (PTE_A | PTE_D)).toBe(PTE_A);
    cpu.linW8(0x30010, 1);
    expect(dv.getUint32(e, true) & (PTE_A | PTE_D)).toBe(PTE_A | PTE_D);
    expect(cpu.mem.ram[0x30010]).toBe(1);
  });

  it('a word across a page boundary translates each page', () => {
    const { cpu, dv } = pagedCpu(false);
    dv.setUint32(PT + 0x40 * 4, 0x50000 | PTE_P | PTE_W, true); // 40000h -> 50000h
    dv.setUint32(PT + 0x41 * 4, 0x70000 | PTE_P | PTE_W, true); // 41000h -> 70000h
    cpu.linW16(0x40fff, 0xbbaa);
    expect(cpu.mem.ram[0x50fff]).toBe(0xaa);
    expect(cpu.mem.ram[0x70000]).toBe(0xbb);
    expect(cpu.lin16(0x40fff)).toBe(0xbbaa);
  });

  it('paging off again: accessors index RAM directly', () => {
    const { cpu, dv } = pagedCpu(false);
    dv.setUint32(PT + 0x40 * 4, 0x50000 | PTE_P | PTE_W, true);
    cpu.mem.ram[0x40000] = 0x12;
    cpu.mem.ram[0x50000] = 0x34;
    expect(cpu.lin8(0x40000)).toBe(0x34);
    cpu.setCr0(0x11);
    expect(cpu.paging).toBe(false);
    expect(cpu.directLimit).toBe(cpu.ramSize);
    expect(cpu.lin8(0x40000)).toBe(0x12);
  });
});
