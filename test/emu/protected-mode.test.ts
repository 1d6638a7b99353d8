/**
 * 386 protected mode judged by qemu-system-i386: `test/emu/pm/pm.asm` switches to
 * protected mode, takes faults and interrupts, changes rings and turns paging on,
 * printing what it sees on COM1; our emulator must print the very same text. The
 * generated digest programs of differential.test.ts run here as 32-bit code.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { boot, type BootOptions } from '../../src/emu/boot.js';
import { open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { aluProgram32 } from './alu-program.js';
import { nasm, qemuSerial } from './guests.js';

const PM = new URL('./pm/', import.meta.url).pathname;

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-pm-');
});

/** Assemble `test/emu/pm/<name>.asm` (or `source`) into a 1 MiB raw disk; returns its path. */
function guest(name: string, source = readFileSync(join(PM, `${name}.asm`), 'utf8')): string {
  const code = nasm(dir, name, source);
  const img = join(dir, `${name}.img`);
  const data = Buffer.alloc(1024 * 1024);
  code.copy(data);
  writeFileSync(img, data);
  return img;
}

async function vdiskSerial(img: string): Promise<{ serial: string; outcome: string; message: string }> {
  const dev = await open(img, { readOnly: true });
  try {
    const r = await boot(dev, { timeoutMs: 60_000, snapshot: true, memoryMiB: 16 }).result;
    return { serial: r.serial, outcome: r.outcome, message: r.message };
  } finally {
    await dev.close();
  }
}

/** Boot `img` with `opts`; the result and, when it stopped at the instruction limit, the saved state. */
async function runSaving(img: string, opts: BootOptions) {
  const dev = await open(img, { readOnly: true });
  try {
    const s = boot(dev, { timeoutMs: 60_000, snapshot: true, memoryMiB: 16, ...opts });
    const r = await s.result;
    return { r, state: r.outcome === 'limit' ? await s.machine.saveState() : null };
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

describe('protected mode against qemu-system-i386', () => {
  itWith(['nasm'], 'pm.asm: rings, faults and paging print what qemu 7.2 printed', async () => {
    const r = await vdiskSerial(guest('pm'));
    // Lines qemu 7.2 printed for this guest (the qemu test below compares all of them).
    for (const line of [
      'from code16 55667788 ',
      'esp after 16-bit push 12347FFC ',
      'tss descriptor 00008B00 ',
      'exc 0000000C 00000040 ', // mov ss, not present: #SS(40)
      'exc 0000000B 0000019A ', // int 33h, gate not present: #NP(19A)
      'exc 00000008 00000000 ', // #NP delivering #NP: #DF
      'int 31 esp 0007FFE8 ', // the TSS's ESP0 less a five-dword frame (and the EAX `show` pushed)
      'exc 0000000D 00000182 ', // int 30h from ring 3 through a DPL 0 gate
      'ring 0 ticks 00000002 ', // IRQ 0 through the IDT, waking HLT
      'ring 3 ticks 00000002 ', // IRQ 0 taken in ring 3: the TSS stack
      'gate p1 00001111 ', // CALL through a call gate from ring 3: parameters copied to the ring 0 stack
      'r3 after gate 0006FFFC ', // RETF 8 back out, dropping them from both stacks
      'pte after write 00033067 ', // accessed and dirty
      'exc 0000000E 00000003 ', // CR0.WP
      'exc 0000000E 00000007 ', // ring 3 write to a read-only user page
      'real mode again', // paging off, PE off, a far jump to a real-mode segment
      'int3 through the IVT',
      'done',
    ]) {
      expect(r.serial).toContain(line);
    }
    expect(r.outcome).toBe('halt');
  });

  itWith(['nasm', 'qemu-system-i386'], 'pm.asm: the same COM1 text, line by line', async () => {
    const img = guest('pm');
    const [ours, theirs] = await Promise.all([vdiskSerial(img), qemuSerial(img, { timeoutMs: 30_000 })]);
    expect(theirs).toContain('done');
    expect(firstDifference(ours.serial, theirs)).toBeNull();
    expect(ours.serial).toBe(theirs);
  });

  const BLOCKS = 150;
  for (const [seed, paging] of [[11, false], [12, true], [13, true]] as const) {
    itWith(['nasm', 'qemu-system-i386'], `generated ALU/shift/mul/div/bit/BCD/string program as 32-bit code${paging ? ' with paging' : ''}, seed ${seed}`, async () => {
      const img = guest(`alu32-${seed}`, aluProgram32(seed, BLOCKS, 16, paging));
      const [ours, theirs] = await Promise.all([vdiskSerial(img), qemuSerial(img, { timeoutMs: 30_000 })]);
      expect(theirs.split('\r\n').length).toBe(BLOCKS + 1);
      expect(firstDifference(ours.serial, theirs)).toBeNull();
      expect(ours.outcome).toBe('halt');
    });
  }

  itWith(['nasm'], 'pm.asm saved part-way (in ring 3, with paging, in handlers) and resumed prints what an uninterrupted run prints', async () => {
    const img = guest('pm');
    const whole = await runSaving(img, {});
    expect(whole.r.outcome).toBe('halt');
    for (const f of [0.5, 0.8, 0.9, 0.95, 0.99]) {
      const first = await runSaving(img, { maxInstructions: Math.floor(whole.r.instructions * f) });
      expect(first.r.outcome).toBe('limit');
      const rest = await runSaving(img, { restoreState: { bytes: first.state!, name: 'state' } });
      expect(first.r.serial + rest.r.serial).toBe(whole.r.serial);
      expect(rest.r.instructions).toBe(whole.r.instructions);
    }
  });
});
