/**
 * Fuzz the VDI reader: damaged headers and block maps must open and read, or fail
 * with a VdiskError, quickly and without large allocations; `check` likewise.
 */
import { describe, expect, it } from 'vitest';
import { vdiDriver, checkVdi } from '../../../src/formats/vdi/index.js';
import { VDI_BLOCK_ZERO, VdiField, decodeHeader } from '../../../src/formats/vdi/layout.js';
import { isVdiskError } from '../../../src/errors.js';
import { openLocation } from '../../../src/formats/registry.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { exercise, fuzz, mutations, type FuzzField } from '../../helpers/fuzz.js';
import { smallVdi } from './util.js';

const FIELDS: FuzzField[] = [
  { offset: VdiField.u32Signature, size: 4, name: 'u32Signature' },
  { offset: VdiField.u32Version, size: 4, name: 'u32Version' },
  { offset: VdiField.cbHeader, size: 4, name: 'cbHeader' },
  { offset: VdiField.u32Type, size: 4, name: 'u32Type' },
  { offset: VdiField.offBlocks, size: 4, name: 'offBlocks' },
  { offset: VdiField.offData, size: 4, name: 'offData' },
  { offset: VdiField.cbDisk, size: 8, name: 'cbDisk' },
  { offset: VdiField.cbDisk + 4, size: 4, name: 'cbDisk.hi' },
  { offset: VdiField.cbBlock, size: 4, name: 'cbBlock' },
  { offset: VdiField.cbBlockExtra, size: 4, name: 'cbBlockExtra' },
  { offset: VdiField.cBlocks, size: 4, name: 'cBlocks' },
  { offset: VdiField.cBlocksAllocated, size: 4, name: 'cBlocksAllocated' },
  { offset: VdiField.uuidLinkage, size: 4, name: 'uuidLinkage' },
  { offset: 512, size: 4, name: 'map[0]' },
  { offset: 516, size: 4, name: 'map[1]' },
  { offset: 520, size: 4, name: 'map[2]' },
  { offset: 540, size: 4, name: 'map[7]' },
];

/** A parent for the differencing seed, found by uuid in the fuzz folder. */
const PARENT = smallVdi({ cbDisk: 32 * 1024, cbBlock: 4096, entries: { 0: 0, 2: 1, 5: 2 }, fill: () => 0x70 });

function seeds(): Buffer[] {
  const parent = decodeHeader(PARENT, 'p');
  return [
    smallVdi({ cbDisk: 32 * 1024, cbBlock: 4096, entries: { 0: 1, 1: 0, 3: VDI_BLOCK_ZERO, 7: 2 } }),
    smallVdi({ cbDisk: 30 * 1024 + 512, cbBlock: 2048, entries: { 0: 0, 2: 1 }, tweak: (h) => (h.cbBlockExtra = 512) }),
    smallVdi({
      cbDisk: 32 * 1024,
      cbBlock: 4096,
      entries: { 1: 0, 2: VDI_BLOCK_ZERO },
      tweak: (h) => {
        h.type = 4;
        h.uuidLinkage = parent.uuidCreate;
        h.uuidParentModify = parent.uuidModify;
      },
    }),
  ];
}

async function attempt(data: Buffer): Promise<void> {
  const folder = new MemoryLocation('f.vdi');
  folder.files.set('f.vdi', new MemoryStorage(data, { name: 'f.vdi' }));
  folder.files.set('p.vdi', new MemoryStorage(PARENT, { name: 'p.vdi' }));
  const storage = await folder.open('f.vdi');
  try {
    await checkVdi(storage, folder, {});
  } catch (err) {
    if (!isVdiskError(err)) throw err;
  }
  const img = await vdiDriver.open(storage, folder, { readOnly: true, openParent: (n) => openLocation(folder.at(n), { readOnly: true }) });
  try {
    await exercise(img, { maxBytes: 1024 * 1024 });
  } finally {
    await img.close();
  }
}

describe('vdi fuzz', () => {
  it('survives 2400 damaged images (read, extents, check)', async () => {
    let total = 0;
    let opened = 0;
    const seedList = seeds();
    for (const [i, seed] of seedList.entries()) {
      // Sanity: the undamaged seed opens.
      await attempt(seed);
      const stats = await fuzz(mutations(seed, { count: 800, seed: 1000 + i, fields: FIELDS, hotBytes: 600 }), attempt, { timeoutMs: 5000, maxRssGrowthMiB: 256 });
      total += stats.cases;
      opened += stats.opened;
    }
    expect(total).toBeGreaterThanOrEqual(2000);
    // Both outcomes happen: the fuzzer is neither too gentle nor too harsh.
    expect(opened).toBeGreaterThan(100);
    expect(opened).toBeLessThan(total);
  }, 120_000);
});
