import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { copyDevice } from '../../../src/device/copy.js';
import { ArchiveLocation, archiveMemberLocation } from '../../../src/storage/containers/location.js';
import { createOva } from '../../../src/ops/ova.js';
import { open } from '../../../src/formats/registry.js';
import { create } from '../../../src/ops/create.js';
import { itWith, qemuSame, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { makeRawDisk, qemuDiskWriter, itWithVmdk, errorOf as code } from '../../formats/ovf/helpers.js';

describe('ARCHIVE:MEMBER opens a disk in place', () => {
  let dir: string;
  const data = Buffer.concat([patternBytes(128 * 1024, 2), Buffer.alloc(896 * 1024), patternBytes(1024 * 1024, 3)]);
  beforeAll(async () => {
    dir = await tempDir('vdisk-loc-');
    await writeFile(join(dir, 'disk.raw'), data);
    await writeFile(join(dir, 'other.txt'), 'not a disk');
  });

  const readAll = async (path: string): Promise<Buffer> => {
    const img = await open(path, { readOnly: true });
    try {
      expect(img.format).toBe('raw');
      expect(img.filename).toBe(path);
      const b = Buffer.alloc(img.size);
      await img.read(b, 0);
      return b;
    } finally {
      await img.close();
    }
  };

  itWith(['tar', 'zip'], 'tar, stored zip, deflated zip and a tar inside a zip', async () => {
    await runOk('tar', ['-cf', join(dir, 't.tar'), '-C', dir, 'other.txt', 'disk.raw']);
    await runOk('zip', ['-q', '-0', join(dir, 's.zip'), 'disk.raw', 'other.txt'], { cwd: dir });
    await runOk('zip', ['-q', '-9', join(dir, 'd.zip'), 'disk.raw'], { cwd: dir });
    await runOk('zip', ['-q', '-0', join(dir, 'nest.zip'), 't.tar'], { cwd: dir });
    for (const p of ['t.tar:disk.raw', 's.zip:disk.raw', 'd.zip:disk.raw', 'nest.zip:t.tar:disk.raw']) {
      expect((await readAll(join(dir, p))).equals(data), p).toBe(true);
    }
    // extents work through the window (the raw driver scans for zeros)
    const img = await open(join(dir, 't.tar:disk.raw'), { readOnly: true });
    const kinds: string[] = [];
    for await (const e of img.extents()) kinds.push(`${e.kind}:${e.length}`);
    await img.close();
    expect(kinds).toEqual([`data:${128 * 1024}`, `zero:${896 * 1024}`, `data:${1024 * 1024}`]);
    const loc = await archiveMemberLocation(join(dir, 'nest.zip:t.tar:disk.raw'));
    expect(loc?.chain).toEqual(['t.tar', 'disk.raw']);
    expect((await loc!.siblings()).sort()).toEqual([join(dir, 'nest.zip:t.tar:disk.raw'), join(dir, 'nest.zip:t.tar:other.txt')]);
    expect(await loc!.exists(loc!.resolve('other.txt'))).toBe(true);
    expect(await loc!.exists(loc!.resolve('none.txt'))).toBe(false);
    expect(await code(loc!.create(loc!.resolve('new.raw')))).toMatch(/^E_READONLY/);
  });

  it('members are read-only, missing ones are E_NOENT, and a real file with a colon is a file', async () => {
    expect(await code(open(join(dir, 't.tar:disk.raw')))).toMatch(/^E_READONLY: .*read-only/);
    expect(await code(open(join(dir, 't.tar:nothere.raw'), { readOnly: true }))).toMatch(/^E_NOENT: .*nothere\.raw/);
    expect(await code(open(join(dir, 't.tar:../disk.raw'), { readOnly: true }))).toMatch(/^E_PATH/);
    expect(await code(open(join(dir, 'missing.tar:disk.raw'), { readOnly: true }))).toMatch(/^E_NOENT/);
    // the part before ':' is not an archive: an ordinary missing file
    expect(await archiveMemberLocation(join(dir, 'other.txt:disk.raw'))).toBeUndefined();
    await writeFile(join(dir, 'odd:name.raw'), data.subarray(0, 4096));
    expect(await archiveMemberLocation(join(dir, 'odd:name.raw'))).toBeUndefined();
    const img = await open(join(dir, 'odd:name.raw'), { readOnly: true });
    expect(img.size).toBe(4096);
    await img.close();
  });

  it('resolves references next to the member and never outside the archive', () => {
    const loc = new ArchiveLocation('/x/a.ova', ['vm/disk.vmdk']);
    expect(loc.resolve('disk-s001.vmdk')).toBe('/x/a.ova:vm/disk-s001.vmdk');
    expect(loc.relativeName('/x/a.ova:vm/disk-s001.vmdk')).toBe('disk-s001.vmdk');
    expect(() => loc.resolve('../../etc/passwd')).toThrow(/\.\./);
    expect(() => loc.resolve('/etc/passwd')).toThrow(/absolute/);
    expect(() => loc.at('/etc/passwd')).toThrow(/not in the same archive/);
  });

  itWithVmdk(['qemu-img'], 'app.ova:disk1.vmdk opens through the vmdk driver and converts back to the source', async () => {
    await makeRawDisk(join(dir, 'src.raw'), 6 * 1024 * 1024, 4);
    const ova = join(dir, 'app.ova');
    await createOva(ova, [join(dir, 'src.raw')], { name: 'app', diskWriter: qemuDiskWriter });
    const src = await open(`${ova}:app-disk1.vmdk`, { readOnly: true });
    try {
      expect(src.format).toBe('vmdk');
      const out = join(dir, 'back.raw');
      const dst = await create(out, { format: 'raw', size: src.size });
      await copyDevice(src, dst);
      await dst.close();
      expect(await qemuSame(join(dir, 'src.raw'), 'raw', out, 'raw')).toBe(true);
    } finally {
      await src.close();
    }
  });
});
