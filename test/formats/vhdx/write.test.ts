/**
 * VHDX writing judged by qemu and libvhdi: images vdisk creates (dynamic, fixed,
 * block sizes, 4K logical sectors) and qemu-made images vdisk writes into pass
 * `qemu-img check -f vhdx`, hold exactly what a raw model holds (`qemu-img
 * compare`), and `vhdiinfo` accepts them.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { open } from '../../../src/formats/registry.js';
import { create } from '../../../src/ops/create.js';
import { itWith, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { readImageFile } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { MiB, QEMU } from './helpers.js';

const K = 1024;
let dir = '';

beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-write-');
});

/** Writes and zeroes crossing blocks, applied to the image and to a raw model. */
async function workload(img: DiskImage, model: Buffer, seed: number): Promise<void> {
  const steps: Array<[string, number, number]> = [
    ['w', 0, 64 * K],
    ['w', 100 * K, 3 * K],
    ['w', MiB - 512, 1024],
    ['w', 3 * MiB, 2 * MiB],
    ['z', 3 * MiB + 64 * K, 256 * K],
    ['z', 6 * MiB, 2 * MiB],
    ['w', 7 * MiB + 123 * 512, 77 * 512],
    ['w', model.length - 4 * K, 4 * K],
    ['w', 100 * K, 70 * K],
    ['w', 9 * MiB + 7, 1000],
  ];
  for (const [k, off, len] of steps) {
    if (off + len > model.length) continue;
    if (k === 'w') {
      const d = patternBytes(len, seed++);
      await img.write(d, off);
      d.copy(model, off);
    } else {
      await img.writeZeroes(off, len);
      model.fill(0, off, off + len);
    }
  }
}

/**
 * qemu-img check is clean, qemu-img compare agrees with the model, vhdiinfo reads it.
 * qemu 7.2 refuses every VHDX whose logical sector is 4096 (ENOTSUP, "Operation not
 * supported"), so those are judged by vhdiinfo and our reader alone.
 */
async function judge(f: string, model: Buffer, qemu = true): Promise<void> {
  if (qemu) await judgeWithQemu(f, model);
  expect((await readImageFile(f)).equals(model)).toBe(true);
  const v = await run('vhdiinfo', [f]);
  expect(v.code, v.stdout + v.stderr).toBe(0);
  expect(v.stdout).toMatch(/VHDX/);
  expect(v.stdout).toContain(`(${model.length} bytes)`);
}

async function judgeWithQemu(f: string, model: Buffer): Promise<void> {
  const c = await run('qemu-img', ['check', '-f', 'vhdx', f]);
  expect(c.code, c.stdout + c.stderr).toBe(0);
  const raw = `${f}.model.raw`;
  await writeFile(raw, model);
  expect(await qemuSame(f, 'vhdx', raw, 'raw')).toBe(true);
}

describe('VHDX writing', () => {
  const variants: Array<[string, Record<string, string>]> = [
    ['dynamic', {}],
    ['dynamic-1M', { block_size: '1M' }],
    ['dynamic-4k-sectors', { block_size: '2M', logical_sector_size: '4096' }],
    ['fixed', { subformat: 'fixed' }],
    ['fixed-1M-4k', { subformat: 'fixed', block_size: '1M', logical_sector_size: '4096', log_size: '2M' }],
  ];
  for (const [name, options] of variants) {
    itWith([...QEMU, 'vhdiinfo'], `create -f vhdx ${JSON.stringify(options)}, write, zero: qemu-img check, compare, vhdiinfo`, async () => {
      const f = join(dir, `new-${name}.vhdx`);
      const img = await create(f, { format: 'vhdx', size: '12M', options });
      const model = Buffer.alloc(12 * MiB);
      try {
        await workload(img, model, 1);
      } finally {
        await img.close();
      }
      const qemu = options.logical_sector_size !== '4096';
      if (qemu) {
        const info = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', f])) as Record<string, unknown>;
        expect(info).toMatchObject({ format: 'vhdx', 'virtual-size': 12 * MiB });
      } else {
        const r = await run('qemu-img', ['info', '-f', 'vhdx', f]);
        expect(r.stderr).toMatch(/Operation not supported/);
      }
      await judge(f, model, qemu);
      const v = await runOk('vhdiinfo', [f]);
      expect(v).toMatch(options.subformat === 'fixed' ? /Disk type\s*: Fixed/ : /Disk type\s*: Dynamic/);
      expect(v).toMatch(new RegExp(`Bytes per sector\\s*: ${options.logical_sector_size ?? 512} bytes`));
    });
  }

  for (const opts of ['', 'block_size=1M', 'subformat=fixed', 'block_state_zero=off,block_size=1M']) {
    itWith([...QEMU, 'vhdiinfo'], `writes into a qemu-made image (${opts || 'default'}) keep qemu-img check clean`, async () => {
      const f = join(dir, `qemu-${opts.replace(/[=,]/g, '-') || 'default'}.vhdx`);
      await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', ...(opts ? ['-o', opts] : []), f, '10M']);
      await runOk('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x6b 5M 100k', f]);
      const model = await readImageFile(f);
      const img = await open(f);
      try {
        await workload(img, model, 10);
      } finally {
        await img.close();
      }
      await judge(f, model);
      // And qemu can go on writing into what we wrote.
      await runOk('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x7c 8M 64k', f]);
      model.fill(0x7c, 8 * MiB, 8 * MiB + 64 * K);
      await judge(f, model);
    });
  }

  itWith(QEMU, 'many new blocks: BAT updates go through the log in several entries, and the log wraps', async () => {
    const f = join(dir, 'many.vhdx');
    const img = await create(f, { format: 'vhdx', size: '300M', options: { block_size: '1M' } });
    const model = Buffer.alloc(300 * MiB);
    try {
      for (let n = 0; n < 300; n += 1) {
        const d = patternBytes(4 * K, n + 1);
        await img.write(d, n * MiB + 512);
        d.copy(model, n * MiB + 512);
        // A flush after each write: 300 log entries through a 1 MiB log.
        await img.flush();
      }
    } finally {
      await img.close();
    }
    await judge(f, model);
  });

  itWith(QEMU, 'concurrent writes (as an NBD client sends them) into the same new blocks allocate each block once', async () => {
    const f = join(dir, 'concurrent.vhdx');
    const img = await create(f, { format: 'vhdx', size: '16M', options: { block_size: '1M' } });
    const model = Buffer.alloc(16 * MiB);
    try {
      const jobs: Array<Promise<void>> = [];
      for (let k = 0; k < 64; k++) {
        const off = (k % 8) * 2 * MiB + Math.floor(k / 8) * 64 * K;
        const d = patternBytes(64 * K, 100 + k);
        d.copy(model, off);
        jobs.push(img.write(d, off));
        if (k % 16 === 15) jobs.push(img.flush());
      }
      await Promise.all(jobs);
    } finally {
      await img.close();
    }
    await judge(f, model);
    // Eight blocks of 1 MiB after the 4 MiB of metadata: nothing allocated twice.
    const { size } = await import('node:fs/promises').then((fs) => fs.stat(f));
    expect(size).toBe(12 * MiB);
  });
});
