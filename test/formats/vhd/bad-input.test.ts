/**
 * Hostile and damaged VHDs: each gets a VdiskError naming the field; the footer copy
 * at offset 0 stands in for a damaged trailing footer; check finds and repairs.
 */
import { describe, expect, it } from 'vitest';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { chsGeometry } from '../../../src/formats/vhd/layout.js';
import type { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { editFooter, editHeader, folder, smallImage } from './helpers.js';

const GiB = 1024 ** 3;

async function openBytes(bytes: Buffer, extra: Map<string, Buffer> = new Map()) {
  const files = new Map(extra);
  files.set('img.vhd', bytes);
  return openLocation(folder(files), { readOnly: true, format: 'vhd' });
}

async function check(loc: MemoryLocation, repair?: 'leaks' | 'all') {
  const storage = await loc.open('img.vhd');
  const o: Parameters<NonNullable<typeof vhdDriver.check>>[2] = { readOnly: repair === undefined, openParent: (n) => openLocation(loc.at(n), { readOnly: true }) };
  if (repair) o.repair = repair;
  return vhdDriver.check!(storage, loc, o);
}

const dyn = (await smallImage('dynamic')).get('img.vhd')!;
const fixed = (await smallImage('fixed')).get('img.vhd')!;

describe('VHD bad input', () => {
  const bad: Array<[string, () => Buffer, string, RegExp]> = [
    ['no footer anywhere', () => Buffer.alloc(4096, 0x41), 'E_FORMAT', /no VHD footer/],
    ['wrong cookie in both footers', () => { const b = Buffer.from(dyn); b.write('conectiy', 0, 'latin1'); b.write('conectiy', b.length - 512, 'latin1'); return b; }, 'E_FORMAT', /cookie/],
    ['bad checksum in both footers', () => { const b = Buffer.from(dyn); b[100] = 1; b[b.length - 512 + 100] = 1; return b; }, 'E_CORRUPT', /footer checksum/],
    ['bad dynamic header checksum', () => { const b = Buffer.from(dyn); b[512 + 700] ^= 0xff; return b; }, 'E_CORRUPT', /dynamic header checksum/],
    ['wrong dynamic header cookie', () => editHeader(dyn, (h) => { h.cookie = 'cxsparsX'; }), 'E_CORRUPT', /dynamic header cookie/],
    ['header offset outside the file', () => editFooter(dyn, (f) => { f.dataOffset = 2 ** 40; }), 'E_CORRUPT', /data_offset/],
    ['BAT outside the file', () => editHeader(dyn, (h) => { h.tableOffset = dyn.length + 512; }), 'E_CORRUPT', /BAT .*outside/],
    ['BAT with 2^32-1 entries', () => editHeader(dyn, (h) => { h.maxTableEntries = 0xffffffff; }), 'E_CORRUPT', /BAT .*outside/],
    ['BAT too small for the disk', () => editHeader(dyn, (h) => { h.maxTableEntries = 3; }), 'E_CORRUPT', /max_table_entries/],
    ['block size 0', () => editHeader(dyn, (h) => { h.blockSize = 0; }), 'E_CORRUPT', /block_size 0/],
    ['block size not a power of two', () => editHeader(dyn, (h) => { h.blockSize = 3 * 4096; }), 'E_CORRUPT', /block_size 12288/],
    ['BAT entry past EOF', () => { const b = Buffer.from(dyn); b.writeUInt32BE(0x00ffffff, 1536 + 4 * 5); return b; }, 'E_CORRUPT', /BAT entry 5 .*past the end/],
    ['BAT entry over the BAT', () => { const b = Buffer.from(dyn); b.writeUInt32BE(3, 1536 + 4 * 5); return b; }, 'E_CORRUPT', /BAT entry 5 .*over the (dynamic header|BAT)/],
    ['two BAT entries on one block', () => { const b = Buffer.from(dyn); b.writeUInt32BE(b.readUInt32BE(1536), 1536 + 4 * 9); return b; }, 'E_CORRUPT', /overlap/],
    ['size over 2040 GiB', () => editFooter(dyn, (f) => { f.currentSize = 2041 * GiB; }), 'E_CORRUPT', /2040 GiB/],
    ['unknown disk type', () => editFooter(dyn, (f) => { f.diskType = 7; }), 'E_CORRUPT', /disk_type 7/],
    ['fixed disk larger than its file', () => editFooter(fixed, (f) => { f.currentSize = fixed.length; }), 'E_CORRUPT', /current_size/],
    ['too small to be a VHD', () => Buffer.from('conectix'), 'E_FORMAT', /too small/],
  ];
  for (const [label, make, code, message] of bad) {
    it(`${label} → ${code}`, async () => {
      const err = await openBytes(make()).then(
        (img) => img.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
    });
  }

  // The error's data names the field (in qemu's words), where it sits in the file and what it held.
  const footerAt = dyn.length - 512;
  const headerAt = 512;
  const fields: Array<[string, () => Buffer, { field: string; offset: number; value: number }]> = [
    ['unknown disk type', () => editFooter(dyn, (f) => { f.diskType = 7; }), { field: 'disk_type', offset: footerAt + 60, value: 7 }],
    ['size over 2040 GiB', () => editFooter(dyn, (f) => { f.currentSize = 2041 * GiB; }), { field: 'current_size', offset: footerAt + 48, value: 2041 * GiB }],
    ['header offset outside the file', () => editFooter(dyn, (f) => { f.dataOffset = 2 ** 40; }), { field: 'data_offset', offset: footerAt + 16, value: 2 ** 40 }],
    ['block size 0', () => editHeader(dyn, (h) => { h.blockSize = 0; }), { field: 'block_size', offset: headerAt + 32, value: 0 }],
    ['BAT too small for the disk', () => editHeader(dyn, (h) => { h.maxTableEntries = 3; }), { field: 'max_table_entries', offset: headerAt + 28, value: 3 }],
    ['BAT outside the file', () => editHeader(dyn, (h) => { h.tableOffset = dyn.length + 512; }), { field: 'table_offset', offset: headerAt + 16, value: dyn.length + 512 }],
  ];
  for (const [label, make, data] of fields) {
    it(`${label}: E_CORRUPT carries file, field ${data.field}, its offset and the value read`, async () => {
      const err = await openBytes(make()).then(
        (img) => img.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'E_CORRUPT', file: 'img.vhd', ...data });
    });
  }

  it('a damaged trailing footer: the copy at offset 0 is used and reported; check flags it and repairs it', async () => {
    const b = Buffer.from(dyn);
    b.fill(0x55, b.length - 512, b.length - 400); // torn trailing footer
    const img = await openBytes(b);
    const info = await img.info();
    expect(info.formatSpecific?.['footer-source']).toBe('copy-at-0');
    expect(info.warnings?.join()).toMatch(/trailing footer unusable .*copy at offset 0/);
    const data = Buffer.alloc(4096);
    await img.read(data, 0);
    await img.close();
    const good = await openBytes(dyn);
    const want = Buffer.alloc(4096);
    await good.read(want, 0);
    await good.close();
    expect(data.equals(want)).toBe(true);

    const loc = folder(new Map([['img.vhd', b]]));
    const r = await check(loc);
    expect(r.problems.map((p) => p.severity)).toContain('corrupt');
    expect(r.problems[0]!.message).toMatch(/trailing footer/);
    const fixedRun = await check(loc, 'all');
    expect(fixedRun.problems.find((p) => /trailing footer/.test(p.message))?.repaired).toBe(true);
    const after = await check(loc);
    expect(after.problems).toEqual([]);
    const reopened = await openLocation(loc, { readOnly: true });
    expect((await reopened.info()).formatSpecific?.['footer-source']).toBe('trailing');
    await reopened.close();
  });

  it('a damaged or differing footer copy at offset 0 is reported by check and rewritten by repair', async () => {
    const damaged = Buffer.from(dyn);
    damaged[40] ^= 1; // original_size byte in the copy: checksum no longer matches
    const loc = folder(new Map([['img.vhd', damaged]]));
    const r = await check(loc);
    expect(r.problems).toEqual([{ severity: 'corrupt', message: expect.stringMatching(/footer copy at offset 0: footer checksum/), offset: 0 }]);
    const img = await openLocation(loc, { readOnly: true });
    expect((await img.info()).warnings?.join()).toMatch(/copy at offset 0 is damaged/);
    await img.close();
    await check(loc, 'all');
    expect((await check(loc)).problems).toEqual([]);

    const differing = editFooter(dyn, (f) => { f.timestamp += 1; }, 'copy');
    const loc2 = folder(new Map([['img.vhd', differing]]));
    expect((await check(loc2)).problems).toEqual([{ severity: 'warning', message: expect.stringMatching(/differs/), offset: 0 }]);
    await check(loc2, 'all');
    expect((await check(loc2)).problems).toEqual([]);
  });

  it('check counts blocks, finds leaked space and frees a leak at the tail', async () => {
    const loc0 = folder(new Map([['img.vhd', dyn]]));
    const clean = await check(loc0);
    expect(clean.problems).toEqual([]);
    expect(clean.allocatedClusters).toBe(4); // 4K blocks 0, 3, and 7-8 (bytes 30000..36000)
    expect(clean.totalClusters).toBe(16);
    // Leak one block's worth of space before the footer.
    const leaky = Buffer.concat([dyn.subarray(0, dyn.length - 512), Buffer.alloc(4608, 0x99), dyn.subarray(dyn.length - 512)]);
    const loc = folder(new Map([['img.vhd', leaky]]));
    const r = await check(loc);
    expect(r.problems).toEqual([{ severity: 'leak', message: expect.stringMatching(/4608 bytes .*leaked/), offset: dyn.length - 512 }]);
    const repaired = await check(loc, 'leaks');
    expect(repaired.problems[0]?.repaired).toBe(true);
    expect((await check(loc)).problems).toEqual([]);
    expect(loc.files.get('img.vhd')!.size).toBe(dyn.length);
  });

  it('check reports BAT entries outside the file and overlapping, without throwing', async () => {
    const b = Buffer.from(dyn);
    b.writeUInt32BE(0x00ffffff, 1536 + 4 * 5);
    b.writeUInt32BE(b.readUInt32BE(1536), 1536 + 4 * 9);
    const r = await check(folder(new Map([['img.vhd', b]])));
    const msgs = r.problems.filter((p) => p.severity === 'corrupt').map((p) => p.message);
    expect(msgs.some((m) => /BAT entry 5/.test(m))).toBe(true);
    expect(msgs.some((m) => /overlap/.test(m))).toBe(true);
    const badHeader = Buffer.from(dyn);
    badHeader[512 + 700] ^= 0xff;
    const hr = await check(folder(new Map([['img.vhd', badHeader]])));
    expect(hr.problems).toEqual([{ severity: 'corrupt', message: expect.stringMatching(/dynamic header checksum/) }]);
    const garbage = await check(folder(new Map([['img.vhd', Buffer.alloc(2048, 7)]])));
    expect(garbage.problems[0]).toMatchObject({ severity: 'corrupt' });
  });

  it('size comes from CHS for qemu and Virtual PC creators, from current_size for the rest', async () => {
    // A dynamic image whose current_size is 64 KiB; CHS 1/4/17 says 34 KiB.
    const cases: Array<[string, number]> = [
      ['qemu', 4 * 17 * 512],
      ['vpc ', 4 * 17 * 512],
      ['qem2', 65536],
      ['win ', 65536],
      ['wa\0\0', 65536],
      ['d2v ', 65536],
      ['vdsk', 65536],
    ];
    for (const [creator, size] of cases) {
      const b = editFooter(dyn, (f) => {
        f.creatorApplication = creator;
        f.cylinders = 1;
        f.heads = 4;
        f.sectorsPerTrack = 17;
      });
      const img = await openBytes(b);
      expect(img.size, creator).toBe(size);
      await img.close();
    }
    // Maximum geometry means "look at current_size", even for qemu.
    const max = editFooter(dyn, (f) => {
      f.creatorApplication = 'qemu';
      f.cylinders = 65535;
      f.heads = 16;
      f.sectorsPerTrack = 255;
    });
    const img = await openBytes(max);
    expect(img.size).toBe(65536);
    await img.close();
  });

  it('create refuses what VHD or Azure cannot hold', async () => {
    const loc = folder(new Map());
    const tries: Array<[Record<string, string>, number, RegExp]> = [
      [{}, 2041 * GiB, /2040 GiB/],
      [{ azure: 'on', subformat: 'dynamic' }, 64 * 1024 * 1024, /azure=on needs subformat=fixed/],
      [{ azure: 'on' }, 64 * 1024 * 1024 + 512, /whole number of MiB/],
      [{ block_size: '3000' }, 1024 * 1024, /block_size/],
      [{ block_size: '512M' }, 1024 * 1024, /block_size/],
      [{ subformat: 'fixed', block_size: '1M' }, 1024 * 1024, /block_size applies/],
      [{ subformat: 'sparse' }, 1024 * 1024, /subformat=sparse/],
    ];
    for (const [options, size, msg] of tries) {
      await expect(vhdDriver.create(loc.at(`x${loc.files.size}.vhd`), { size, options })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringMatching(msg) });
    }
    // 2040 GiB itself is fine as a dynamic disk (the BAT is 4 MiB).
    const big = await vhdDriver.create(loc.at('big.vhd'), { size: 2040 * GiB, options: {} });
    expect(big.size).toBe(2040 * GiB);
    const info = await big.info();
    expect(info.formatSpecific?.geometry).toEqual({ cylinders: 65535, heads: 16, 'sectors-per-track': 255 });
    await big.close();
    expect((loc.files.get('big.vhd') as MemoryStorage).size).toBeLessThan(5 * 1024 * 1024);
  });

  it('CHS geometry follows the spec algorithm', () => {
    expect(chsGeometry(64 * 1024 * 1024)).toEqual({ cylinders: 963, heads: 8, sectorsPerTrack: 17 });
    expect(chsGeometry(67125248)).toEqual({ cylinders: 964, heads: 8, sectorsPerTrack: 17 }); // qemu's 64M
    expect(chsGeometry(1024 ** 3)).toEqual({ cylinders: 2080, heads: 16, sectorsPerTrack: 63 });
    expect(chsGeometry(127 * 1024 ** 3)).toEqual({ cylinders: 65278, heads: 16, sectorsPerTrack: 255 }); // ≥ 65535*16*63 sectors: 255 per track
    expect(chsGeometry(2040 * GiB)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  });
});
