/**
 * qcow2 writing judged by qemu: images vdisk creates, and qemu-made images vdisk
 * writes into (v2, v3, odd refcount widths, compressed clusters, backing chains),
 * pass `qemu-img check` with no errors or leaks and hold exactly what a raw model
 * holds (`qemu-img compare`); `convert -O qcow2` likewise.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import type { DiskImage } from '../../../src/device/block-device.js';
import { open } from '../../../src/formats/registry.js';
import { create } from '../../../src/ops/create.js';
import { itWith, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { readImageFile } from '../../helpers/read.js';
import { VDISK_BIN, patternBytes, tempDir } from '../../helpers/tmp.js';

const QEMU = ['qemu-img', 'qemu-io'];
const MiB = 1024 * 1024;
const K = 1024;
let dir = '';

beforeAll(async () => {
  dir = await tempDir('vdisk-qcow2-write-');
});

/** `qemu-img check`: exit code and output (0 = clean, 2 = corruption, 3 = leaks only). */
async function qemuCheck(f: string): Promise<{ code: number; out: string }> {
  const r = await run('qemu-img', ['check', '-f', 'qcow2', f]);
  return { code: r.code, out: r.stdout + r.stderr };
}

/** Writes, zeroes and discards in a pattern that crosses clusters and L2 tables, applied to the image and to a raw model. */
async function workload(img: DiskImage, model: Buffer, seed: number): Promise<void> {
  const steps: Array<[string, number, number]> = [
    ['w', 0, 64 * K],
    ['w', 100 * K, 3 * K],
    ['w', MiB - 512, 1024],
    ['w', 3 * MiB, 2 * MiB],
    ['z', 3 * MiB + 64 * K, 256 * K],
    ['z', 3 * MiB + 7, 1000],
    ['w', 7 * MiB + 123 * 512, 77 * 512],
    ['d', 4 * MiB, 512 * K],
    ['w', 4 * MiB + 256 * K, 8 * K],
    ['w', model.length - 4 * K, 4 * K],
    ['w', 100 * K, 70 * K],
  ];
  for (const [k, off, len] of steps) {
    if (off + len > model.length) continue;
    if (k === 'w') {
      const d = patternBytes(len, seed++);
      await img.write(d, off);
      d.copy(model, off);
    } else if (k === 'z') {
      await img.writeZeroes(off, len);
      model.fill(0, off, off + len);
    } else {
      // discard: the contents are unspecified; read back what the image holds now.
      await img.discard(off, len);
      const got = Buffer.alloc(len);
      await img.read(got, off);
      got.copy(model, off);
    }
  }
}

async function judge(f: string, model: Buffer): Promise<void> {
  const c = await qemuCheck(f);
  expect(c.code, c.out).toBe(0);
  expect(c.out).toMatch(/No errors were found/);
  const ours = await run(process.execPath, [VDISK_BIN, 'check', f], { cwd: dir });
  expect(ours.code, ours.stdout + ours.stderr).toBe(0);
  const raw = `${f}.model.raw`;
  await writeFile(raw, model);
  expect(await qemuSame(f, 'qcow2', raw, 'raw')).toBe(true);
  expect((await readImageFile(f)).equals(model)).toBe(true);
}

describe('qcow2 writing', () => {
  for (const cs of ['512', '4K', '64K', '2M']) {
    itWith(QEMU, `create -f qcow2 (cluster_size ${cs}), write, zero, discard: qemu-img check and compare`, async () => {
      const f = join(dir, `new-${cs}.qcow2`);
      const img = await create(f, { format: 'qcow2', size: '12M', options: { cluster_size: cs } });
      const model = Buffer.alloc(12 * MiB);
      try {
        await workload(img, model, 1);
      } finally {
        await img.close();
      }
      const info = await runOk('qemu-img', ['info', '--output', 'json', f]);
      expect(JSON.parse(info)).toMatchObject({ format: 'qcow2', 'virtual-size': 12 * MiB, 'format-specific': { data: { compat: '1.1', 'refcount-bits': 16 } } });
      await judge(f, model);
    });
  }

  itWith(QEMU, 'a 512-byte-cluster image written past what its first refcount table covers grows the table', async () => {
    const f = join(dir, 'grow.qcow2');
    const img = await create(f, { format: 'qcow2', size: '40M', options: { cluster_size: '512' } });
    const model = Buffer.alloc(40 * MiB);
    try {
      const d = patternBytes(20 * MiB, 5);
      await img.write(d, 10 * MiB);
      d.copy(model, 10 * MiB);
    } finally {
      await img.close();
    }
    const hdr = await readFile(f);
    expect(hdr.readUInt32BE(56)).toBeGreaterThan(1);
    await judge(f, model);
  });

  const made: Array<[string, string[]]> = [
    ['v2', ['-o', 'compat=0.10']],
    ['v3', ['-o', 'compat=1.1']],
    ['refcount1', ['-o', 'refcount_bits=1,cluster_size=4096']],
    ['refcount64', ['-o', 'refcount_bits=64']],
    ['lazy', ['-o', 'lazy_refcounts=on,cluster_size=1024']],
  ];
  for (const [name, args] of made) {
    itWith(QEMU, `writes into a qemu-made ${name} image keep qemu-img check clean`, async () => {
      const f = join(dir, `qemu-${name}.qcow2`);
      await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, f, '8M']);
      await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x6b 5M 100k', f]);
      const model = await readImageFile(f);
      const img = await open(f);
      try {
        await workload(img, model, 10);
      } finally {
        await img.close();
      }
      await judge(f, model);
    });
  }

  itWith(QEMU, 'overwriting compressed clusters releases them', async () => {
    const src = join(dir, 'text.raw');
    const text = Buffer.alloc(4 * MiB);
    for (let i = 0; i < text.length; i += 16) text.write(`row ${i.toString(16).padStart(11, '0')}`, i, 'latin1');
    await writeFile(src, text);
    const f = join(dir, 'compressed.qcow2');
    await runOk('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', src, f]);
    const model = Buffer.from(text);
    const img = await open(f);
    try {
      await workload(img, model, 20);
    } finally {
      await img.close();
    }
    await judge(f, model);
  });

  itWith(QEMU, 'a child over a backing file: partial writes copy the parent, zeroes hide it', async () => {
    const base = join(dir, 'wbase.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 0 8M', base]);
    const child = join(dir, 'wchild.qcow2');
    const img = await create(child, { format: 'qcow2', backing: base });
    const model = Buffer.alloc(8 * MiB, 0x21);
    try {
      await workload(img, model, 30);
    } finally {
      await img.close();
    }
    const info = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', child])) as Record<string, unknown>;
    expect(info['backing-filename']).toBe('wbase.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    await judge(child, model);
  });

  itWith(QEMU, 'images with internal snapshots or the dirty bit are refused for writing, read fine', async () => {
    const f = join(dir, 'snapw.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', f, '1M']);
    await runOk('qemu-img', ['snapshot', '-c', 's', f]);
    await expect(open(f)).rejects.toThrow(/internal snapshots/);
    const d = join(dir, 'dirty.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', d, '1M']);
    const b = await readFile(d);
    b.writeUInt32BE(1, 76);
    await writeFile(d, b);
    await expect(open(d)).rejects.toThrow(/dirty bit/);
    await (await open(d, { readOnly: true })).close();
  });

  for (const fmt of ['raw', 'vhd', 'vdi', 'vmdk'] as const) {
    itWith(QEMU, `vdisk convert -O qcow2 from ${fmt}: qemu-img check and compare`, async () => {
      const raw = join(dir, `conv-src-${fmt}.raw`);
      const data = Buffer.alloc(6 * MiB);
      patternBytes(MiB, 3).copy(data, 0);
      patternBytes(300 * K, 4).copy(data, 4 * MiB + 5 * K);
      await writeFile(raw, data);
      const src = join(dir, `conv-src.${fmt}`);
      if (fmt !== 'raw') await runOk('qemu-img', ['convert', '-f', 'raw', '-O', fmt === 'vhd' ? 'vpc' : fmt, raw, src]);
      const out = join(dir, `conv-${fmt}.qcow2`);
      const r = await run(process.execPath, [VDISK_BIN, 'convert', '-O', 'qcow2', fmt === 'raw' ? raw : src, out], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      const c = await qemuCheck(out);
      expect(c.code, c.out).toBe(0);
      expect(await qemuSame(fmt === 'raw' ? raw : src, fmt, out, 'qcow2')).toBe(true);
    });
  }
});
