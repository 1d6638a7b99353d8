/**
 * VMDK interop, judged by qemu-img (convert/compare/check) and libvmdk's vmdkinfo.
 */
import { open as fsOpen, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { create } from '../../../src/ops/create.js';
import { open } from '../../../src/formats/registry.js';
import { FileStorage } from '../../../src/storage/file.js';
import { writeStreamOptimized } from '../../../src/formats/vmdk/stream.js';
import { itWith, qemuInfo, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, patternBytes, tempDir } from '../../helpers/tmp.js';
import { compareRanges, dumpRaw } from './util.js';

const MiB = 1024 * 1024;
const dir = await tempDir('vdisk-vmdk-interop-');

/** Writes spread over a disk: unaligned, grain-crossing, and across the 2 GiB split boundary when the disk is large. */
function writePlan(size: number): Array<[number, Buffer]> {
  const plan: Array<[number, Buffer]> = [
    [0, patternBytes(512, 1)],
    [MiB + 4096 + 512, patternBytes(200 * 1024, 2)],
    [size - 3 * 65536 - 1024, patternBytes(3 * 65536, 3)],
  ];
  if (size > 2048 * MiB) plan.push([4192256 * 512 - 65536 - 512, patternBytes(5 * 65536, 4)]);
  return plan;
}

/** Ranges around each write and each 2 GiB extent edge (qemu's and VMware's). */
function around(plan: Array<[number, Buffer]>, size: number): Array<[number, number]> {
  const out: Array<[number, number]> = plan.map(([off, d]) => [off - 65536, d.length + 131072]);
  for (const edge of [4192256 * 512, 4194304 * 512, size - 65536]) out.push([edge - 65536, 131072]);
  return out;
}

async function rawWith(path: string, size: number, plan: Array<[number, Buffer]>): Promise<void> {
  const fh = await fsOpen(path, 'w');
  for (const [off, data] of plan) await fh.write(data, 0, data.length, off);
  await fh.truncate(size);
  await fh.close();
}

const QEMU_CASES: Array<{ sub: string; size: string; extra?: string }> = [
  { sub: 'monolithicSparse', size: '64M' },
  { sub: 'monolithicSparse', size: '64M', extra: 'adapter_type=lsilogic,hwversion=6' },
  { sub: 'monolithicFlat', size: '64M' },
  { sub: 'twoGbMaxExtentSparse', size: '2112M' },
  { sub: 'twoGbMaxExtentFlat', size: '2112M' },
  { sub: 'streamOptimized', size: '64M' },
  { sub: 'streamOptimized', size: '64M', extra: 'adapter_type=buslogic' },
];

describe('images made by qemu-img', () => {
  for (const c of QEMU_CASES) {
    itWith(['qemu-img', 'qemu-io'], `reads ${c.sub}${c.extra ? ` (${c.extra})` : ''} byte-identical to qemu-img convert -O raw`, async () => {
      const img = join(dir, `q-${c.sub}-${c.extra ? 'x' : 'p'}.vmdk`);
      const opts = `subformat=${c.sub}${c.extra ? `,${c.extra}` : ''}`;
      await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', opts, img, c.size]);
      const size = Number((await qemuInfo(img))['virtual-size']);
      if (c.sub === 'streamOptimized') {
        // qemu appends compressed grains to a streamOptimized image in order.
        const src = join(dir, `q-src-${c.extra ? 'x' : 'p'}.raw`);
        await rawWith(src, size, writePlan(size));
        await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', opts, src, img]);
      } else {
        for (const [i, [off, data]] of writePlan(size).entries()) {
          await runOk('qemu-io', ['-f', 'vmdk', '-c', `write -P ${0x10 + i} ${off} ${data.length}`, img]);
        }
      }
      const theirs = `${img}.qemu.raw`;
      const ours = `${img}.ours.raw`;
      await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', img, theirs]);
      const dev = await open(img, { readOnly: true });
      try {
        expect(dev.format).toBe('vmdk');
        expect(dev.size).toBe(size);
        const facts = (await dev.info()).formatSpecific!;
        expect(facts['create-type']).toBe(c.sub);
        if (c.extra?.includes('lsilogic')) {
          expect(facts['adapter-type']).toBe('lsilogic');
          expect(facts['hw-version']).toBe('6');
        }
        if (c.sub === 'twoGbMaxExtentFlat') {
          // 2 GiB of flat file: compare around every write and extent edge instead of reading it all.
          const ranges = around(writePlan(size), size);
          expect(await compareRanges(dev, theirs, ranges)).toBe(-1);
        } else await dumpRaw(dev, ours);
      } finally {
        await dev.close();
      }
      if (c.sub !== 'twoGbMaxExtentFlat') expect(await qemuSame(ours, 'raw', theirs, 'raw')).toBe(true);
      // And not trivially: the data is really there.
      const head = Buffer.alloc(512);
      const fh = await fsOpen(theirs, 'r');
      await fh.read(head, 0, 512, 0);
      await fh.close();
      expect(head.some((b) => b !== 0)).toBe(true);
    });
  }

  itWith(['qemu-img', 'qemu-io'], 'reads a qemu-made delta link through its parent', async () => {
    const parent = join(dir, 'qp.vmdk');
    const child = join(dir, 'qc.vmdk');
    await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', parent, '64M']);
    await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x61 0 1M', parent]);
    await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', 'qp.vmdk', '-F', 'vmdk', child]);
    await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x62 4096 8192', child]);
    const theirs = join(dir, 'qc.qemu.raw');
    const ours = join(dir, 'qc.ours.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', child, theirs]);
    const dev = await open(child, { readOnly: true });
    try {
      expect(dev.backing?.format).toBe('vmdk');
      await dumpRaw(dev, ours);
    } finally {
      await dev.close();
    }
    expect(await qemuSame(ours, 'raw', theirs, 'raw')).toBe(true);
  });
});

const OUR_CASES: Array<{ sub: string; size: number; options?: Record<string, string> }> = [
  { sub: 'monolithicSparse', size: 64 * MiB },
  { sub: 'monolithicSparse', size: 64 * MiB + 512, options: { adapter_type: 'lsilogic', hwversion: '7' } },
  { sub: 'monolithicFlat', size: 64 * MiB },
  { sub: 'twoGbMaxExtentSparse', size: 2112 * MiB },
  { sub: 'twoGbMaxExtentFlat', size: 2112 * MiB },
  { sub: 'streamOptimized', size: 64 * MiB + 1536 },
];

describe('images made by vdisk', () => {
  for (const c of OUR_CASES) {
    itWith(['qemu-img', 'vmdkinfo'], `${c.sub}${c.options ? ' (options)' : ''} passes qemu-img check/compare and vmdkinfo`, async () => {
      const img = join(dir, `v-${c.sub}-${c.options ? 'x' : 'p'}.vmdk`);
      const ref = `${img}.ref.raw`;
      const plan = writePlan(c.size);
      if (c.sub === 'streamOptimized') plan.sort((a, b) => a[0] - b[0]); // written once, in order
      const dev = await create(img, { format: 'vmdk', size: c.size, options: { subformat: c.sub, ...(c.options ?? {}) } });
      for (const [off, data] of plan) await dev.write(data, off);
      await dev.close();
      await rawWith(ref, c.size, plan);
      if (!c.sub.endsWith('Flat')) {
        const chk = await run('qemu-img', ['check', '-f', 'vmdk', img]);
        expect(chk.code, chk.stdout + chk.stderr).toBe(0);
      }
      expect(await qemuSame(img, 'vmdk', ref, 'raw')).toBe(true);
      const info = await qemuInfo(img, 'vmdk');
      expect(info['virtual-size']).toBe(c.size);
      const vi = await run('vmdkinfo', [img]);
      expect(vi.code, vi.stdout + vi.stderr).toBe(0);
      expect(vi.stdout).toContain(`Media size`);
      if (c.options?.adapter_type) expect(await readFile(img, 'latin1')).toContain('ddb.adapterType = "lsilogic"');
      // Our own reader agrees too.
      const back = await open(img, { readOnly: true });
      try {
        if (c.sub === 'twoGbMaxExtentFlat') {
          expect(await compareRanges(back, ref, around(plan, c.size))).toBe(-1);
        } else {
          const ours = `${img}.back.raw`;
          await dumpRaw(back, ours);
          expect(await qemuSame(ours, 'raw', ref, 'raw')).toBe(true);
        }
      } finally {
        await back.close();
      }
    });
  }

  itWith(['qemu-img', 'vmdkinfo'], 'writeStreamOptimized turns a raw disk into a VMware-layout stream (footer + EOS)', async () => {
    const size = 40 * MiB;
    const src = join(dir, 'so-src.raw');
    await rawWith(src, size, writePlan(size));
    const out = join(dir, 'so.vmdk');
    const srcDev = await open(src, { format: 'raw', readOnly: true });
    const storage = await FileStorage.open(out, { create: 'new' });
    const bytes = await writeStreamOptimized(srcDev, storage, { adapterType: 'lsilogic' });
    await storage.close();
    await srcDev.close();
    const file = await readFile(out);
    expect(file.length).toBe(bytes);
    // Header gdOffset = GD_AT_END; footer marker, footer, EOS at the end.
    expect(file.readBigUInt64LE(56)).toBe(0xffffffffffffffffn);
    expect(file.readUInt32LE(file.length - 1536 + 12)).toBe(3);
    expect(file.readUInt32LE(file.length - 1024)).toBe(0x564d444b);
    expect(file.subarray(file.length - 512).every((b) => b === 0)).toBe(true);
    expect(await qemuSame(out, 'vmdk', src, 'raw')).toBe(true);
    const chk = await run('qemu-img', ['check', '-f', 'vmdk', out]);
    expect(chk.code, chk.stdout + chk.stderr).toBe(0);
    const vi = await run('vmdkinfo', [out]);
    expect(vi.code, vi.stdout + vi.stderr).toBe(0);
    expect(vi.stdout).toMatch(/stream optimized/i);
  });

  itWith(['qemu-img', 'vmdkinfo'], 'delta links: vdisk create -b makes a child qemu-img and vmdkinfo follow', async () => {
    const parent = join(dir, 'dp.vmdk');
    const child = join(dir, 'dc.vmdk');
    const ref = join(dir, 'dc.ref.raw');
    const size = 16 * MiB;
    const p = await create(parent, { format: 'vmdk', size });
    await p.write(patternBytes(MiB, 7), 0);
    await p.close();
    const c = await create(child, { format: 'vmdk', backing: parent });
    await c.write(patternBytes(4096, 8), 512 * 3);
    await c.close();
    const fh = await fsOpen(ref, 'w');
    await fh.write(patternBytes(MiB, 7), 0, MiB, 0);
    await fh.write(patternBytes(4096, 8), 0, 4096, 512 * 3);
    await fh.truncate(size);
    await fh.close();
    expect(await qemuSame(child, 'vmdk', ref, 'raw')).toBe(true);
    const info = await qemuInfo(child, 'vmdk');
    expect(info['backing-filename']).toBe('dp.vmdk');
    const chk = await run('qemu-img', ['check', '-f', 'vmdk', child]);
    expect(chk.code, chk.stdout + chk.stderr).toBe(0);
    const vi = await run('vmdkinfo', [child]);
    expect(vi.code, vi.stdout + vi.stderr).toBe(0);
    expect(vi.stdout).toContain('dp.vmdk');
    // Our reader follows the chain and checks the CIDs.
    const back = await open(child, { readOnly: true });
    const got = Buffer.alloc(8192);
    await back.read(got, 0);
    await back.close();
    const want = patternBytes(MiB, 7).subarray(0, 8192);
    patternBytes(4096, 8).copy(want, 512 * 3);
    expect(got.equals(want)).toBe(true);
    await writeFile(join(dir, 'unused'), '');
  });

  itWith(['qemu-img', 'vmdkinfo'], 'vdisk create -f vmdk -o subformat,adapter_type,hwversion and -b from the command line', async () => {
    const parent = join(dir, 'cli-p.vmdk');
    const child = join(dir, 'cli-c.vmdk');
    await runOk('node', [VDISK_BIN, 'create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized,adapter_type=lsilogic,hwversion=7', join(dir, 'cli-s.vmdk'), '8M']);
    const vi = await runOk('vmdkinfo', [join(dir, 'cli-s.vmdk')]);
    expect(vi).toMatch(/Stream optimized/);
    expect(await readFile(join(dir, 'cli-s.vmdk'), 'latin1')).toMatch(/ddb.adapterType = "lsilogic"[\s\S]*ddb.virtualHWVersion = "7"/);
    await runOk('node', [VDISK_BIN, 'create', '-q', '-f', 'vmdk', '-o', 'adapter_type=buslogic', parent, '8M']);
    await runOk('node', [VDISK_BIN, 'create', '-q', '-f', 'vmdk', '-b', parent, child]);
    const info = await qemuInfo(child, 'vmdk');
    expect(info['virtual-size']).toBe(8 * MiB);
    expect(info['backing-filename']).toBe('cli-p.vmdk');
    expect(await readFile(child, 'latin1')).toContain('ddb.adapterType = "buslogic"');
    const bad = await run('node', [VDISK_BIN, 'create', '-f', 'vmdk', '-o', 'subformat=vmfsSparse', join(dir, 'cli-x.vmdk'), '1M']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/subformat=vmfsSparse/);
  });
});
