/**
 * Hostile and damaged VHDX files: each is refused with a VdiskError naming what is
 * wrong (stable codes), or read through the intact redundant copy, never a crash, a
 * hang or a huge allocation.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../helpers/read.js';
import { vhdxDriver } from '../../../src/formats/vhdx/index.js';
import { METADATA_TABLE_SIZE, encodeBatEntry, PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT } from '../../../src/formats/vhdx/layout.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { MiB, fixChecksums, folderWith, openData, ourSeed } from './seed.js';

let seed: Buffer;
beforeAll(async () => {
  seed = await ourSeed();
});

/** The seed with `edit` applied (and the checksums recomputed unless asked not to). */
function damaged(edit: (b: Buffer) => void, fix = true): Buffer {
  const b = Buffer.from(seed);
  edit(b);
  if (fix) fixChecksums(b);
  return b;
}

async function expectCode(data: Buffer, code: string, message?: RegExp, readOnly = true): Promise<void> {
  const err = await openData(data, readOnly).then(
    async (img) => {
      await img.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(err, 'must be refused').toMatchObject({ code });
  if (message) expect((err as Error).message).toMatch(message);
}

/** Offsets in the seed (create.ts's layout). */
const META = 2 * MiB;
const BAT = 3 * MiB;
const REGION1 = 192 * 1024;

describe('VHDX bad input', () => {
  it('the undamaged seed reads', async () => {
    const img = await openData(seed);
    const b = await readAll(img);
    await img.close();
    expect(b.subarray(100, 3100).every((x) => x === 0x11)).toBe(true);
  });

  it('truncated files', async () => {
    await expectCode(seed.subarray(0, 8), 'E_CORRUPT', /shorter than the 1 MiB header section/);
    await expectCode(seed.subarray(0, 300 * 1024), 'E_CORRUPT');
    // Past the header section but before the regions and blocks end.
    await expectCode(seed.subarray(0, 2 * MiB + 4096), 'E_CORRUPT', /past the/);
    await expectCode(seed.subarray(0, 4 * MiB + 4096), 'E_CORRUPT', /BAT entry 0 .*past the/);
  });

  it('a bad CRC on one header: the other is used, and said so; both bad: E_CORRUPT', async () => {
    for (const at of [64 * 1024 + 200, 128 * 1024 + 200]) {
      const b = damaged((x) => void (x[at]! ^= 1), false);
      const img = await openData(b);
      try {
        expect((await img.info()).warnings?.join('\n')).toMatch(/header [12] is unusable \(checksum/);
        expect((await readAll(img)).subarray(100, 3100).every((x) => x === 0x11)).toBe(true);
      } finally {
        await img.close();
      }
    }
    await expectCode(damaged((x) => {
      x[64 * 1024 + 200]! ^= 1;
      x[128 * 1024 + 200]! ^= 1;
    }, false), 'E_CORRUPT', /both headers are unusable/);
  });

  it('headers with equal sequence numbers but different contents are refused', async () => {
    await expectCode(damaged((x) => {
      x.copy(x, 128 * 1024 + 8, 64 * 1024 + 8, 64 * 1024 + 16);
      x[128 * 1024 + 20]! ^= 1;
    }), 'E_CORRUPT', /both headers have SequenceNumber/);
  });

  it('a bad region table: the other copy is used; both bad: E_CORRUPT', async () => {
    const one = damaged((x) => void (x[REGION1 + 100]! ^= 1), false);
    const img = await openData(one);
    expect((await img.info()).warnings?.join('\n')).toMatch(/region table 1 is unusable/);
    await img.close();
    await expectCode(damaged((x) => {
      x[REGION1 + 100]! ^= 1;
      x[256 * 1024 + 100]! ^= 1;
    }, false), 'E_CORRUPT', /both region tables/);
  });

  it('regions past the end, overlapping the log or each other, unknown required regions', async () => {
    const both = (edit: (x: Buffer, base: number) => void) => damaged((x) => {
      edit(x, REGION1);
      edit(x, 256 * 1024);
    });
    await expectCode(both((x, r) => x.writeBigUInt64LE(2n ** 50n, r + 16 + 16)), 'E_CORRUPT', /past the/);
    await expectCode(both((x, r) => x.writeBigUInt64LE(1n * BigInt(MiB), r + 16 + 16)), 'E_CORRUPT', /overlaps the log/);
    await expectCode(both((x, r) => x.writeBigUInt64LE(BigInt(META), r + 16 + 16)), 'E_CORRUPT', /overlaps/);
    await expectCode(both((x, r) => x.writeUInt32LE(0xfff00000, r + 16 + 24)), 'E_CORRUPT');
    await expectCode(both((x, r) => x.writeUInt32LE(100000, r + 8)), 'E_CORRUPT', /EntryCount/);
    await expectCode(both((x, r) => {
      x.writeUInt32LE(3, r + 8);
      x.fill(0x42, r + 16 + 64, r + 16 + 80);
      x.writeBigUInt64LE(BigInt(5 * MiB), r + 16 + 80);
      x.writeUInt32LE(MiB, r + 16 + 88);
      x.writeUInt32LE(1, r + 16 + 92);
    }), 'E_UNSUPPORTED', /required region/);
  });

  it('huge or absurd metadata sizes and values', async () => {
    const item = (i: number): number => META + 32 + i * 32;
    await expectCode(damaged((x) => x.writeUInt16LE(0xffff, META + 10)), 'E_CORRUPT', /EntryCount/);
    await expectCode(damaged((x) => x.writeUInt32LE(0xffffffff, item(0) + 20)), 'E_CORRUPT', /over/);
    await expectCode(damaged((x) => x.writeUInt32LE(0xfffff000, item(0) + 16)), 'E_CORRUPT', /outside/);
    await expectCode(damaged((x) => x.writeUInt32LE(12, item(0) + 16)), 'E_CORRUPT', /outside/);
    // File parameters: block size not a power of two, or beyond 256 MiB.
    await expectCode(damaged((x) => x.writeUInt32LE(3 * MiB, META + METADATA_TABLE_SIZE)), 'E_CORRUPT', /BlockSize/);
    await expectCode(damaged((x) => x.writeUInt32LE(0x80000000, META + METADATA_TABLE_SIZE)), 'E_CORRUPT', /BlockSize/);
    // Virtual disk size: 2^63, and 64 TiB (whose BAT does not fit the 1 MiB BAT region: refused before any allocation).
    await expectCode(damaged((x) => x.writeBigUInt64LE(2n ** 63n, META + METADATA_TABLE_SIZE + 8)), 'E_CORRUPT', /VirtualDiskSize/);
    await expectCode(damaged((x) => x.writeBigUInt64LE(2n ** 46n, META + METADATA_TABLE_SIZE + 8)), 'E_CORRUPT', /BAT region .* too small/);
    await expectCode(damaged((x) => x.writeUInt32LE(1000, META + METADATA_TABLE_SIZE + 32)), 'E_CORRUPT', /LogicalSectorSize/);
    // An unknown required item, and a missing one.
    await expectCode(damaged((x) => x.fill(0x42, item(2), item(2) + 16)), 'E_UNSUPPORTED', /required metadata item/);
    await expectCode(damaged((x) => x.writeUInt16LE(2, META + 10)), 'E_CORRUPT', /the metadata has no .* item/);
    // HasParent without a parent locator.
    await expectCode(damaged((x) => x.writeUInt32LE(2, META + METADATA_TABLE_SIZE + 4)), 'E_CORRUPT', /parent locator/);
  });

  it('BAT entries past the end of the file, over the metadata, or in states the disk cannot have', async () => {
    const bat = (n: number, state: number, offset: number) => damaged((x) => encodeBatEntry(x, BAT + n * 8, state, offset));
    await expectCode(bat(1, PAYLOAD_BLOCK_FULLY_PRESENT, 2 ** 40), 'E_CORRUPT', /BAT entry 1 .*past the/);
    await expectCode(bat(1, PAYLOAD_BLOCK_FULLY_PRESENT, 2 ** 62), 'E_CORRUPT', /BAT entry 1/);
    await expectCode(bat(1, PAYLOAD_BLOCK_FULLY_PRESENT, 0), 'E_CORRUPT', /BAT entry 1/);
    await expectCode(bat(1, PAYLOAD_BLOCK_FULLY_PRESENT, META), 'E_CORRUPT', /over the headers, log or regions/);
    await expectCode(bat(1, PAYLOAD_BLOCK_PARTIALLY_PRESENT, 4 * MiB), 'E_CORRUPT', /PARTIALLY_PRESENT, but the disk has no parent/);
    await expectCode(bat(1, 4, 0), 'E_CORRUPT', /undefined state 4/);
  });

  it('check reports instead of throwing, and finds blocks that share space', async () => {
    const shared = damaged((x) => encodeBatEntry(x, BAT + 8, PAYLOAD_BLOCK_FULLY_PRESENT, 4 * MiB));
    const f = folderWith(shared);
    const r = await vhdxDriver.check!(new MemoryStorage(shared, { name: 'f.vhdx' }), f.at('f.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('no')) });
    expect(r.problems.map((p) => p.message).join('\n')).toMatch(/payload block 1 at 4194304 overlaps payload block 0/);
    const bad = damaged((x) => x.writeUInt16LE(0xffff, META + 10));
    const r2 = await vhdxDriver.check!(new MemoryStorage(bad, { name: 'f.vhdx' }), f.at('f.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('no')) });
    expect(r2.problems[0]).toMatchObject({ severity: 'corrupt' });
  });
});
