/**
 * Fuzz the VHDX driver: damaged headers, region tables (with their checksums made
 * right again, so the damage reaches the fields), metadata, BAT and log must check,
 * open, read, map and take a few writes, or fail with a VdiskError, quickly and
 * without large allocations.
 */
import { describe, expect, it } from 'vitest';
import { isVdiskError } from '../../../src/errors.js';
import { vhdxDriver } from '../../../src/formats/vhdx/index.js';
import { HEADER1_OFFSET, HEADER2_OFFSET, METADATA_TABLE_SIZE, REGION_TABLE1_OFFSET, encodeLogEntry, randomGuid } from '../../../src/formats/vhdx/layout.js';
import { openLocation } from '../../../src/formats/registry.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { exercise, fuzz, mutations, rng, type FuzzField } from '../../helpers/fuzz.js';
import { MiB, fixChecksums, folderWith, ourSeed } from './seed.js';

const META = 2 * MiB;
const BAT = 3 * MiB;

/** Header, region table, metadata table and item, BAT and log entry fields of the seed layout. */
function fields(): FuzzField[] {
  const out: FuzzField[] = [];
  for (const h of [HEADER1_OFFSET, HEADER2_OFFSET]) out.push({ offset: h + 8, size: 8, name: 'seq' }, { offset: h + 64, size: 2, name: 'logVersion' }, { offset: h + 66, size: 2, name: 'version' }, { offset: h + 68, size: 4, name: 'logLength' }, { offset: h + 72, size: 8, name: 'logOffset' }, { offset: h + 48, size: 8, name: 'logGuid' });
  const r = REGION_TABLE1_OFFSET;
  out.push({ offset: r + 8, size: 4, name: 'regionCount' });
  for (let i = 0; i < 2; i++) out.push({ offset: r + 16 + i * 32 + 16, size: 8, name: `region${i}.offset` }, { offset: r + 16 + i * 32 + 24, size: 4, name: `region${i}.length` }, { offset: r + 16 + i * 32, size: 4, name: `region${i}.guid` });
  out.push({ offset: META + 10, size: 2, name: 'metaCount' });
  for (let i = 0; i < 5; i++) out.push({ offset: META + 32 + i * 32 + 16, size: 4, name: `item${i}.offset` }, { offset: META + 32 + i * 32 + 20, size: 4, name: `item${i}.length` }, { offset: META + 32 + i * 32 + 24, size: 4, name: `item${i}.flags` });
  for (let k = 0; k < 6; k++) out.push({ offset: META + METADATA_TABLE_SIZE + k * 4, size: 4, name: `items+${k * 4}` });
  for (let i = 0; i < 8; i++) out.push({ offset: BAT + i * 8, size: 8, name: `bat${i}` }, { offset: BAT + i * 8, size: 1, name: `bat${i}.state` });
  for (const o of [8, 12, 16, 24, 48, 56, 64, 72, 80, 88]) out.push({ offset: MiB + o, size: o === 8 || o === 12 || o === 24 ? 4 : 8, name: `log+${o}` });
  return out;
}

/** The seed with a log entry pending (BAT entry 2 names the block at 5 MiB, zeros over spare metadata space), LogGuid set. */
function withLog(seed: Buffer): Buffer {
  const b = Buffer.from(seed);
  const guid = randomGuid();
  const sector = Buffer.from(b.subarray(BAT, BAT + 4096));
  sector.writeUInt32LE(6 | (5 << 20), 16);
  encodeLogEntry({ tail: 0, sequenceNumber: 7n, logGuid: guid, flushedFileOffset: b.length, lastFileOffset: b.length + MiB }, [{ fileOffset: BAT, data: sector }, { fileOffset: META + 512 * 1024, zeroLength: 8192 }]).copy(b, MiB);
  // Both headers name the entry's LogGuid (copied as the entry stores it).
  for (const h of [HEADER1_OFFSET, HEADER2_OFFSET]) b.copy(b, h + 48, MiB + 32, MiB + 48);
  fixChecksums(b);
  return b;
}

let writes = 0;

async function attempt(data: Buffer): Promise<void> {
  const f0 = folderWith(data);
  try {
    await vhdxDriver.check!(new MemoryStorage(Buffer.from(data), { name: 'f.vhdx', readOnly: true }), f0.at('f.vhdx'), { readOnly: true, openParent: () => Promise.reject(new Error('unused')) });
  } catch (err) {
    if (!isVdiskError(err)) throw err;
  }
  const ro = await openLocation(folderWith(data).at('f.vhdx'), { readOnly: true, format: 'vhdx' });
  try {
    await exercise(ro, { maxBytes: 256 * 1024 });
    await ro.info();
  } finally {
    await ro.close();
  }
  const rw = await openLocation(folderWith(data).at('f.vhdx'), { readOnly: false, format: 'vhdx' });
  try {
    const half = Math.floor(rw.size / 2 / 4096) * 4096;
    await rw.write(Buffer.alloc(4096, 0xee), 0);
    if (half + 8192 <= rw.size) {
      await rw.write(Buffer.alloc(8192, 0xdd), half);
      await rw.writeZeroes(half, 4096);
    }
    await rw.flush();
    writes++;
  } finally {
    await rw.close().catch((err: unknown) => {
      if (!isVdiskError(err)) throw err;
    });
  }
}

describe('VHDX fuzz', () => {
  it('survives 5000 damaged images (check, open, extents, read, info, write)', async () => {
    const plain = await ourSeed();
    const fixed = await ourSeed({ subformat: 'fixed', block_size: '1M', logical_sector_size: '4096' }, 3 * MiB);
    const seeds = [plain, withLog(plain), fixed];
    const counts = [2200, 1600, 1200];
    let total = 0;
    let opened = 0;
    for (const [i, seed] of seeds.entries()) {
      await attempt(Buffer.from(seed));
      const rand = rng(900 + i);
      // Half the cases get their checksums recomputed after the damage.
      const cases = (function* () {
        for (const c of mutations(seed, { count: counts[i]!, seed: 300 + i, fields: fields(), hotBytes: 320 * 1024 })) {
          if (rand() < 0.5 && c.data.length >= 320 * 1024) fixChecksums(c.data);
          yield c;
        }
      })();
      const stats = await fuzz(cases, attempt, { timeoutMs: 5000 });
      total += stats.cases;
      opened += stats.opened;
      expect(stats.rejected.size, `seed ${i}: some cases must be rejected`).toBeGreaterThan(0);
    }
    expect(total).toBe(5000);
    expect(opened).toBeGreaterThan(500);
    expect(writes).toBeGreaterThan(500);
  }, 600_000);

  it('survives 1000 damaged differencing images over an intact parent (sector bitmaps, locator, writes)', async () => {
    const base = new MemoryLocation('p.vhdx');
    const p = await vhdxDriver.create(base, { size: 4 * MiB, options: { block_size: '1M' } });
    await p.write(Buffer.alloc(4 * MiB, 0x5a), 0);
    await p.close();
    const bytesOf = async (loc: MemoryLocation, name: string): Promise<Buffer> => {
      const st = loc.files.get(name)!;
      const b = Buffer.alloc(st.size);
      await st.read(b, 0);
      return b;
    };
    const parentBytes = await bytesOf(base, 'p.vhdx');
    const parent = await openLocation(base.at('p.vhdx'), { readOnly: true });
    const c = await vhdxDriver.create(base.at('c.vhdx'), { size: 4 * MiB, options: { block_size: '1M' }, parent, parentRef: 'p.vhdx' });
    await c.write(Buffer.alloc(3000, 0x11), 100);
    await c.write(Buffer.alloc(MiB, 0x22), 2 * MiB);
    await c.close();
    const seed = await bytesOf(base, 'c.vhdx');
    const folder = (data: Buffer): MemoryLocation => {
      const f = new MemoryLocation('c.vhdx');
      f.files.set('c.vhdx', new MemoryStorage(Buffer.from(data), { name: 'c.vhdx' }));
      f.files.set('p.vhdx', new MemoryStorage(parentBytes, { name: 'p.vhdx', readOnly: true }));
      return f;
    };
    let wrote = 0;
    const tryChild = async (data: Buffer): Promise<void> => {
      const ro = await openLocation(folder(data).at('c.vhdx'), { readOnly: true, format: 'vhdx' });
      try {
        await exercise(ro, { maxBytes: 256 * 1024 });
        await ro.info();
      } finally {
        await ro.close();
      }
      const rw = await openLocation(folder(data).at('c.vhdx'), { format: 'vhdx' });
      try {
        await rw.write(Buffer.alloc(700, 0xee), 300);
        await rw.write(Buffer.alloc(4096, 0xdd), 3 * MiB);
        await rw.flush();
        wrote++;
      } finally {
        await rw.close().catch((err: unknown) => {
          if (!isVdiskError(err)) throw err;
        });
      }
    };
    await tryChild(seed);
    const chunkRatio = (2 ** 23 * 512) / MiB;
    const extra: FuzzField[] = [
      { offset: BAT + chunkRatio * 8, size: 8, name: 'sb0' },
      { offset: BAT + chunkRatio * 8, size: 1, name: 'sb0.state' },
      ...Array.from({ length: 8 }, (_, i) => ({ offset: META + METADATA_TABLE_SIZE + 40 + i * 4, size: 4 as const, name: `locator+${i * 4}` })),
      { offset: META + 32 + 5 * 32 + 16, size: 4, name: 'locatorItem.offset' },
      { offset: META + 32 + 5 * 32 + 20, size: 4, name: 'locatorItem.length' },
    ];
    const rand = rng(77);
    const cases = (function* () {
      for (const k of mutations(seed, { count: 1000, seed: 555, fields: [...fields(), ...extra], hotBytes: 320 * 1024 })) {
        if (rand() < 0.5 && k.data.length >= 320 * 1024) fixChecksums(k.data);
        yield k;
      }
    })();
    const stats = await fuzz(cases, tryChild, { timeoutMs: 5000 });
    expect(stats.cases).toBe(1000);
    expect(stats.rejected.size).toBeGreaterThan(0);
    expect(wrote).toBeGreaterThan(200);
  }, 600_000);
});
