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
});
