/**
 * `vdisk convert -c`: qcow2 output holds compressed clusters (raw deflate, packed as
 * qemu packs them) that qemu-img checks clean and reads identical; `-c -O vmdk` is
 * streamOptimized; other formats refuse `-c` (E_USAGE). A compressed image written
 * again (copy-on-write of compressed clusters) stays clean.
 */
import { randomFillSync } from 'node:crypto';
import { open as fsOpen } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { open } from '../../../src/formats/registry.js';
import { convert } from '../../../src/ops/convert.js';
import { itWith, qemuInfo, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, patternBytes, tempDir } from '../../helpers/tmp.js';

const M = 1024 * 1024;
let dir = '';
let raw = '';
beforeAll(async () => {
  dir = await tempDir('vdisk-qcow2-compress-');
  raw = join(dir, 'src.raw');
  // Text-like data (compresses), random data (does not), holes, zeros, and an odd tail.
  const fh = await fsOpen(raw, 'w');
  await fh.truncate(24 * M + 7 * 512);
  const text = Buffer.from('the disk holds sectors of plain words, over and over; '.repeat(80000));
  await fh.write(text, 0, 4 * M, 0);
  await fh.write(randomFillSync(Buffer.alloc(2 * M)), 0, 2 * M, 5 * M);
  await fh.write(patternBytes(3 * M, 3), 0, 3 * M, 9 * M);
  await fh.write(text, 0, 100_000, 20 * M + 512);
  await fh.write(patternBytes(7 * 512, 4), 0, 7 * 512, 24 * M);
  await fh.close();
});

/** qemu-img check: exit code and the share of compressed clusters it reports. */
async function qemuCheck(f: string): Promise<{ code: number; compressed: number; out: string }> {
  const r = await run('qemu-img', ['check', '-f', 'qcow2', f]);
  const m = /([\d.]+)% compressed clusters/.exec(r.stdout);
  return { code: r.code, compressed: m ? Number(m[1]) : 0, out: r.stdout + r.stderr };
}

describe('convert -c', () => {
  for (const cs of ['512', '4096', '65536']) {
    itWith(['qemu-img'], `-O qcow2 -c (cluster_size ${cs}): compressed clusters qemu-img checks clean and reads identical`, async () => {
      const out = join(dir, `c${cs}.qcow2`);
      const r = await run(process.execPath, [VDISK_BIN, 'convert', '-c', '-O', 'qcow2', '-o', `cluster_size=${cs}`, raw, out]);
      expect(r.code, r.stderr).toBe(0);
      const c = await qemuCheck(out);
      expect(c.code, c.out).toBe(0);
      expect(c.compressed).toBeGreaterThan(20);
      expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, out])).code).toBe(0);
      expect((await qemuInfo(out, 'qcow2'))['virtual-size']).toBe(24 * M + 7 * 512);
      // qemu reads what we packed, cluster by cluster.
      await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', out, join(dir, `back${cs}.raw`)]);
    });
  }

  itWith(['qemu-img'], 'a compressed image written again keeps qemu-img check clean and reads the new bytes', async () => {
    const out = join(dir, 'w.qcow2');
    await convert(raw, out, { format: 'qcow2', options: { cluster_size: '4096' }, compress: true });
    const img = await open(out);
    await img.write(patternBytes(10_000, 9), 100);
    await img.write(patternBytes(64 * 1024, 10), 2 * M);
    await img.close();
    const ref = join(dir, 'w.raw');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', raw, ref]);
    const r = await open(ref);
    await r.write(patternBytes(10_000, 9), 100);
    await r.write(patternBytes(64 * 1024, 10), 2 * M);
    await r.close();
    expect((await qemuCheck(out)).code).toBe(0);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', ref, out])).code).toBe(0);
  });

  itWith(['qemu-img'], '-c -O vmdk writes streamOptimized; -c with other formats is refused', async () => {
    const vmdk = join(dir, 'c.vmdk');
    const r = await run(process.execPath, [VDISK_BIN, 'convert', '-c', '-O', 'vmdk', raw, vmdk]);
    expect(r.code, r.stderr).toBe(0);
    expect(((await qemuInfo(vmdk, 'vmdk'))['format-specific'] as { data: { 'create-type': string } }).data['create-type']).toBe('streamOptimized');
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', raw, vmdk])).code).toBe(0);
    await expect(convert(raw, join(dir, 'x.vmdk'), { format: 'vmdk', options: { subformat: 'monolithicSparse' }, compress: true })).rejects.toMatchObject({ code: 'E_USAGE' });
    for (const fmt of ['raw', 'vhd', 'vdi', 'vhdx']) {
      await expect(convert(raw, join(dir, `x.${fmt}`), { format: fmt, compress: true })).rejects.toMatchObject({ code: 'E_USAGE' });
    }
    const cli = await run(process.execPath, [VDISK_BIN, 'convert', '-c', '-O', 'vdi', raw, join(dir, 'y.vdi')]);
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/-c: output format vdi has no compressed form/);
  });
});
