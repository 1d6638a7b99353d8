/**
 * Fuzz the qcow2 driver: damaged headers, extensions, L1/L2 tables, refcount tables
 * and blocks and compressed descriptors must check, open, read, map and take a few writes,
 * or fail with a VdiskError, quickly and without large allocations.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isVdiskError } from '../../../src/errors.js';
import { Qcow2Field, decodeHeader } from '../../../src/formats/qcow2/layout.js';
import { checkQcow2, qcow2Driver } from '../../../src/formats/qcow2/index.js';
import { openLocation } from '../../../src/formats/registry.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { exercise, fuzz, mutations, type FuzzField } from '../../helpers/fuzz.js';

const FIXTURES = new URL('../../../fixtures/qcow2/', import.meta.url);
const fixture = (name: string): Buffer => readFileSync(new URL(name, FIXTURES));
const BASE = fixture('qemu72-v2-512-base.qcow2');

/** A seed made by our writer: data, zero clusters, and a second L2 table. */
async function ourSeed(): Promise<Buffer> {
  const loc = new MemoryLocation('o.qcow2');
  const img = await qcow2Driver.create(loc, { size: 96 * 1024, options: { cluster_size: '512' } });
  await img.write(Buffer.alloc(3000, 0x11), 100);
  await img.write(Buffer.alloc(512, 0x12), 70 * 1024);
  await img.writeZeroes(1024, 512);
  await img.close();
  const s = loc.files.get('o.qcow2')!;
  const b = Buffer.alloc(s.size);
  await s.read(b, 0);
  return b;
}

const HEADER_FIELDS: FuzzField[] = (Object.entries(Qcow2Field) as Array<[string, number]>).map(([name, offset]) => ({
  offset,
  size: ['backingFileOffset', 'size', 'l1TableOffset', 'refcountTableOffset', 'snapshotsOffset', 'incompatibleFeatures', 'compatibleFeatures', 'autoclearFeatures'].includes(name) ? 8 : name === 'compressionType' ? 1 : 4,
  name,
}));

/** Header fields plus the first entries of the seed's L1 table, L2 tables, refcount table and blocks, and extension headers. */
function fieldsOf(seed: Buffer): FuzzField[] {
  const h = decodeHeader(seed, 'seed');
  const cs = 2 ** h.clusterBits;
  const out = [...HEADER_FIELDS];
  const entries = (at: number, n: number, name: string): void => {
    for (let i = 0; i < n && at + i * 8 + 8 <= seed.length; i++) {
      out.push({ offset: at + i * 8, size: 8, name: `${name}[${i}]` }, { offset: at + i * 8, size: 4, name: `${name}[${i}].hi` });
    }
  };
  entries(h.l1TableOffset, Math.min(h.l1Size, 4), 'l1');
  entries(h.refcountTableOffset, 4, 'reftable');
  const rb = Number(seed.readBigUInt64BE(h.refcountTableOffset) & 0x00fffffffffffe00n);
  if (rb > 0) for (let i = 0; i < 8; i++) out.push({ offset: rb + i * 2, size: 2, name: `refblock[${i}]` });
  for (let i = 0; i < Math.min(h.l1Size, 2); i++) {
    const l2 = Number(seed.readBigUInt64BE(h.l1TableOffset + i * 8) & 0x00fffffffffffe00n);
    if (l2 > 0 && l2 + cs <= seed.length) entries(l2, 12, `l2.${i}`);
  }
  const ext = Math.ceil(h.headerLength / 8) * 8;
  out.push({ offset: ext, size: 4, name: 'ext.type' }, { offset: ext + 4, size: 4, name: 'ext.length' }, { offset: ext + 8, size: 8, name: 'ext.data' });
  return out;
}

/** A memory folder holding the damaged image and the base it may name (fresh storages: closing one closes it for good). */
function folderWith(data: Buffer): MemoryLocation {
  const folder = new MemoryLocation('f.qcow2');
  folder.files.set('f.qcow2', new MemoryStorage(Buffer.from(data), { name: 'f.qcow2' }));
  folder.files.set('qemu72-v2-512-base.qcow2', new MemoryStorage(BASE, { name: 'qemu72-v2-512-base.qcow2', readOnly: true }));
  return folder;
}

async function attempt(data: Buffer): Promise<void> {
  const f0 = folderWith(data);
  try {
    await checkQcow2(await f0.open('f.qcow2'), f0, {});
  } catch (err) {
    if (!isVdiskError(err)) throw err;
  }
  const f1 = folderWith(data);
  const open1 = (n: string, format?: string) => openLocation(f1.at(n), { readOnly: true, format });
  const ro = await qcow2Driver.open(await f1.open('f.qcow2'), f1, { readOnly: true, openParent: open1 });
  try {
    await exercise(ro, { maxBytes: 256 * 1024 });
    await ro.info();
  } finally {
    await ro.close();
  }
  // Writes walk the refcounts too; a damaged image may refuse them, but only with a VdiskError.
  const f2 = folderWith(data);
  const open2 = (n: string, format?: string) => openLocation(f2.at(n), { readOnly: true, format });
  const rw = await qcow2Driver.open(await f2.open('f.qcow2'), f2, { readOnly: false, openParent: open2 });
  try {
    const half = Math.floor(rw.size / 2 / 512) * 512;
    await rw.write(Buffer.alloc(512, 0xee), 0);
    if (half + 1536 <= rw.size) {
      await rw.write(Buffer.alloc(1536, 0xdd), half);
      await rw.writeZeroes(half, 512);
    }
    await rw.flush();
    writes++;
  } finally {
    await rw.close().catch((err: unknown) => {
      if (!isVdiskError(err)) throw err;
    });
  }
}

/** Cases whose writes all went through (so the write path is really fuzzed). */
let writes = 0;

describe('qcow2 fuzz', () => {
  it('survives 7500 damaged images (check, open, extents, read, info, write)', async () => {
    const seeds = [fixture('qemu72-v3-512-compressed.qcow2'), fixture('qemu72-v3-1k-child.qcow2'), BASE, await ourSeed(), fixture('qemu72-v3-16k-extl2.qcow2')];
    let total = 0;
    let opened = 0;
    for (const [i, seed] of seeds.entries()) {
      // The undamaged seed opens, reads and takes writes (extended L2 images are read-only).
      await attempt(Buffer.from(seed)).catch((err: unknown) => {
        if (!(i === 4 && isVdiskError(err, 'E_UNSUPPORTED'))) throw err;
      });
      const stats = await fuzz(mutations(seed, { count: 1500, seed: 100 + i, fields: fieldsOf(seed), bigEndian: true, hotBytes: Math.min(seed.length, 4096) }), attempt, { timeoutMs: 5000 });
      total += stats.cases;
      opened += stats.opened;
      expect(stats.rejected.size, `seed ${i}: some cases must be rejected`).toBeGreaterThan(0);
    }
    expect(total).toBe(7500);
    // Most single-field damage is caught, but a fair share still opens (the fuzzer is not only hitting the magic).
    expect(opened).toBeGreaterThan(300);
    expect(writes).toBeGreaterThan(300);
  }, 300_000);
});
