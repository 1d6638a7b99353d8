/** Round trips of the VHD structures, and the checksum judged on a footer qemu-img wrote. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DYNAMIC_COOKIE,
  FOOTER_COOKIE,
  PLATFORM,
  bitmapBytes,
  bitmapGet,
  bitmapSet,
  decodeDynamicHeader,
  decodeFooter,
  decodeLocatorData,
  encodeDynamicHeader,
  encodeFooter,
  encodeLocatorData,
  uuidString,
  type DynamicHeader,
  type VhdFooter,
} from '../../../src/formats/vhd/layout.js';
import { itWith, runOk } from '../../helpers/oracle.js';
import { tempDir } from '../../helpers/tmp.js';

describe('VHD layout', () => {
  it('footer: encode then decode gives the same fields and a valid checksum', () => {
    const f: VhdFooter = {
      cookie: FOOTER_COOKIE,
      features: 2,
      formatVersion: 0x10000,
      dataOffset: 512,
      timestamp: 123456789,
      creatorApplication: 'vdsk',
      creatorVersion: 0x10000,
      creatorHostOs: 0x5769326b,
      originalSize: 2 ** 40,
      currentSize: 2 ** 40 + 512,
      cylinders: 65535,
      heads: 16,
      sectorsPerTrack: 255,
      diskType: 4,
      checksum: 0,
      uniqueId: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
      savedState: 1,
    };
    const bytes = encodeFooter({ ...f });
    const d = decodeFooter(bytes);
    expect(d.valid).toBe(true);
    expect({ ...d.footer, checksum: 0 }).toEqual(f);
    bytes[300] = 1; // reserved bytes count in the checksum
    expect(decodeFooter(bytes)).toMatchObject({ valid: false, why: expect.stringContaining('checksum') });
    expect(uuidString(f.uniqueId)).toBe('00112233-4455-6677-8899-aabbccddeeff');
  });

  it('fixed footer: data offset all ones decodes as -1 and encodes back', () => {
    const d = decodeFooter(
      encodeFooter({
        cookie: FOOTER_COOKIE, features: 2, formatVersion: 0x10000, dataOffset: -1, timestamp: 0, creatorApplication: 'wa\0\0', creatorVersion: 0,
        creatorHostOs: 0, originalSize: 1 << 20, currentSize: 1 << 20, cylinders: 20, heads: 4, sectorsPerTrack: 17, diskType: 2, checksum: 0,
        uniqueId: Buffer.alloc(16), savedState: 0,
      }),
    );
    expect(d.footer.dataOffset).toBe(-1);
    expect(d.footer.creatorApplication).toBe('wa\0\0');
  });

  it('dynamic header: round trip with parent name and locators', () => {
    const h: DynamicHeader = {
      cookie: DYNAMIC_COOKIE,
      dataOffset: -1,
      tableOffset: 1536,
      headerVersion: 0x10000,
      maxTableEntries: 1000,
      blockSize: 2 ** 21,
      checksum: 0,
      parentUniqueId: Buffer.alloc(16, 0xab),
      parentTimestamp: 42,
      parentUnicodeName: 'Ünïcode parent.vhd',
      parentLocators: [
        { platformCode: PLATFORM.W2ru, platformDataSpace: 512, platformDataLength: 30, platformDataOffset: 6144 },
        { platformCode: PLATFORM.W2ku, platformDataSpace: 1024, platformDataLength: 600, platformDataOffset: 6656 },
        ...Array.from({ length: 6 }, () => ({ platformCode: 0, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 })),
      ],
    };
    const d = decodeDynamicHeader(encodeDynamicHeader({ ...h }));
    expect(d.valid).toBe(true);
    expect({ ...d.header, checksum: 0 }).toEqual(h);
  });

  it('locator data and bitmaps', () => {
    expect(decodeLocatorData(PLATFORM.W2ru, encodeLocatorData('.\\dir\\p.vhd'))).toBe('.\\dir\\p.vhd');
    expect(decodeLocatorData(PLATFORM.Wi2k, Buffer.from('C:\\x\\p.vhd\0\0\0', 'latin1'))).toBe('C:\\x\\p.vhd');
    expect(decodeLocatorData(PLATFORM.MacX, Buffer.from('file://localhost/Users/a%20b/p.vhd'))).toBe('/Users/a b/p.vhd');
    expect(decodeLocatorData(0x12345678, Buffer.from('x'))).toBeUndefined();
    expect(bitmapBytes(2 ** 21)).toBe(512);
    expect(bitmapBytes(4096)).toBe(512);
    expect(bitmapBytes(2 ** 23)).toBe(2048);
    const bm = Buffer.alloc(2);
    bitmapSet(bm, 0);
    bitmapSet(bm, 9);
    expect([...bm]).toEqual([0x80, 0x40]); // most significant bit first
    expect(bitmapGet(bm, 9)).toBe(true);
    expect(bitmapGet(bm, 8)).toBe(false);
  });

  itWith(['qemu-img'], 'decodes the footer and header qemu-img writes, checksums included', async () => {
    const dir = await tempDir('vdisk-vhd-layout-');
    const f = join(dir, 'q.vhd');
    await runOk('qemu-img', ['create', '-q', '-f', 'vpc', f, '100M']);
    const bytes = await readFile(f);
    const tail = decodeFooter(bytes.subarray(bytes.length - 512));
    const copy = decodeFooter(bytes.subarray(0, 512));
    expect(tail.valid && copy.valid).toBe(true);
    expect(tail.footer.currentSize).toBe(104865792); // qemu rounds 100M up to CHS (ORACLES.md)
    expect(tail.footer.cylinders * tail.footer.heads * tail.footer.sectorsPerTrack * 512).toBe(104865792);
    const h = decodeDynamicHeader(bytes.subarray(512, 1536));
    expect(h.valid).toBe(true);
    expect(h.header.blockSize).toBe(2 ** 21);
    expect(h.header.maxTableEntries).toBe(Math.ceil(104865792 / 2 ** 21));
  });

  it('opens the qemu-made fixture as qemu-img and vhdiinfo described it (fixtures/README.md)', async () => {
    const { open } = await import('../../../src/formats/registry.js');
    const file = new URL('../../../fixtures/vhd/qemu72-dynamic-1M.vhd', import.meta.url).pathname;
    const img = await open(file, { readOnly: true });
    expect(img.format).toBe('vhd');
    expect(img.size).toBe(1079296);
    const info = await img.info();
    expect(info.formatSpecific).toMatchObject({ type: 'dynamic', 'size-source': 'chs', uuid: 'cfbbf95f-c3cf-44ba-ba51-307ab8c193a5', creator: { application: 'qemu' } });
    const buf = Buffer.alloc(img.size, 1);
    await img.read(buf, 0);
    expect(buf.every((b) => b === 0)).toBe(true);
    await img.close();
  });
});
