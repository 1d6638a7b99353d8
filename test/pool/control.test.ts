// The pool control socket: a holder answers add / lvExtend / lvCreate for another
// process while its LVs are in use, LVM2 sees the result, bad requests get stable
// codes without disturbing the holder, and stale or silent sockets never hang a client.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { lstat, mkdir, stat, truncate, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VdiskError } from '../../src/errors.js';
import { askHolder, changePool, ControlServer, controlSocketPath, MAX_CONTROL_LINE } from '../../src/pool/control.js';
import { Pool } from '../../src/pool/pool.js';
import { expectCode } from '../helpers/errors.js';
import { LVM_TOOLS, withLvm } from '../helpers/lvm.js';
import { itWith } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

/** A pool over two raw members (so LVM2 reads them straight off loop devices) with one LV. */
async function rawPool(): Promise<{ dir: string; pool: Pool }> {
  const dir = await tempDir('vdisk-control-');
  for (const n of ['a.raw', 'b.raw']) {
    await writeFile(join(dir, n), '');
    await truncate(join(dir, n), 24 * MiB);
  }
  const pool = await Pool.create('vg0', ['a.raw', 'b.raw'], { dir });
  await pool.lvCreate('data', 16 * MiB);
  return { dir, pool };
}

/** Send raw bytes to a socket and collect the reply lines until it closes or `lines` arrive. */
async function exchange(path: string, bytes: string, lines: number): Promise<{ replies: Array<{ ok: boolean; error?: { code: string; message: string } }>; closed: boolean }> {
  const s = createConnection(path);
  await once(s, 'connect');
  s.write(bytes);
  let buf = '';
  let closed = false;
  await new Promise<void>((res) => {
    const t = setTimeout(res, 5000);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').length - 1 >= lines) {
        clearTimeout(t);
        res();
      }
    });
    s.on('close', () => {
      closed = true;
      clearTimeout(t);
      res();
    });
  });
  await new Promise((r) => setTimeout(r, 50));
  closed ||= s.destroyed || s.readableEnded;
  s.destroy();
  return { replies: buf.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { ok: boolean; error?: { code: string; message: string } }), closed };
}

describe('pool control socket', () => {
  itWith(LVM_TOOLS, 'a holder adds a member and extends an LV for another client while the LV is written; LVM2 sees the new VG', async () => {
    const { dir, pool } = await rawPool();
    const control = await ControlServer.listen(pool);
    try {
      expect(control.path).toBe(join(dir, '.vdisk-vg0.ctl'));
      const st = await lstat(control.path);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);

      const lv = pool.openLv('data');
      const before = patternBytes(16 * MiB, 5);
      await lv.write(before, 0);
      // A writer keeps going while the changes arrive through the socket.
      let stop = false;
      let writes = 0;
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          const off = (i % 256) * 64 * 1024;
          const chunk = Buffer.alloc(64 * 1024, i & 0xff);
          await lv.write(chunk, off);
          chunk.copy(before, off);
          writes++;
          await new Promise((r) => setImmediate(r));
        }
      })();
      await writeFile(join(dir, 'c.raw'), '');
      await truncate(join(dir, 'c.raw'), 24 * MiB);
      const add = await askHolder(dir, 'vg0', { op: 'add', member: join(dir, 'c.raw') });
      expect(add.kind).toBe('answer');
      const ext = await askHolder(dir, 'vg0', { op: 'lvExtend', lv: 'data', size: 24 * MiB, relative: true });
      expect(ext).toMatchObject({ kind: 'answer', result: { from: 16 * MiB, to: 40 * MiB, holder: process.pid } });
      stop = true;
      await writer;
      expect(writes).toBeGreaterThan(0);
      expect(lv.size).toBe(40 * MiB);
      const tail = patternBytes(24 * MiB, 6);
      await lv.write(tail, 16 * MiB);
      const back = Buffer.alloc(40 * MiB);
      await lv.read(back, 0);
      expect(back.equals(Buffer.concat([before, tail]))).toBe(true);

      // The holder's errors come back as the VdiskError they were.
      await expectCode(askHolder(dir, 'vg0', { op: 'lvExtend', lv: 'data', size: 2 ** 40 }), 'E_NOSPC');
      await expectCode(askHolder(dir, 'vg0', { op: 'lvExtend', lv: 'nope', size: MiB, relative: true }), 'E_NOENT');
      await expectCode(askHolder(dir, 'vg0', { op: 'add', member: join(dir, 'c.raw') }), 'E_EXISTS');
      // changePool prefers the holder (no lock is touched).
      const via = await changePool(dir, 'vg0', { op: 'lvCreate', lv: 'logs', size: 4 * MiB });
      expect(via).toMatchObject({ via: 'holder', size: 4 * MiB });
      await lv.close();
    } finally {
      await control.close();
      await pool.close();
    }
    expect(await lstat(join(dir, '.vdisk-vg0.ctl')).catch(() => undefined)).toBeUndefined();

    await withLvm(['a.raw', 'b.raw', 'c.raw'].map((n) => join(dir, n)), async (s) => {
      const vgs = await s.report('vgs', 'vg_name,pv_count,lv_count,vg_seqno');
      expect(vgs).toEqual([{ vg_name: 'vg0', pv_count: '3', lv_count: '2', vg_seqno: String(pool.vg.seqno) }]);
      const lvs = await s.report('lvs', 'lv_name,lv_size');
      expect(Object.fromEntries(lvs.map((l) => [l.lv_name, Number(l.lv_size)]))).toEqual({ data: 40 * MiB, logs: 4 * MiB });
    });
  }, 60_000);

  it('bad requests get E_USAGE / E_UNSUPPORTED / E_NOENT and the holder keeps serving', async () => {
    const { pool } = await rawPool();
    const control = await ControlServer.listen(pool);
    try {
      const lv = pool.openLv('data');
      const cases: Array<[string, string]> = [
        ['this is not json\n', 'E_USAGE'],
        ['[1,2,3]\n', 'E_USAGE'],
        ['{"v":1,"op":"explode","vg":"vg0"}\n', 'E_USAGE'],
        ['{"v":2,"op":"status","vg":"vg0"}\n', 'E_UNSUPPORTED'],
        ['{"op":"status","vg":"vg0"}\n', 'E_UNSUPPORTED'],
        ['{"v":1,"op":"status","vg":"other"}\n', 'E_NOENT'],
        ['{"v":1,"op":"lvExtend","vg":"vg0","lv":"data","size":-5}\n', 'E_USAGE'],
        ['{"v":1,"op":"lvExtend","vg":"vg0","lv":"data","size":1e300}\n', 'E_USAGE'],
        ['{"v":1,"op":"add","vg":"vg0","member":42}\n', 'E_USAGE'],
        ['{"v":1,"op":"add","vg":"vg0","member":"x","new":"lots"}\n', 'E_USAGE'],
      ];
      // All on one connection: each line gets its own reply, in order.
      const { replies } = await exchange(control.path, cases.map((c) => c[0]).join(''), cases.length);
      expect(replies.map((r) => r.error?.code)).toEqual(cases.map((c) => c[1]));
      expect(replies.every((r) => r.ok === false && typeof r.error?.message === 'string' && r.error.message.length > 0)).toBe(true);
      expect(replies[5]!.error!.message).toMatch(/serves VG vg0, not other/);

      // An oversized line (no newline in sight) is refused and the connection closed; memory stays bounded.
      const long = await exchange(control.path, 'x'.repeat(MAX_CONTROL_LINE + 4096), 1);
      expect(long.replies.map((r) => r.error?.code)).toEqual(['E_USAGE']);
      expect(long.replies[0]!.error!.message).toMatch(/longer than/);
      expect(long.closed).toBe(true);

      // The holder still answers and its LV still works.
      const st = await askHolder(pool.dir, 'vg0', { op: 'status' });
      expect(st).toMatchObject({ kind: 'answer', result: { vg: 'vg0', lvs: { data: 16 * MiB } } });
      const d = patternBytes(MiB, 9);
      await lv.write(d, 0);
      const b = Buffer.alloc(MiB);
      await lv.read(b, 0);
      expect(b.equals(d)).toBe(true);
      await lv.close();
    } finally {
      await control.close();
      await pool.close();
    }
  }, 30_000);

  it('a stale socket (holder killed) is detected: the change is made locally and the socket removed; a new holder replaces it', async () => {
    const { dir, pool } = await rawPool();
    await pool.close();
    const path = controlSocketPath(dir, 'vg0');
    // A process that listens on the socket and is killed leaves the socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(child.stdout!, 'data');
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect((await lstat(path)).isSocket()).toBe(true);

    expect(await askHolder(dir, 'vg0', { op: 'status' })).toEqual({ kind: 'stale', path });
    const r = await changePool(dir, 'vg0', { op: 'lvExtend', lv: 'data', size: 20 * MiB });
    expect(r).toMatchObject({ via: 'local', from: 16 * MiB, to: 20 * MiB });
    expect(await lstat(path).catch(() => undefined)).toBeUndefined();

    // Leave another stale socket: a new holder takes the path over.
    const again = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(again.stdout!, 'data');
    again.kill('SIGKILL');
    await once(again, 'exit');
    const p2 = await Pool.open('vg0', { dir });
    const control = await ControlServer.listen(p2);
    try {
      expect(await askHolder(dir, 'vg0', { op: 'status' })).toMatchObject({ kind: 'answer', result: { lvs: { data: 20 * MiB } } });
      // A second holder for the same socket is refused while the first answers.
      await expectCode(ControlServer.listen(p2), 'E_LOCKED');
    } finally {
      await control.close();
      await p2.close();
    }
    // No socket at all: the client says so at once.
    expect(await askHolder(dir, 'vg0', { op: 'status' })).toEqual({ kind: 'none' });
  }, 30_000);

  it('a holder that never answers gives E_IO after the timeout, not a hang', async () => {
    const dir = await tempDir('vdisk-control-');
    const path = controlSocketPath(dir, 'vg0');
    const held: Socket[] = [];
    const silent = createServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(path, r));
    try {
      const t0 = Date.now();
      const err = await askHolder(dir, 'vg0', { op: 'status' }, { timeoutMs: 300 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(VdiskError);
      expect((err as VdiskError).code).toBe('E_IO');
      expect((err as VdiskError).message).toMatch(/did not answer/);
      expect(Date.now() - t0).toBeLessThan(3000);
    } finally {
      for (const s of held) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  }, 10_000);

  it('a folder whose socket path would not fit sun_path uses $XDG_RUNTIME_DIR', async () => {
    const base = await tempDir('vdisk-control-');
    const deep = join(base, 'd'.repeat(60), 'e'.repeat(60));
    await mkdir(deep, { recursive: true });
    const runtime = await tempDir('vdisk-xdg-');
    const old = process.env.XDG_RUNTIME_DIR;
    process.env.XDG_RUNTIME_DIR = runtime;
    try {
      const p = controlSocketPath(deep, 'vg0');
      expect(p.startsWith(`${runtime}/vdisk-`)).toBe(true);
      expect(p.endsWith('-vg0.ctl')).toBe(true);
      expect(Buffer.byteLength(p)).toBeLessThanOrEqual(107);
      expect(controlSocketPath(deep, 'vg0')).toBe(p);
      expect(controlSocketPath(deep, 'vg1')).not.toBe(p);
      expect(controlSocketPath(base, 'vg0')).toBe(join(base, '.vdisk-vg0.ctl'));
      expect((await stat(runtime)).isDirectory()).toBe(true);
    } finally {
      if (old === undefined) delete process.env.XDG_RUNTIME_DIR;
      else process.env.XDG_RUNTIME_DIR = old;
    }
  });
});
