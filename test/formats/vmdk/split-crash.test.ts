/**
 * Crash sweeps over resize of split (twoGbMaxExtentSparse/Flat), monolithicFlat and
 * streamOptimized disks, whose resize creates, renames and removes files: the crash helper counts
 * each of those as a write point, and after a power loss the folder holds only the
 * names made durable. At every point the descriptor opens with the old or the new
 * size, the guest content is intact, check finds nothing but leaks, and running the
 * resize again finishes it (leftover files of the interrupted run are replaced).
 *
 * The disks are split into 1 MiB pieces (a disk keeps the size of its own first
 * piece when it grows), so a grow adds a file and a shrink drops one in a few MiB.
 */
import { describe, expect, it } from 'vitest';
import { readAll } from '../../helpers/read.js';
import { openLocation } from '../../../src/formats/registry.js';
import { writeSparseExtent } from '../../../src/formats/vmdk/sparse.js';
import { formatDescriptor, parseDescriptor } from '../../../src/formats/vmdk/descriptor.js';
import { vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { patternBytes } from '../../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const noParent = (): Promise<never> => Promise.reject(new Error('no parent'));

/**
 * A split disk d.vmdk of two pieces, 1 MiB and 512 KiB (sparse or flat), holding
 * `content`; or a monolithicFlat or streamOptimized disk of the content's size.
 */
async function splitDisk(kind: Case['kind'], content: Buffer): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation('d.vmdk');
  if (kind === 'streamOptimized') {
    // Written once, in order, as it is made.
    const w = await vmdkDriver.create(loc, { size: content.length, options: { subformat: kind } });
    await w.write(content, 0);
    await w.close();
  } else if (kind === 'monolithicFlat') {
    await (await vmdkDriver.create(loc, { size: content.length, options: { subformat: kind } })).close();
  } else {
    await (await vmdkDriver.create(loc, { size: MiB, options: { subformat: kind } })).close();
    const sparse = kind === 'twoGbMaxExtentSparse';
    const second = sparse ? 'd-s002.vmdk' : 'd-f002.vmdk';
    const s = await loc.create(second);
    if (sparse) await writeSparseExtent(s, (512 * KiB) / 512);
    else await s.truncate(512 * KiB);
    const text = (await bytes(loc, 'd.vmdk')).toString('utf8');
    const d = parseDescriptor(text, 'd.vmdk');
    d.extents.push({ access: 'RW', sectors: (512 * KiB) / 512, type: sparse ? 'SPARSE' : 'FLAT', file: second, offset: 0 });
    loc.files.set('d.vmdk', new MemoryStorage(Buffer.from(formatDescriptor(d), 'utf8'), { name: 'd.vmdk' }));
  }
  const img = await openLocation(loc);
  expect(img.size).toBe(content.length);
  if (kind !== 'streamOptimized') await img.write(content, 0);
  await img.close();
  const out = new Map<string, Buffer>();
  for (const n of loc.files.keys()) out.set(n, await bytes(loc, n));
  return out;
}

async function bytes(loc: MemoryLocation, name: string): Promise<Buffer> {
  const s = loc.files.get(name)!;
  const b = Buffer.alloc(s.size);
  await s.read(b, 0);
  return b;
}

function folderOf(files: Map<string, Buffer>): MemoryLocation {
  const loc = new MemoryLocation('d.vmdk');
  for (const [n, b] of files) loc.files.set(n, new MemoryStorage(Buffer.from(b), { name: n }));
  return loc;
}

/** check must find nothing but leaks in the disk `loc` names. */
async function leaksOnly(loc: MemoryLocation): Promise<void> {
  const r = await vmdkDriver.check!(await loc.open('d.vmdk'), loc, { readOnly: true, openParent: noParent });
  const bad = r.problems.filter((p) => p.severity !== 'leak' && !/lags the primary/.test(p.message));
  expect(bad.map((p) => p.message)).toEqual([]);
}

/** The image in `loc` has the new size, the old content up to it, zeros past it, and leaks at most. */
async function expectResized(loc: MemoryLocation, content: Buffer, size: number): Promise<void> {
  const keep = Math.min(content.length, size);
  const img = await openLocation(loc, { readOnly: true });
  try {
    expect(img.size).toBe(size);
    const all = await readAll(img);
    expect(all.subarray(0, keep).equals(content.subarray(0, keep))).toBe(true);
    expect(all.subarray(keep).every((b) => b === 0)).toBe(true);
  } finally {
    await img.close();
  }
  await leaksOnly(loc);
}

interface Case {
  kind: 'twoGbMaxExtentSparse' | 'twoGbMaxExtentFlat' | 'monolithicFlat' | 'streamOptimized';
  label: string;
  to: number;
  /** Files the finished resize leaves (sorted). */
  filesAfter: string[];
}

const OLD = 1536 * KiB;
const CASES: Case[] = [
  { kind: 'twoGbMaxExtentSparse', label: 'grow adds a piece', to: 3 * MiB, filesAfter: ['d-s001.vmdk', 'd-s002.vmdk', 'd-s003.vmdk', 'd.vmdk'] },
  { kind: 'twoGbMaxExtentSparse', label: 'shrink drops a piece', to: 768 * KiB, filesAfter: ['d-s001.vmdk', 'd.vmdk'] },
  { kind: 'twoGbMaxExtentFlat', label: 'grow adds a piece', to: 3 * MiB, filesAfter: ['d-f001.vmdk', 'd-f002.vmdk', 'd-f003.vmdk', 'd.vmdk'] },
  { kind: 'twoGbMaxExtentFlat', label: 'shrink drops a piece', to: 768 * KiB, filesAfter: ['d-f001.vmdk', 'd.vmdk'] },
  { kind: 'monolithicFlat', label: 'grow', to: 3 * MiB, filesAfter: ['d-flat.vmdk', 'd.vmdk'] },
  { kind: 'streamOptimized', label: 'grow (stream rewritten into a temp file renamed over it)', to: 3 * MiB, filesAfter: ['d.vmdk'] },
  { kind: 'streamOptimized', label: 'shrink (stream rewritten)', to: 768 * KiB, filesAfter: ['d.vmdk'] },
];

describe('vmdk split and flat resize crash sweeps (file creation, rename and removal are crash points)', () => {
  for (const c of CASES) {
    it(`${c.kind}: ${c.label}: old or new size, content intact, check leaks only, a second run finishes`, async () => {
      const content = patternBytes(OLD, 31);
      const initial = await splitDisk(c.kind, content);
      const keep = Math.min(OLD, c.to);
      let sawOld = 0;
      let sawNew = 0;
      let verified = 0;
      const points = await crashSweep({
        initial,
        name: 'd.vmdk',
        flushes: true,
        // A stream is rewritten into a temp file nothing reads before its rename: torn
        // writes there add nothing but time.
        tear: c.kind !== 'streamOptimized',
        workload: async (loc, progress) => {
          const img = await openLocation(loc);
          try {
            await img.resize!(c.to);
            progress.flushedSteps = 1;
          } finally {
            await img.close().catch(() => undefined);
          }
        },
        verify: async (files, progress) => {
          const loc = folderOf(files);
          await leaksOnly(loc);
          const img = await openLocation(loc);
          try {
            expect([OLD, c.to]).toContain(img.size);
            if (progress.flushedSteps === 1) expect(img.size).toBe(c.to);
            if (img.size === OLD) sawOld++;
            else sawNew++;
            const all = await readAll(img);
            expect(all.subarray(0, keep).equals(content.subarray(0, keep))).toBe(true);
            if (img.size > OLD) expect(all.subarray(OLD).every((b) => b === 0)).toBe(true);
            // The same resize again (what a user does after the crash) finishes the job
            // (for streams, whose rewrite deflates every grain, at every fourth point).
            if (c.kind === 'streamOptimized' && verified++ % 4 !== 0) return;
            await img.resize!(c.to);
          } finally {
            await img.close();
          }
          await expectResized(loc, content, c.to);
          // No stray temp file; dropped pieces are gone, or at worst left unreferenced.
          const names = [...loc.files.keys()].sort();
          for (const f of c.filesAfter) expect(names).toContain(f);
          expect(names.filter((n) => n.includes('vdisk-tmp'))).toEqual([]);
        },
      });
      // A crash before the switch (the descriptor's rename) leaves the old size, one after
      // it (or a power loss just after the resize returned) the new one.
      expect(sawOld).toBeGreaterThan(0);
      expect(sawNew).toBeGreaterThan(0);
      // Without a crash: the new size and exactly the expected files.
      const done = folderOf(initial);
      const img = await openLocation(done);
      await img.resize!(c.to);
      await img.close();
      expect([...done.files.keys()].sort()).toEqual(c.filesAfter);
      await expectResized(done, content, c.to);
      console.log(`${c.kind} ${c.label}: ${points} crash points`);
      expect(points).toBeGreaterThanOrEqual(3);
    });
  }
});
