/** Random boot sectors and instruction streams never crash the emulator or hang it. */
import { describe, expect, it } from 'vitest';
import { Cpu } from '../../src/emu/cpu.js';
import { IoBus } from '../../src/emu/io.js';
import { Machine } from '../../src/emu/machine.js';
import { Memory } from '../../src/emu/memory.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { rawDriver } from '../../src/formats/raw/index.js';
import { MemoryLocation } from '../../src/storage/location.js';
import { patternBytes } from '../helpers/tmp.js';

async function memoryDisk(bytes: Uint8Array) {
  const storage = new MemoryStorage(bytes, { name: 'fuzz.img' });
  const loc = new MemoryLocation('fuzz.img', new Map([['fuzz.img', storage]]));
  return rawDriver.open(storage, loc, { readOnly: false, noBacking: true, openParent: async () => { throw new Error('no parent'); } });
}

describe('robustness', () => {
  it('runs 12 random boot sectors to an outcome without throwing', async () => {
    for (let seed = 1; seed <= 12; seed++) {
      const disk = new Uint8Array(64 * 512);
      disk.set(patternBytes(64 * 512, seed));
      disk[510] = 0x55;
      disk[511] = 0xaa;
      const dev = await memoryDisk(disk);
      const m = new Machine({ disk: dev, maxInstructions: 50_000, timeoutMs: 10_000, memoryMiB: 2 });
      const r = await m.run();
      expect(['halt', 'triple-fault', 'limit', 'reset', 'unsupported', 'no-boot']).toContain(r.outcome);
      expect(r.elapsedMs).toBeLessThan(5_000);
      expect(r.message).toMatch(/[0-9A-F]{4}:[0-9A-F]{4}|reset|INT 18h|not bootable/);
      if (process.env.FUZZ_DEBUG) console.log(seed, r.outcome, r.instructions, r.elapsedMs.toFixed(0), r.message);
    }
  });

  it('executes every one- and two-byte opcode with random operands without a host exception', () => {
    const mem = new Memory(2);
    const cpu = new Cpu(mem, new IoBus());
    const noise = patternBytes(64, 7);
    for (let op = 0; op < 512; op++) {
      cpu.reset();
      cpu.loadSeg(1, 0x1000);
      cpu.eip = 0;
      const bytes = op < 256 ? [op, ...noise.subarray(0, 12)] : [0x0f, op - 256, ...noise.subarray(0, 12)];
      mem.ram.set(bytes, 0x10000);
      cpu.reg[1] = 3; // keep REP counts small
      expect(() => cpu.step()).not.toThrow();
    }
  });

  it('runs random 32-bit protected-mode code (with paging, a garbage IDT, random CR writes) to a stop without a host exception', () => {
    for (let seed = 1; seed <= 64; seed++) {
      const mem = new Memory(2);
      const cpu = new Cpu(mem, new IoBus());
      const dv = new DataView(mem.ram.buffer);
      // GDT at 1000h: null, flat 32-bit code, flat data; page tables identity-mapping 4 MiB at 3000h/4000h.
      dv.setUint32(0x1008, 0x0000ffff, true);
      dv.setUint32(0x100c, 0x00cf9a00, true);
      dv.setUint32(0x1010, 0x0000ffff, true);
      dv.setUint32(0x1014, 0x00cf9200, true);
      for (let i = 0; i < 1024; i++) dv.setUint32(0x4000 + i * 4, (i << 12) | 7, true);
      dv.setUint32(0x3000, 0x4007, true);
      mem.ram.set(patternBytes(0x800, seed + 100), 0x2000); // the IDT: noise
      mem.ram.set(patternBytes(0x4000, seed), 0x10000); // the code: noise
      cpu.setCr0(0x11);
      cpu.gdtBase = 0x1000;
      cpu.gdtLimit = 0x17;
      cpu.idtBase = 0x2000;
      cpu.idtLimit = 0x7ff;
      for (const s of [0, 2, 3, 4, 5]) cpu.loadSeg(s, 0x10);
      cpu.reg[4] = 0x9000;
      cpu.jumpFar(0x08, 0x10000, false);
      if (seed & 1) {
        cpu.setCr3(0x3000);
        cpu.setCr0(0x80000011);
      }
      let reason = '';
      expect(() => {
        for (let i = 0; i < 20 && !['halt', 'triple-fault'].includes(reason) && !cpu.unsupported; i++) reason = cpu.run(5_000);
      }).not.toThrow();
    }
  });
});
