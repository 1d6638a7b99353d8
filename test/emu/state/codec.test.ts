/** The state codec and every part's save/load: decode(encode(x)) is x, byte for byte; reads are bounded. */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { OverlayDevice } from '../../../src/device/overlay.js';
import { boot, Machine } from '../../../src/emu/boot.js';
import { StateReader, StateWriter } from '../../../src/emu/state/codec.js';
import { decodeStateFile } from '../../../src/emu/state/file.js';
import { open } from '../../../src/formats/registry.js';
import { itWith } from '../../helpers/oracle.js';
import { tempDir } from '../../helpers/tmp.js';
import { bootSectorImage, nasm } from '../guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-codec-');
});

describe('StateWriter / StateReader', () => {
  it('round-trips every field type', () => {
    const w = new StateWriter().u8(0xab).bool(true).u16(0xbeef).u32(0xdeadbeef).i32(-5).f64(2 ** 40 + 0.5).bytes(Uint8Array.of(1, 2, 3)).str('héllo').strs(['a', '', 'bc']);
    for (let i = 0; i < 1000; i++) w.u32(i); // growth past the first buffer
    const r = new StateReader(w.finish(), 'test');
    expect([r.u8(), r.bool(), r.u16(), r.u32(), r.i32(), r.f64()]).toEqual([0xab, true, 0xbeef, 0xdeadbeef, -5, 2 ** 40 + 0.5]);
    expect([...r.bytes('b', 3)]).toEqual([1, 2, 3]);
    expect(r.str('s')).toBe('héllo');
    expect(r.strs('l', 3)).toEqual(['a', '', 'bc']);
    for (let i = 0; i < 1000; i++) expect(r.u32()).toBe(i);
    r.end();
  });

  it('refuses reads past the end, lengths over their bound and bad flags, as E_CORRUPT', () => {
    expect(() => new StateReader(Uint8Array.of(1, 2), 'part').u32('IER')).toThrow(/part: truncated at IER \(needs 4 bytes, 2 left\)/);
    expect(() => new StateReader(new StateWriter().u32(17).finish(), 'uart').bytes('FIFO', 16)).toThrow(/uart: FIFO length 17 exceeds 16/);
    expect(() => new StateReader(new StateWriter().u32(0xffffffff).finish(), 'x').bytes('big', 1 << 30)).toThrow(/exceeds/);
    expect(() => new StateReader(Uint8Array.of(2), 'x').bool('gate')).toThrow(/gate is 2, not 0 or 1/);
    expect(() => new StateReader(new StateWriter().f64(NaN).finish(), 'x').f64('clock')).toThrow(/clock is not a finite number/);
    expect(() => new StateReader(Uint8Array.of(1), 'x').end()).toThrow(/1 unexpected bytes/);
  });
});

describe('machine state', () => {
  itWith(['nasm'], 'every section loads into a fresh machine and saves back to the same bytes', async () => {
    const img = join(dir, 'state.img');
    bootSectorImage(img, nasm(dir, 'state'), 2880);
    const dev = await open(img, { readOnly: true });
    try {
      const a = boot(dev, { snapshot: true, expect: 'D0006' });
      expect((await a.result).outcome).toBe('expect');
      const saved = await a.machine.saveState();
      const b = new Machine({ disk: new OverlayDevice(dev) });
      await b.loadState(saved, 'saved');
      b.stop(); // never run: saved as loaded
      const again = await b.saveState();
      const x = decodeStateFile(saved, 'a');
      const y = decodeStateFile(again, 'b');
      for (const [tag, payload] of x.sections) expect([tag, Buffer.from(y.sections.get(tag)!).toString('hex')]).toEqual([tag, Buffer.from(payload).toString('hex')]);
    } finally {
      await dev.close();
    }
  });
});
