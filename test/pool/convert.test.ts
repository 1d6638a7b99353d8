// convert -O lvm writes a new LV: built under a temporary LV name and renamed in one
// commit, so LVM2 sees either no LV or the finished one; judged by LVM2's segment
// ranges on the members converted to raw, and by qemu-img compare on the LV read back.
import { spawnSync } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { create } from '../../src/ops/create.js';
import { Pool } from '../../src/pool/pool.js';
import { LVM_TOOLS, lvmPlacement, readAt, withLvm } from '../helpers/lvm.js';
import { itWith, run, runOk } from '../helpers/oracle.js';
import { readAll } from '../helpers/read.js';
import { VDISK_BIN, patternBytes, tempDir } from '../helpers/tmp.js';
import { writePatternRaw } from '../ops/variants.js';

const MiB = 1 << 20;

function vdisk(dir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [VDISK_BIN, ...args], { cwd: dir });
}

/** A pool vg0 over a VHD, a VDI and a VMDK, made through the CLI. */
async function threeMemberPool(): Promise<string> {
  const dir = await tempDir('vdisk-pool-convert-');
  const r = await vdisk(dir, 'pool', 'create', 'vg0', 'a.vhd', 'b.vdi', 'c.vmdk', '--new', 'vhd:40M', '--new', 'vdi:40M', '--new', 'vmdk:40M');
  expect(r.code, r.stderr).toBe(0);
  return dir;
}

/** The members as raw files, for LVM2 on loop devices. */
async function rawMembers(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const [name, fmt] of [['a.vhd', 'vpc'], ['b.vdi', 'vdi'], ['c.vmdk', 'vmdk']] as const) {
    const raw = join(dir, `${name}.raw`);
    await runOk('qemu-img', ['convert', '-f', fmt, '-O', 'raw', join(dir, name), raw]);
    out.push(raw);
  }
  return out;
}

describe('convert -O lvm', () => {
  itWith([...LVM_TOOLS, 'qemu-img', 'mkfs.ext4'], 'a real ext4 image and a sparse pattern become LVs that LVM2 places byte for byte, over extents a removed LV had filled', async () => {
    const dir = await threeMemberPool();
    // Dirty the free space first: an LV full of 0xff, then removed, so a convert that
    // skipped the source's holes would leave 0xff showing through.
    const dirty = await Pool.open('vg0', { dir });
    await dirty.lvCreate('old', 100 * MiB);
    const old = dirty.openLv('old');
    await old.write(Buffer.alloc(old.size, 0xff), 0);
    await old.close();
    await dirty.lvRemove('old');
    await dirty.close();

    // A 24 MiB ext4 filesystem holding real files, and an odd-sized sparse pattern.
    const fsImg = join(dir, 'fs.raw');
    const tree = join(dir, 'tree');
    await runOk('mkdir', ['-p', tree]);
    await runOk('cp', ['-r', '/usr/share/common-licenses', tree]);
    await runOk('mkfs.ext4', ['-q', '-F', '-d', tree, fsImg, '24M']);
    const pattern = join(dir, 'pattern.raw');
    await writePatternRaw(pattern, 9 * MiB + 7 * 512);

    let r = await vdisk(dir, 'convert', '-O', 'lvm', fsImg, 'lvm:vg0/fs');
    expect(r.code, r.stderr).toBe(0);
    r = await vdisk(dir, 'convert', '-O', 'lvm', '-o', 'stripes=3,stripe_size=64K', '-p', pattern, 'lvm:vg0/pat');
    expect(r.code, r.stderr).toBe(0);

    // Read back through vdisk as qemu-img judges it.
    for (const [src, lv] of [[fsImg, 'fs'], [pattern, 'pat']] as const) {
      const back = join(dir, `${lv}.back.raw`);
      expect((await vdisk(dir, 'convert', '-O', 'raw', `lvm:vg0/${lv}`, back)).code).toBe(0);
      // The LV is whole extents; compare the source's length.
      await runOk('truncate', ['-s', String((await stat(src)).size), back]);
      expect(spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', src, back]).status, `${lv} read back`).toBe(0);
    }

    const raws = await rawMembers(dir);
    await withLvm(raws, async (s) => {
      const files = new Map(s.devices.map((d, i) => [d, raws[i]!]));
      const lvs = await s.report('lvs', 'lv_name,lv_size,stripes', ['vg0']);
      expect(Object.fromEntries(lvs.map((l) => [l.lv_name, [Number(l.lv_size), l.stripes]]))).toEqual({ fs: [24 * MiB, '1'], pat: [12 * MiB, '3'] });
      const ck = await s.lvmRun('vgck', ['vg0']);
      expect(ck.code, ck.out).toBe(0);
      for (const [src, lv] of [[fsImg, 'fs'], [pattern, 'pat']] as const) {
        const want = Buffer.alloc(lv === 'fs' ? 24 * MiB : 12 * MiB);
        (await readFile(src)).copy(want);
        for (const [lvOff, file, off, len] of await lvmPlacement(s, 'vg0', lv, files)) {
          expect((await readAt(file, off, len)).equals(want.subarray(lvOff, lvOff + len)), `${lv} at ${lvOff}`).toBe(true);
        }
      }
    });
  }, 180_000);

  itWith(['qemu-img'], 'an existing LV is kept unless --force, which swaps in the copy in one commit; a failed copy leaves nothing behind', async () => {
    const dir = await threeMemberPool();
    const a = join(dir, 'a.raw');
    const b = join(dir, 'b.raw');
    await writeFile(a, patternBytes(8 * MiB, 1));
    await writeFile(b, patternBytes(6 * MiB, 2));
    expect((await vdisk(dir, 'convert', '-O', 'lvm', a, 'lvm:vg0/disk')).code).toBe(0);
    const kept = await vdisk(dir, 'convert', '-O', 'lvm', b, 'lvm:vg0/disk');
    expect(kept.code).toBe(1);
    expect(kept.stderr).toMatch(/E_EXISTS|already has an LV disk/);
    let p = await Pool.open('vg0', { dir });
    const seq = p.vg.seqno;
    expect((await readAll(p.openLv('disk'))).equals(patternBytes(8 * MiB, 1))).toBe(true);
    await p.close();

    const forced = await vdisk(dir, 'convert', '-O', 'lvm', '--force', b, 'lvm:vg0/disk');
    expect(forced.code, forced.stderr).toBe(0);
    p = await Pool.open('vg0', { dir });
    // create the build LV, rename it over the old one: two commits
    expect(p.vg.seqno).toBe(seq + 2);
    expect(p.vg.lvs.map((l) => l.name)).toEqual(['disk']);
    expect((await readAll(p.openLv('disk'))).equals(Buffer.concat([patternBytes(6 * MiB, 2), Buffer.alloc(2 * MiB)]))).toBe(true);
    await p.close();

    // Too big for the free space: E_NOSPC, and no build LV stays behind.
    const big = join(dir, 'big.raw');
    await runOk('truncate', ['-s', '400M', big]);
    const nospc = await vdisk(dir, 'convert', '-O', 'lvm', big, 'lvm:vg0/big');
    expect(nospc.code).toBe(1);
    expect(nospc.stderr).toMatch(/more extents/);
    p = await Pool.open('vg0', { dir });
    expect(p.vg.lvs.map((l) => l.name)).toEqual(['disk']);
    // A build LV an interrupted convert left is removed by the next one, which says so.
    await p.lvCreate('new.vdisk-convert', 4 * MiB);
    await p.close();
    const again = await vdisk(dir, 'convert', '-O', 'lvm', a, 'lvm:vg0/new');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/removed lvm:vg0\/new\.vdisk-convert, left by an interrupted convert/);
    p = await Pool.open('vg0', { dir });
    expect(p.vg.lvs.map((l) => l.name).sort()).toEqual(['disk', 'new']);
    await p.close();
  }, 120_000);

  itWith([], 'usage errors cost nothing: -O lvm needs an lvm: address and the reverse, bad -o keys and counts', async () => {
    const dir = await threeMemberPool();
    const a = join(dir, 'a.raw');
    await (await create(a, { format: 'raw', size: 4 * MiB })).close();
    for (const args of [
      ['-O', 'lvm', a, 'out.raw'],
      ['-O', 'raw', a, 'lvm:vg0/x'],
      ['-O', 'lvm', '-o', 'subformat=fixed', a, 'lvm:vg0/x'],
      ['-O', 'lvm', '-o', 'stripes=two', a, 'lvm:vg0/x'],
      ['-O', 'lvm', '-o', 'stripes=4', a, 'lvm:vg0/x'],
      ['-O', 'lvm', a, 'lvm:vg0/-bad'],
    ]) {
      const r = await vdisk(dir, 'convert', ...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/^vdisk: /);
    }
    const p = await Pool.open('vg0', { dir });
    expect(p.vg.lvs).toEqual([]);
    await p.close();
  });
});
