/**
 * The i486-i686 instructions and the x87 FPU judged by qemu-system-i386: the probes in
 * `test/emu/cpu686/` print on COM1 what they see, and vdisk must print the same text
 * as qemu running a CPU with vdisk's CPUID (a Pentium II with the features vdisk
 * lacks turned off). Behaviour qemu does not model (it ignores unknown MSRs and TSC
 * writes) is checked against the Intel SDM here instead.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { Cpu } from '../../src/emu/cpu.js';
import { IoBus } from '../../src/emu/io.js';
import { Memory } from '../../src/emu/memory.js';
import { open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { qemuSerial } from './guests.js';

const SRC = new URL('./cpu686/', import.meta.url).pathname;
/** qemu's Pentium II less what vdisk's CPUID does not claim; CPUID level 1 as ours. */
export const QEMU_CPU = 'pentium2,-fxsr,-sep,-mmx,-pae,-vme,-mtrr,-mca,-mce,-pat,-pse36,-apic,-de,level=1';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-686-');
});

/** Assemble `test/emu/cpu686/<name>.asm` into a 1 MiB raw disk; returns its path. */
function guest(name: string): string {
  const out = join(dir, `${name}.bin`);
  execFileSync('nasm', ['-f', 'bin', '-I', SRC, '-o', out, join(SRC, `${name}.asm`)]);
  const data = Buffer.alloc(1024 * 1024);
  readFileSync(out).copy(data);
  const img = join(dir, `${name}.img`);
  writeFileSync(img, data);
  return img;
}

async function vdiskSerial(img: string): Promise<{ serial: string; outcome: string }> {
  const dev = await open(img, { readOnly: true });
  try {
    const r = await boot(dev, { timeoutMs: 60_000, snapshot: true, memoryMiB: 16 }).result;
    return { serial: r.serial, outcome: r.outcome };
  } finally {
    await dev.close();
  }
}

/** The first line where two outputs part, or null when they agree. */
function firstDifference(ours: string, theirs: string): { line: number; ours?: string; qemu?: string } | null {
  const a = ours.split('\r\n');
  const b = theirs.split('\r\n');
  const i = a.findIndex((l, k) => l !== b[k]);
  if (i === -1 && a.length === b.length) return null;
  const at = i === -1 ? a.length : i;
  return { line: at, ours: a[at], qemu: b[at] };
}

describe('i486-i686 instructions and the x87 FPU against qemu-system-i386', () => {
  for (const name of ['i686', 'fpu']) {
    itWith(['nasm', 'qemu-system-i386'], `${name}.asm: the same COM1 text, line by line`, async () => {
      const img = guest(name);
      const [ours, theirs] = await Promise.all([vdiskSerial(img), qemuSerial(img, { timeoutMs: 30_000, cpu: QEMU_CPU })]);
      expect(theirs).toContain('done');
      expect(firstDifference(ours.serial, theirs)).toBeNull();
      expect(ours.outcome).toBe('halt');
    });
  }
});

describe('MSRs qemu does not judge', () => {
  function cpu(code: number[]): Cpu {
    const mem = new Memory(1);
    const c = new Cpu(mem, new IoBus());
    mem.ram.set(code, 0x100);
    c.loadSeg(1, 0);
    c.eip = 0x100;
    // IVT entry 13 (#GP) → 0:0200 (a HLT).
    mem.ram.set([0x00, 0x02, 0x00, 0x00], 13 * 4);
    mem.ram[0x200] = 0xf4;
    return c;
  }
  it('an unknown MSR is #GP(0), reported to onUnknownMsr, and no crash', () => {
    // mov ecx, 12345h; rdmsr
    const c = cpu([0x66, 0xb9, 0x45, 0x23, 0x01, 0x00, 0x0f, 0x32]);
    const seen: [number, boolean][] = [];
    c.onUnknownMsr = (_c, msr, write) => seen.push([msr, write]);
    c.step();
    c.step();
    expect(seen).toEqual([[0x12345, false]]);
    expect(c.eip).toBe(0x200);
  });
  it('WRMSR 10h sets the time-stamp counter, which then counts instructions', () => {
    // mov ecx, 10h; xor eax, eax; mov edx, 12h; wrmsr; nop; rdtsc
    const c = cpu([0x66, 0xb9, 0x10, 0, 0, 0, 0x66, 0x31, 0xc0, 0x66, 0xba, 0x12, 0, 0, 0, 0x0f, 0x30, 0x90, 0x0f, 0x31]);
    for (let i = 0; i < 6; i++) c.step();
    // step() does not count instructions (run() does): the counter stood still since the write.
    expect(c.reg[2]).toBe(0x12);
    expect(c.reg[0]).toBe(0);
    c.instructions += 5;
    expect(c.tsc()).toBe(0x12 * 2 ** 32 + 5);
  });
});
