/**
 * Test helpers for OVF/OVA: a DiskWriter made of qemu-img (until the vmdk driver's
 * streamOptimized writer is merged), source disks with known data, and a python
 * helper to craft hostile archives with tarfile/zipfile (tools no one here wrote).
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VMDK_ADAPTER_TYPE, type DiskWriter } from '../../../src/ops/ova-disk-writer.js';
import { isVdiskError } from '../../../src/errors.js';
import { findDriver } from '../../../src/formats/registry.js';
import { FileStorage } from '../../../src/storage/file.js';
import { it } from 'vitest';
import { itWith, runOk } from '../../helpers/oracle.js';
import { patternBytes } from '../../helpers/tmp.js';

/** Test-only DiskWriter: copy the device to a raw file, let qemu-img write the streamOptimized VMDK. */
export const qemuDiskWriter: DiskWriter = async (src, out, opts) => {
  const dir = await mkdtemp(join(tmpdir(), 'vdisk-qemu-writer-'));
  try {
    const raw = join(dir, 'src.raw');
    const vmdk = join(dir, 'out.vmdk');
    const rs = await FileStorage.open(raw, { create: 'new', noLock: true });
    try {
      await rs.truncate(src.size);
      const buf = Buffer.alloc(1024 * 1024);
      for await (const e of src.extents()) {
        if (e.kind !== 'data') continue;
        for (let off = e.offset; off < e.offset + e.length; ) {
          const n = Math.min(buf.length, e.offset + e.length - off);
          await src.read(buf.subarray(0, n), off);
          await rs.write(buf.subarray(0, n), off);
          off += n;
        }
      }
    } finally {
      await rs.close();
    }
    const adapter = VMDK_ADAPTER_TYPE[opts?.controller ?? 'scsi'];
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=streamOptimized,adapter_type=${adapter}`, raw, vmdk]);
    const vs = await FileStorage.open(vmdk, { readOnly: true });
    try {
      const b = Buffer.alloc(vs.size);
      await vs.read(b, 0);
      await out.write(b, 0);
      opts?.onProgress?.(src.size, src.size);
      return { bytes: b.length };
    } finally {
      await vs.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
};

/** Why VMDK-reading tests skip, or undefined when the vmdk driver is registered. */
export function vmdkMissing(): string | undefined {
  try {
    findDriver('vmdk');
    return undefined;
  } catch {
    return 'vmdk driver not registered yet (branch vmdk)';
  }
}

/**
 * A test that needs the vmdk driver to read VMDKs: skipped (saying why) while the
 * driver is not registered, an ordinary {@link itWith} test once it is.
 */
export function itWithVmdk(tools: readonly string[], name: string, fn: () => Promise<void>, timeout?: number): void {
  const missing = vmdkMissing();
  if (missing) it.skip(`${name} [skipped: ${missing}]`, () => undefined);
  else itWith(tools, name, fn, timeout);
}

/** A raw disk of `size` bytes with pattern data at a few places and holes between. */
export async function makeRawDisk(path: string, size: number, seed: number): Promise<Buffer> {
  const img = Buffer.alloc(size);
  patternBytes(64 * 1024, seed).copy(img, 0);
  patternBytes(200 * 1024, seed + 1).copy(img, Math.floor(size / 3 / 512) * 512 + 512);
  patternBytes(4096, seed + 2).copy(img, size - 4096);
  await writeFile(path, img);
  return img;
}

/** Number of bytes in 4 KiB pages of `img` that are not all zero (what DiskSection populatedSize should count). */
export function nonZeroPages(img: Buffer): number {
  let n = 0;
  for (let off = 0; off < img.length; off += 4096) {
    const page = img.subarray(off, off + 4096);
    if (page.some((b) => b !== 0)) n += page.length;
  }
  return n;
}

let exe: string | undefined;
/** The interpreter behind `python3` (skipping slow version-manager shims on repeated runs). */
export function pythonExe(): string {
  if (exe === undefined) {
    const r = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' });
    exe = r.status === 0 && r.stdout.trim() ? r.stdout.trim() : 'python3';
  }
  return exe;
}

/** Run a python3 script (crafting archives with the standard tarfile/zipfile modules). */
export function python(script: string, args: string[] = []): void {
  const r = spawnSync(pythonExe(), ['-c', script, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 failed: ${r.stderr}`);
}

/** What a promise ends with: `CODE: message` for a VdiskError, `no error` if it resolves; anything else is rethrown. */
export async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isVdiskError(e)) return `${e.code}: ${e.message}`;
    throw e;
  }
  return 'no error';
}
