/** Random writes, zeroing and reads against a plain buffer, for every writable subformat; then qemu-img judges the file. */
import { open as fsOpen } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rng } from '../../helpers/fuzz.js';
import { itWith, qemuSame, run } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { create } from '../../../src/ops/create.js';
import { openLocation } from '../../../src/formats/registry.js';
import { vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import type { BlockDevice } from '../../../src/device/block-device.js';

const SIZE = 8 * 1024 * 1024 + 3 * 512; // not a whole number of grains

async function churn(dev: BlockDevice, model: Buffer, seed: number, ops: number): Promise<void> {
  const rand = rng(seed);
  for (let i = 0; i < ops; i++) {
    const len = 1 + Math.floor(rand() * (rand() < 0.2 ? 300_000 : 5000));
    const off = Math.floor(rand() * (SIZE - len));
    const r = rand();
    if (r < 0.6) {
      const data = patternBytes(len, seed * 1000 + i);
      await dev.write(data, off);
      data.copy(model, off);
    } else if (r < 0.75) {
      await dev.writeZeroes(off, len);
      model.fill(0, off, off + len);
    } else {
      const got = Buffer.alloc(len);
      await dev.read(got, off);
      expect(got.equals(model.subarray(off, off + len)), `read ${off}+${len} after ${i} ops`).toBe(true);
    }
  }
}

describe('random I/O against a model', () => {
  for (const subformat of ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']) {
    it(`${subformat}: 300 random writes, zeroes and reads agree with the model, also after reopening`, async () => {
      const loc = new MemoryLocation('m.vmdk');
      const dev = await vmdkDriver.create(loc, { size: SIZE, options: { subformat } });
      const model = Buffer.alloc(SIZE);
      await churn(dev, model, 5, 300);
      await dev.close();
      const again = await openLocation(loc, { readOnly: true });
      const all = Buffer.alloc(SIZE);
      await again.read(all, 0);
      expect(all.equals(model)).toBe(true);
      await again.close();
      const r = await vmdkDriver.check!(await loc.open('m.vmdk'), loc, { readOnly: true, openParent: () => Promise.reject(new Error('none')) });
      expect(r.problems).toEqual([]);
    });
  }
});

describe('random I/O judged by qemu-img', () => {
  itWith(['qemu-img'], 'a churned monolithicSparse delta link passes qemu-img check and compare', async () => {
    const dir = await tempDir('vdisk-vmdk-model-');
    const parent = join(dir, 'p.vmdk');
    const child = join(dir, 'c.vmdk');
    const ref = join(dir, 'ref.raw');
    const model = Buffer.alloc(SIZE);
    const p = await create(parent, { format: 'vmdk', size: SIZE });
    await churn(p, model, 7, 100);
    await p.close();
    const c = await create(child, { format: 'vmdk', backing: parent });
    await churn(c, model, 8, 200);
    await c.close();
    const fh = await fsOpen(ref, 'w');
    await fh.write(model, 0, SIZE, 0);
    await fh.close();
    const chk = await run('qemu-img', ['check', '-f', 'vmdk', child]);
    expect(chk.code, chk.stdout + chk.stderr).toBe(0);
    expect(await qemuSame(child, 'vmdk', ref, 'raw')).toBe(true);
  });
});
