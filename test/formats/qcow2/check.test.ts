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
    // -r leaks cannot mend a used cluster counted 0 (qemu: "need to rebuild", exit 1); -r all rebuilds the refcounts.
    const r2 = await run(process.execPath, [VDISK_BIN, 'check', '-r', 'leaks', cf], { cwd: dir });
    expect(r2.code).toBe(1);
    expect((await readFile(cf)).equals(bad)).toBe(true);
    const r3 = await run(process.execPath, [VDISK_BIN, 'check', '-r', 'all', cf], { cwd: dir });
    expect(r3.code, r3.stdout + r3.stderr).toBe(0);
    expect(await qemuCheck(cf)).toMatchObject({ code: 0, leaks: 0, corruptions: 0 });
  });
});

describe('vdisk check -r all on a qcow2 left dirty (lazy refcounts, qemu-io aborted)', () => {
  itWith(QEMU, 'reports what qemu reports, rebuilds the refcounts, clears the dirty bit, and the image opens for writing', async () => {
    const f = join(dir, 'dirty.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', f, '8M']);
    // abort: qemu-io stops without writing the refcounts back, leaving the dirty bit set.
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 4M 64k', '-c', 'abort', f]).catch(() => undefined);
    expect((await readFile(f)).readBigUInt64BE(72) & 1n).toBe(1n);
    const theirs = join(dir, 'dirty-qemu.qcow2');
    await writeFile(theirs, await readFile(f));
    expect(await ourCheck(f)).toEqual(await qemuCheck(theirs));
    const v = await run(process.execPath, [VDISK_BIN, 'check', '-r', 'all', f], { cwd: dir });
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect((await readFile(f)).readBigUInt64BE(72) & 1n).toBe(0n);
    expect(await qemuCheck(f)).toMatchObject({ code: 0, leaks: 0, corruptions: 0 });
    await run('qemu-img', ['check', '-r', 'all', '-f', 'qcow2', theirs]);
    expect((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', f, theirs])).code).toBe(0);
    const w = await run(process.execPath, [VDISK_BIN, 'resize', f, '16M'], { cwd: dir });
    expect(w.code, w.stderr).toBe(0);
    expect(await qemuCheck(f)).toMatchObject({ code: 0 });
  });
});

/** Damage done to a copy of a qemu-made image, given its bytes and layout. */
type Damage = (b: Buffer, at: { cs: number; refBlock: number; refTable: number; l2: number }) => Buffer;

describe('vdisk check -r on qcow2 agrees with qemu-img check -r', () => {
  const cases: Array<[string, string[], Damage]> = [
    ['a leaked cluster', [], (b, { cs, refBlock }) => {
      const out = Buffer.concat([b, Buffer.alloc(cs)]);
      out.writeUInt16BE(1, refBlock + 2 * (b.length / cs));
      return out;
    }],
    ['a data cluster with refcount 0', [], (b, { cs, refBlock }) => {
      const out = Buffer.from(b);
      out.writeUInt16BE(0, refBlock + 2 * (b.length / cs - 1));
      return out;
    }],
    ['refcounts raised on used clusters (refcount 2, COPIED set)', [], (b, { cs, refBlock }) => {
      const out = Buffer.from(b);
      for (let c = b.length / cs - 3; c < b.length / cs; c++) out.writeUInt16BE(2, refBlock + 2 * c);
      return out;
    }],
    ['OFLAG_COPIED cleared on an L2 entry', [], (b, { l2 }) => {
      const out = Buffer.from(b);
      out[l2] = out[l2]! & 0x7f;
      return out;
    }],
    ['the refcount block gone from the table', ['-o', 'cluster_size=4096'], (b, { refTable }) => {
      const out = Buffer.from(b);
      out.fill(0, refTable, refTable + 8);
      return out;
    }],
  ];
  for (const [name, args, damage] of cases) {
    itWith(QEMU, `${name}: the same exit codes, then qemu-img check clean and both repairs read alike`, async () => {
      const stem = name.replace(/[^a-z0-9]+/gi, '-');
      const f = await make(`${stem}.qcow2`, args, ['write -P 1 0 100k', 'write -P 2 1M 64k', 'write -c -P 3 2M 64k']);
      const raw = await readFile(f);
      const cs = 2 ** raw.readUInt32BE(20);
      // qemu leaves the file short of a whole last cluster after compressed data: pad it.
      const b = Buffer.concat([raw, Buffer.alloc(Math.ceil(raw.length / cs) * cs - raw.length)]);
      const refTable = Number(b.readBigUInt64BE(48));
      const refBlock = Number(b.readBigUInt64BE(refTable));
      const l1 = Number(b.readBigUInt64BE(40));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
      const bad = damage(b, { cs, refBlock, refTable, l2 });
      const ours = join(dir, `${stem}-ours.qcow2`);
      const theirs = join(dir, `${stem}-qemu.qcow2`);
      await writeFile(ours, bad);
      await writeFile(theirs, bad);
      expect(await ourCheck(ours)).toEqual(await qemuCheck(theirs));
      for (const mode of ['leaks', 'all']) {
        const q = await run('qemu-img', ['check', '-r', mode, '-f', 'qcow2', theirs]);
        const v = await run(process.execPath, [VDISK_BIN, 'check', '-r', mode, ours], { cwd: dir });
        expect(v.code, `vdisk -r ${mode}: ${v.stdout}${v.stderr}\nqemu: ${q.stdout}${q.stderr}`).toBe(q.code);
      }
      expect(await qemuCheck(ours)).toMatchObject({ code: 0, leaks: 0, corruptions: 0 });
      expect(await qemuCheck(theirs)).toMatchObject({ code: 0 });
      expect((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs])).code).toBe(0);
    });
  }
});
