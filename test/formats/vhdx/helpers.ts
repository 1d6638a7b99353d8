/** Shared helpers of the VHDX tests: qemu-made images, what qemu reads, and our reading of them. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { open } from '../../../src/formats/registry.js';
import { runOk } from '../../helpers/oracle.js';
import { readImageFile } from '../../helpers/read.js';

export const QEMU = ['qemu-img', 'qemu-io'];
export const MiB = 1024 * 1024;

/** Make `dir/name` with `qemu-img create -f vhdx` and apply qemu-io commands. */
export async function qemuVhdx(dir: string, name: string, opts: string, size: string, io: string[] = []): Promise<string> {
  const f = join(dir, name);
  await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', ...(opts ? ['-o', opts] : []), f, size]);
  for (const c of io) await runOk('qemu-io', ['-f', 'vhdx', '-c', c, f]);
  return f;
}

/** What qemu reads from a VHDX: `qemu-img convert -O raw`. */
export async function qemuRaw(f: string): Promise<Buffer> {
  const out = `${f}.qemu.raw`;
  await runOk('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', f, out]);
  return readFile(out);
}

/**
 * Our reading equals qemu's byte for byte, and our map is consistent with
 * `qemu-img map` (which reports a VHDX as all data, having no block status for it):
 * our data lies inside qemu's data and every range we call zero or hole reads zeros.
 */
export async function expectSameAsQemu(f: string): Promise<void> {
  const ours = await readImageFile(f);
  const theirs = await qemuRaw(f);
  expect(ours.length).toBe(theirs.length);
  expect(ours.equals(theirs)).toBe(true);
  const map = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'vhdx', f])) as Array<{ start: number; length: number; data: boolean }>;
  const img = await open(f, { readOnly: true });
  try {
    for (const e of await listExtents(img)) {
      if (e.kind === 'data') {
        expect(map.some((m) => m.data && m.start <= e.offset && e.offset + e.length <= m.start + m.length), `data at ${e.offset}+${e.length} inside qemu's data`).toBe(true);
      } else {
        expect(theirs.subarray(e.offset, e.offset + e.length).every((b) => b === 0), `${e.kind} at ${e.offset}+${e.length} reads zeros`).toBe(true);
      }
    }
  } finally {
    await img.close();
  }
}
