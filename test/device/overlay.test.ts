/** The copy-on-write overlay: writes stay in memory, reads merge, the base is untouched. */
import { describe, expect, it } from 'vitest';
import { OverlayDevice } from '../../src/device/overlay.js';
import { listExtents } from '../../src/device/base.js';
import { rawDriver } from '../../src/formats/raw/index.js';
import { MemoryLocation } from '../../src/storage/location.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { patternBytes } from '../helpers/tmp.js';

async function base(bytes: Uint8Array) {
  const storage = new MemoryStorage(bytes, { name: 'base.img', readOnly: true });
  const loc = new MemoryLocation('base.img', new Map([['base.img', storage]]));
  return rawDriver.open(storage, loc, { readOnly: true, noBacking: true, openParent: async () => { throw new Error('none'); } });
}

describe('OverlayDevice', () => {
  it('keeps unaligned writes in memory over a read-only device and reads them back merged', async () => {
    const data = patternBytes(64 * 1024, 3);
    const dev = await base(Uint8Array.from(data));
    const ov = new OverlayDevice(dev);
    const w = patternBytes(10_000, 9);
    await ov.write(w, 4093);
    const expected = Buffer.from(data);
    Buffer.from(w).copy(expected, 4093);
    const got = new Uint8Array(64 * 1024);
    await ov.read(got, 0);
    expect(Buffer.from(got).equals(expected)).toBe(true);
    const below = new Uint8Array(64 * 1024);
    await dev.read(below, 0);
    expect(Buffer.from(below).equals(data)).toBe(true);
    expect(ov.overlayBytes).toBe(4 * 4096); // bytes 4093..14092: chunks 0..3
    const ex = await listExtents(ov);
    expect(ex.filter((e) => e.depth === 0)).toEqual([{ offset: 0, length: 4 * 4096, kind: 'data', depth: 0 }]);
    await ov.close();
    await dev.close();
  });

  it('refuses writes past the end', async () => {
    const dev = await base(new Uint8Array(4096));
    const ov = new OverlayDevice(dev);
    await expect(ov.write(new Uint8Array(512), 4096 - 256)).rejects.toMatchObject({ code: 'E_BOUNDS' });
    await ov.close();
  });
});
