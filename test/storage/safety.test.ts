// Filesystem-level safety (issue 22): references inside an image are confined by
// their real path, a write lock belongs to the file (not its name), and a killed
// convert leaves nothing the next run does not clear.
import { spawn, spawnSync } from 'node:child_process';
import { chmod, link, mkdir, readFile, readdir, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { create } from '../../src/ops/create.js';
import { check } from '../../src/ops/check.js';
import { open } from '../../src/formats/registry.js';
import { FileStorage } from '../../src/storage/file.js';
import { lockPathFor } from '../../src/storage/lock.js';
import { vdisk } from '../helpers/cli.js';
import { patternBytes, tempDir, VDISK_BIN } from '../helpers/tmp.js';

let root: string;
beforeAll(async () => {
  root = await tempDir('vdisk-safety-');
});

/** A pid that is certainly not running: a child that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

/** A monolithicFlat VMDK descriptor of 1 MiB whose one extent is `extent`. */
function flatDescriptor(extent: string): string {
  return [
    '# Disk DescriptorFile',
    'version=1',
    'CID=fffffffe',
    'parentCID=ffffffff',
    'createType="monolithicFlat"',
    '',
    `RW 2048 FLAT "${extent}" 0`,
    '',
    'ddb.adapterType = "ide"',
    '',
  ].join('\n');
}

/** A folder `case` under root with d.vmdk whose extent is `extent`, and a secret file outside it. */
async function layout(name: string, extent: string): Promise<{ dir: string; outside: string; secret: Buffer }> {
  const base = join(root, name);
  const dir = join(base, 'images');
  const outside = join(base, 'outside');
  await mkdir(dir, { recursive: true });
  await mkdir(outside, { recursive: true });
  const secret = patternBytes(1024 * 1024, 22);
  await writeFile(join(outside, 'secret.bin'), secret);
  await writeFile(join(dir, 'd.vmdk'), flatDescriptor(extent));
  return { dir, outside, secret };
}

describe('references are confined by their real path', () => {
  it('a FLAT extent that is a symlink out of the folder is refused for reading and for writing', async () => {
    const { dir, outside, secret } = await layout('flat-link', 'link.bin');
    await symlink(join(outside, 'secret.bin'), join(dir, 'link.bin'));
    await expect(open(join(dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH' });
    await expect(open(join(dir, 'd.vmdk'))).rejects.toMatchObject({ code: 'E_PATH' });
    const r = await vdisk(['convert', '-O', 'raw', 'd.vmdk', 'out.raw'], dir);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/leads outside .* \(through a symbolic link/);
    expect((await readdir(dir)).sort()).toEqual(['d.vmdk', 'link.bin']);
    expect((await readFile(join(outside, 'secret.bin'))).equals(secret)).toBe(true);
  });

  it('the same link is followed when its folder is allowed, and a link inside the folder is fine', async () => {
    const { dir, outside, secret } = await layout('flat-allowed', 'link.bin');
    await symlink(join(outside, 'secret.bin'), join(dir, 'link.bin'));
    const img = await open(join(dir, 'd.vmdk'), { readOnly: true, allowPaths: [outside] });
    const b = Buffer.alloc(4096);
    await img.read(b, 0);
    expect(b.equals(secret.subarray(0, 4096))).toBe(true);
    await img.close();

    const inside = await layout('flat-inside', 'link.bin');
    await writeFile(join(inside.dir, 'real.bin'), inside.secret);
    await symlink('real.bin', join(inside.dir, 'link.bin'));
    const w = await open(join(inside.dir, 'd.vmdk'));
    await w.write(Buffer.alloc(512, 0xaa), 0);
    await w.close();
    expect((await readFile(join(inside.dir, 'real.bin')))[0]).toBe(0xaa);
  });

  it('an absolute extent path follows the one confinement rule: refused outside the folder, read once --allow-path names its folder', async () => {
    const { dir, outside, secret } = await layout('abs-extent', 'placeholder');
    await writeFile(join(dir, 'd.vmdk'), flatDescriptor(join(outside, 'secret.bin')));
    await expect(open(join(dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH', message: expect.stringMatching(/extent file ".*secret\.bin" leads outside/) });
    const img = await open(join(dir, 'd.vmdk'), { readOnly: true, allowPaths: [outside] });
    const b = Buffer.alloc(4096);
    await img.read(b, 0);
    expect(b.equals(secret.subarray(0, 4096))).toBe(true);
    await img.close();
    const r = await vdisk(['info', '--allow-path', outside, 'd.vmdk'], dir);
    expect(r.code, r.stderr).toBe(0);
  });

  it('a symlinked folder in the middle of the extent path is refused', async () => {
    const { dir, outside } = await layout('mid-folder', 'sub/secret.bin');
    await symlink(outside, join(dir, 'sub'));
    await expect(open(join(dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH', message: expect.stringMatching(/symbolic link/) });
    const r = await vdisk(['info', 'd.vmdk'], dir);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/leads outside .* \(through a symbolic link/);
  });

  it('a link swapped in after the check is caught at open (O_NOFOLLOW and the descriptor recheck)', async () => {
    const { dir, outside, secret } = await layout('swap', 'x.bin');
    const target = join(dir, 'x.bin');
    await writeFile(target, Buffer.alloc(4096));
    let calls = 0;
    const confineThenSwap = (real: string): void => {
      calls += 1;
      if (calls === 1) {
        // The check passed for a plain file; now an attacker puts a link in its place.
        spawnSync('ln', ['-sf', join(outside, 'secret.bin'), target]);
      }
      if (!real.startsWith(dir)) throw Object.assign(new Error('outside'), { code: 'E_PATH' });
    };
    await expect(FileStorage.open(target, { confine: confineThenSwap })).rejects.toMatchObject({ code: 'E_PATH', message: expect.stringMatching(/became a symbolic link/) });
    await expect(FileStorage.open(target, { readOnly: true, confine: confineThenSwap })).rejects.toMatchObject({ code: 'E_PATH' });
    expect((await readFile(join(outside, 'secret.bin'))).equals(secret)).toBe(true);
  });

  it('a symlink loop is E_PATH, a dangling link E_NOENT, a FIFO extent E_USAGE without hanging', async () => {
    const loop = await layout('loop', 'loop.bin');
    await symlink('loop.bin', join(loop.dir, 'loop.bin'));
    await expect(open(join(loop.dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_PATH', message: expect.stringMatching(/loop/) });

    const dangling = await layout('dangling', 'gone.bin');
    await symlink('nowhere.bin', join(dangling.dir, 'gone.bin'));
    await expect(open(join(dangling.dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_NOENT' });

    const fifo = await layout('fifo', 'pipe.bin');
    expect(spawnSync('mkfifo', [join(fifo.dir, 'pipe.bin')]).status).toBe(0);
    await expect(open(join(fifo.dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(open(join(fifo.dir, 'd.vmdk'))).rejects.toMatchObject({ code: 'E_USAGE' });
  });

  it('a VHD and a VDI parent reached through a link out of the folder are refused; --allow-path follows it', async () => {
    for (const format of ['vhd', 'vdi']) {
      const base = join(root, `parent-${format}`);
      const dir = join(base, 'images');
      const outside = join(base, 'outside');
      await mkdir(dir, { recursive: true });
      await mkdir(outside, { recursive: true });
      const parentPath = join(dir, `p.${format}`);
      const p = await create(parentPath, { format, size: '4M' });
      await p.write(patternBytes(65536, 3), 0);
      await p.close();
      const c = await create(join(dir, `c.${format}`), { format, backing: parentPath });
      await c.close();
      // Move the parent out and leave a link in its place.
      await writeFile(join(outside, `p.${format}`), await readFile(parentPath));
      await unlink(parentPath);
      await symlink(join(outside, `p.${format}`), parentPath);
      // A VHD names its parent (E_PATH); a VDI's parent is found by uuid among its
      // siblings, and a sibling that leads out is not looked into (E_CHAIN naming it).
      const refusal = format === 'vhd' ? { code: 'E_PATH' } : { code: 'E_CHAIN', message: expect.stringContaining(`symbolic link): p.${format}`) };
      await expect(open(join(dir, `c.${format}`), { readOnly: true })).rejects.toMatchObject(refusal);
      await expect(open(join(dir, `c.${format}`))).rejects.toMatchObject(refusal);
      const r = await vdisk(['info', '--backing-chain', `c.${format}`], dir);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/lead(s)? outside .*symbolic link/);
      const ok = await vdisk(['convert', '-O', 'raw', '--allow-path', outside, `c.${format}`, 'out.raw'], dir);
      expect(ok.stderr).toBe('');
      expect(ok.code).toBe(0);
      expect((await readFile(join(dir, 'out.raw'))).subarray(0, 65536).equals(patternBytes(65536, 3))).toBe(true);
    }
  });
});

describe('a write lock belongs to the file, not its name', () => {
  it('a symlink and a hard link to an image open for writing are refused; readers are not', async () => {
    const dir = join(root, 'lock-identity');
    await mkdir(dir);
    const a = join(dir, 'a.vhd');
    await (await create(a, { format: 'vhd', size: '8M' })).close();
    await symlink('a.vhd', join(dir, 'b.vhd'));
    await link(a, join(dir, 'h.vhd'));
    const writer = await open(a);
    try {
      await expect(open(join(dir, 'b.vhd'))).rejects.toMatchObject({ code: 'E_LOCKED' });
      await expect(open(join(dir, 'h.vhd'))).rejects.toMatchObject({ code: 'E_LOCKED' });
      const r = await vdisk(['resize', 'b.vhd', '16M'], dir);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/open for writing by process \d+/);
      const reader = await open(join(dir, 'b.vhd'), { readOnly: true });
      await reader.close();
    } finally {
      await writer.close();
    }
    // Once the writer is gone, each name opens for writing again (one at a time).
    for (const n of ['a.vhd', 'b.vhd', 'h.vhd']) await (await open(join(dir, n))).close();
  });

  it('a lock file that is a symlink is refused and what it points at is left alone', async () => {
    const dir = join(root, 'lock-symlink');
    await mkdir(dir);
    const a = join(dir, 'a.raw');
    await writeFile(a, Buffer.alloc(65536));
    const victim = join(dir, 'victim.txt');
    await writeFile(victim, 'keep me\n');
    await symlink(victim, lockPathFor(a));
    await expect(open(a)).rejects.toMatchObject({ code: 'E_LOCKED' });
    expect(await readFile(victim, 'utf8')).toBe('keep me\n');
  });
});

describe('a lock owned by someone else, and device nodes', () => {
  /** Open `path` for writing with the built library in a child running as user nobody (65534); what it said. */
  function openAsNobody(path: string): string {
    const lib = new URL('../../dist/index.js', import.meta.url).pathname;
    const code = `import(${JSON.stringify(lib)}).then((m) => m.open(${JSON.stringify(path)})).then((i) => i.close()).then(() => console.log('opened'), (e) => console.log(e.code + ' ' + e.message))`;
    const r = spawnSync(process.execPath, ['-e', code], { uid: 65534, gid: 65534, encoding: 'utf8' });
    return r.stdout.trim() || r.stderr;
  }

  it.skipIf(process.getuid?.() !== 0)('a lock file owned by another user is refused, even when its pid is gone (run as nobody)', async () => {
    const dir = join(root, 'lock-owner');
    await mkdir(dir, { mode: 0o777 });
    await chmod(root, 0o755);
    await chmod(dir, 0o777);
    const a = join(dir, 'a.raw');
    await writeFile(a, Buffer.alloc(65536), { mode: 0o666 });
    await chmod(a, 0o666);
    // root's lock, left by a process that is gone: nobody may not take it over.
    await writeFile(lockPathFor(a), `${deadPid()}\n0:0\n`);
    expect(openAsNobody(a)).toMatch(/^E_LOCKED .*belongs to user 0/);
    expect(await readFile(lockPathFor(a), 'utf8')).toMatch(/^\d+\n/);
    await unlink(lockPathFor(a));
    expect(openAsNobody(a)).toBe('opened');
  });

  it.skipIf(process.getuid?.() !== 0)('a folder where the lock cannot be made: a clear error and nothing changed (run as nobody)', async () => {
    const dir = join(root, 'lock-noperm');
    await mkdir(dir);
    await chmod(root, 0o755);
    await chmod(dir, 0o755);
    const a = join(dir, 'a.raw');
    await writeFile(a, patternBytes(65536, 4));
    await chmod(a, 0o666);
    expect(openAsNobody(a)).toMatch(/^E_\w+ .*cannot create the lock file .*a\.raw\.lock/);
    expect(await readdir(dir)).toEqual(['a.raw']);
    expect((await readFile(a)).equals(patternBytes(65536, 4))).toBe(true);
  });

  it.skipIf(process.getuid?.() !== 0)('an extent that is a character device node is refused without being read', async () => {
    const { dir } = await layout('devnode', 'dev.bin');
    // mknod needs root; /dev/zero's numbers (1, 5) would read as an endless disk of zeros.
    expect(spawnSync('mknod', [join(dir, 'dev.bin'), 'c', '1', '5']).status).toBe(0);
    await expect(open(join(dir, 'd.vmdk'), { readOnly: true })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringMatching(/not a regular file/) });
  });
});

describe('a killed process leaves nothing that matters', () => {
  it('the next convert and `vdisk check` remove dead leftovers, say so, and keep live ones', async () => {
    const dir = join(root, 'leftovers');
    await mkdir(dir);
    await writeFile(join(dir, 'src.raw'), patternBytes(1024 * 1024, 5));
    const dead = deadPid();
    const deadBuild = join(dir, `.out.vhd.vdisk-convert-${dead}-abcd`);
    const liveBuild = join(dir, `.out.vhd.vdisk-convert-${process.pid}-beef`);
    await mkdir(deadBuild);
    await writeFile(join(deadBuild, 'out.vhd'), Buffer.alloc(4096, 1));
    await mkdir(liveBuild);
    await writeFile(join(dir, 'out.vhd.lock'), `${dead}\n0:0\n`);
    const r = await vdisk(['convert', '-O', 'vhd', 'src.raw', 'out.vhd'], dir);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`removed ${deadBuild}`);
    expect(r.stderr).toContain(`process ${dead}`);
    expect(r.stderr).toMatch(/out\.vhd\.lock/);
    const names = await readdir(dir);
    expect(names).not.toContain(`.out.vhd.vdisk-convert-${dead}-abcd`);
    expect(names).toContain(`.out.vhd.vdisk-convert-${process.pid}-beef`);
    expect(names).not.toContain('out.vhd.lock');

    // check finds the same kind of leftovers next to the image it checks.
    await mkdir(deadBuild);
    await writeFile(join(dir, 'out.vhd.lock'), `${dead}\n0:0\n`);
    const report = await check(join(dir, 'out.vhd'));
    expect(report['removed-leftovers']).toEqual(expect.arrayContaining([expect.objectContaining({ path: deadBuild, pid: dead })]));
    expect(await readdir(dir)).not.toContain('out.vhd.lock');
    const human = await vdisk(['check', 'out.vhd'], dir);
    expect(human.code).toBe(0);
    await rm(liveBuild, { recursive: true });
  });

  it('kill -9 during a convert, then the same convert again: no half image, no leftovers, a good result', async () => {
    const dir = join(root, 'kill');
    await mkdir(dir);
    // Big enough that the convert is still copying when it is killed.
    const size = 256 * 1024 * 1024;
    const chunk = patternBytes(1024 * 1024, 9);
    const parts: Buffer[] = [];
    for (let i = 0; i < size / chunk.length; i++) parts.push(i % 3 === 0 ? Buffer.alloc(chunk.length) : chunk);
    await writeFile(join(dir, 'src.raw'), Buffer.concat(parts));
    const child = spawn(process.execPath, [VDISK_BIN, 'convert', '-O', 'vdi', 'src.raw', 'out.vdi'], { cwd: dir, stdio: 'ignore' });
    // Wait until the build folder exists, then kill.
    for (let i = 0; i < 400; i++) {
      if ((await readdir(dir)).some((n) => n.startsWith('.out.vdi.vdisk-convert-'))) break;
      await new Promise((res) => setTimeout(res, 5));
    }
    child.kill('SIGKILL');
    await new Promise((res) => child.once('exit', res));
    const after = await readdir(dir);
    expect(after).not.toContain('out.vdi');
    const r = await vdisk(['convert', '-O', 'vdi', 'src.raw', 'out.vdi'], dir);
    expect(r.code).toBe(0);
    if (after.some((n) => n.startsWith('.out.vdi.vdisk-convert-') || n === 'out.vdi.lock')) expect(r.stderr).toMatch(/removed .* no longer running/);
    expect((await readdir(dir)).sort()).toEqual(['out.vdi', 'src.raw']);
    const cmp = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'vdi', join(dir, 'src.raw'), join(dir, 'out.vdi')], { encoding: 'utf8' });
    expect(cmp.stdout).toMatch(/identical/);
    expect(cmp.status).toBe(0);
  });
});

describe('every command takes every address open() takes', () => {
  it('a path, an absolute path and ARCHIVE:MEMBER (tar and zip) for info, map, check, compare and convert; writes to a member are E_READONLY', async () => {
    const dir = join(root, 'addresses');
    await mkdir(dir);
    const data = Buffer.concat([patternBytes(1024 * 1024, 11), Buffer.alloc(1024 * 1024), patternBytes(1024 * 1024, 12), Buffer.alloc(1024 * 1024)]);
    await writeFile(join(dir, 'd.raw'), data);
    const made = await vdisk(['ova', 'create', '--name', 't', 'app.ova', 'd.raw'], dir);
    expect(made.stderr).toBe('');
    const member = 't-disk1.vmdk';
    await mkdir(join(dir, 'x'));
    expect(spawnSync('tar', ['xf', '../app.ova'], { cwd: join(dir, 'x') }).status).toBe(0);
    expect(spawnSync('zip', ['-q', '-0', '../app.zip', 't.ovf', 't.mf', member], { cwd: join(dir, 'x') }).status).toBe(0);

    const addresses = ['d.raw', join(dir, 'd.raw'), `app.ova:${member}`, `app.zip:${member}`, `${join(dir, 'app.ova')}:${member}`];
    for (const [i, a] of addresses.entries()) {
      const info = await vdisk(['info', '--output', 'json', a], dir);
      expect(info.stderr, a).toBe('');
      expect(JSON.parse(info.stdout)).toMatchObject({ 'virtual-size': data.length });
      const map = await vdisk(['map', '--output', 'json', a], dir);
      expect(map.code, a).toBe(0);
      expect(map.stdout).toMatch(/"data": ?true/);
      const chk = await vdisk(['check', a], dir);
      if (a.endsWith('d.raw')) {
        // As qemu-img says of raw, with its exit code 63.
        expect(chk.stderr, a).toMatch(/does not support checks/);
        expect(chk.code).toBe(63);
      } else {
        expect(chk.stdout, a).toMatch(/No errors were found/);
        expect(chk.code).toBe(0);
      }
      const cmp = await vdisk(['compare', a, 'd.raw'], dir);
      expect(cmp.stdout, a).toMatch(/identical/);
      const out = `out${i}.vhd`;
      const conv = await vdisk(['convert', '-O', 'vhd', a, out], dir);
      expect(conv.stderr, a).toBe('');
      // qemu-img, plainly, judges the copy.
      const q = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', join(dir, 'd.raw'), join(dir, out)], { encoding: 'utf8' });
      expect(q.stdout, a).toMatch(/identical/);
    }
    const report = await check(join(dir, `app.ova:${member}`));
    expect(report['check-errors']).toBe(0);

    for (const args of [['resize', `app.ova:${member}`, '8M'], ['compact', `app.ova:${member}`], ['commit', `app.ova:${member}`], ['rebase', '-u', '-b', 'd.raw', `app.ova:${member}`]]) {
      const r = await vdisk(args, dir);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr).toMatch(/member of an archive opens read-only/);
    }
    await expect(open(join(dir, `app.ova:${member}`))).rejects.toMatchObject({ code: 'E_READONLY' });
  });
});
