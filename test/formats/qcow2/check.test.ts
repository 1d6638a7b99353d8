/**
 * `vdisk check` on qcow2 agrees with `qemu-img check`: clean qemu-made images of
 * every kind (snapshots, compressed, extended L2, refcount widths, backing files) are
 * clean; a leaked cluster and a cluster in use with refcount 0 give the same leak and
 * corruption counts and the same exit codes (0 clean, 2 corrupt, 3 leaks only);
 * `-r leaks` repairs the leak so that qemu finds the image clean.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { itWith, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../../helpers/tmp.js';

const QEMU = ['qemu-img', 'qemu-io'];
let dir = '';
beforeAll(async () => {
  dir = await tempDir('vdisk-qcow2-check-');
});

interface Counts {
  code: number;
  leaks: number;
  corruptions: number;
  allocated: number;
}

async function qemuCheck(f: string): Promise<Counts> {
  const r = await run('qemu-img', ['check', '--output', 'json', '-f', 'qcow2', f]);
  const j = JSON.parse(r.stdout) as Record<string, number | undefined>;
  return { code: r.code, leaks: j.leaks ?? 0, corruptions: j.corruptions ?? 0, allocated: j['allocated-clusters'] ?? 0 };
}

async function ourCheck(f: string): Promise<Counts> {
  const r = await run(process.execPath, [VDISK_BIN, 'check', '--output', 'json', f], { cwd: dir });
  const j = JSON.parse(r.stdout) as { problems: Array<{ severity: string }>; 'allocated-clusters'?: number };
  return {
    code: r.code,
    leaks: j.problems.filter((p) => p.severity === 'leak').length,
    corruptions: j.problems.filter((p) => p.severity === 'corrupt').length,
    allocated: j['allocated-clusters'] ?? 0,
  };
}

async function make(name: string, args: string[], io: string[]): Promise<string> {
  const f = join(dir, name);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, f, '4M']);
  for (const c of io) await runOk('qemu-io', ['-f', 'qcow2', '-c', c, f]);
  return f;
}

const IO = ['write -P 1 0 100k', 'write -z 200k 64k', 'write -c -P 2 1M 64k', 'write -P 3 3M 4k'];

describe('vdisk check on qcow2', () => {
  const kinds: Array<[string, string[]]> = [
    ['v2', ['-o', 'compat=0.10']],
    ['v3-512', ['-o', 'cluster_size=512']],
    ['refcount1', ['-o', 'refcount_bits=1']],
    ['refcount64', ['-o', 'refcount_bits=64']],
    ['extl2', ['-o', 'extended_l2=on']],
  ];
  for (const [name, args] of kinds) {
    itWith(QEMU, `${name}: clean, as qemu-img check says`, async () => {
      const f = await make(`${name}.qcow2`, args, IO);
      expect(await ourCheck(f)).toEqual(await qemuCheck(f));
      expect((await ourCheck(f)).code).toBe(0);
    });
  }

  itWith(QEMU, 'internal snapshots: shared clusters counted once per table', async () => {
    const f = await make('snap.qcow2', [], IO);
    await runOk('qemu-img', ['snapshot', '-c', 'a', f]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 9 0 8k', '-c', 'write -P 8 2M 64k', f]);
    await runOk('qemu-img', ['snapshot', '-c', 'b', f]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 64k 4k', f]);
    expect(await ourCheck(f)).toEqual(await qemuCheck(f));
  });

  itWith(QEMU, 'a leaked cluster (exit 3) and a used cluster with refcount 0 (exit 2)', async () => {
    const f = await make('base.qcow2', [], ['write -P 1 0 64k']);
    const b = await readFile(f);
    const cs = 65536;
    const n = b.length / cs;
    const rt = Number(b.readBigUInt64BE(48));
    const rb = Number(b.readBigUInt64BE(rt));
    const leak = Buffer.concat([b, Buffer.alloc(cs)]);
    leak.writeUInt16BE(1, rb + 2 * n);
    const lf = join(dir, 'leak.qcow2');
    await writeFile(lf, leak);
    const ql = await qemuCheck(lf);
    expect(ql).toMatchObject({ code: 3, leaks: 1 });
    expect(await ourCheck(lf)).toEqual(ql);
    // -r leaks lowers the refcount; qemu then finds the image clean.
    const r = await run(process.execPath, [VDISK_BIN, 'check', '-r', 'leaks', lf], { cwd: dir });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 leaked clusters/);
    expect(await qemuCheck(lf)).toMatchObject({ code: 0, leaks: 0, corruptions: 0 });
    const bad = Buffer.from(b);
    bad.writeUInt16BE(0, rb + 2 * (n - 1));
    const cf = join(dir, 'corrupt.qcow2');
    await writeFile(cf, bad);
    const qc = await qemuCheck(cf);
    expect(qc.code).toBe(2);
    expect(await ourCheck(cf)).toEqual(qc);
    // A corrupt image is not "repaired" by lowering leaks: -r all is refused to act and says so.
    const r2 = await run(process.execPath, [VDISK_BIN, 'check', '-r', 'all', cf], { cwd: dir });
    expect(r2.code).toBe(2);
    expect((await readFile(cf)).equals(bad)).toBe(true);
  });
});
