import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { vdisk } from '../helpers/cli.js';
import { itWith, qemuInfo } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

describe('vdisk CLI (foundation)', () => {
  it('prints the package version', async () => {
    const r = await vdisk(['--version'], dir);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('loads one command module per run, yet help lists them all and every spelling reaches its command', async () => {
    const help = await vdisk(['--help'], dir);
    expect(help.code).toBe(0);
    for (const c of ['info', 'create', 'convert', 'map', 'compare', 'check', 'resize', 'compact', 'commit', 'rebase', 'ova', 'boot']) {
      expect(help.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    }
    const viaHelp = await vdisk(['help', 'convert'], dir);
    expect(viaHelp.stdout).toContain('Usage: vdisk convert');
    const debug = await vdisk(['--debug', 'resize', '--help'], dir);
    expect(debug.stdout).toContain('--progress');
    const unknown = await vdisk(['nosuch'], dir);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain("unknown command 'nosuch'");
  });

  itWith(['qemu-img'], 'create makes an image qemu-img sees at the size asked, and info prints qemu field names', async () => {
    const r = await vdisk(['create', '-f', 'raw', 'disk.img', '10M'], dir);
    expect(r.code).toBe(0);
    expect((await qemuInfo(join(dir, 'disk.img'), 'raw'))['virtual-size']).toBe(10 * 1024 * 1024);
    const j = await vdisk(['info', '--output', 'json', 'disk.img'], dir);
    expect(j.code).toBe(0);
    const info = JSON.parse(j.stdout) as Record<string, unknown>;
    expect(info).toMatchObject({ filename: 'disk.img', format: 'raw', 'virtual-size': 10485760, 'dirty-flag': false });
    const h = await vdisk(['info', 'disk.img'], dir);
    expect(h.stdout).toContain('virtual size: 10 MiB (10485760 bytes)');
  });

  it('accepts every size spelling the issue names', async () => {
    for (const [size, bytes] of [['512', 512], ['64K', 65536], ['10M', 10485760], ['2G', 2 ** 31], ['1T', 2 ** 40]] as const) {
      const name = `size-${size}.img`;
      const r = await vdisk(['create', '-f', 'raw', name, size], dir);
      expect(r.code, r.stderr).toBe(0);
      expect((await stat(join(dir, name))).size).toBe(bytes);
    }
  });

  it('never overwrites without --force', async () => {
    await writeFile(join(dir, 'keep.img'), 'precious');
    const r = await vdisk(['create', '-f', 'raw', 'keep.img', '1M'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^vdisk: keep\.img: already exists/);
    expect((await stat(join(dir, 'keep.img'))).size).toBe(8);
    const f = await vdisk(['create', '-f', 'raw', '--force', 'keep.img', '1M'], dir);
    expect(f.code).toBe(0);
    expect((await stat(join(dir, 'keep.img'))).size).toBe(1048576);
  });

  describe('bad input: clear error, exit 1, nothing created or changed', () => {
    let bad: string;
    beforeAll(async () => {
      bad = join(dir, 'bad');
      await mkdir(bad);
      await writeFile(join(bad, 'empty.img'), '');
    });

    it.each([
      [['info', 'missing.img'], /missing\.img: no such file/],
      [['info', '.'], /is a folder/],
      [['info', 'empty.img'], /empty file/],
      [['create', '-f', 'raw', 'x.img', '12Q'], /invalid size "12Q"/],
      [['create', '-f', 'floppy', 'x.img', '1M'], /unknown format "floppy" \(known: .*raw/],
      [['create', '-f', 'raw', '-o', 'colour=blue', 'x.img', '1M'], /no option "colour"/],
      [['create', '-f', 'raw', 'x.img', '1000'], /not a multiple of 512/],
      [['info', '--output', 'xml', 'empty.img'], /--output must be one of human, json/],
      [['frobnicate'], /unknown command/],
    ])('%j', async (args, message) => {
      const before = await readdir(bad);
      const r = await vdisk(args, bad);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^vdisk: /);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(await readdir(bad)).toEqual(before);
    });

    it('shows the stack trace only with --debug', async () => {
      const r = await vdisk(['--debug', 'info', 'missing.img'], bad);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/\n\s+at /);
    });
  });
});
