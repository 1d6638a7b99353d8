/**
 * Mutation fuzzing of the VHD reader (and check, and a write) over dynamic,
 * differencing and fixed seeds: every case opens or fails with a VdiskError, in
 * bounded time and memory. Half the cases get their checksums recomputed, so the
 * damage reaches the field validation behind them.
 */
import { describe, expect, it } from 'vitest';
import { openLocation } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { FOOTER_FIELDS, HEADER_FIELDS } from '../../../src/formats/vhd/layout.js';
import { exercise, fuzz, mutations, type FuzzField } from '../../helpers/fuzz.js';
import { fixChecksums, folder, smallImage } from './helpers.js';

/** Footer fields at `base` (0 for the copy, the file's end minus 512 for the trailing footer). */
function footerFields(base: number): FuzzField[] {
  const f = FOOTER_FIELDS;
  return [
    { offset: base + f.dataOffset, size: 8, name: 'data_offset' },
    { offset: base + f.currentSize, size: 8, name: 'current_size' },
    { offset: base + f.originalSize, size: 8, name: 'original_size' },
    { offset: base + f.cylinders, size: 2, name: 'cylinders' },
    { offset: base + f.heads, size: 1, name: 'heads' },
    { offset: base + f.sectorsPerTrack, size: 1, name: 'sectors' },
    { offset: base + f.diskType, size: 4, name: 'disk_type' },
    { offset: base + f.creatorApplication, size: 4, name: 'creator' },
  ];
}

function headerFields(): FuzzField[] {
  const h = HEADER_FIELDS;
  const out: FuzzField[] = [
    { offset: 512 + h.tableOffset, size: 8, name: 'table_offset' },
    { offset: 512 + h.maxTableEntries, size: 4, name: 'max_table_entries' },
    { offset: 512 + h.blockSize, size: 4, name: 'block_size' },
  ];
  for (let i = 0; i < 2; i++) {
    const o = 512 + h.parentLocators + i * h.parentLocatorSize;
    out.push({ offset: o, size: 4, name: `locator${i}.code` }, { offset: o + 8, size: 4, name: `locator${i}.length` }, { offset: o + 16, size: 8, name: `locator${i}.offset` });
  }
  // BAT entries.
  for (let i = 0; i < 16; i++) out.push({ offset: 1536 + 4 * i, size: 4, name: `bat[${i}]` });
  return out;
}

async function attempt(data: Buffer, others: Map<string, Buffer>, index: number): Promise<void> {
  const bytes = index % 2 === 0 ? fixChecksums(data) : data;
  const files = new Map(others);
  files.set('img.vhd', bytes);
  const loc = folder(files);
  // check never throws on a damaged image; it reports.
  const storage = await loc.open('img.vhd');
  const r = await vhdDriver.check!(storage, loc, { readOnly: true, openParent: (n) => openLocation(loc.at(n), { readOnly: true }) });
  expect(Array.isArray(r.problems)).toBe(true);
  const img = await openLocation(loc, { format: 'vhd' });
  try {
    await exercise(img, { maxBytes: 256 * 1024 });
    if (img.size >= 1024) await img.write(Buffer.alloc(700, 0x5a), Math.floor(img.size / 2 / 512) * 512 + 100);
  } finally {
    await img.close();
  }
}

describe('VHD reader fuzz', () => {
  const seeds: Array<['dynamic' | 'differencing' | 'fixed', number]> = [
    ['dynamic', 1000],
    ['differencing', 700],
    ['fixed', 400],
  ];
  for (const [kind, count] of seeds) {
    it(`${count} mutations of a ${kind} image: open, read, write, check → fine or VdiskError`, async () => {
      const files = await smallImage(kind);
      const seed = files.get('img.vhd')!;
      files.delete('img.vhd');
      const fields = [...footerFields(seed.length - 512), ...(kind === 'fixed' ? [] : [...footerFields(0), ...headerFields()])];
      let i = 0;
      const stats = await fuzz(mutations(seed, { count, seed: kind.length * 7919, fields, bigEndian: true, hotBytes: 3072 }), (d) => attempt(d, files, i++), { timeoutMs: 5000 });
      expect(stats.cases).toBe(count);
      // Both outcomes happen: the fuzz reaches deep enough to open damaged images, and rejects others.
      expect(stats.opened).toBeGreaterThan(count / 10);
      expect([...stats.rejected.values()].reduce((a, b) => a + b, 0)).toBeGreaterThan(count / 10);
    }, 120_000);
  }
});
