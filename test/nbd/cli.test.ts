// `vdisk serve` judged by qemu-img, qemu-io, nbdinfo and nbdcopy; nbd:// addresses in
// every command judged against exports served by nbdkit and qemu-nbd; TLS-PSK both ways.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { vdisk } from '../helpers/cli.js';
import { itWith, run, runOk } from '../helpers/oracle.js';
import { children, freePort, serve, start, stop } from '../helpers/serve.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';
import { nasm, partitionedImage } from '../emu/guests.js';

const data = Buffer.concat([patternBytes(1 << 20, 3), Buffer.alloc(2 << 20), patternBytes(1 << 20, 4), Buffer.alloc(4 << 20)]);

describe('vdisk serve', () => {
  itWith(['qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy'], 'qemu-img, qemu-io, nbdinfo and nbdcopy use the exports; writes reach the images; SIGTERM flushes and exits 0', async () => {
    const dir = await tempDir('vdisk-serve-');
    await writeFile(join(dir, 'data.raw'), data);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', 'data.raw', 'src.vmdk'], { cwd: dir });
    expect((await vdisk(['create', '-f', 'vdi', 'w.vdi', '8M'], dir)).code).toBe(0);
    expect((await vdisk(['create', '-f', 'vmdk', 'copy.vmdk', '8M'], dir)).code).toBe(0);
    const { child, uris } = await serve(dir, ['src.vmdk=src', 'w.vdi', 'copy.vmdk']);
    expect(Object.keys(uris)).toEqual(['src', 'w', 'copy']);

    const info = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', uris.src!])) as { 'virtual-size': number; format: string };
    expect(info['virtual-size']).toBe(data.length);
    const map = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', uris.src!])) as Array<{ start: number; length: number; data: boolean }>;
    expect(map.filter((m) => m.data).map((m) => [m.start, m.length])).toEqual([
      [0, 1 << 20],
      [3 << 20, 1 << 20],
    ]);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir, 'data.raw'), uris.src!])).code).toBe(0);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', uris.src!, join(dir, 'out.qcow2')]);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', join(dir, 'data.raw'), join(dir, 'out.qcow2')])).code).toBe(0);

    // qemu-io writes, with FUA and as zeroes, and reads its writes back.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 4096 65536', '-c', 'write -f -P 0xcd 1048576 4096', '-c', 'write -z 0 4096', uris.w!]);
    const back = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 4096 65536', '-c', 'read -P 0xcd 1048576 4096', '-c', 'read -P 0 0 4096', uris.w!]);
    expect(back.stdout).not.toMatch(/Pattern verification failed/);
    expect(back.stdout.match(/read \d+\/\d+ bytes/g)).toHaveLength(3);

    // nbdcopy into the server and out of it.
    await runOk('nbdcopy', [join(dir, 'data.raw'), uris.copy!]);
    await runOk('nbdcopy', [uris.copy!, join(dir, 'back.raw')]);
    expect((await readFile(join(dir, 'back.raw'))).equals(data)).toBe(true);

    const depth = await runOk('nbdinfo', ['--map=qemu:allocation-depth', uris.src!]);
    expect(depth).toMatch(/^\s*0\s+1048576\s+1\s+local/m);
    expect(depth).toMatch(/^\s*1048576\s+2097152\s+0\s+absent/m);

    expect(await stop(child)).toBe(0);
    // The images themselves, read by qemu after the server closed them.
    const vdiRead = await runOk('qemu-io', ['-f', 'vdi', '-c', 'read -P 0xab 4096 65536', '-c', 'read -P 0xcd 1048576 4096', join(dir, 'w.vdi')]);
    expect(vdiRead).not.toMatch(/Pattern verification failed/);
    expect((await run('qemu-img', ['check', join(dir, 'w.vdi')])).code).toBe(0);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', join(dir, 'data.raw'), join(dir, 'copy.vmdk')])).code).toBe(0);
    expect((await run('qemu-img', ['check', join(dir, 'copy.vmdk')])).code).toBe(0);
  }, 60_000);

  itWith(['qemu-img', 'nbdinfo'], 'differencing chains report allocation depth; --read-only refuses writes; a busy port is named', async () => {
    const dir = await tempDir('vdisk-serve-');
    await writeFile(join(dir, 'base.raw'), data);
    // A chain qemu made: a VMDK delta over a VMDK base, the child holding the first MiB.
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', 'base.raw', 'base.vmdk'], { cwd: dir });
    await runOk('qemu-img', ['create', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', 'child.vmdk'], { cwd: dir });
    await runOk('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x11 0 1M', join(dir, 'child.vmdk')]);
    const { child, uris, out } = await serve(dir, ['--read-only', 'child.vmdk']);
    expect(out()).toMatch(/read-only/);
    const depth = await runOk('nbdinfo', ['--map=qemu:allocation-depth', uris.child!]);
    expect(depth).toMatch(/^\s*0\s+1048576\s+1\s+local/m);
    expect(depth).toMatch(/^\s*3145728\s+1048576\s+2\s+backing depth 2/m);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 512', uris.child!]);
    expect(w.stdout + w.stderr).toMatch(/Operation not permitted|read-only|Permission denied/i);

    const port = new URL(uris.child!).port;
    const busy = await vdisk(['serve', '-p', port, 'child.vmdk'], dir);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain(`127.0.0.1:${port}: address already in use`);
    expect(await stop(child)).toBe(0);
  }, 60_000);

  itWith(['nbdinfo', 'nbdkit'], 'TLS-PSK: nbdinfo reaches a --tls require server only with the key; vdisk reaches nbdkit --tls=require', async () => {
    const dir = await tempDir('vdisk-serve-');
    await writeFile(join(dir, 'keys.psk'), `alice:${patternBytes(32, 9).toString('hex')}\n`);
    await writeFile(join(dir, 'data.raw'), data);
    const { child, uris } = await serve(dir, ['--tls', 'require', '--tls-psk', 'keys.psk', 'data.raw']);
    const uri = uris.data!.replace('nbds://', 'nbds://alice@') + `?tls-psk-file=${join(dir, 'keys.psk')}`;
    expect(await runOk('nbdinfo', ['--size', uri])).toBe(`${data.length}\n`);
    const plain = await run('nbdinfo', ['--size', uris.data!.replace('nbds://', 'nbd://')]);
    expect(plain.code).not.toBe(0);
    const ours = await vdisk(['compare', 'data.raw', uri], dir);
    expect(ours.stdout).toMatch(/identical/i);
    expect(await stop(child)).toBe(0);

    const port = await freePort();
    const kit = await start('nbdkit', ['-f', '-v', '-p', String(port), '-i', '127.0.0.1', '--tls=require', `--tls-psk=${join(dir, 'keys.psk')}`, 'file', join(dir, 'data.raw')], dir, /listening|bound to/i);
    const viaKit = await vdisk(['info', `nbds://alice@127.0.0.1:${port}/?tls-psk-file=${join(dir, 'keys.psk')}`], dir);
    expect(viaKit.stdout).toMatch(new RegExp(`virtual size: .*\\(${data.length} bytes\\)`));
    const noTls = await vdisk(['info', `nbd://127.0.0.1:${port}/`], dir);
    expect(noTls.code).toBe(1);
    expect(noTls.stderr).toMatch(/requires TLS/);
    kit.child.kill('SIGTERM');
  }, 60_000);
});

describe('nbd:// addresses in every command', () => {
  itWith(['nbdkit', 'qemu-nbd', 'qemu-img'], 'images inside exports of nbdkit and qemu-nbd open as their format; convert, map and compare work on them', async () => {
    const dir = await tempDir('vdisk-nbdcli-');
    await writeFile(join(dir, 'data.raw'), data);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', 'data.raw', 'q.vhd'], { cwd: dir });
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', 'data.raw', 'q.vmdk'], { cwd: dir });

    // nbdkit file: the export is the VHD file itself, so vdisk reads it as a VHD.
    const port = await freePort();
    await start('nbdkit', ['-f', '-v', '-p', String(port), '-i', '127.0.0.1', 'file', join(dir, 'q.vhd')], dir, /listening|bound to/i);
    const uri = `nbd://127.0.0.1:${port}/`;
    const info = await vdisk(['info', '--output', 'json', uri], dir);
    expect(info.code).toBe(0);
    expect((JSON.parse(info.stdout) as { format: string }).format).toBe('vhd');
    expect((await vdisk(['convert', '-O', 'vmdk', uri, 'from-kit.vmdk'], dir)).code).toBe(0);
    // qemu reads the VHD plainly, as a user would, and compares it with our copy.
    expect((await run('qemu-img', ['compare', join(dir, 'q.vhd'), join(dir, 'from-kit.vmdk')])).code).toBe(0);

    // qemu-nbd serving a VMDK: the export is raw, its extents come from BLOCK_STATUS.
    const sock = join(dir, 'qnbd.sock');
    const qn = spawn('qemu-nbd', ['-t', '-r', '-f', 'vmdk', '-k', sock, join(dir, 'q.vmdk')], { stdio: 'ignore' });
    children.push(qn);
    for (let i = 0; i < 100 && !(await readFile(sock).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT')); i++) await new Promise((r) => setTimeout(r, 50));
    const qUri = `nbd+unix:///?socket=${sock}`;
    const map = await vdisk(['map', '--output', 'json', qUri], dir);
    expect(map.code).toBe(0);
    const ranges = (JSON.parse(map.stdout) as Array<{ start: number; length: number; data: boolean }>).filter((m) => m.data).map((m) => [m.start, m.length]);
    expect(ranges).toEqual([
      [0, 1 << 20],
      [3 << 20, 1 << 20],
    ]);
    const cmp = await vdisk(['compare', 'data.raw', qUri], dir);
    expect(cmp.code).toBe(0);
    expect((await vdisk(['convert', '-O', 'raw', qUri, 'from-qemu.raw'], dir)).code).toBe(0);
    expect((await readFile(join(dir, 'from-qemu.raw'))).equals(data)).toBe(true);
  }, 60_000);

  itWith(['qemu-img', 'qemu-nbd'], 'convert -O raw into an export qemu-nbd serves: data written, holes zeroed, the tail left alone; other formats and small exports refused', async () => {
    const dir = await tempDir('vdisk-nbdinto-');
    await writeFile(join(dir, 'data.raw'), data);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'force_size=on', 'data.raw', 'q.vhd'], { cwd: dir });
    // The target disk holds old bytes everywhere, so a hole left unwritten would show.
    const old = Buffer.alloc(data.length + (2 << 20), 0xee);
    await writeFile(join(dir, 'target.raw'), old);
    await writeFile(join(dir, 'small.raw'), Buffer.alloc(1 << 20, 0xee));
    const serveRaw = async (file: string): Promise<{ uri: string; child: ChildProcess }> => {
      const sock = join(dir, `${file}.sock`);
      const child = spawn('qemu-nbd', ['-t', '-f', 'raw', '-k', sock, join(dir, file)], { stdio: 'ignore' });
      children.push(child);
      for (let i = 0; i < 100 && !(await readFile(sock).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT')); i++) await new Promise((r) => setTimeout(r, 50));
      return { uri: `nbd+unix:///?socket=${sock}`, child };
    };
    const target = await serveRaw('target.raw');
    const done = await vdisk(['convert', '-O', 'raw', 'q.vhd', target.uri], dir);
    expect(done.code, done.stderr).toBe(0);
    const vhdInto = await vdisk(['convert', '-O', 'vhd', 'q.vhd', target.uri], dir);
    expect(vhdInto.code).toBe(1);
    expect(vhdInto.stderr).toMatch(/only -O raw/);
    // qemu-img reads the export as a user would: the source's bytes, then the old tail.
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir, 'data.raw'), target.uri]);
    expect(cmp.stdout).toMatch(/Image size mismatch|differ|Content mismatch/i);
    await stop(target.child);
    const after = await readFile(join(dir, 'target.raw'));
    expect(after.subarray(0, data.length).equals(data)).toBe(true);
    expect(after.subarray(data.length).equals(old.subarray(data.length))).toBe(true);

    const small = await serveRaw('small.raw');
    const tooSmall = await vdisk(['convert', '-O', 'raw', 'q.vhd', small.uri], dir);
    expect(tooSmall.code).toBe(1);
    expect(tooSmall.stderr).toMatch(/smaller than the/);
    await stop(small.child);
    expect((await readFile(join(dir, 'small.raw'))).equals(Buffer.alloc(1 << 20, 0xee))).toBe(true);
  }, 60_000);

  itWith(['nasm', 'sfdisk', 'qemu-img', 'qemu-nbd'], 'vdisk boot runs a guest from a VHD that qemu-nbd serves, and from vdisk serve', async () => {
    const dir = await tempDir('vdisk-nbdboot-');
    const raw = join(dir, 'disk.raw');
    partitionedImage(raw, 8, 2048, '83', nasm(dir, 'mbr'), nasm(dir, 'vbr'));
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw, join(dir, 'disk.vhd')]);
    const sock = join(dir, 'boot.sock');
    const qn = spawn('qemu-nbd', ['-t', '-r', '-f', 'vpc', '-k', sock, join(dir, 'disk.vhd')], { stdio: 'ignore' });
    children.push(qn);
    for (let i = 0; i < 100 && !(await readFile(sock).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT')); i++) await new Promise((r) => setTimeout(r, 50));
    const viaQemu = await vdisk(['boot', '--snapshot', `nbd+unix:///?socket=${sock}`, '--expect', 'BOOT OK', '--timeout', '30'], dir);
    expect(viaQemu.code, viaQemu.stderr).toBe(0);
    expect(viaQemu.stdout).toContain('VBR: payload sector says hello');

    // The same disk as a VDI served by vdisk itself (read-only, so boot takes a snapshot).
    expect((await vdisk(['convert', '-O', 'vdi', 'disk.raw', 'disk.vdi'], dir)).code).toBe(0);
    const { child, uris } = await serve(dir, ['-r', 'disk.vdi']);
    const viaUs = await vdisk(['boot', '--snapshot', uris.disk!, '--expect', 'BOOT OK', '--timeout', '30'], dir);
    expect(viaUs.code, viaUs.stderr).toBe(0);
    expect(viaUs.stdout).toContain('VBR: disk sectors 00004000');
    expect(await stop(child)).toBe(0);
  }, 90_000);

  itWith(['nbdkit'], 'our client writes and reads nbdkit memory; bad addresses get clear errors', async () => {
    const dir = await tempDir('vdisk-nbdcli-');
    const port = await freePort();
    await start('nbdkit', ['-f', '-v', '-p', String(port), '-i', '127.0.0.1', 'memory', '8M'], dir, /listening|bound to/i);
    await writeFile(join(dir, 'data.raw'), data);
    const uri = `nbd://127.0.0.1:${port}/`;
    const { NbdStorage } = await import('../../src/storage/nbd/client.js');
    const s = await NbdStorage.open(uri);
    try {
      await s.write(data, 0);
      await s.flush();
      const b = Buffer.alloc(data.length);
      await s.read(b, 0);
      expect(b.equals(data)).toBe(true);
      await s.writeZeroes!(0, 1 << 20);
      await s.read(b.subarray(0, 1 << 20), 0);
      expect(b.subarray(0, 1 << 20).every((x) => x === 0)).toBe(true);
    } finally {
      await s.close();
    }
    const missing = await vdisk(['info', `nbd://127.0.0.1:${await freePort()}/disk`], dir);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/connection refused/);
    const scheme = await vdisk(['info', 'nbdx://127.0.0.1/disk'], dir);
    expect(scheme.code).toBe(1);
    expect(scheme.stderr).toMatch(/unknown scheme/);
    const { child, uris } = await serve(dir, ['data.raw=one']);
    const noExport = await vdisk(['info', uris.one!.replace(/one$/, 'two')], dir);
    expect(noExport.code).toBe(1);
    expect(noExport.stderr).toMatch(/no export "two"/);
    await stop(child);
  }, 60_000);
});
