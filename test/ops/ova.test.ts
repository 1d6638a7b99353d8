import { copyFile, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { isVdiskError } from '../../src/errors.js';
import { openPackage } from '../../src/formats/ovf/package.js';
import { createOva, describePackage, extractPackage, verifyPackage } from '../../src/ops/ova.js';
import { findDriver } from '../../src/formats/registry.js';
import { itWith, qemuSame, run, runOk } from '../helpers/oracle.js';
import { nativeLoads } from '../helpers/native.js';
import { tempDir } from '../helpers/tmp.js';
import { makeRawDisk, nonZeroPages, python, qemuDiskWriter, itWithVmdk } from '../formats/ovf/helpers.js';

const TOOLS = ['qemu-img', 'tar', 'sha256sum', 'sha1sum', 'zip', 'python3'];

async function rejects(p: Promise<unknown>, code: string, text?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeDefined();
  if (!isVdiskError(err)) throw err;
  expect(err.code).toBe(code);
  if (text) expect(err.message).toMatch(text);
}

/** Parse `tar tvf` lines into [name, size]. */
function tarList(out: string): Array<[string, number]> {
  return out
    .trim()
    .split('\n')
    .map((l) => {
      const f = l.trim().split(/\s+/);
      return [f[f.length - 1]!, Number(f[2])];
    });
}

describe('OVA create → tar/manifest/extract, judged by tar, sha256sum and qemu-img', () => {
  let dir: string;
  let ova: string;
  const sizes = [8 * 1024 * 1024, 3 * 1024 * 1024];
  const populated: number[] = [];
  beforeAll(async () => {
    dir = await tempDir('vdisk-ova-');
  });

  itWith(TOOLS, 'tar order is .ovf, .mf, disks in References order; manifest lines equal sha256sum', async () => {
    populated.push(nonZeroPages(await makeRawDisk(join(dir, 'a.raw'), sizes[0]!, 1)));
    populated.push(nonZeroPages(await makeRawDisk(join(dir, 'b.raw'), sizes[1]!, 7)));
    ova = join(dir, 'app.ova');
    const phases = new Set<string>();
    const res = await createOva(ova, [join(dir, 'a.raw'), join(dir, 'b.raw')], {
      name: 'app',
      cpus: 2,
      memoryMiB: 512,
      networks: ['lan', 'wan'],
      diskWriter: qemuDiskWriter,
      onProgress: (_d, _t, phase) => phases.add(phase.split(' ')[0]!),
    });
    expect([...phases].sort()).toEqual(['converting', 'hashing', 'writing']);
    const listed = tarList(await runOk('tar', ['tvf', ova]));
    expect(listed.map(([n]) => n)).toEqual(['app.ovf', 'app.mf', 'app-disk1.vmdk', 'app-disk2.vmdk']);
    expect(listed).toEqual(res.members.map((m) => [m.name, m.size]));
    const x = join(dir, 'tarx');
    await mkdir(x);
    await runOk('tar', ['xf', ova, '-C', x]);
    const sums = await runOk('sha256sum', ['app.ovf', 'app-disk1.vmdk', 'app-disk2.vmdk'], { cwd: x });
    const expected = sums
      .trim()
      .split('\n')
      .map((l) => {
        const [h, n] = l.split(/\s+/);
        return `SHA256(${n})= ${h}`;
      });
    expect((await readFile(join(x, 'app.mf'), 'utf8')).trim().split('\n')).toEqual(expected);
    // the disks tar holds are streamOptimized VMDKs qemu-img accepts and that hold the source data
    for (const [i, n] of ['app-disk1.vmdk', 'app-disk2.vmdk'].entries()) {
      const info = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', join(x, n)])) as { format: string; 'virtual-size': number; 'format-specific': { data: { 'create-type': string } } };
      expect(info.format).toBe('vmdk');
      expect(info['format-specific'].data['create-type']).toBe('streamOptimized');
      expect(info['virtual-size']).toBe(sizes[i]);
      expect(await qemuSame(join(dir, i === 0 ? 'a.raw' : 'b.raw'), 'raw', join(x, n), 'vmdk')).toBe(true);
    }
  });

  itWith(TOOLS, 'ova info reports what the descriptor says, and sizes match the tar entries', async () => {
    const pkg = await openPackage(ova);
    try {
      const info = describePackage(pkg);
      expect(info.container).toBe('tar');
      expect(info['virtual-systems']).toEqual([{ id: 'app', name: 'app', cpus: 2, 'memory-bytes': 512 * 2 ** 20, 'os-id': 1 }]);
      expect(info.networks.map((n) => n.name)).toEqual(['lan', 'wan']);
      expect(info.disks.map((d) => [d.href, d.capacity, d['stream-optimized']])).toEqual([
        ['app-disk1.vmdk', sizes[0], true],
        ['app-disk2.vmdk', sizes[1], true],
      ]);
      const tarSizes = new Map(tarList(await runOk('tar', ['tvf', ova])));
      for (const d of info.disks) expect(d['file-size']).toBe(tarSizes.get(d.href!));
      // populatedSize counts the source's data: what qemu-img map calls data when
      // holes come from lseek (written zeros are allocated, so data), the non-zero
      // 4 KiB pages when the reading scan finds them.
      const qemuData = async (f: string): Promise<number> =>
        (JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'raw', join(dir, f)])) as Array<{ length: number; data: boolean }>).filter((e) => e.data).reduce((n, e) => n + e.length, 0);
      expect(info.disks.map((d) => d['populated-size'])).toEqual(nativeLoads ? [await qemuData('a.raw'), await qemuData('b.raw')] : populated);
      expect(info.manifest).toMatchObject({ status: 'present', algorithms: ['SHA256'], entries: 3, unlisted: [] });
      const v = await verifyPackage(pkg);
      expect(v.ok).toBe(true);
      expect(v.lines.map((l) => l.status)).toEqual(['ok', 'ok', 'ok']);
    } finally {
      await pkg.close();
    }
  });

  itWith(TOOLS, 'extract writes the package files, byte-identical to tar xf; VMDKs pass qemu-img check and compare', async () => {
    const out = join(dir, 'extracted');
    const files = await extractPackage(ova, out);
    expect(files.map((f) => f.slice(out.length + 1))).toEqual(['app.ovf', 'app.mf', 'app-disk1.vmdk', 'app-disk2.vmdk']);
    for (const f of ['app.ovf', 'app.mf', 'app-disk1.vmdk', 'app-disk2.vmdk']) {
      expect((await readFile(join(out, f))).equals(await readFile(join(dir, 'tarx', f)))).toBe(true);
    }
    for (const [i, n] of ['app-disk1.vmdk', 'app-disk2.vmdk'].entries()) {
      const check = await run('qemu-img', ['check', join(out, n)]);
      expect(check.code, check.stdout + check.stderr).toBe(0);
      expect(await qemuSame(join(dir, i === 0 ? 'a.raw' : 'b.raw'), 'raw', join(out, n), 'vmdk')).toBe(true);
    }
    // extracting again refuses to overwrite, and writes nothing new
    await rejects(extractPackage(ova, out), 'E_EXISTS');
  });

  itWith(TOOLS, '--sha1 manifest matches sha1sum; OVF 2.0 uses the envelope/2 namespace', async () => {
    const ova1 = join(dir, 'sha1.ova');
    await createOva(ova1, [join(dir, 'b.raw')], { name: 'old', algorithm: 'SHA1', ovfVersion: '2.0', controller: 'ide', diskWriter: qemuDiskWriter });
    const x = join(dir, 'sha1x');
    await mkdir(x);
    await runOk('tar', ['xf', ova1, '-C', x]);
    const sums = (await runOk('sha1sum', ['old.ovf', 'old-disk1.vmdk'], { cwd: x })).trim().split('\n').map((l) => {
      const [h, n] = l.split(/\s+/);
      return `SHA1(${n})= ${h}`;
    });
    expect((await readFile(join(x, 'old.mf'), 'utf8')).trim().split('\n')).toEqual(sums);
    expect(await readFile(join(x, 'old.ovf'), 'utf8')).toContain('xmlns="http://schemas.dmtf.org/ovf/envelope/2"');
    const pkg = await openPackage(ova1);
    try {
      expect(pkg.envelope.version).toBe('2.0');
      expect((await verifyPackage(pkg)).ok).toBe(true);
    } finally {
      await pkg.close();
    }
  });

  itWith(TOOLS, 'zip packages: an .ovf with its disks (stored and deflated) and an .ova inside a zip', async () => {
    const x = join(dir, 'tarx');
    for (const level of ['-0', '-9']) {
      const z = join(dir, `ovf${level}.zip`);
      await runOk('zip', ['-q', level, z, 'app.ovf', 'app.mf', 'app-disk1.vmdk', 'app-disk2.vmdk'], { cwd: x });
      const pkg = await openPackage(z);
      try {
        expect(pkg.archive.kind).toBe('zip');
        expect(describePackage(pkg).disks.map((d) => d.href)).toEqual(['app-disk1.vmdk', 'app-disk2.vmdk']);
        expect((await verifyPackage(pkg)).ok).toBe(true);
      } finally {
        await pkg.close();
      }
      const out = join(dir, `zipx${level}`);
      await extractPackage(z, out);
      expect(await qemuSame(join(dir, 'a.raw'), 'raw', join(out, 'app-disk1.vmdk'), 'vmdk')).toBe(true);
    }
    const zo = join(dir, 'ova-in.zip');
    await runOk('zip', ['-q', '-0', '-j', zo, ova]);
    const pkg = await openPackage(zo);
    try {
      expect(pkg.archive.name).toBe(`${zo}:app.ova`);
      expect((await verifyPackage(pkg)).ok).toBe(true);
    } finally {
      await pkg.close();
    }
  });

  itWith(TOOLS, 'a plain .ovf next to its files', async () => {
    const pkg = await openPackage(join(dir, 'tarx', 'app.ovf'));
    try {
      expect(pkg.archive.kind).toBe('folder');
      expect((await verifyPackage(pkg)).ok).toBe(true);
    } finally {
      await pkg.close();
    }
  });

  itWith(TOOLS, 'a plain .ovf whose hrefs lead into a subfolder; a symlink out of the folder is not a member', async () => {
    const d = join(dir, 'sub-ovf');
    await mkdir(join(d, 'disks'), { recursive: true });
    const x = join(dir, 'tarx');
    const ovf = (await readFile(join(x, 'app.ovf'), 'utf8')).replace(/ovf:href="app-/g, 'ovf:href="disks/app-');
    await writeFile(join(d, 'app.ovf'), ovf);
    for (const f of ['app-disk1.vmdk', 'app-disk2.vmdk']) await copyFile(join(x, f), join(d, 'disks', f));
    const pkg = await openPackage(join(d, 'app.ovf'));
    try {
      expect(describePackage(pkg).disks.map((k) => k.href)).toEqual(['disks/app-disk1.vmdk', 'disks/app-disk2.vmdk']);
    } finally {
      await pkg.close();
    }
    const out = join(dir, 'sub-ovf-out');
    await extractPackage(join(d, 'app.ovf'), out, { noVerify: true });
    expect(await qemuSame(join(dir, 'a.raw'), 'raw', join(out, 'disks', 'app-disk1.vmdk'), 'vmdk')).toBe(true);
    await rm(join(d, 'disks', 'app-disk2.vmdk'));
    await symlink(join(x, 'app-disk2.vmdk'), join(d, 'disks', 'app-disk2.vmdk'));
    await rejects(openPackage(join(d, 'app.ovf')), 'E_CORRUPT', /disks\/app-disk2\.vmdk" is not in the package/);
  });

  itWith(TOOLS, 'a manifest mismatch refuses extract (nothing written) unless noVerify', async () => {
    const x = join(dir, 'bad');
    await mkdir(x);
    await runOk('tar', ['xf', ova, '-C', x]);
    const disk = join(x, 'app-disk2.vmdk');
    const b = await readFile(disk);
    b[b.length - 600] ^= 0xff; // one flipped bit inside the disk
    await writeFile(disk, b);
    const bad = join(dir, 'bad.ova');
    await runOk('tar', ['--format=ustar', '-cf', bad, '-C', x, 'app.ovf', 'app.mf', 'app-disk1.vmdk', 'app-disk2.vmdk']);
    const pkg = await openPackage(bad);
    try {
      const v = await verifyPackage(pkg);
      expect(v.ok).toBe(false);
      expect(v.lines.map((l) => l.status)).toEqual(['ok', 'ok', 'mismatch']);
    } finally {
      await pkg.close();
    }
    const out = join(dir, 'bad-out');
    await rejects(extractPackage(bad, out), 'E_CORRUPT', /app-disk2\.vmdk.*--no-verify|--no-verify.*app-disk2\.vmdk/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
    const files = await extractPackage(bad, out, { noVerify: true });
    expect(files).toHaveLength(4);
  });

  itWith(TOOLS, 'a File size that disagrees with the tar entry, an href outside the package or missing', async () => {
    const x = join(dir, 'tarx');
    const ovf = await readFile(join(x, 'app.ovf'), 'utf8');
    const cases: Array<[string, string, string, RegExp]> = [
      ['size', ovf.replace(/(ovf:href="app-disk1.vmdk" ovf:id="file1" ovf:size=")(\d+)"/, (_m, a: string, n: string) => `${a}${Number(n) + 512}"`), 'E_CORRUPT', /ovf:size .* disagrees/],
      ['outside', ovf.replace('ovf:href="app-disk1.vmdk"', 'ovf:href="../app-disk1.vmdk"'), 'E_PATH', /\.\./],
      ['absolute', ovf.replace('ovf:href="app-disk1.vmdk"', 'ovf:href="/etc/passwd"'), 'E_PATH', /absolute/],
      ['url', ovf.replace('ovf:href="app-disk1.vmdk"', 'ovf:href="http://example.com/d.vmdk"'), 'E_UNSUPPORTED', /URL/],
      ['missing', ovf.replace('ovf:href="app-disk1.vmdk"', 'ovf:href="nothere.vmdk"'), 'E_CORRUPT', /not in the package/],
    ];
    for (const [name, text, code, re] of cases) {
      const d = join(dir, `href-${name}`);
      await mkdir(d);
      await writeFile(join(d, 'app.ovf'), text);
      for (const f of ['app-disk1.vmdk', 'app-disk2.vmdk']) await copyFile(join(x, f), join(d, f));
      const t = join(dir, `href-${name}.ova`);
      await runOk('tar', ['--format=ustar', '-cf', t, '-C', d, 'app.ovf', 'app-disk1.vmdk', 'app-disk2.vmdk']);
      await rejects(openPackage(t), code, re);
      await rejects(extractPackage(t, join(d, 'out')), code, re);
      expect(await readdir(join(d, 'out')).catch(() => [])).toEqual([]);
    }
  });

  itWith(TOOLS, 'hostile tars (.., absolute, symlink, hardlink) are refused and extract writes nothing anywhere', async () => {
    const x = join(dir, 'tarx');
    const script = `
import sys, tarfile, io
out, kind, ovf = sys.argv[1], sys.argv[2], sys.argv[3]
with tarfile.open(out, 'w', format=tarfile.USTAR_FORMAT) as t:
    t.add(ovf, arcname='app.ovf')
    ti = tarfile.TarInfo({'dotdot': '../evil.vmdk', 'abs': '/tmp/evil.vmdk', 'sym': 'app-disk1.vmdk', 'hard': 'app-disk1.vmdk'}[kind])
    if kind == 'sym':
        ti.type = tarfile.SYMTYPE; ti.linkname = '/etc/passwd'
        t.addfile(ti)
    elif kind == 'hard':
        ti.type = tarfile.LNKTYPE; ti.linkname = 'app.ovf'
        t.addfile(ti)
    else:
        data = b'x' * 1024
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
`;
    for (const [kind, re] of [
      ['dotdot', /"\.\.\/evil\.vmdk".*\.\./],
      ['abs', /absolute/],
      ['sym', /symbolic link/],
      ['hard', /hard link/],
    ] as const) {
      const t = join(dir, `hostile-${kind}.ova`);
      python(script, [t, kind, join(x, 'app.ovf')]);
      await rejects(openPackage(t), 'E_PATH', re);
      const out = join(dir, `hostile-${kind}-out`);
      await rejects(extractPackage(t, out), 'E_PATH');
      expect(await readdir(out).catch(() => [])).toEqual([]);
    }
    expect(await readdir(dir)).not.toContain('evil.vmdk');
  });

  itWith(TOOLS, 'a zip bomb inside a zip package is refused and extract leaves DIR empty', async () => {
    const ovf = (await readFile(join(dir, 'tarx', 'app.ovf'), 'utf8'))
      .replace(/ovf:href="app-disk1.vmdk" ovf:id="file1" ovf:size="\d+"/, 'ovf:href="bomb.vmdk" ovf:id="file1"')
      .replace(/<File ovf:href="app-disk2.vmdk"[^>]*>/, '')
      .replace(/<Disk [^>]*vmdisk2[^>]*>/, '');
    const z = join(dir, 'bomb.zip');
    python(
      `import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('app.ovf', sys.argv[2])
    with z.open('bomb.vmdk', 'w') as f:
        for i in range(64): f.write(bytes(1 << 20))
`,
      [z, ovf],
    );
    const out = join(dir, 'bomb-out');
    await rejects(extractPackage(z, out), 'E_UNSUPPORTED', /bomb\.vmdk: compression ratio \d+:1 is over the limit/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
    await rejects(extractPackage(z, out, { zipLimits: { maxRatio: 1e6, maxEntryBytes: 1024 * 1024 } }), 'E_UNSUPPORTED', /uncompressed size 67108864 is over the limit/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });

  itWith(TOOLS, 'extract -O converts disks read in place from the tar (a package of raw disks, no manifest)', async () => {
    const d = join(dir, 'rawpkg');
    await mkdir(d);
    await copyFile(join(dir, 'a.raw'), join(d, 'a.raw'));
    await copyFile(join(dir, 'b.raw'), join(d, 'b.raw'));
    const ovf = (await readFile(join(dir, 'tarx', 'app.ovf'), 'utf8'))
      .replace(/ovf:href="app-disk1.vmdk" ovf:id="file1" ovf:size="\d+"/, `ovf:href="a.raw" ovf:id="file1" ovf:size="${sizes[0]}"`)
      .replace(/ovf:href="app-disk2.vmdk" ovf:id="file2" ovf:size="\d+"/, `ovf:href="b.raw" ovf:id="file2" ovf:size="${sizes[1]}"`);
    await writeFile(join(d, 'raw.ovf'), ovf);
    const t = join(dir, 'raw.ova');
    await runOk('tar', ['-cf', t, '-C', d, 'raw.ovf', 'a.raw', 'b.raw']);
    const formats = ['raw', 'vhd', 'vdi', 'vmdk'].filter((f) => {
      try {
        findDriver(f);
        return true;
      } catch {
        return false;
      }
    });
    for (const fmt of formats) {
      const out = join(dir, `rawconv-${fmt}`);
      const files = await extractPackage(t, out, { format: fmt });
      expect(files.map((f) => f.slice(out.length + 1))).toEqual([`a.${fmt}`, `b.${fmt}`]);
      const qfmt = fmt === 'vhd' ? 'vpc' : fmt;
      expect(await qemuSame(join(dir, 'a.raw'), 'raw', files[0]!, qfmt)).toBe(true);
      expect(await qemuSame(join(dir, 'b.raw'), 'raw', files[1]!, qfmt)).toBe(true);
    }
    await rejects(extractPackage(t, join(dir, 'rawconv-bad'), { format: 'qcow9' }), 'E_USAGE', /unknown format/);
  });

  itWithVmdk(TOOLS, 'extract -O converts every disk (needs the vmdk driver to read and the target driver to write)', async () => {
    const formats = ['vhd', 'vdi', 'vmdk'].filter((f) => {
      try {
        findDriver(f);
        return true;
      } catch {
        return false;
      }
    });
    for (const fmt of formats) {
      const out = join(dir, `conv-${fmt}`);
      const files = await extractPackage(ova, out, { format: fmt });
      expect(files.map((f) => f.slice(out.length + 1))).toEqual([`app-disk1.${fmt}`, `app-disk2.${fmt}`]);
      const qfmt = fmt === 'vhd' ? 'vpc' : fmt;
      expect(await qemuSame(join(dir, 'a.raw'), 'raw', files[0]!, qfmt)).toBe(true);
      expect(await qemuSame(join(dir, 'b.raw'), 'raw', files[1]!, qfmt)).toBe(true);
    }
    // raw is always registered: the round trip back to raw
    const out = join(dir, 'conv-raw');
    const files = await extractPackage(ova, out, { format: 'raw' });
    expect(await qemuSame(join(dir, 'a.raw'), 'raw', files[0]!, 'raw')).toBe(true);
  });
});
