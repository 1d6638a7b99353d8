/**
 * Crash safety of qcow2 resize, compact and relink: a fault at every write (whole
 * and torn, surviving in order or only up to the last flush) leaves an image that
 * opens with the old or the new size, shows the guest content it had (zeros where
 * it grew), has nothing worse than leaks in our check and in `qemu-img check`, and
 * finishes the operation when it is run again.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { openLocation } from '../../../src/formats/registry.js';
import { checkQcow2, qcow2Driver } from '../../../src/formats/qcow2/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { crashSweep } from '../../helpers/crash.js';
import { findTool, run } from '../../helpers/oracle.js';
import { readAll } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const K = 1024;
const NAME = 'img.qcow2';

function folder(files: Map<string, Buffer>): MemoryLocation {
  const loc = new MemoryLocation(NAME);
  for (const [n, b] of files) loc.files.set(n, new MemoryStorage(Buffer.from(b), { name: n }));
  return loc;
}

async function snapshot(loc: MemoryLocation): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) {
    const b = Buffer.alloc(s.size);
    await s.read(b, 0);
    out.set(n, b);
  }
  return out;
}

async function view(loc: MemoryLocation, name = NAME): Promise<Buffer> {
  const img = await openLocation(loc.at(name), { readOnly: true });
  try {
    return await readAll(img);
  } finally {
    await img.close();
  }
}

/** Our check finds nothing worse than leaks. */
async function corruptions(files: Map<string, Buffer>, name = NAME): Promise<string[]> {
  const loc = folder(files);
  const r = await checkQcow2(new MemoryStorage(files.get(name)!, { name }), loc.at(name), {});
  return r.problems.filter((p) => p.severity === 'corrupt').map((p) => p.message);
}

/** A 256 KiB image of 512-byte clusters (8 guest clusters per... 64 per L2 table) with data, zeros and holes; `edit` shapes it further. */
async function smallImage(edit?: (img: DiskImage) => Promise<void>, size = 256 * K): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation(NAME);
  const img = await qcow2Driver.create(loc, { size, options: { cluster_size: '512' } });
  await img.write(patternBytes(3000, 1), 100);
  await img.write(patternBytes(40 * K, 2), 64 * K);
  await img.write(patternBytes(4 * K, 3), size - 4 * K);
  await edit?.(img);
  await img.close();
  return snapshot(loc);
}

const dir = await tempDir('vdisk-qcow2-mcrash-');
let sampleNo = 0;

/**
 * Sweep `op` over `initial`: after any crash the image reads as before, cut or
 * padded with zeros to its size (old or new); running `op` again reaches `newSize`.
 */
async function sweep(initial: Map<string, Buffer>, op: (img: DiskImage) => Promise<void>, newSize: number): Promise<number> {
  const before = await view(folder(initial));
  const expectAt = (size: number): Buffer => {
    const b = Buffer.alloc(size);
    before.copy(b, 0, 0, Math.min(size, before.length));
    return b;
  };
  const samples: Buffer[] = [];
  let n = 0;
  const writes = await crashSweep({
    initial,
    name: NAME,
    workload: async (loc) => {
      const img = await openLocation(loc.at(NAME));
      await op(img);
      await img.close();
    },
    verify: async (files) => {
      const loc = folder(files);
      const all = await view(loc);
      expect([before.length, newSize]).toContain(all.length);
      expect(all.equals(expectAt(all.length)), 'guest content changed').toBe(true);
      expect(await corruptions(files)).toEqual([]);
      if (n++ % 7 === 0) samples.push(files.get(NAME)!);
      const img = await openLocation(loc.at(NAME));
      await op(img);
      await img.close();
      const done = await snapshot(loc);
      expect((await view(folder(done))).equals(expectAt(newSize)), 'after running again').toBe(true);
      expect(await corruptions(done)).toEqual([]);
    },
  });
  if (findTool('qemu-img')) {
    for (const b of samples) {
      const f = join(dir, `s${sampleNo++}.qcow2`);
      await writeFile(f, b);
      const r = await run('qemu-img', ['check', '-f', 'qcow2', f]);
      // 0 clean, 3 leaks only; 2 would be corruption.
      expect([0, 3], `${f}: ${r.stdout}${r.stderr}`).toContain(r.code);
    }
  }
  return writes;
}

describe('qcow2 resize crash safety', () => {
  it('grow: the L1 table moves to the end, then the size changes', async () => {
    const initial = await smallImage();
    expect(await sweep(initial, (img) => img.resize!(4096 * K), 4096 * K)).toBeGreaterThanOrEqual(5);
  }, 300_000);

  it('grow inside the L1 table clusters, and after a shrink that left bytes past the end', async () => {
    const initial = await smallImage(async (img) => {
      await img.resize!(100 * K + 512);
    });
    await sweep(initial, (img) => img.resize!(128 * K), 128 * K);
  }, 300_000);

  it('shrink: the size first, then the clusters and L2 tables past the end are released', async () => {
    const initial = await smallImage();
    expect(await sweep(initial, (img) => img.resize!(33 * K + 512), 33 * K + 512)).toBeGreaterThanOrEqual(3);
  }, 300_000);
});

describe('qcow2 compact crash safety', () => {
  it('zeroed clusters released, clusters at the end moved down, the file cut', async () => {
    const initial = await smallImage(async (img) => {
      await img.write(Buffer.alloc(2 * K), 64 * K);
      await img.write(Buffer.alloc(8 * K), 80 * K);
      await img.write(patternBytes(6 * K, 5), 200 * K);
      await img.discard(64 * K + 2 * K, 4 * K);
    });
    const writes = await sweep(initial, async (img) => {
      await img.compact!();
    }, 256 * K);
    expect(writes).toBeGreaterThan(10);
  }, 600_000);

  it('the L1 table, a refcount block and L2 tables at the end move down too', async () => {
    const initial = await smallImage(async (img) => {
      // The L1 table moves to the end of the file, then data past it takes a second refcount block.
      await img.resize!(4096 * K);
      await img.write(patternBytes(60 * K, 6), 1024 * K);
      await img.write(Buffer.alloc(40 * K), 64 * K);
      await img.write(patternBytes(2 * K, 7), 3000 * K);
      await img.write(Buffer.alloc(30 * K), 1024 * K);
    });
    await sweep(initial, async (img) => {
      await img.compact!();
    }, 4096 * K);
  }, 600_000);
});

describe('qcow2 relink crash safety', () => {
  it('rebase -u onto another backing file: the old link or the new one', async () => {
    const loc = new MemoryLocation(NAME);
    const a = await qcow2Driver.create(loc.at('a.qcow2'), { size: 64 * K, options: { cluster_size: '512' } });
    await a.write(patternBytes(64 * K, 7), 0);
    const b = await qcow2Driver.create(loc.at('b.qcow2'), { size: 64 * K, options: { cluster_size: '512' } });
    await b.write(patternBytes(64 * K, 7), 0);
    const top = await qcow2Driver.create(loc, { size: 64 * K, options: { cluster_size: '512' }, parent: a, parentRef: 'a.qcow2' });
    await top.write(patternBytes(1000, 8), 5000);
    await top.close();
    await a.close();
    await b.close();
    const initial = await snapshot(loc);
    const before = await view(folder(initial));
    const seen = new Set<string>();
    await crashSweep({
      initial,
      name: NAME,
      workload: async (l) => {
        const img = await openLocation(l.at(NAME));
        const parent = await openLocation(l.at('b.qcow2'), { readOnly: true });
        await img.setBacking!(parent, 'b.qcow2');
        await img.close();
        await parent.close();
      },
      verify: async (files) => {
        const l = folder(files);
        const img = await openLocation(l.at(NAME), { readOnly: true });
        seen.add(img.backing!.filename);
        const all = await readAll(img);
        await img.close();
        expect(all.equals(before)).toBe(true);
        expect(await corruptions(files)).toEqual([]);
      },
    });
    expect([...seen].sort()).toEqual(['a.qcow2', 'b.qcow2']);
  }, 120_000);
});
