import { randomInt } from 'node:crypto';
import { open as fsOpen, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Extent } from '../../src/device/block-device.js';
import { listExtents } from '../../src/device/base.js';
import { open } from '../../src/formats/registry.js';
import { convert } from '../../src/ops/convert.js';
import { FileStorage } from '../../src/storage/file.js';
import { filterStorage } from '../../src/storage/filter.js';
import { nativeSeek } from '../../src/storage/native-seek.js';
import { rawDriver } from '../../src/formats/raw/index.js';
import { FileLocation } from '../../src/storage/location.js';
import { vdisk } from '../helpers/cli.js';
import { nativeLoads, withHoleMode } from '../helpers/native.js';
import { itWith, qemuSame, runOk } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-seek-');
});

/** A sparse file of `size` bytes with non-zero data (no written zeros) at each [offset, length]. */
async function sparseFile(name: string, size: number, pieces: Array<[number, number]>): Promise<string> {
  const p = join(dir, name);
  const fh = await fsOpen(p, 'w');
  try {
    await fh.truncate(size);
    for (const [i, [off, len]] of pieces.entries()) {
      // patternBytes never writes a zero byte run of a page, so every written page is data to the scan too.
      const data = patternBytes(len, i + 1).map((b) => b | 1);
      await fh.write(data, 0, len, off);
    }
  } finally {
    await fh.close();
  }
  return p;
}

async function extentsOf(path: string, mode: 'native' | 'scan', offset?: number, length?: number): Promise<Extent[]> {
  const img = await withHoleMode(mode, () => open(path, { readOnly: true }));
  try {
    expect(img.extentsReadContent ?? false).toBe(mode === 'scan');
    return await listExtents(img, offset, length);
  } finally {
    await img.close();
  }
}

describe('native SEEK_DATA/SEEK_HOLE', () => {
  it('the prebuilt addon loads on linux-x64 and VDISK_NO_NATIVE=1 turns it off', async () => {
    if (`${process.platform}-${process.arch}` === 'linux-x64' && process.env.VDISK_NO_NATIVE !== '1') expect(nativeLoads).toBe(true);
    await withHoleMode('scan', async () => expect(nativeSeek()).toBeUndefined());
    const p = await sparseFile('onoff.raw', 4 * MiB, [[MiB, 4096]]);
    const s = await withHoleMode('scan', () => FileStorage.open(p, { readOnly: true }));
    expect(s.extents).toBeUndefined();
    await s.close();
  });

  it.runIf(nativeLoads)('answers lseek for data and holes, -1 past the last data, and errors by errno', async () => {
    const addon = nativeSeek()!;
    const p = await sparseFile('lseek.raw', 16 * MiB, [[2 * MiB, 8192]]);
    const fh = await fsOpen(p, 'r');
    try {
      expect(addon.seek(fh.fd, 0, addon.SEEK_DATA)).toBe(2 * MiB);
      expect(addon.seek(fh.fd, 2 * MiB, addon.SEEK_HOLE)).toBe(2 * MiB + 8192);
      expect(addon.seek(fh.fd, 3 * MiB, addon.SEEK_DATA)).toBe(-1);
      expect(addon.seek(fh.fd, 16 * MiB, addon.SEEK_HOLE)).toBe(-1);
      expect(() => addon.seek(fh.fd, 0, 0)).toThrow(/whence/);
      expect(() => addon.seek(fh.fd, -1, addon.SEEK_DATA)).toThrow();
    } finally {
      await fh.close();
    }
    expect(() => addon.seek(2 ** 30, 0, addon.SEEK_DATA)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it.runIf(nativeLoads)('both paths give the same extents, whole and in ranges, for files of scattered data', async () => {
    const cases: Array<[string, number, Array<[number, number]>]> = [
      ['empty-tail.raw', 8 * MiB, [[0, 4096], [MiB, 3 * 4096], [5 * MiB + 4096, 64 * KiB]]],
      ['data-at-end.raw', 8 * MiB, [[3 * MiB, MiB], [8 * MiB - 4096, 4096]]],
      ['all-data.raw', 2 * MiB, [[0, 2 * MiB]]],
      ['unaligned-size.raw', 3 * MiB + 1536, [[4096, 100], [3 * MiB, 1536]]],
    ];
    // And a random layout: page-aligned pieces of 1..40 pages in a 64 MiB file.
    const random: Array<[number, number]> = [];
    for (let off = randomInt(0, 64) * 4096; off < 62 * MiB; off += randomInt(1, 2000) * 4096) random.push([off, randomInt(1, 40) * 4096]);
    cases.push(['random.raw', 64 * MiB, random]);
    for (const [name, size, pieces] of cases) {
      const p = await sparseFile(name, size, pieces);
      const native = await extentsOf(p, 'native');
      expect(native, name).toEqual(await extentsOf(p, 'scan'));
      expect(native.some((e) => e.kind === 'data'), name).toBe(true);
      // A range starting and ending inside extents (page-aligned: the scan tells pages apart from the range's start).
      const from = Math.floor(size / 3 / 4096) * 4096;
      const len = Math.floor(size / 2 / 4096) * 4096;
      expect(await extentsOf(p, 'native', from, len), name).toEqual(await extentsOf(p, 'scan', from, len));
    }
  });

  it.runIf(nativeLoads)('map of a 64 GiB raw reads none of its holes (no read at all)', async () => {
    const p = await sparseFile('big.raw', 64 * GiB, [[0, MiB], [32 * GiB, 4096], [64 * GiB - 4096, 4096]]);
    const inner = await FileStorage.open(p, { readOnly: true });
    let reads = 0;
    const counted = filterStorage(inner, {
      read: (b, o) => {
        reads++;
        return inner.read(b, o);
      },
    });
    const img = await rawDriver.open(counted, new FileLocation(p, []), { readOnly: true, openParent: () => Promise.reject(new Error('raw has no parent')) });
    try {
      expect(img.extentsReadContent).toBe(false);
      const ext = await listExtents(img);
      expect(ext.filter((e) => e.kind === 'data').map((e) => [e.offset, e.length])).toEqual([
        [0, MiB],
        [32 * GiB, 4096],
        [64 * GiB - 4096, 4096],
      ]);
      expect(ext.reduce((n, e) => n + e.length, 0)).toBe(64 * GiB);
      expect(reads).toBe(0);
    } finally {
      await img.close();
    }
  });

  it.runIf(nativeLoads)('written zeros are data to lseek, and convert -S still leaves them unallocated; -S 0 allocates them', async () => {
    const p = join(dir, 'zeros.raw');
    const fh = await fsOpen(p, 'w');
    await fh.truncate(16 * MiB);
    await fh.write(patternBytes(MiB, 7), 0, MiB, 0);
    await fh.write(Buffer.alloc(4 * MiB), 0, 4 * MiB, 4 * MiB);
    await fh.write(patternBytes(4096, 8), 0, 4096, 12 * MiB);
    await fh.close();
    const ext = await extentsOf(p, 'native');
    expect(ext.filter((e) => e.kind === 'data').map((e) => [e.offset, e.length])).toEqual([
      [0, MiB],
      [4 * MiB, 4 * MiB],
      [12 * MiB, 4096],
    ]);
    const sparse = join(dir, 'zeros-out.raw');
    await convert(p, sparse, { format: 'raw' });
    expect((await stat(sparse)).blocks * 512).toBeLessThan(MiB + 64 * KiB);
    const full = join(dir, 'zeros-full.raw');
    await convert(p, full, { format: 'raw', sparseSize: 0 });
    expect((await stat(full)).blocks * 512).toBeGreaterThanOrEqual(16 * MiB);
    const vhd = join(dir, 'zeros-out.vhd');
    await convert(p, vhd, { format: 'vhd' });
    for (const out of [sparse, full]) {
      const a = await open(out, { readOnly: true });
      const b = await open(p, { readOnly: true });
      const x = Buffer.alloc(16 * MiB);
      const y = Buffer.alloc(16 * MiB);
      await a.read(x, 0);
      await b.read(y, 0);
      expect(x.equals(y)).toBe(true);
      await a.close();
      await b.close();
    }
  });

  it.runIf(nativeLoads)('a raw source converts through its holes, not its bytes: each data byte is read once, no hole is read', async () => {
    const p = await sparseFile('convert-src.raw', 8 * GiB, [[0, 2 * MiB], [4 * GiB, 64 * KiB], [8 * GiB - 4096, 4096]]);
    const inner = await FileStorage.open(p, { readOnly: true });
    let bytesRead = 0;
    const counted = filterStorage(inner, {
      read: (b, o) => {
        bytesRead += b.length;
        return inner.read(b, o);
      },
    });
    const src = await rawDriver.open(counted, new FileLocation(p, []), { readOnly: true, openParent: () => Promise.reject(new Error('raw has no parent')) });
    try {
      await convert(src, join(dir, 'convert-out.vdi'), { format: 'vdi' });
    } finally {
      await src.close();
    }
    expect(bytesRead).toBe(2 * MiB + 64 * KiB + 4096);
    const back = await open(join(dir, 'convert-out.vdi'), { readOnly: true });
    const buf = Buffer.alloc(64 * KiB);
    await back.read(buf, 4 * GiB);
    expect(buf.equals(patternBytes(64 * KiB, 2).map((b) => b | 1))).toBe(true);
    await back.close();
  });

  itWith(['qemu-img'], 'vdisk map (CLI) gives qemu-img map\'s data ranges with and without the addon', async () => {
    const p = await sparseFile('cli.raw', 256 * MiB, [[MiB, 8192], [100 * MiB, 3 * MiB], [256 * MiB - 4096, 4096]]);
    const ours = await vdisk(['map', '--output', 'json', p], dir);
    expect(ours.code).toBe(0);
    const scan = await withHoleMode('scan', () => vdisk(['map', '--output', 'json', p], dir));
    expect(scan.code).toBe(0);
    expect(scan.stdout).toBe(ours.stdout);
    const dataOf = (json: string): number[][] =>
      (JSON.parse(json) as Array<{ start: number; length: number; data: boolean }>).filter((e) => e.data).map((e) => [e.start, e.length]);
    expect(dataOf(ours.stdout)).toEqual(dataOf(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'raw', p])));
    // And a convert of it through qemu-img's eyes.
    const out = join(dir, 'cli.vhd');
    expect((await vdisk(['convert', '-O', 'vhd', p, out], dir)).code).toBe(0);
    expect(await qemuSame(p, 'raw', out, 'vpc')).toBe(true);
  });
});
