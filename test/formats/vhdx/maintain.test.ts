/**
 * VHDX resize (qemu-img 7.2 cannot resize VHDX): grown and shrunk images pass
 * `qemu-img check`, `qemu-img info` and vhdiinfo report the new size, and `qemu-img
 * compare` finds the old content with zeros after it (or cut off).
 */
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { open } from '../../../src/formats/registry.js';
import { compact } from '../../../src/ops/compact.js';
import { resize } from '../../../src/ops/resize.js';
import { itWith, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { readImageFile } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { MiB, QEMU } from './helpers.js';

let dir = '';
beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-maintain-');
});

async function judge(f: string, model: Buffer): Promise<void> {
  const c = await run('qemu-img', ['check', '-f', 'vhdx', f]);
  expect(c.code, c.stdout + c.stderr).toBe(0);
  expect(JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', f]))).toMatchObject({ 'virtual-size': model.length });
  const raw = `${f}.model.raw`;
  await writeFile(raw, model);
  expect(await qemuSame(f, 'vhdx', raw, 'raw')).toBe(true);
  expect((await readImageFile(f)).equals(model)).toBe(true);
}

describe('VHDX resize', () => {
  for (const opts of ['block_size=1M', 'subformat=fixed,block_size=1M', 'block_size=2M', 'subformat=fixed']) {
    itWith([...QEMU, 'vhdiinfo'], `grow and shrink a qemu-made image (${opts}) with a partial last block`, async () => {
      const f = join(dir, `r-${opts.replace(/[=,]/g, '-')}.vhdx`);
      await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', opts, f, '5000k']);
      const data = patternBytes(5000 * 1024, 3);
      await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'vhdx', await (async () => {
        const r = join(dir, 'src.raw');
        await writeFile(r, data);
        return r;
      })(), f]);
      let model = Buffer.concat([data, Buffer.alloc(7 * MiB - data.length)]);
      await resize(f, 7 * MiB);
      await judge(f, model);
      // Write into the grown part, then shrink through the middle of a block and grow again: the cut bytes read as zeros.
      const img = await open(f);
      const tail = patternBytes(MiB, 9);
      await img.write(tail, 6 * MiB);
      await img.close();
      tail.copy(model, 6 * MiB);
      await judge(f, model);
      await resize(f, 3 * MiB + 512 * 1024, { shrink: true });
      model = Buffer.from(model.subarray(0, 3 * MiB + 512 * 1024));
      await judge(f, model);
      await resize(f, 9 * MiB);
      model = Buffer.concat([model, Buffer.alloc(9 * MiB - model.length)]);
      await judge(f, model);
      const v = await run('vhdiinfo', [f]);
      expect(v.code, v.stderr).toBe(0);
      expect(v.stdout).toContain(`(${9 * MiB} bytes)`);
    });
  }

  for (const opts of ['block_size=1M', 'block_size=2M,block_state_zero=off']) {
    itWith([...QEMU, 'vhdiinfo'], `compact a qemu-made image (${opts}): zero blocks released, blocks moved down, the file cut`, async () => {
      const f = join(dir, `c-${opts.replace(/[=,]/g, '-')}.vhdx`);
      await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', opts, f, '16M']);
      // Data everywhere, then zeros over the middle (qemu allocates and writes them), then data at the end.
      await runOk('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x21 0 12M', '-c', 'write -P 0 2M 6M', '-c', 'write -P 0x22 14M 1M', f]);
      const model = await readImageFile(f);
      const before = (await stat(f)).size;
      const r = await compact(f);
      expect(r.releasedBlocks).toBeGreaterThanOrEqual(3);
      expect(r.sizeAfter).toBeLessThan(before);
      expect((await stat(f)).size).toBe(r.sizeAfter);
      await judge(f, model);
      expect((await run('vhdiinfo', [f])).code).toBe(0);
      // Written again after compacting: new blocks go after the moved ones.
      const img = await open(f);
      const d = patternBytes(MiB, 4);
      await img.write(d, 5 * MiB);
      await img.close();
      d.copy(model, 5 * MiB);
      await judge(f, model);
    });
  }
});
