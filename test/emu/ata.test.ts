/**
 * The IDE channel's answers where the qemu differential test cannot judge: real ATA
 * behaviour qemu models otherwise (IDNF for a sector past the end), a read-only
 * disk, the absent slave, and a saved state restored mid-transfer.
 */
import { describe, expect, it } from 'vitest';
import { AtaChannel } from '../../src/emu/devices/ata.js';
import { IoBus } from '../../src/emu/io.js';
import { StateReader, StateWriter } from '../../src/emu/state/codec.js';
import { rawDriver } from '../../src/formats/raw/index.js';
import { MemoryLocation } from '../../src/storage/location.js';
import { MemoryStorage } from '../../src/storage/memory.js';

const SECTORS = 64;

async function channel(readOnly = false) {
  const bytes = new Uint8Array(SECTORS * 512);
  for (let s = 0; s < SECTORS; s++) bytes.fill(s, s * 512, s * 512 + 512);
  const storage = new MemoryStorage(bytes, { name: 'd.img', readOnly });
  const loc = new MemoryLocation('d.img', new Map([['d.img', storage]]));
  const disk = await rawDriver.open(storage, loc, { readOnly, noBacking: true, openParent: async () => { throw new Error('none'); } });
  const io = new IoBus();
  const pending: Promise<void>[] = [];
  const irq: boolean[] = [];
  const ata = new AtaChannel(io, disk, { cylinders: 1, heads: 4, sectorsPerTrack: 16 }, (l) => irq.push(l), (p) => pending.push(p), readOnly);
  const settle = async () => {
    while (pending.length) await pending.shift();
  };
  const lba28 = async (cmd: number, lba: number, count: number) => {
    io.out8(0x1f2, count);
    io.out8(0x1f3, lba & 0xff);
    io.out8(0x1f4, (lba >> 8) & 0xff);
    io.out8(0x1f5, (lba >> 16) & 0xff);
    io.out8(0x1f6, 0xe0 | ((lba >> 24) & 0x0f));
    io.out8(0x1f7, cmd);
    await settle();
  };
  return { io, ata, lba28, settle, irq };
}

describe('ATA channel', () => {
  it('a read past the last sector ends in IDNF and ABRT with the status ERR bit, and moves no data', async () => {
    const { io, lba28 } = await channel();
    await lba28(0x20, SECTORS - 1, 2);
    expect(io.in8(0x1f7) & 0x89).toBe(0x01);
    expect(io.in8(0x1f1)).toBe(0x14);
    expect(io.in16(0x1f0)).toBe(0xffff);
  });

  it('reads each sector of a multi-sector command in order, with BSY while the disk works', async () => {
    const { io, lba28 } = await channel();
    await lba28(0x20, 5, 2);
    for (const s of [5, 6]) {
      expect(io.in8(0x1f7) & 0x88).toBe(0x08);
      const words = Array.from({ length: 256 }, () => io.in16(0x1f0));
      expect(new Set(words)).toEqual(new Set([s | (s << 8)]));
      if (s === 5) expect(io.in8(0x3f6) & 0x80).toBe(0x80); // BSY: the next sector is being read
      await new Promise((r) => setImmediate(r));
    }
  });

  it('a write to a read-only disk is aborted before any data is taken', async () => {
    const { io, lba28 } = await channel(true);
    await lba28(0x30, 3, 1);
    expect(io.in8(0x1f7)).toBe(0x41);
    expect(io.in8(0x1f1)).toBe(0x04);
  });

  it('the absent slave answers zeros and ignores commands', async () => {
    const { io } = await channel();
    io.out8(0x1f6, 0xb0);
    expect(io.in8(0x1f7)).toBe(0);
    io.out8(0x1f7, 0xec);
    expect(io.in8(0x1f7)).toBe(0);
    io.out8(0x1f6, 0xa0);
    expect(io.in8(0x1f7) & 0x08).toBe(0);
  });

  it('a state saved in the middle of a sector restores to the same next words', async () => {
    const a = await channel();
    await a.lba28(0x20, 9, 1);
    for (let i = 0; i < 100; i++) a.io.in16(0x1f0);
    const w = new StateWriter();
    a.ata.saveState(w);
    const b = await channel();
    const r = new StateReader(w.finish(), 'ata');
    b.ata.loadState(r);
    r.end();
    for (let i = 100; i < 256; i++) expect(b.io.in16(0x1f0)).toBe(a.io.in16(0x1f0));
    expect(b.io.in8(0x1f7)).toBe(a.io.in8(0x1f7));
  });
});
