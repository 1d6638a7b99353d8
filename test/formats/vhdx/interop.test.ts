/**
 * VHDX read interop with qemu-img / qemu-io: images qemu makes (dynamic and fixed,
 * block sizes, log sizes, block_state_zero on and off, convert from raw) read
 * byte-identical to `qemu-img convert -O raw`, with a map that agrees.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { open } from '../../../src/formats/registry.js';
import { itWith, runOk } from '../../helpers/oracle.js';
import { tempDir } from '../../helpers/tmp.js';
import { writePatternRaw } from '../../ops/variants.js';
import { MiB, QEMU, expectSameAsQemu, qemuVhdx } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-');
});

const WRITES = ['write -P 0x5a 0 64k', 'write -P 0xa5 1M 300k', 'write -P 0x33 3M 512', 'write -P 0x44 5000k 4k', 'write -P 0x77 15M 1M', 'write -z 9M 2M'];

describe('VHDX images made by qemu read as qemu reads them', () => {
  const variants: Array<[string, string]> = [
    ['default', ''],
    ['block-1M', 'block_size=1M'],
    ['block-1M-log-2M', 'block_size=1M,log_size=2M'],
    ['block-256M', 'block_size=256M'],
    ['no-zero-state', 'block_state_zero=off,block_size=2M'],
    ['fixed', 'subformat=fixed'],
    ['fixed-1M', 'subformat=fixed,block_size=1M'],
  ];
  for (const [name, opts] of variants) {
    itWith(QEMU, `${name}: data written by qemu-io`, async () => {
      const f = await qemuVhdx(dir, `${name}.vhdx`, opts, '16M', WRITES);
      await expectSameAsQemu(f);
      const img = await open(f, { readOnly: true });
      try {
        const info = await img.info();
        expect(info.formatSpecific?.type).toBe(opts.includes('fixed') ? 'fixed' : 'dynamic');
        expect(info.formatSpecific?.creator).toMatch(/QEMU/);
      } finally {
        await img.close();
      }
    });
  }

  itWith(QEMU, 'an empty dynamic image is one hole', async () => {
    const f = await qemuVhdx(dir, 'empty.vhdx', 'block_state_zero=off', '100M');
    await expectSameAsQemu(f);
    const img = await open(f, { readOnly: true });
    try {
      expect(await listExtents(img)).toEqual([{ offset: 0, length: 100 * MiB, kind: 'hole', depth: 0 }]);
    } finally {
      await img.close();
    }
  });

  itWith(QEMU, 'a size that is not a multiple of the block size', async () => {
    const f = await qemuVhdx(dir, 'odd.vhdx', 'block_size=1M', '5000k', ['write -P 0x61 4M 904k']);
    await expectSameAsQemu(f);
    const g = await qemuVhdx(dir, 'odd-fixed.vhdx', 'subformat=fixed,block_size=1M', '5000k', ['write -P 0x61 4M 904k']);
    await expectSameAsQemu(g);
  });

  for (const opts of ['subformat=dynamic', 'subformat=fixed', 'subformat=dynamic,block_size=1M', 'subformat=dynamic,block_state_zero=off']) {
    itWith(QEMU, `qemu-img convert -O vhdx -o ${opts}`, async () => {
      const raw = join(dir, 'pattern.raw');
      await writePatternRaw(raw);
      const f = join(dir, `conv-${opts.replace(/[=,]/g, '-')}.vhdx`);
      await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', opts, raw, f]);
      await expectSameAsQemu(f);
    });
  }
});
