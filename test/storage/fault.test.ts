import { describe, expect, it } from 'vitest';
import { FaultPlan, FaultStorage } from '../../src/storage/fault.js';
import { MemoryStorage } from '../../src/storage/memory.js';

describe('MemoryStorage', () => {
  it('grows on write, shrinks on truncate and zeroes what it cut', async () => {
    const m = new MemoryStorage();
    await m.write(Buffer.from('abcd'), 10);
    expect(m.size).toBe(14);
    await m.truncate(12);
    await m.truncate(14);
    const b = Buffer.alloc(4);
    await m.read(b, 10);
    expect(b).toEqual(Buffer.from([0x61, 0x62, 0, 0]));
    await expect(m.read(Buffer.alloc(1), 14)).rejects.toMatchObject({ code: 'E_BOUNDS' });
  });

  it('refuses to grow past its limit rather than exhaust memory', async () => {
    const m = new MemoryStorage();
    await expect(m.write(Buffer.alloc(1), 2 ** 40)).rejects.toMatchObject({ code: 'E_BOUNDS' });
  });
});

describe('FaultStorage', () => {
  it('fails the planned write and keeps ordered or flushed state', async () => {
    const plan = new FaultPlan(3);
    const s = new FaultStorage(Buffer.alloc(2048), plan, 'img');
    await s.write(Buffer.alloc(512, 1), 0);
    await s.flush();
    await s.write(Buffer.alloc(512, 2), 512);
    await expect(s.write(Buffer.alloc(512, 3), 1024)).rejects.toMatchObject({ code: 'E_IO' });
    expect(plan.crashed).toBe(true);
    await expect(s.read(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'E_IO' });
    const ordered = s.afterCrash('ordered');
    expect(ordered[0]).toBe(1);
    expect(ordered[512]).toBe(2);
    expect(ordered[1024]).toBe(0);
    const lost = s.afterCrash('power-loss');
    expect(lost[0]).toBe(1);
    expect(lost[512]).toBe(0);
  });

  it('tears a write in half at sector granularity', async () => {
    const s = new FaultStorage(Buffer.alloc(4096), new FaultPlan(1, 'half'), 'img');
    await expect(s.write(Buffer.alloc(2048, 9), 0)).rejects.toThrow();
    const after = s.afterCrash('ordered');
    expect(after.subarray(0, 1024).every((b) => b === 9)).toBe(true);
    expect(after.subarray(1024).every((b) => b === 0)).toBe(true);
  });

  it('counts writes across storages sharing a plan, and a non-sticky fault passes', async () => {
    const plan = new FaultPlan(2, 'none', false);
    const a = new FaultStorage(Buffer.alloc(512), plan, 'a');
    const b = new FaultStorage(Buffer.alloc(512), plan, 'b');
    await a.write(Buffer.alloc(1, 1), 0);
    await expect(b.write(Buffer.alloc(1, 1), 0)).rejects.toThrow(/simulated fault/);
    await b.write(Buffer.alloc(1, 2), 0);
    expect(b.afterCrash('ordered')[0]).toBe(2);
  });
});
