import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { createOva } from '../../src/ops/ova.js';
import { itWith, qemuSame, run, runOk } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { itWithVmdk, makeRawDisk, qemuDiskWriter } from '../formats/ovf/helpers.js';

const vdisk = (args: string[], cwd?: string) => run('node', [VDISK_BIN, ...args], { cwd });

describe('vdisk ova info|verify|extract and info ARCHIVE:MEMBER', () => {
  let dir: string;
  let ova: string;
  beforeAll(async () => {
    dir = await tempDir('vdisk-cli-ova-');
    await makeRawDisk(join(dir, 'a.raw'), 4 * 1024 * 1024, 11);
    ova = join(dir, 'vm.ova');
    await createOva(ova, [join(dir, 'a.raw')], { name: 'vm', cpus: 2, memoryMiB: 256, controller: 'sata', networks: ['lan'], diskWriter: qemuDiskWriter });
  });

  itWith(['qemu-img'], 'ova info --output json and human', async () => {
    const r = await vdisk(['ova', 'info', '--output', 'json', ova]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as {
      'virtual-systems': Array<{ name: string; cpus: number; 'memory-bytes': number }>;
      disks: Array<{ href: string; capacity: number; format: string }>;
      networks: Array<{ name: string }>;
      manifest: { status: string };
    };
    expect(info['virtual-systems']).toEqual([expect.objectContaining({ name: 'vm', cpus: 2, 'memory-bytes': 256 * 2 ** 20 })]);
    expect(info.disks).toEqual([expect.objectContaining({ href: 'vm-disk1.vmdk', capacity: 4 * 1024 * 1024, format: 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized' })]);
    expect(info.networks.map((n) => n.name)).toEqual(['lan']);
    expect(info.manifest.status).toBe('present');
    const h = await vdisk(['ova', 'info', ova]);
    expect(h.stdout).toMatch(/cpus: 2\n\s+memory: 256 MiB/);
  });

  itWith(['qemu-img', 'tar'], 'ova verify: exit 0 when every digest matches, 1 on a mismatch; extract refuses then', async () => {
    const ok = await vdisk(['ova', 'verify', ova]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/OK +SHA256\(vm-disk1\.vmdk\)/);
    const x = join(dir, 'tamper');
    await mkdir(x);
    await runOk('tar', ['xf', ova, '-C', x]);
    const ovf = join(x, 'vm.ovf');
    await writeFile(ovf, (await readFile(ovf, 'utf8')).replace('<Name>vm</Name>', '<Name>vX</Name>'));
    const bad = join(dir, 'tampered.ova');
    await runOk('tar', ['--format=ustar', '-cf', bad, '-C', x, 'vm.ovf', 'vm.mf', 'vm-disk1.vmdk']);
    const r = await vdisk(['ova', 'verify', bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/MISMATCH SHA256\(vm\.ovf\)/);
    const out = join(dir, 'tamper-out');
    const e = await vdisk(['ova', 'extract', bad, out]);
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/manifest check failed \(use --no-verify/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
    const forced = await vdisk(['ova', 'extract', '--no-verify', '-q', bad, out]);
    expect(forced.code, forced.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['vm-disk1.vmdk', 'vm.mf', 'vm.ovf']);
  });

  itWith(['qemu-img'], 'ova extract writes the package; the VMDK passes qemu-img check and holds the source', async () => {
    const out = join(dir, 'x');
    const r = await vdisk(['ova', 'extract', ova, out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['vm.ovf', 'vm.mf', 'vm-disk1.vmdk'].map((n) => join(out, n)));
    expect((await run('qemu-img', ['check', join(out, 'vm-disk1.vmdk')])).code).toBe(0);
    expect(await qemuSame(join(dir, 'a.raw'), 'raw', join(out, 'vm-disk1.vmdk'), 'vmdk')).toBe(true);
  });

  itWith(['tar'], 'vdisk info ARCHIVE:MEMBER reads a disk inside a tar in place', async () => {
    await runOk('tar', ['-cf', join(dir, 'raw.tar'), '-C', dir, 'a.raw']);
    const r = await vdisk(['info', '--output', 'json', `${join(dir, 'raw.tar')}:a.raw`]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ filename: `${join(dir, 'raw.tar')}:a.raw`, format: 'raw', 'virtual-size': 4 * 1024 * 1024 });
  });

  itWithVmdk(['qemu-img'], 'vdisk info vm.ova:vm-disk1.vmdk (vmdk driver)', async () => {
    const r = await vdisk(['info', '--output', 'json', `${ova}:vm-disk1.vmdk`]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'vmdk', 'virtual-size': 4 * 1024 * 1024 });
  });

  itWith(['qemu-img'], 'usage errors name the option', async () => {
    const c = await vdisk(['ova', 'create', join(dir, 'n.ova'), '--name', 'n', '--controller', 'floppy', join(dir, 'a.raw')]);
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(/--controller must be ide, scsi or sata/);
    const v = await vdisk(['ova', 'create', join(dir, 'n.ova'), '--name', 'n', '--ovf-version', '3', join(dir, 'a.raw')]);
    expect(v.stderr).toMatch(/--ovf-version must be 1 or 2/);
    const m = await vdisk(['ova', 'create', join(dir, 'n.ova'), '--name', 'n', '--cpus', 'two', join(dir, 'a.raw')]);
    expect(m.stderr).toMatch(/--cpus must be a whole number/);
    const i = await vdisk(['ova', 'info', join(dir, 'a.raw')]);
    expect(i.code).toBe(1);
    expect(i.stderr).toMatch(/^vdisk: /);
  });

  itWithVmdk(['qemu-img', 'tar', 'sha256sum'], 'ova create: tar order, manifest and VMDKs judged by tar, sha256sum and qemu-img', async () => {
    await makeRawDisk(join(dir, 'b.raw'), 2 * 1024 * 1024, 12);
    const out = join(dir, 'made.ova');
    const r = await vdisk(['ova', 'create', out, '--name', 'made', '--cpus', '2', '--memory', '512', '--network', 'lan', '--controller', 'ide', '--ovf-version', '2', '-p', join(dir, 'a.raw'), join(dir, 'b.raw')]);
    expect(r.code, r.stderr).toBe(0);
    const names = (await runOk('tar', ['tf', out])).trim().split('\n');
    expect(names).toEqual(['made.ovf', 'made.mf', 'made-disk1.vmdk', 'made-disk2.vmdk']);
    const x = join(dir, 'made-x');
    await mkdir(x);
    await runOk('tar', ['xf', out, '-C', x]);
    const sums = (await runOk('sha256sum', ['made.ovf', 'made-disk1.vmdk', 'made-disk2.vmdk'], { cwd: x })).trim().split('\n').map((l) => {
      const [h, n] = l.split(/\s+/);
      return `SHA256(${n})= ${h}`;
    });
    expect((await readFile(join(x, 'made.mf'), 'utf8')).trim().split('\n')).toEqual(sums);
    for (const [i, src] of ['a.raw', 'b.raw'].entries()) {
      const vm = join(x, `made-disk${i + 1}.vmdk`);
      expect((await run('qemu-img', ['check', vm])).code).toBe(0);
      expect(await qemuSame(join(dir, src), 'raw', vm, 'vmdk')).toBe(true);
    }
  });
});
