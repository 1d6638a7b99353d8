import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { openArchive } from '../../../src/storage/containers/archive.js';
import { parseDescriptor } from '../../../src/formats/ovf/descriptor.js';
import { parseManifest } from '../../../src/formats/ovf/manifest.js';
import { createOva } from '../../../src/ops/ova.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { fuzz, mutations } from '../../helpers/fuzz.js';
import { itWith, runOk } from '../../helpers/oracle.js';
import { tempDir } from '../../helpers/tmp.js';
import { makeRawDisk, qemuDiskWriter } from './helpers.js';

/** Open the package in `data` the way `ova info` does: list, read and parse the descriptor and manifest, touch every member. */
async function attempt(data: Buffer): Promise<void> {
  const archive = await openArchive(new MemoryStorage(data, { name: 'fuzz' }), { zipLimits: { maxEntryBytes: 64 * 1024 * 1024 } });
  try {
    for (const m of archive.members) {
      const s = await archive.openMember(m.name);
      try {
        const n = Math.min(s.size, 1024 * 1024);
        const b = Buffer.alloc(n);
        await s.read(b, 0);
        if (m.name.endsWith('.ovf')) parseDescriptor(m.name, b);
        if (m.name.endsWith('.mf')) parseManifest(m.name, b);
      } finally {
        await s.close();
      }
    }
  } finally {
    await archive.close();
  }
}

describe('damaged packages give a VdiskError or work, never a crash', () => {
  let dir: string;
  let ova: Buffer;
  let zip: Buffer;
  beforeAll(async () => {
    dir = await tempDir('vdisk-ova-fuzz-');
  });

  itWith(['qemu-img', 'zip'], 'mutated OVA (tar) and zip', async () => {
    await makeRawDisk(join(dir, 'a.raw'), 1024 * 1024, 3);
    await createOva(join(dir, 'f.ova'), [join(dir, 'a.raw')], { name: 'f', diskWriter: qemuDiskWriter });
    ova = await readFile(join(dir, 'f.ova'));
    await runOk('tar', ['xf', join(dir, 'f.ova'), '-C', dir]);
    await runOk('zip', ['-q', '-9', join(dir, 'f.zip'), 'f.ovf', 'f.mf', 'f-disk1.vmdk'], { cwd: dir });
    zip = await readFile(join(dir, 'f.zip'));
    // tar headers: size (124), chksum (148), typeflag (156), magic (257) of the first entries
    const tarFields = [0, 512 * 9, 512 * 10].flatMap((base) => [
      { offset: base + 124, size: 8 as const, name: `size@${base}` },
      { offset: base + 156, size: 1 as const, name: `typeflag@${base}` },
    ]);
    const t = await fuzz(mutations(ova, { count: 150, seed: 8, fields: tarFields, hotBytes: 8192 }), attempt);
    const z = await fuzz(mutations(zip, { count: 150, seed: 9, hotBytes: zip.length }), attempt);
    // some cases must be refused, some must still open: the mutations reach the parsers
    expect(t.rejected.size).toBeGreaterThan(0);
    expect(t.opened).toBeGreaterThan(0);
    expect(z.rejected.size).toBeGreaterThan(0);
  });
});
