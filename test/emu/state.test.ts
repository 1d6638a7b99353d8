/**
 * Save and restore: a guest stopped part-way, saved, and resumed in a fresh machine
 * prints exactly what an uninterrupted run prints; bad state files are refused with
 * a stable code, before anything runs.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { boot, type BootOptions } from '../../src/emu/boot.js';
import { STATE_VERSION } from '../../src/emu/state/file.js';
import { isVdiskError } from '../../src/errors.js';
import { open } from '../../src/formats/registry.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { FREEDOS, bootSectorImage, nasm, qemuSerial } from './guests.js';

let dir: string;
let img: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-state-');
  img = join(dir, 'state.img');
});

function makeImage(path = img): void {
  bootSectorImage(path, nasm(dir, 'state'), 2880);
}

/** Boot `path` (on an overlay) with `opts`; the result and, for a resumable outcome, the saved state. */
async function run(path: string, opts: BootOptions & { asFloppy?: boolean }) {
  const dev = await open(path, { readOnly: opts.snapshot !== false });
  try {
    const s = opts.asFloppy ? boot(null, { snapshot: true, timeoutMs: 60_000, ...opts, floppy: dev }) : boot(dev, { snapshot: true, timeoutMs: 30_000, ...opts });
    const r = await s.result;
    const resumable = ['expect', 'stopped', 'timeout', 'limit'].includes(r.outcome);
    return { r, state: resumable ? await s.machine.saveState() : null };
  } finally {
    await dev.close();
  }
}

const lines = (serial: string, kind: string): string[] => serial.split('\r\n').filter((l) => l.startsWith(kind));

describe('save and restore', () => {
  itWith(['nasm'], 'a guest saved part-way and resumed prints what an uninterrupted run prints', async () => {
    makeImage();
    const whole = await run(img, {});
    expect(whole.r.outcome).toBe('halt');
    expect(lines(whole.r.serial, 'D')).toHaveLength(24);
    // Mid-busy-loop, mid-wait, just after a disk write, near the end.
    for (const at of [150_000, 1_234_567, 3_000_001, 4_100_000]) {
      const first = await run(img, { maxInstructions: at });
      expect(first.r.outcome).toBe('limit');
      const rest = await run(img, { restoreState: { bytes: first.state!, name: 'state' } });
      expect(first.r.serial + rest.r.serial).toBe(whole.r.serial);
      expect(rest.r.screen).toEqual(whole.r.screen);
      expect(rest.r.instructions).toBe(whole.r.instructions);
    }
  });

  itWith(['nasm'], 'resumes from a state saved when an expected text appeared, and from a resumed run saved again', async () => {
    makeImage();
    const whole = await run(img, {});
    const a = await run(img, { expect: 'D0005' });
    expect(a.r.outcome).toBe('expect');
    const b = await run(img, { restoreState: { bytes: a.state!, name: 'a' }, expect: /D0011 [0-9A-F]{4}/ });
    expect(b.r.outcome).toBe('expect');
    const c = await run(img, { restoreState: { bytes: b.state!, name: 'b' } });
    expect(a.r.serial + b.r.serial + c.r.serial).toBe(whole.r.serial);
  });

  itWith(['nasm', 'qemu-system-i386'], 'the guest\'s disk checksums are what qemu-system-i386 prints', async () => {
    makeImage();
    const q = await qemuSerial(img);
    const whole = await run(img, {});
    expect(lines(whole.r.serial, 'D')).toEqual(lines(q, 'D'));
    expect(lines(q, 'D')).toHaveLength(24);
  });

  it.skipIf(!existsSync(FREEDOS))('FreeDOS saved during boot and resumed reaches its prompt as an uninterrupted boot does', async () => {
    const whole = await run(FREEDOS, { asFloppy: true, expect: 'A:\\>' });
    expect(whole.r.outcome).toBe('expect');
    const at = Math.floor(whole.r.instructions / 2);
    const first = await run(FREEDOS, { asFloppy: true, maxInstructions: at });
    expect(first.r.outcome).toBe('limit');
    const rest = await run(FREEDOS, { asFloppy: true, expect: 'A:\\>', restoreState: { bytes: first.state!, name: 'fd' } });
    expect(rest.r.outcome).toBe('expect');
    expect(rest.r.screen).toEqual(whole.r.screen);
    expect(rest.r.instructions).toBe(whole.r.instructions);
    expect(rest.r.console).toContain('A:\\>');
    // And the resumed DOS still takes commands.
    const dir = await run(FREEDOS, { asFloppy: true, expect: 'Volume in drive A', keys: 'dir\n', restoreState: { bytes: rest.state!, name: 'fd2' } });
    expect(dir.r.outcome).toBe('expect');
  });

  itWith(['nasm'], 'without --snapshot the image carries the writes: it resumes on that image, and refuses it once changed', async () => {
    const live = join(dir, 'live.img');
    const fresh = join(dir, 'fresh.img');
    makeImage(live);
    makeImage(fresh);
    const whole = await run(fresh, { snapshot: false });
    const first = await run(live, { snapshot: false, expect: 'D0009' });
    const rest = await run(live, { snapshot: false, restoreState: { bytes: first.state!, name: 's' }, expect: 'D000C' });
    expect(whole.r.serial.startsWith(first.r.serial + rest.r.serial)).toBe(true);
    // `rest` was saved at D000C with the image as it is now.
    const again = await run(live, { snapshot: false, restoreState: { bytes: rest.state!, name: 's2' } });
    expect(first.r.serial + rest.r.serial + again.r.serial).toBe(whole.r.serial);
    // Now the image holds writes made after `first` was saved: that state no longer fits it.
    await expect(run(live, { snapshot: false, restoreState: { bytes: first.state!, name: 'old.state' } })).rejects.toMatchObject({
      code: 'E_MISMATCH',
      message: expect.stringContaining('content differs'),
    });
  });

  itWith(['nasm'], 'keeps the guest\'s disk writes: the overlay is in the state', async () => {
    makeImage();
    const first = await run(img, { expect: 'D000A' });
    // The sectors written so far live only in the overlay; rounds 11-23 print what they held.
    const rest = await run(img, { restoreState: { bytes: first.state!, name: 's' } });
    const whole = await run(img, {});
    expect(first.r.serial + rest.r.serial).toBe(whole.r.serial);
    expect(lines(rest.r.serial, 'D').every((l) => !l.endsWith(' 0000'))).toBe(true);
  });
});

/** The sections of a state file, to damage one and fix its CRC so the damage reaches the part that reads it. */
function sections(buf: Uint8Array): { tag: string; at: number; len: number }[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: { tag: string; at: number; len: number }[] = [];
  let pos = 32;
  for (let i = dv.getUint32(12, true); i > 0; i--) {
    const len = dv.getUint32(pos + 4, true);
    out.push({ tag: Buffer.from(buf.subarray(pos, pos + 4)).toString('latin1'), at: pos, len });
    pos += 12 + len;
  }
  return out;
}
function withSection(buf: Uint8Array, tag: string, payload: Uint8Array): Uint8Array {
  const s = sections(buf).find((x) => x.tag === tag)!;
  const head = Buffer.alloc(12);
  head.write(tag, 0, 'latin1');
  head.writeUInt32LE(payload.length, 4);
  head.writeUInt32LE(crc32(payload), 8);
  return Buffer.concat([buf.subarray(0, s.at), head, payload, buf.subarray(s.at + 12 + s.len)]);
}
function payloadOf(buf: Uint8Array, tag: string): Buffer {
  const s = sections(buf).find((x) => x.tag === tag)!;
  return Buffer.from(buf.subarray(s.at + 12, s.at + 12 + s.len));
}

describe('bad state files', () => {
  let state: Uint8Array;
  beforeAll(async () => {
    makeImage();
    state = (await run(img, { expect: 'D0002' })).state!;
  });

  async function refused(bytes: Uint8Array, path = img, extra: BootOptions = {}): Promise<{ code: string; message: string }> {
    const before = process.memoryUsage().rss;
    try {
      await run(path, { restoreState: { bytes, name: 'bad.state' }, ...extra });
    } catch (e) {
      if (!isVdiskError(e)) throw e;
      // Bounded: nothing the file claims is allocated before it is checked.
      expect(process.memoryUsage().rss - before).toBeLessThan(256 * 1024 * 1024);
      return { code: e.code, message: e.message };
    }
    throw new Error('the state was accepted');
  }

  itWith(['nasm'], 'a truncated file: E_CORRUPT (or E_FORMAT when even the magic is cut)', async () => {
    for (const n of [0, 5, 8, 20, 31, 32, 40, 100, state.length >> 1, state.length - 1]) {
      const e = await refused(state.subarray(0, n));
      expect(e.code).toBe(n < 8 ? 'E_FORMAT' : 'E_CORRUPT');
      expect(e.message).toContain('bad.state');
    }
  });

  itWith(['nasm'], 'wrong magic: E_FORMAT', async () => {
    const b = Buffer.from(state);
    b.write('QEMUSAVE', 0, 'latin1');
    expect(await refused(b)).toMatchObject({ code: 'E_FORMAT', message: expect.stringContaining('not a vdisk machine state') });
  });

  itWith(['nasm'], 'a newer version: E_UNSUPPORTED naming both versions', async () => {
    const b = Buffer.from(state);
    b.writeUInt16LE(STATE_VERSION + 1, 8);
    b.writeUInt32LE(crc32(b.subarray(0, 24)), 24);
    const e = await refused(b);
    expect(e.code).toBe('E_UNSUPPORTED');
    expect(e.message).toContain(`state version ${STATE_VERSION + 1}`);
    expect(e.message).toContain(`reads version ${STATE_VERSION}`);
  });

  itWith(['nasm'], 'another image, a changed image or a missing drive: E_MISMATCH; memory sections that disagree: E_CORRUPT', async () => {
    const other = join(dir, 'other.img');
    makeImage(other);
    const changed = Buffer.from(readFileSync(other));
    changed[1_000_000] = 1;
    writeFileSync(other, changed);
    expect(await refused(state, other)).toMatchObject({ code: 'E_MISMATCH', message: expect.stringContaining('content differs') });
    const smaller = join(dir, 'smaller.img');
    bootSectorImage(smaller, nasm(dir, 'state'), 1440);
    expect(await refused(state, smaller)).toMatchObject({ code: 'E_MISMATCH', message: expect.stringContaining('737280 bytes') });
    const dev = await open(img, { readOnly: true });
    try {
      const s = boot(null, { floppy: dev, snapshot: true, restoreState: { bytes: state, name: 'bad.state' } });
      await expect(s.result).rejects.toMatchObject({ code: 'E_MISMATCH', message: expect.stringContaining('hard disk 80h') });
    } finally {
      await dev.close();
    }
    // The memory size a machine is built with comes from MACH; MEM must agree with it.
    const mach = payloadOf(state, 'MACH');
    mach.writeUInt16LE(4, 0);
    expect(await refused(withSection(state, 'MACH', mach))).toMatchObject({ code: 'E_CORRUPT' });
  });

  itWith(['nasm'], 'a damaged section: E_CORRUPT naming the section', async () => {
    const b = Buffer.from(state);
    const mem = sections(b).find((s) => s.tag === 'MEM ')!;
    b[mem.at + 12 + 20] ^= 0x55;
    expect(await refused(b)).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('"MEM " CRC-32') });
  });

  itWith(['nasm'], 'corrupted compressed memory (with a matching CRC): E_CORRUPT', async () => {
    const mem = payloadOf(state, 'MEM ');
    // f64 size, a20, u32 length, then the zlib stream: damage its middle.
    mem[13 + 4 + 40] ^= 0xff;
    mem[13 + 4 + 41] ^= 0xff;
    expect(await refused(withSection(state, 'MEM ', mem))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('memory') });
    // A valid zlib stream of the wrong shape.
    const wrong = Buffer.concat([mem.subarray(0, 9), Buffer.alloc(4)]);
    const z = deflateSync(Buffer.alloc(1000, 7));
    wrong.writeUInt32LE(z.length, 9);
    expect(await refused(withSection(state, 'MEM ', Buffer.concat([wrong, z])))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('not a page list') });
    // A zlib bomb: far more than RAM once inflated.
    const bomb = deflateSync(Buffer.alloc(64 * 1024 * 1024));
    const head = Buffer.from(mem.subarray(0, 13));
    head.writeUInt32LE(bomb.length, 9);
    expect(await refused(withSection(state, 'MEM ', Buffer.concat([head, bomb])))).toMatchObject({ code: 'E_CORRUPT' });
  });

  itWith(['nasm'], 'oversized lengths and counts: E_CORRUPT before any allocation', async () => {
    const huge = Buffer.from(state);
    const first = sections(huge)[0]!;
    huge.writeUInt32LE(0xfffffff0, first.at + 4);
    expect(await refused(huge)).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('runs past the end') });
    const count = Buffer.from(state);
    count.writeUInt32LE(1_000_000, 12);
    count.writeUInt32LE(crc32(count.subarray(0, 24)), 24);
    expect(await refused(count)).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('section count') });
    const mem = payloadOf(state, 'MEM ');
    mem.writeUInt32LE(0xffffffff, 9);
    expect(await refused(withSection(state, 'MEM ', mem))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('compressed memory length') });
    const ovl = payloadOf(state, 'OVLY');
    ovl.writeDoubleLE(2 ** 40, 5); // count, drive, then the chunk count
    expect(await refused(withSection(state, 'OVLY', ovl))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('overlay chunk count') });
    const kbc = payloadOf(state, 'KBC ');
    kbc.writeUInt32LE(0x7fffffff, 0);
    expect(await refused(withSection(state, 'KBC ', kbc))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('output queue length') });
    const uart = payloadOf(state, 'UART');
    uart.writeUInt32LE(0x7fffffff, 8);
    expect(await refused(withSection(state, 'UART', uart))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('receive FIFO length') });
  });

  itWith(['nasm'], 'a section missing, repeated, unknown or with bytes to spare: E_CORRUPT', async () => {
    const cpu = payloadOf(state, 'CPU ');
    expect(await refused(withSection(state, 'CPU ', Buffer.concat([cpu, Buffer.alloc(1)])))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('unexpected bytes') });
    expect(await refused(withSection(state, 'CPU ', cpu.subarray(0, 10)))).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('truncated') });
    const b = Buffer.from(state);
    const pit = sections(b).find((s) => s.tag === 'PIT ')!;
    b.write('XYZ ', pit.at, 'latin1');
    expect(await refused(b)).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('unknown section "XYZ "') });
    b.write('PIC ', pit.at, 'latin1');
    expect(await refused(b)).toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('appears twice') });
  });
});
