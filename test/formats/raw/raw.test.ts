import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { copyDevice } from '../../../src/device/copy.js';
import { open } from '../../../src/formats/registry.js';
import { create } from '../../../src/ops/create.js';
import { itWith, qemuInfo, qemuSame, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

const MiB = 1024 * 1024;

describe('raw images', () => {
  it('are created sparse at the exact size and read back what was written', async () => {
    const p = join(dir, 'a.img');
    const img = await create(p, { format: 'raw', size: '8M' });
    expect(img.size).toBe(8 * MiB);
    expect(await img.actualSize()).toBe(0);
    const data = patternBytes(100_000, 3);
    await img.write(data, 12345);
    await img.close();
    const ro = await open(p, { readOnly: true });
    const back = Buffer.alloc(data.length);
    await ro.read(back, 12345);
    expect(back.equals(data)).toBe(true);
    await expect(ro.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'E_READONLY' });
    await expect(ro.read(Buffer.alloc(512), 8 * MiB - 256)).rejects.toMatchObject({ code: 'E_BOUNDS' });
    await ro.close();
  });

  it('report data and zero runs in extents, covering the disk exactly', async () => {
    const p = join(dir, 'ext.img');
    const img = await create(p, { format: 'raw', size: '4M' });
    expect(await listExtents(img)).toEqual([{ offset: 0, length: 4 * MiB, kind: 'hole', depth: 0 }]);
    await img.write(Buffer.alloc(8192, 1), MiB);
    await img.write(Buffer.alloc(100, 2), 3 * MiB + 5000);
    const ext = await listExtents(img);
    expect(ext).toEqual([
      { offset: 0, length: MiB, kind: 'zero', depth: 0 },
      { offset: MiB, length: 8192, kind: 'data', depth: 0 },
      { offset: MiB + 8192, length: 2 * MiB - 8192 + 4096, kind: 'zero', depth: 0 },
      { offset: 3 * MiB + 4096, length: 4096, kind: 'data', depth: 0 },
      { offset: 3 * MiB + 8192, length: MiB - 8192, kind: 'zero', depth: 0 },
    ]);
    const part = await listExtents(img, MiB + 4096, 8192);
    expect(part).toEqual([
      { offset: MiB + 4096, length: 4096, kind: 'data', depth: 0 },
      { offset: MiB + 8192, length: 4096, kind: 'zero', depth: 0 },
    ]);
    await img.close();
  });

  it('copy between devices skips zero runs and keeps content', async () => {
    const src = await create(join(dir, 'src.img'), { format: 'raw', size: '4M' });
    const data = patternBytes(MiB, 9);
    await src.write(data, 2 * MiB);
    const dst = await create(join(dir, 'dst.img'), { format: 'raw', size: '4M' });
    await copyDevice(src, dst);
    const back = Buffer.alloc(4 * MiB);
    await dst.read(back, 0);
    expect(back.subarray(2 * MiB, 3 * MiB).equals(data)).toBe(true);
    expect(back.subarray(0, 2 * MiB).every((b) => b === 0)).toBe(true);
    expect(await dst.actualSize()).toBeLessThanOrEqual(MiB + 64 * 1024);
    await src.close();
    await dst.close();
  });

  it('an explicit format wins over detection', async () => {
    const p = join(dir, 'looks-like.vhd');
    await writeFile(p, Buffer.concat([Buffer.from('conectix'), Buffer.alloc(1024 - 8)]));
    const img = await open(p, { format: 'raw', readOnly: true });
    expect(img.format).toBe('raw');
    expect(img.size).toBe(1024);
    await img.close();
  });

  itWith(['qemu-img', 'qemu-io'], 'qemu-img agrees on size and content of what vdisk wrote', async () => {
    const ours = join(dir, 'ours.img');
    const theirs = join(dir, 'theirs.img');
    const img = await create(ours, { format: 'raw', size: '16M' });
    await img.write(Buffer.alloc(64 * 1024, 0x5a), MiB);
    await img.write(Buffer.alloc(512, 0xa5), 15 * MiB + 512);
    await img.close();
    const info = await qemuInfo(ours, 'raw');
    expect(info['virtual-size']).toBe(16 * MiB);
    expect(info.format).toBe('raw');

    await runOk('qemu-img', ['create', '-f', 'raw', theirs, '16M']);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', `write -P 0xa5 ${15 * MiB + 512} 512`, theirs]);
    expect(await qemuSame(ours, 'raw', theirs, 'raw')).toBe(true);

    const again = await open(ours);
    await again.write(Buffer.alloc(1, 1), 0);
    await again.close();
    expect(await qemuSame(ours, 'raw', theirs, 'raw')).toBe(false);
  });

  itWith(['qemu-img'], 'vdisk info --output json matches qemu-img info on the shared fields', async () => {
    const p = join(dir, 'info.img');
    await runOk('qemu-img', ['create', '-f', 'raw', p, '10M']);
    const img = await open(p, { readOnly: true });
    const { describeImage } = await import('../../../src/ops/info.js');
    const ours = await describeImage(img);
    await img.close();
    const theirs = await qemuInfo(p);
    for (const k of ['format', 'virtual-size', 'actual-size', 'dirty-flag'] as const) expect(ours[k]).toEqual(theirs[k]);
  });
});
