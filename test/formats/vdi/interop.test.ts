/**
 * VDI interop with qemu-img / qemu-io: qemu-made images read byte-identical to
 * `qemu-img convert -O raw`; ours pass `qemu-img check` and `qemu-img compare`.
 * qemu refuses VDIs with a link uuid, so differencing images are judged by
 * flattening them with our reader and comparing against what qemu-io makes of the
 * parent's raw data with the same writes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import type { DiskImage } from '../../../src/device/block-device.js';
import { open } from '../../../src/formats/registry.js';
import { decodeHeader } from '../../../src/formats/vdi/layout.js';
import { checkVdi } from '../../../src/formats/vdi/index.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { create } from '../../../src/ops/create.js';
import { itWith, qemuInfo, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, patternBytes, tempDir } from '../../helpers/tmp.js';
import { MiB, readAll } from './util.js';

const QEMU = ['qemu-img', 'qemu-io'];

/** Data ranges qemu-img map reports (coalesced). */
async function qemuDataRanges(file: string): Promise<Array<[number, number]>> {
  const map = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'vdi', file])) as Array<{ start: number; length: number; data: boolean }>;
  const out: Array<[number, number]> = [];
  for (const m of map) {
    if (!m.data) continue;
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === m.start) last[1] += m.length;
    else out.push([m.start, m.length]);
  }
  return out;
}

async function ourDataRanges(img: DiskImage): Promise<Array<[number, number]>> {
  return (await listExtents(img)).filter((e) => e.kind === 'data').map((e) => [e.offset, e.length]);
}

/** qemu-io writes that are easy to repeat on a raw file. */
const QEMU_WRITES = ['write -P 0x11 0 64k', 'write -P 0x22 3M 1M', 'write -P 0x33 5243392 4k', 'write -P 0x44 7M 512'];

describe('vdi interop with qemu', async () => {
  const dir = await tempDir('vdisk-vdi-');

  for (const variant of ['dynamic', 'static'] as const) {
    itWith(QEMU, `reads a qemu-made ${variant} VDI byte-identical to qemu-img convert -O raw`, async () => {
      const f = join(dir, `q-${variant}.vdi`);
      const raw = join(dir, `q-${variant}.raw`);
      await runOk('qemu-img', ['create', '-f', 'vdi', ...(variant === 'static' ? ['-o', 'static=on'] : []), f, '8M']);
      for (const w of QEMU_WRITES) await runOk('qemu-io', ['-f', 'vdi', '-c', w, f]);
      await runOk('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', f, raw]);
      const img = await open(f, { readOnly: true });
      expect(img.format).toBe('vdi');
      const want = await readFile(raw);
      expect(img.size).toBe(want.length);
      expect((await readAll(img)).equals(want)).toBe(true);
      // Reads that start inside blocks and cross them.
      for (const [off, len] of [[3 * MiB - 100, 300], [5 * MiB + 513, 4000], [64 * 1024 - 7, 20]] as const) {
        const piece = Buffer.alloc(len);
        await img.read(piece, off);
        expect(piece.equals(want.subarray(off, off + len)), `read at ${off}`).toBe(true);
      }
      expect(await ourDataRanges(img)).toEqual(await qemuDataRanges(f));
      const i = await img.info();
      expect(i.formatSpecific).toMatchObject({ 'header-size': 384, 'image-type': variant === 'static' ? 'fixed' : 'normal' });
      await img.close();
      // Writing into the qemu image keeps it valid for qemu.
      const rw = await open(f);
      const data = patternBytes(MiB + 4096, 5);
      await rw.write(data, 6 * MiB - 2048);
      await rw.close();
      want.set(data, 6 * MiB - 2048);
      await writeFile(raw, want);
      expect((await run('qemu-img', ['check', '-f', 'vdi', f])).code).toBe(0);
      expect(await qemuSame(f, 'vdi', raw, 'raw')).toBe(true);
    });
  }

  for (const subformat of ['dynamic', 'fixed'] as const) {
    itWith(QEMU, `makes ${subformat} VDIs that pass qemu-img check and compare`, async () => {
      const f = join(dir, `ours-${subformat}.vdi`);
      const raw = join(dir, `ours-${subformat}.raw`);
      const size = 9 * MiB + 512;
      const img = await create(f, { format: 'vdi', size, options: { subformat } });
      const model = Buffer.alloc(size);
      const put = async (off: number, len: number, seed: number): Promise<void> => {
        const d = patternBytes(len, seed);
        await img.write(d, off);
        d.copy(model, off);
      };
      await put(0, 3 * MiB, 1);
      await put(4 * MiB + 100, 700, 2);
      await put(8 * MiB, MiB + 512, 3);
      await put(6 * MiB - 512, 1024, 4);
      await img.writeZeroes(MiB, MiB); // whole block: released, last block moved into its place
      model.fill(0, MiB, 2 * MiB);
      await img.writeZeroes(4 * MiB, 2048);
      model.fill(0, 4 * MiB, 4 * MiB + 2048);
      await img.close();
      await writeFile(raw, model);
      const check = await run('qemu-img', ['check', '-f', 'vdi', f]);
      expect(check.code, check.stdout + check.stderr).toBe(0);
      expect(check.stdout).toContain('No errors were found');
      expect(await qemuSame(f, 'vdi', raw, 'raw')).toBe(true);
      const info = await qemuInfo(f, 'vdi');
      expect(info['virtual-size']).toBe(size);
      const h = decodeHeader(await readFile(f), f);
      expect([h.cbHeader, h.offBlocks % MiB, h.offData % MiB]).toEqual([400, 0, 0]);
      const back = await open(f, { readOnly: true });
      expect(await ourDataRanges(back)).toEqual(await qemuDataRanges(f));
      await back.close();
    });
  }

  itWith(QEMU, 'differencing child over a qemu-made parent flattens to what qemu-io makes of the same writes', async () => {
    const parentFile = join(dir, 'parent.vdi');
    const childFile = join(dir, 'child.vdi');
    const expected = join(dir, 'expected.raw');
    const flat = join(dir, 'flat.raw');
    await runOk('qemu-img', ['create', '-f', 'vdi', parentFile, '8M']);
    for (const w of QEMU_WRITES) await runOk('qemu-io', ['-f', 'vdi', '-c', w, parentFile]);
    await runOk('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', parentFile, expected]);
    const child = await create(childFile, { format: 'vdi', backing: parentFile });
    expect(child.size).toBe(8 * MiB);
    const childWrites: Array<[number, number, number]> = [
      [0x55, 3 * MiB + 4096, 8192],
      [0x66, 64 * 1024 - 512, 1024],
      [0x77, 6 * MiB, MiB],
    ];
    for (const [p, off, len] of childWrites) {
      await child.write(Buffer.alloc(len, p), off);
      await runOk('qemu-io', ['-f', 'raw', '-c', `write -P 0x${p.toString(16)} ${off} ${len}`, expected]);
    }
    await child.writeZeroes(7 * MiB, MiB);
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -z ${7 * MiB} ${MiB}`, expected]);
    await child.close();
    // Reopen: the parent is found by uuid in the folder.
    const img = await open(childFile, { readOnly: true });
    expect(img.backing?.filename).toBe(parentFile);
    await writeFile(flat, await readAll(img));
    await img.close();
    expect(await qemuSame(flat, 'raw', expected, 'raw')).toBe(true);
    // qemu itself refuses the child (non-NULL link uuid) but accepts the untouched parent.
    const refused = await run('qemu-img', ['info', '-f', 'vdi', childFile]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/link UUID/i);
    expect((await run('qemu-img', ['check', '-f', 'vdi', parentFile])).code).toBe(0);
  });

  itWith(QEMU, 'check finds the block-map damage qemu-img check finds', async () => {
    const f = join(dir, 'damaged.vdi');
    await runOk('qemu-img', ['create', '-f', 'vdi', f, '4M']);
    for (const w of ['write -P 1 0 512', 'write -P 2 1M 512', 'write -P 3 3M 512']) await runOk('qemu-io', ['-f', 'vdi', '-c', w, f]);
    const good = await readFile(f);
    const h = decodeHeader(good, f);
    const cases: Array<[string, (b: Buffer) => void, RegExp | null]> = [
      ['clean', () => undefined, null],
      ['two entries naming one block', (b) => b.writeUInt32LE(b.readUInt32LE(h.offBlocks), h.offBlocks + 2 * 4), /both name data block/],
      ['entry past cBlocks', (b) => b.writeUInt32LE(9, h.offBlocks + 4), /past cBlocks/],
    ];
    for (const [what, damage, ours] of cases) {
      const b = Buffer.from(good);
      damage(b);
      await writeFile(f, b);
      const q = await run('qemu-img', ['check', '-f', 'vdi', f]);
      const storage = new MemoryStorage(b, { name: f });
      const r = await checkVdi(storage, new MemoryLocation(f), {});
      const corrupt = r.problems.filter((p) => p.severity === 'corrupt');
      if (ours === null) {
        expect(q.code, what).toBe(0);
        expect(r.problems, what).toEqual([]);
      } else {
        expect(q.code, `${what}: ${q.stderr}`).toBe(2); // qemu-img check: corruptions found
        expect(corrupt.some((p) => ours.test(p.message)), what).toBe(true);
      }
    }
  });

  itWith(QEMU, 'vdisk create -f vdi -o subformat=fixed|dynamic and -b PARENT from the CLI', async () => {
    const base = join(dir, 'cli-base.vdi');
    const fixed = join(dir, 'cli-fixed.vdi');
    const diff = join(dir, 'cli-diff.vdi');
    await runOk('node', [VDISK_BIN, 'create', '-f', 'vdi', '-o', 'subformat=dynamic', base, '4M']);
    await runOk('node', [VDISK_BIN, 'create', '-f', 'vdi', '-o', 'subformat=fixed', fixed, '4M']);
    await runOk('node', [VDISK_BIN, 'create', '-f', 'vdi', '-b', base, diff]);
    const info = JSON.parse(await runOk('node', [VDISK_BIN, 'info', '--output', 'json', diff])) as Record<string, unknown>;
    expect(info['virtual-size']).toBe(4 * MiB);
    expect(info['backing-filename']).toBe(base);
    const bh = decodeHeader(await readFile(base), base);
    expect(info['format-specific']).toMatchObject({ type: 'vdi', data: { 'image-type': 'diff', 'parent-uuid': bh.uuidCreate } });
    expect((await readFile(fixed)).length).toBe(2 * MiB + 4 * MiB);
    for (const f of [base, fixed]) expect((await run('qemu-img', ['check', '-f', 'vdi', f])).code).toBe(0);
    const bad = await run('node', [VDISK_BIN, 'create', '-f', 'vdi', '-o', 'subformat=sparse', join(dir, 'x.vdi'), '1M']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/subformat/);
  });
});
