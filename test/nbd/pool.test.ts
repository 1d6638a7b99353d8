// `vdisk serve lvm:VG/LV` and online extension while served: `vdisk pool add` and
// `pool lv extend` from other processes reach the server through the pool's control
// socket; nbdinfo sees the new size on a new connection, an open qemu-io connection
// keeps reading and writing, and nbdcopy / qemu-img / LVM2 judge the bytes and the VG.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { lstat, readFile, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { vdisk } from '../helpers/cli.js';
import { LVM_TOOLS, withLvm } from '../helpers/lvm.js';
import { itWith, run, runOk } from '../helpers/oracle.js';
import { children, serve, stop } from '../helpers/serve.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

/** qemu-io kept open on one NBD connection, fed one command at a time. */
async function openQemuIo(uri: string): Promise<{ cmd: (line: string) => Promise<string>; quit: () => Promise<number | null>; child: ChildProcess }> {
  const child = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let waiter: (() => void) | undefined;
  const onData = (d: Buffer): void => {
    out += d.toString();
    waiter?.();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const prompts = (): number => out.split('qemu-io> ').length - 1;
  const waitPrompts = async (n: number): Promise<void> => {
    const t0 = Date.now();
    while (prompts() < n) {
      if (child.exitCode !== null) throw new Error(`qemu-io exited: ${out}`);
      if (Date.now() - t0 > 20_000) throw new Error(`qemu-io did not answer: ${out}`);
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 200);
      });
    }
  };
  await waitPrompts(1);
  return {
    child,
    async cmd(line) {
      const seen = prompts();
      const at = out.length;
      child.stdin!.write(`${line}\n`);
      await waitPrompts(seen + 1);
      return out.slice(at).replace(/qemu-io> $/, '');
    },
    async quit() {
      child.stdin!.end('quit\n');
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}

/** Send one raw line to a control socket; resolves with the reply line. */
async function rawControl(path: string, line: string): Promise<string> {
  const s = createConnection(path);
  await once(s, 'connect');
  s.write(line);
  let buf = '';
  for await (const d of s) {
    buf += (d as Buffer).toString();
    if (buf.includes('\n')) break;
  }
  s.destroy();
  return buf.trim();
}

describe('vdisk serve of pool LVs', () => {
  itWith(['qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy', ...LVM_TOOLS], 'an LV served over NBD grows online: pool add + lv extend from other processes, new connections see the size, an open one keeps working, every byte intact', async () => {
    const dir = await tempDir('vdisk-servepool-');
    expect((await vdisk(['pool', 'create', 'vg0', 'a.vhd', 'b.vdi', '--new', 'vhd:40M', '--new', 'vdi:40M'], dir)).code).toBe(0);
    expect((await vdisk(['pool', 'lv', 'create', 'vg0/data', '16M'], dir)).code).toBe(0);
    const expected = patternBytes(16 * MiB, 21);
    await writeFile(join(dir, 'first.raw'), expected);

    const { child, uris, out } = await serve(dir, ['lvm:vg0/data=data']);
    const uri = uris.data!;
    const sock = join(dir, '.vdisk-vg0.ctl');
    expect(out()).toContain(`control socket ${sock}`);
    expect((await lstat(sock)).mode & 0o777).toBe(0o600);
    expect(await runOk('nbdinfo', ['--size', uri])).toBe(`${16 * MiB}\n`);
    await runOk('nbdcopy', [join(dir, 'first.raw'), uri]);

    // One connection stays open through the change.
    const qio = await openQemuIo(uri);
    expect(await qio.cmd('write -P 0x5a 0 64k')).toMatch(/wrote 65536\/65536/);
    expected.fill(0x5a, 0, 64 * 1024);
    expect(await qio.cmd('length')).toMatch(/16 MiB/);

    // A reader copies the whole export over and over while the pool changes under it.
    let reading = true;
    const copies: number[] = [];
    const reader = (async () => {
      while (reading) copies.push((await run('nbdcopy', [uri, 'null:'])).code);
    })();
    // Bad requests on the control socket do not disturb the server.
    expect(JSON.parse(await rawControl(sock, 'garbage\n'))).toMatchObject({ ok: false, error: { code: 'E_USAGE' } });
    expect(JSON.parse(await rawControl(sock, '{"v":1,"op":"add","vg":"vg9","member":"/x"}\n'))).toMatchObject({ ok: false, error: { code: 'E_NOENT' } });

    const add = await vdisk(['pool', 'add', 'vg0', 'c.vmdk', '--new', 'vmdk:40M'], dir);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stderr).toContain(`held by process ${child.pid}`);
    const ext = await vdisk(['pool', 'lv', 'extend', 'vg0/data', '+32M'], dir);
    expect(ext.code, ext.stderr).toBe(0);
    expect(ext.stdout).toContain(`changed from ${16 * MiB} to ${48 * MiB} bytes`);
    reading = false;
    await reader;
    expect(copies.length).toBeGreaterThan(0);
    expect(copies.every((c) => c === 0)).toBe(true);

    // New connections are told the new size.
    expect(await runOk('nbdinfo', ['--size', uri])).toBe(`${48 * MiB}\n`);
    const show = await vdisk(['pool', 'show', 'vg0', '--output', 'json'], dir);
    expect((JSON.parse(show.stdout) as { members: unknown[] }).members).toHaveLength(3);

    // The open connection keeps the size it was told at negotiation, and keeps working.
    expect(await qio.cmd('read -P 0x5a 0 64k')).toMatch(/read 65536\/65536/);
    expect(await qio.cmd('write -P 0xa5 1M 64k')).toMatch(/wrote 65536\/65536/);
    expected.fill(0xa5, MiB, MiB + 64 * 1024);
    const r = await qio.cmd('read -P 0xa5 1M 64k');
    expect(r).not.toMatch(/Pattern verification failed/);
    expect(r).toMatch(/read 65536\/65536/);
    expect(await qio.cmd('length')).toMatch(/16 MiB/);
    expect(await qio.quit()).toBe(0);

    // A new connection writes the new space; nbdcopy and qemu-img judge every byte.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 16M 32M', uri]);
    const whole = Buffer.concat([expected, Buffer.alloc(32 * MiB, 0x77)]);
    await writeFile(join(dir, 'expected.raw'), whole);
    await runOk('nbdcopy', [uri, join(dir, 'out.raw')]);
    expect((await readFile(join(dir, 'out.raw'))).equals(whole)).toBe(true);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir, 'expected.raw'), uri])).code).toBe(0);

    expect(await stop(child)).toBe(0);
    expect(await lstat(sock).catch(() => undefined)).toBeUndefined();

    // LVM2 reads the members (as raw copies qemu-img makes) and sees the grown VG.
    for (const [m, f] of [['a.vhd', 'vpc'], ['b.vdi', 'vdi'], ['c.vmdk', 'vmdk']] as const) {
      await runOk('qemu-img', ['convert', '-f', f, '-O', 'raw', m, `${m}.raw`], { cwd: dir });
    }
    await withLvm(['a.vhd.raw', 'b.vdi.raw', 'c.vmdk.raw'].map((f) => join(dir, f)), async (s) => {
      expect(await s.report('vgs', 'vg_name,pv_count')).toEqual([{ vg_name: 'vg0', pv_count: '3' }]);
      expect(await s.report('lvs', 'lv_name,lv_size')).toEqual([{ lv_name: 'data', lv_size: String(48 * MiB) }]);
    });

    // Served again (read-only, no control socket), the LV reads what was written.
    const again = await serve(dir, ['-r', 'lvm:vg0/data=data']);
    expect(again.out()).not.toContain('control socket');
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir, 'expected.raw'), again.uris.data!])).code).toBe(0);
    expect(await stop(again.child)).toBe(0);
  }, 120_000);

  itWith(['nbdinfo'], 'two LVs of one VG in one server; a killed server leaves a stale socket that the next pool command removes', async () => {
    const dir = await tempDir('vdisk-servepool-');
    expect((await vdisk(['pool', 'create', 'vg0', 'a.raw', '--new', 'raw:40M'], dir)).code).toBe(0);
    expect((await vdisk(['pool', 'lv', 'create', 'vg0/one', '8M'], dir)).code).toBe(0);
    expect((await vdisk(['pool', 'lv', 'create', 'vg0/two', '4M'], dir)).code).toBe(0);
    const { child, uris } = await serve(dir, ['lvm:vg0/one', `lvm:${dir}/vg0/two`]);
    expect(Object.keys(uris)).toEqual(['one', 'two']);
    expect(await runOk('nbdinfo', ['--size', uris.two!])).toBe(`${4 * MiB}\n`);
    const grow = await vdisk(['pool', 'lv', 'extend', 'vg0/two', '12M', '--dir', dir], dir);
    expect(grow.code, grow.stderr).toBe(0);
    expect(grow.stderr).toMatch(/held by process/);
    expect(await runOk('nbdinfo', ['--size', uris.two!])).toBe(`${12 * MiB}\n`);
    // lv remove is not sent to the holder: the member's write lock answers.
    const rm = await vdisk(['pool', 'lv', 'remove', 'vg0/one'], dir);
    expect(rm.code).toBe(1);
    expect(rm.stderr).toMatch(/open for writing by process/);

    child.kill('SIGKILL');
    await once(child, 'exit');
    const sock = join(dir, '.vdisk-vg0.ctl');
    expect((await lstat(sock)).isSocket()).toBe(true);
    const ext = await vdisk(['pool', 'lv', 'extend', 'vg0/one', '+4M'], dir);
    expect(ext.code, ext.stderr).toBe(0);
    expect(ext.stderr).not.toMatch(/held by/);
    expect(ext.stdout).toContain(`changed from ${8 * MiB} to ${12 * MiB} bytes`);
    expect(await lstat(sock).catch(() => undefined)).toBeUndefined();
  }, 60_000);
});
