/** Fuzzing the VMDK reader: damaged sparse and stream-optimized extents and damaged descriptor text. */
import { describe, expect, it } from 'vitest';
import type { FormatDriver } from '../../../src/formats/driver.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { type FuzzCase, type FuzzField, exercise, fuzz, mutations, rng } from '../../helpers/fuzz.js';
import { patternBytes } from '../../helpers/tmp.js';

/** SparseExtentHeader fields (spec offsets), for the field-overwrite mutations. */
const HEADER_FIELDS: FuzzField[] = [
  { offset: 4, size: 4, name: 'version' },
  { offset: 8, size: 4, name: 'flags' },
  { offset: 12, size: 8, name: 'capacity' },
  { offset: 20, size: 8, name: 'grainSize' },
  { offset: 28, size: 8, name: 'descriptorOffset' },
  { offset: 36, size: 8, name: 'descriptorSize' },
  { offset: 44, size: 4, name: 'numGTEsPerGT' },
  { offset: 48, size: 8, name: 'rgdOffset' },
  { offset: 56, size: 8, name: 'gdOffset' },
  { offset: 64, size: 8, name: 'overHead' },
  { offset: 77, size: 2, name: 'compressAlgorithm' },
];

async function seedImage(subformat: string): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation('f.vmdk');
  const dev = await vmdkDriver.create(loc, { size: 2 * 1024 * 1024, options: { subformat } });
  await dev.write(patternBytes(70_000, 1), 0);
  await dev.write(patternBytes(4096, 2), 1024 * 1024 + 512);
  await dev.close();
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) out.set(n, (s as MemoryStorage).snapshot());
  return out;
}

async function attempt(files: Map<string, Buffer>): Promise<void> {
  const loc = new MemoryLocation('f.vmdk');
  for (const [n, b] of files) loc.files.set(n, new MemoryStorage(b, { name: n }));
  const img = await openLocation(loc, { readOnly: true, format: 'vmdk' });
  try {
    await exercise(img, { maxExtents: 2048, maxBytes: 2 * 1024 * 1024 });
    await img.info();
  } finally {
    await img.close();
  }
  const driver: FormatDriver = vmdkDriver;
  await driver.check!(await loc.open('f.vmdk'), loc, { readOnly: true, openParent: () => Promise.reject(new Error('no parent')) });
}

/** Token-level damage to descriptor text: numbers, names, types and lines swapped for hostile ones. */
function* descriptorMutations(text: string, count: number, seed: number): Generator<FuzzCase> {
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const numbers = ['0', '1', '4294967295', '4294967296', '9007199254740993', '99999999999999999999', '-1', '4192256', '4194304', 'x'];
  const names = ['"/etc/passwd"', '"../f-s001.vmdk"', '"f-s001.vmdk"', '""', '"f.vmdk"', '"nope.vmdk"', '"a\\\\..\\\\..\\\\b"'];
  const types = ['SPARSE', 'FLAT', 'ZERO', 'VMFS', 'VMFSSPARSE', 'SESPARSE', 'VMFSRDM', 'BOGUS'];
  const createTypes = ['monolithicSparse', 'streamOptimized', 'vmfsSparse', 'seSparse', 'fullDevice', 'twoGbMaxExtentFlat', 'custom', ''];
  for (let i = 0; i < count; i++) {
    const lines = text.split('\n');
    const edits = 1 + Math.floor(rand() * 3);
    for (let k = 0; k < edits; k++) {
      const li = Math.floor(rand() * lines.length);
      const r = rand();
      if (r < 0.3) lines[li] = lines[li]!.replace(/\d+/, pick(numbers));
      else if (r < 0.45) lines[li] = lines[li]!.replace(/"[^"]*"/, pick(names));
      else if (r < 0.6) lines[li] = lines[li]!.replace(/SPARSE|FLAT/, pick(types));
      else if (r < 0.7) lines[li] = `createType="${pick(createTypes)}"`;
      else if (r < 0.8) lines.splice(li, 1);
      else if (r < 0.9) lines.splice(li, 0, lines[Math.floor(rand() * lines.length)]!);
      else lines[li] = `${pick(['RW', 'RDONLY', 'NOACCESS'])} ${pick(numbers)} ${pick(types)} ${pick(names)} ${pick(numbers)}`;
    }
    yield { name: `#${i} descriptor edit`, data: Buffer.from(lines.join('\n'), 'latin1') };
  }
}

describe('fuzz', () => {
  it('monolithicSparse: 700 damaged extents open or fail with VdiskError', async () => {
    const files = await seedImage('monolithicSparse');
    const seed = files.get('f.vmdk')!;
    const stats = await fuzz(mutations(seed, { count: 700, seed: 11, fields: HEADER_FIELDS, hotBytes: 24 * 1024 }), (data) => attempt(new Map([['f.vmdk', data]])));
    expect(stats.cases).toBe(700);
    expect(stats.opened).toBeGreaterThan(50);
    expect(stats.rejected.size).toBeGreaterThan(0);
  }, 120_000);

  it('streamOptimized: 700 damaged streams (header, footer, markers, grains) open or fail with VdiskError', async () => {
    const files = await seedImage('streamOptimized');
    const seed = files.get('f.vmdk')!;
    const footer = seed.length - 1024;
    const fields: FuzzField[] = [...HEADER_FIELDS, ...HEADER_FIELDS.map((f) => ({ ...f, offset: footer + f.offset, name: `footer.${f.name}` })), { offset: 128 * 512, size: 8, name: 'grain marker lba' }, { offset: 128 * 512 + 8, size: 4, name: 'grain marker size' }];
    // Bit flips everywhere: the stream is small, and markers and tables sit at the end.
    const stats = await fuzz(mutations(seed, { count: 700, seed: 12, fields, hotBytes: seed.length }), (data) => attempt(new Map([['f.vmdk', data]])));
    expect(stats.cases).toBe(700);
    expect(stats.opened).toBeGreaterThan(50);
  }, 120_000);

  it('descriptor text: 700 damaged descriptors over split sparse extents open or fail with VdiskError', async () => {
    const files = await seedImage('twoGbMaxExtentSparse');
    const text = files.get('f.vmdk')!.toString('latin1');
    const byteCases = mutations(Buffer.from(text, 'latin1'), { count: 200, seed: 13, hotBytes: text.length });
    const tokenCases = descriptorMutations(text, 500, 14);
    const all = (function* () {
      yield* byteCases;
      yield* tokenCases;
    })();
    const stats = await fuzz(all, (data) => attempt(new Map([...files, ['f.vmdk', data]])));
    expect(stats.cases).toBe(700);
    expect(stats.rejected.get('E_PATH') ?? 0).toBeGreaterThan(0);
    expect(stats.rejected.get('E_UNSUPPORTED') ?? 0).toBeGreaterThan(0);
  }, 120_000);
});
