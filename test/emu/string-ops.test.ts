/**
 * REP MOVS/STOS/CMPS: the bulk path (whole ranges in RAM) and the element loop it
 * falls back to must leave the same registers, flags and memory, including where an
 * offset wraps at 64 KiB, ranges overlap, or the A20 gate folds an address.
 */
import { describe, expect, it } from 'vitest';
import { CF, Cpu, ECX, EDI, ES, ESI, ZF, DS, EAX } from '../../src/emu/cpu.js';
import { IoBus } from '../../src/emu/io.js';
import { Memory } from '../../src/emu/memory.js';

const CLD = 0xfc;
const STD = 0xfd;
const HLT = 0xf4;
const CLI = 0xfa;

/** Run `code` at 0000:7C00 with DS, ES, SI, DI, CX (and AX) preset; returns the CPU. */
function run(code: number[], r: { ds: number; es: number; si: number; di: number; cx: number; ax?: number }, setup?: (ram: Uint8Array, mem: Memory) => void): Cpu {
  const mem = new Memory(2);
  const cpu = new Cpu(mem, new IoBus());
  mem.ram.set([CLI, ...code, HLT], 0x7c00);
  setup?.(mem.ram, mem);
  cpu.loadSeg(1, 0);
  cpu.eip = 0x7c00;
  cpu.loadSeg(DS, r.ds);
  cpu.loadSeg(ES, r.es);
  cpu.reg[ESI] = r.si;
  cpu.reg[EDI] = r.di;
  cpu.reg[ECX] = r.cx;
  cpu.reg[EAX] = r.ax ?? 0;
  expect(cpu.run(1000)).toBe('halt');
  return cpu;
}

function pattern(ram: Uint8Array, at: number, len: number, seed = 1): void {
  for (let i = 0; i < len; i++) ram[at + i] = (i * 7 + seed) & 0xff;
}

describe('REP MOVS', () => {
  it('copies a block and advances SI, DI, clears CX', () => {
    const cpu = run([CLD, 0xf3, 0xa4], { ds: 0x1000, es: 0x2000, si: 0x10, di: 0x20, cx: 300 }, (ram) => pattern(ram, 0x10010, 300));
    for (let i = 0; i < 300; i++) expect(cpu.ram[0x20020 + i]).toBe((i * 7 + 1) & 0xff);
    expect([cpu.reg[ESI], cpu.reg[EDI], cpu.reg[ECX]]).toEqual([0x10 + 300, 0x20 + 300, 0]);
  });

  it('repeats the first bytes when the destination starts inside the source (byte by byte, not memmove)', () => {
    const cpu = run([CLD, 0xf3, 0xa4], { ds: 0, es: 0, si: 0x1000, di: 0x1001, cx: 16 }, (ram) => pattern(ram, 0x1000, 32));
    for (let i = 0; i <= 16; i++) expect(cpu.ram[0x1000 + i]).toBe(1);
    expect(cpu.ram[0x1011]).toBe((17 * 7 + 1) & 0xff);
  });

  it('copies down onto an overlapping lower destination like the element loop', () => {
    const cpu = run([CLD, 0xf3, 0xa5], { ds: 0, es: 0, si: 0x1003, di: 0x1000, cx: 8 }, (ram) => pattern(ram, 0x1000, 32));
    for (let i = 0; i < 16; i++) expect(cpu.ram[0x1000 + i]).toBe(((i + 3) * 7 + 1) & 0xff);
    expect([cpu.reg[ESI], cpu.reg[EDI]]).toEqual([0x1013, 0x1010]);
  });

  it('wraps DI at 64 KiB within ES', () => {
    const cpu = run([CLD, 0xf3, 0xa5], { ds: 0x1000, es: 0x2000, si: 0, di: 0xfffc, cx: 4 }, (ram) => pattern(ram, 0x10000, 8));
    // Words 0 and 1 land at ES:FFFC and ES:FFFE, words 2 and 3 at ES:0000 and ES:0002.
    expect([...cpu.ram.subarray(0x2fffc, 0x30000)]).toEqual([1, 8, 15, 22]);
    expect([...cpu.ram.subarray(0x20000, 0x20004)]).toEqual([29, 36, 43, 50]);
    expect(cpu.ram[0x30000]).toBe(0);
    expect([cpu.reg[ESI], cpu.reg[EDI], cpu.reg[ECX]]).toEqual([8, 4, 0]);
  });

  it('wraps SI at 64 KiB within DS', () => {
    const cpu = run([CLD, 0xf3, 0xa4], { ds: 0x1000, es: 0x3000, si: 0xfffe, di: 0, cx: 4 }, (ram) => {
      ram.set([0xa1, 0xa2], 0x1fffe);
      ram.set([0xb1, 0xb2], 0x10000);
      ram.set([0xee, 0xee], 0x20000);
    });
    expect([...cpu.ram.subarray(0x30000, 0x30004)]).toEqual([0xa1, 0xa2, 0xb1, 0xb2]);
    expect(cpu.reg[ESI]).toBe(2);
  });

  it('folds a destination above 1 MiB onto low memory while A20 is off', () => {
    const cpu = run([CLD, 0xf3, 0xa4], { ds: 0, es: 0xffff, si: 0x1000, di: 0x0f, cx: 4 }, (ram) => pattern(ram, 0x1000, 4));
    // FFFF:000F is linear 0FFFFFh; the next three bytes wrap to 0..2.
    expect(cpu.ram[0xfffff]).toBe(1);
    expect([...cpu.ram.subarray(0, 3)]).toEqual([8, 15, 22]);
    expect(cpu.ram[0x100000]).toBe(0);
  });

  it('writes above 1 MiB when A20 is on', () => {
    const cpu = run([CLD, 0xf3, 0xa4], { ds: 0, es: 0xffff, si: 0x1000, di: 0x0f, cx: 4 }, (ram, mem) => {
      pattern(ram, 0x1000, 4);
      mem.a20 = true;
    });
    expect([...cpu.ram.subarray(0xfffff, 0x100003)]).toEqual([1, 8, 15, 22]);
    expect(cpu.ram[0]).toBe(0);
  });

  it('copies backwards with DF=1', () => {
    const cpu = run([STD, 0xf3, 0xa4, CLD], { ds: 0, es: 0, si: 0x1003, di: 0x2003, cx: 4 }, (ram) => pattern(ram, 0x1000, 4));
    expect([...cpu.ram.subarray(0x2000, 0x2004)]).toEqual([1, 8, 15, 22]);
    expect([cpu.reg[ESI], cpu.reg[EDI]]).toEqual([0x0fff, 0x1fff]);
  });
});

describe('REP STOS', () => {
  it('fills words and dwords', () => {
    let cpu = run([CLD, 0xf3, 0xab], { ds: 0, es: 0x2000, si: 0, di: 0x10, cx: 5, ax: 0xbeef });
    expect([...cpu.ram.subarray(0x20010, 0x2001c)]).toEqual([0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 0, 0]);
    expect([cpu.reg[EDI], cpu.reg[ECX]]).toEqual([0x1a, 0]);
    cpu = run([CLD, 0xf3, 0x66, 0xab], { ds: 0, es: 0x2000, si: 0, di: 0x10, cx: 2, ax: 0x11223344 });
    expect([...cpu.ram.subarray(0x20010, 0x20019)]).toEqual([0x44, 0x33, 0x22, 0x11, 0x44, 0x33, 0x22, 0x11, 0]);
  });

  it('wraps DI at 64 KiB', () => {
    const cpu = run([CLD, 0xf3, 0xaa], { ds: 0, es: 0x2000, si: 0, di: 0xfffe, cx: 4, ax: 0x55 });
    expect([...cpu.ram.subarray(0x2fffe, 0x30001)]).toEqual([0x55, 0x55, 0]);
    expect([...cpu.ram.subarray(0x20000, 0x20003)]).toEqual([0x55, 0x55, 0]);
    expect(cpu.reg[EDI]).toBe(2);
  });
});

describe('REPE/REPNE CMPS', () => {
  const flags = (cpu: Cpu) => cpu.getFlags() & (ZF | CF);
  it('REPE stops after the first difference, with the flags of that pair', () => {
    const cpu = run([CLD, 0xf3, 0xa6], { ds: 0, es: 0, si: 0x1000, di: 0x2000, cx: 10 }, (ram) => {
      ram.set([1, 2, 3, 4, 5], 0x1000);
      ram.set([1, 2, 3, 9, 5], 0x2000);
    });
    expect([cpu.reg[ECX], cpu.reg[ESI], cpu.reg[EDI]]).toEqual([6, 0x1004, 0x2004]);
    expect(flags(cpu)).toBe(CF); // 4 - 9 borrows, not zero
  });

  it('REPE runs out the count when everything matches', () => {
    const cpu = run([CLD, 0xf3, 0xa7], { ds: 0, es: 0, si: 0x1000, di: 0x2000, cx: 3 }, (ram) => {
      ram.set([1, 2, 3, 4, 5, 6], 0x1000);
      ram.set([1, 2, 3, 4, 5, 6], 0x2000);
    });
    expect([cpu.reg[ECX], cpu.reg[ESI], cpu.reg[EDI]]).toEqual([0, 0x1006, 0x2006]);
    expect(flags(cpu)).toBe(ZF);
  });

  it('REPNE stops at the first equal pair', () => {
    const cpu = run([CLD, 0xf2, 0xa6], { ds: 0, es: 0, si: 0x1000, di: 0x2000, cx: 10 }, (ram) => {
      ram.set([1, 2, 3, 4], 0x1000);
      ram.set([9, 9, 3, 9], 0x2000);
    });
    expect([cpu.reg[ECX], cpu.reg[ESI], cpu.reg[EDI]]).toEqual([7, 0x1003, 0x2003]);
    expect(flags(cpu)).toBe(ZF);
  });

  it('compares across an SI wrap like the element loop', () => {
    const cpu = run([CLD, 0xf3, 0xa6], { ds: 0x1000, es: 0, si: 0xffff, di: 0x2000, cx: 3 }, (ram) => {
      ram[0x1ffff] = 7;
      ram[0x10000] = 8;
      ram[0x10001] = 1;
      ram.set([7, 8, 2], 0x2000);
    });
    expect([cpu.reg[ECX], cpu.reg[ESI], cpu.reg[EDI]]).toEqual([0, 2, 0x2003]);
    expect(flags(cpu)).toBe(CF);
  });
});
