/**
 * Differential tests: the same boot programs under qemu-system-i386 (SeaBIOS) and
 * under vdisk's emulator must print byte-identical COM1 output.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { boot } from '../../src/emu/boot.js';
import { open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { aluProgram } from './alu-program.js';
import { nasm, qemuSerial } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-diff-');
});

async function vdiskSerial(img: string): Promise<string> {
  const dev = await open(img, { readOnly: true });
  try {
    const r = await boot(dev, { timeoutMs: 60_000, snapshot: true }).result;
    expect(r.outcome).toBe('halt');
    return r.serial;
  } finally {
    await dev.close();
  }
}

function image(name: string, code: Buffer, mib = 1): string {
  const img = join(dir, `${name}.img`);
  const data = Buffer.alloc(mib * 1024 * 1024);
  code.copy(data);
  writeFileSync(img, data);
  return img;
}

describe('COM1 output matches qemu-system-i386', () => {
  itWith(['nasm', 'qemu-system-i386'], 'BIOS probe: INT 10h, A20 (INT 15h, port 92h, 8042), IRQ 0 tick, RTC, INT 13h CHS', async () => {
    const code = nasm(dir, 'bios');
    const img = join(dir, 'bios.img');
    const data = Buffer.alloc(8 * 1024 * 1024);
    code.copy(data);
    writeFileSync(img, data);
    const [ours, theirs] = await Promise.all([vdiskSerial(img), qemuSerial(img, { timeoutMs: 30_000 })]);
    expect(theirs).toContain('sector 5 read by CHS');
    expect(ours).toBe(theirs);
  });

  itWith(['nasm', 'qemu-system-i386'], 'PCI configuration (440FX, PIIX3 ISA and IDE) and ATA PIO on the primary channel: IDENTIFY, LBA28, CHS, LBA48, MULTIPLE, WRITE, FLUSH, reset', async () => {
    const img = image('ata', nasm(dir, 'ata'), 8);
    const [ours, theirs] = await Promise.all([vdiskSerial(img), qemuSerial(img, { timeoutMs: 30_000 })]);
    expect(theirs).toContain('taskfile 0001 0001 0001 0000 0000');
    const a = ours.split('\r\n');
    const b = theirs.split('\r\n');
    const firstDiff = a.findIndex((l, i) => l !== b[i]);
    expect(firstDiff === -1 ? null : { line: firstDiff, ours: a[firstDiff], qemu: b[firstDiff] }).toBeNull();
    expect(ours).toBe(theirs);
  });

  const BLOCKS = 150;
  for (const seed of [1, 2, 3]) {
    itWith(['nasm', 'qemu-system-i386'], `generated ALU/shift/mul/div/bit/BCD/string program, seed ${seed}`, async () => {
      const img = image(`alu${seed}`, nasm(dir, `alu${seed}`, aluProgram(seed, BLOCKS, 16)));
      const [ours, theirs] = await Promise.all([vdiskSerial(img), qemuSerial(img, { timeoutMs: 30_000 })]);
      expect(theirs.split('\r\n').length).toBe(BLOCKS + 1);
      const a = ours.split('\r\n');
      const b = theirs.split('\r\n');
      const firstDiff = a.findIndex((l, i) => l !== b[i]);
      expect(firstDiff === -1 ? null : { line: firstDiff, ours: a[firstDiff], qemu: b[firstDiff] }).toBeNull();
      expect(ours).toBe(theirs);
    });
  }
});
