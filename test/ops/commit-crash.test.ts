/**
 * Crash safety of commit, through the real code (commit with an open parent): for VHD, VDI,
 * VMDK and qcow2 delta images in a memory folder of fault-injecting files (child and parent),
 * a crash at every write, whole or torn, surviving in order or only up to the last
 * flush, must leave
 *   - the child opening through its parent with exactly its guest content,
 *   - the parent opening alone with, per sector, its old bytes or the child's,
 *   - `vdisk check` of both clean or reporting only leaks,
 * and once the commit returned, the parent holding exactly the child's content.
 */
import { describe, expect, it } from 'vitest';
import { readAll } from '../helpers/read.js';
import type { DiskImage } from '../../src/device/block-device.js';
import { findDriver, openLocation } from '../../src/formats/registry.js';
import { commit } from '../../src/ops/commit.js';
import { check } from '../../src/ops/check.js';
import { PENDING_PARENT_CID, VmdkImage, readDescriptor, writeDescriptor } from '../../src/formats/vmdk/image.js';
import type { Descriptor } from '../../src/formats/vmdk/descriptor.js';
import { MemoryLocation } from '../../src/storage/location.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { crashSweep } from '../helpers/crash.js';
import { patternBytes } from '../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SECTOR = 512;
const SIZE = 4 * MiB;

interface Case {
  fmt: 'vhd' | 'vdi' | 'vmdk' | 'qcow2';
  /** Create options that keep the image to a few blocks. */
  options: Record<string, string>;
  keepChild: boolean;
}

const CASES: Case[] = [
  { fmt: 'vhd', options: { block_size: '512K' }, keepChild: false },
  { fmt: 'vdi', options: {}, keepChild: false },
  { fmt: 'vmdk', options: {}, keepChild: false },
  { fmt: 'vmdk', options: {}, keepChild: true },
  { fmt: 'qcow2', options: { cluster_size: '256K' }, keepChild: false },
  { fmt: 'qcow2', options: { cluster_size: '256K' }, keepChild: true },
];

function folderOf(files: Map<string, Buffer>): MemoryLocation {
  const folder = new MemoryLocation('unused');
  for (const [n, b] of files) folder.files.set(n, new MemoryStorage(Buffer.from(b), { name: n }));
  return folder;
}

async function viewOf(folder: MemoryLocation, name: string): Promise<Buffer> {
  const img = await openLocation(folder.at(name), { readOnly: true });
  try {
    return await readAll(img);
  } finally {
    await img.close();
  }
}

/**
 * A VMDK sparse write updates the primary grain table, then the redundant one: a crash
 * between the two leaves the redundant copy behind, which check reports as a warning
 * (readers use the primary; check -r all copies it over). Any interrupted write to a
 * VMDK leaves that, commit or not; nothing else is tolerated.
 */
const TOLERATED = /redundant grain table \d+ lags the primary one/;

/** `vdisk check` of `name` finds nothing but leaks (and the tolerated warning above). */
async function leaksOnly(folder: MemoryLocation, name: string): Promise<void> {
  const r = await check(folder.at(name));
  expect(
    r.problems.filter((p) => p.severity !== 'leak' && !(p.severity === 'warning' && TOLERATED.test(p.message))).map((p) => p.message),
    `check ${name}`,
  ).toEqual([]);
}

/** A parent with data in its first 2 MiB and a child over it with data, zeros and a partial block. */
async function chain(c: Case): Promise<{ files: Map<string, Buffer>; base: string; top: string }> {
  const driver = findDriver(c.fmt);
  const folder = new MemoryLocation('unused');
  const base = `base.${c.fmt}`;
  const top = `top.${c.fmt}`;
  const b = await driver.create(folder.at(base), { size: SIZE, options: c.options });
  await b.write(patternBytes(2 * MiB, 8), 0);
  await b.close();
  const parent = await openLocation(folder.at(base), { readOnly: true });
  const child = await driver.create(folder.at(top), { size: SIZE, options: c.options, parent, parentRef: base });
  await child.write(patternBytes(3 * SECTOR, 9), MiB + 1024);
  await child.write(patternBytes(MiB, 10), 3 * MiB);
  await child.write(Buffer.alloc(128 * KiB), 0);
  await child.close();
  await parent.close();
  const files = new Map<string, Buffer>();
  for (const [n, s] of folder.files) files.set(n, (s as MemoryStorage).snapshot());
  return { files, base, top };
}

/** A VMDK delta names its parent's current CID and carries no pending note. */
async function expectLinked(child: DiskImage): Promise<void> {
  const facts = (await child.info()).formatSpecific ?? {};
  const parentFacts = (await child.backing!.info()).formatSpecific ?? {};
  expect(facts['parent-cid'], 'parentCID').toBe(parentFacts.cid);
  expect((child as VmdkImage).descriptor.ddb.has(PENDING_PARENT_CID)).toBe(false);
}

async function runCommit(loc: MemoryLocation, base: string, top: string, keepChild: boolean): Promise<number> {
  const child = await openLocation(loc.at(top));
  try {
    const parent = await openLocation(loc.at(base));
    try {
      return (await commit(child, { parent, keepChild })).bytes;
    } finally {
      await parent.close();
    }
  } finally {
    await child.close();
  }
}

describe('commit crash safety (commit with an open parent)', () => {
  for (const c of CASES) {
    it(`${c.fmt} delta${c.keepChild ? ', child kept' : ''}: every crash leaves the child whole and the parent old-or-child per sector`, async () => {
      const { files, base, top } = await chain(c);
      const before = folderOf(files);
      const childView = await viewOf(before, top);
      const parentOld = await viewOf(before, base);
      // The case is worth sweeping: the child differs from its parent in places.
      expect(childView.equals(parentOld)).toBe(false);
      const seen = { old: 0, mixed: 0, merged: 0 };
      const writes = await crashSweep({
        initial: files,
        name: top,
        workload: async (loc, progress) => {
          await runCommit(loc, base, top, c.keepChild);
          progress.flushedSteps = 1;
        },
        verify: async (got, progress) => {
          const folder = folderOf(got);
          expect((await viewOf(folder, top)).equals(childView), 'child view').toBe(true);
          const pv = await viewOf(folder, base);
          expect(pv.length).toBe(parentOld.length);
          for (let at = 0; at < pv.length; at += SECTOR) {
            const s = pv.subarray(at, at + SECTOR);
            if (!s.equals(parentOld.subarray(at, at + SECTOR)) && !s.equals(childView.subarray(at, at + SECTOR))) {
              throw new Error(`parent sector at ${at} is neither its old content nor the child's`);
            }
          }
          if (pv.equals(childView)) seen.merged++;
          else if (pv.equals(parentOld)) seen.old++;
          else seen.mixed++;
          if (progress.flushedSteps === 1) expect(pv.equals(childView), 'parent after commit').toBe(true);
          await leaksOnly(folder, top);
          await leaksOnly(folder, base);
          // Opened for writing, the child settles its link (VMDK: parentCID becomes the parent's CID).
          await (await openLocation(folder.at(top))).close();
          const settled = await openLocation(folder.at(top), { readOnly: true });
          try {
            expect((await readAll(settled)).equals(childView), 'child view after settling').toBe(true);
            if (c.fmt === 'vmdk') await expectLinked(settled);
          } finally {
            await settled.close();
          }
        },
      });
      // Crash points cover all three states of the parent: untouched, part-merged and merged.
      expect(seen.old).toBeGreaterThan(0);
      expect(seen.mixed).toBeGreaterThan(0);
      expect(seen.merged).toBeGreaterThan(0);
      expect(writes).toBeGreaterThanOrEqual(6);
      console.log(`commit crash sweep ${c.fmt}${c.keepChild ? ' keepChild' : ''}: ${writes} crash points x 2 tears x 2 modes`);

      // Run to the end: the parent holds the child's view, the child is linked to it as it is now.
      const done = folderOf(files);
      expect(await runCommit(done, base, top, c.keepChild)).toBeGreaterThan(MiB);
      expect((await viewOf(done, base)).equals(childView)).toBe(true);
      const child = await openLocation(done.at(top), { readOnly: true });
      try {
        expect((await readAll(child)).equals(childView)).toBe(true);
        let own = 0;
        for await (const e of child.extents()) if (e.depth === 0 && e.kind !== 'hole') own += e.length;
        if (c.keepChild) expect(own).toBeGreaterThan(MiB);
        else expect(own).toBe(0);
        expect((await child.info()).warnings).toBeUndefined();
        if (c.fmt === 'vmdk') await expectLinked(child);
      } finally {
        await child.close();
      }
      await leaksOnly(done, top);
      await leaksOnly(done, base);
    }, 120_000);
  }
});

describe('the VMDK pending parent CID note', () => {
  /** The chain's files with the child's descriptor changed by `edit`. */
  async function edited(edit: (d: Descriptor, parentCid: number) => void): Promise<MemoryLocation> {
    const { files } = await chain({ fmt: 'vmdk', options: {}, keepChild: false });
    const folder = folderOf(files);
    const parentCid = (await readDescriptor(folder.files.get('base.vmdk')!)).descriptor.cid;
    const s = folder.files.get('top.vmdk')!;
    const { descriptor, home } = await readDescriptor(s);
    edit(descriptor, parentCid);
    await writeDescriptor(home, descriptor);
    return folder;
  }

  it('links the child when the parent has the noted CID; a parent matching neither is still E_CHAIN', async () => {
    const ok = await edited((d, cid) => {
      d.ddb.set(PENDING_PARENT_CID, cid.toString(16));
      d.parentCID = (cid + 1) >>> 0;
    });
    await (await openLocation(ok.at('top.vmdk'), { readOnly: true })).close();
    const stale = await edited((d, cid) => {
      d.ddb.set(PENDING_PARENT_CID, ((cid + 2) >>> 0).toString(16));
      d.parentCID = (cid + 1) >>> 0;
    });
    await expect(openLocation(stale.at('top.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN' });
  });

  it('a note that is not a hex number is E_CORRUPT naming the key', async () => {
    const bad = await edited((d) => d.ddb.set(PENDING_PARENT_CID, 'zz'));
    await expect(openLocation(bad.at('top.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining(PENDING_PARENT_CID) });
  });
});
