// pool remove moves a member's extents onto the others in chunks (copy, flush, commit)
// while the LVs are in use, then takes the member out: LVM2 sees the smaller VG on the
// members that remain, and every byte written before and during the move reads back.
import { copyFileSync, renameSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { create } from '../../src/ops/create.js';
import { formatId } from '../../src/pool/layout.js';
import { planMove, Pool } from '../../src/pool/pool.js';
import { expectCode } from '../helpers/errors.js';
import { LVM_TOOLS, lvmPlacement, readAt, withLvm } from '../helpers/lvm.js';
import { itWith, runOk } from '../helpers/oracle.js';
import { readAll } from '../helpers/read.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

async function threeMembers(): Promise<string> {
  const dir = await tempDir('vdisk-migrate-');
  for (const [name, fmt, size] of [['a.vhd', 'vhd', 40 * MiB], ['b.vdi', 'vdi', 40 * MiB], ['c.vmdk', 'vmdk', 32 * MiB]] as const) {
    await (await create(join(dir, name), { format: fmt, size })).close();
  }
  return dir;
}

describe('pool remove', () => {
  itWith([...LVM_TOOLS, 'qemu-img'], 'moves linear and striped extents off a member while writers run, and LVM2 sees the VG without it', async () => {
    const dir = await threeMembers();
    const pool = await Pool.create('vg0', ['a.vhd', 'b.vdi', 'c.vmdk'], { dir });
    await pool.lvCreate('str', 16 * MiB, { stripes: 2, stripeSize: 64 << 10 });
    await pool.lvCreate('lin', 40 * MiB);
    const bKey = pool.members.find((m) => m.path.endsWith('b.vdi'))!.key;
    expect(pool.vg.lvs.some((l) => l.segments.some((s) => s.stripes.some((a) => a.pv === bKey)))).toBe(true);
    const data = new Map<string, Buffer>();
    const lvs = new Map(['str', 'lin'].map((n) => [n, pool.openLv(n)]));
    for (const [n, lv] of lvs) {
      const d = patternBytes(lv.size, n.length);
      await lv.write(d, 0);
      data.set(n, d);
    }
    // Writers keep rewriting 64 KiB chunks (each all one byte) while the member is emptied.
    let stop = false;
    let writes = 0;
    const writer = async (name: string, seed: number): Promise<void> => {
      const lv = lvs.get(name)!;
      const d = data.get(name)!;
      const C = 64 << 10;
      let i = seed;
      while (!stop) {
        const off = ((i * 7919) % (lv.size / C)) * C;
        const chunk = Buffer.alloc(C, i & 0xff);
        await lv.write(chunk, off);
        chunk.copy(d, off);
        writes++;
        const back = Buffer.alloc(C);
        await lv.read(back, off);
        expect(back.equals(d.subarray(off, off + C))).toBe(true);
        i++;
        await new Promise((r) => setImmediate(r));
      }
    };
    const seen: number[] = [];
    const tasks = [writer('lin', 1), writer('str', 2), writer('lin', 3)];
    const before = writes;
    const r = await pool.remove('b.vdi', { chunkExtents: 1, progress: (done) => seen.push(done) });
    const during = writes - before;
    stop = true;
    await Promise.all(tasks);
    expect(r.movedExtents).toBe(5);
    expect(during, 'writes made while extents moved').toBeGreaterThan(10);
    expect(seen.at(-1)).toBe(r.movedExtents * 4 * MiB);
    expect(pool.members.map((m) => m.path.split('/').pop())).toEqual(['a.vhd', 'c.vmdk']);
    for (const [n, lv] of lvs) expect((await readAll(lv)).equals(data.get(n)!), n).toBe(true);
    await pool.flush();
    const vg = structuredClone(pool.vg);
    await pool.close();

    // A fresh open agrees; the removed image is no longer a PV.
    const again = await Pool.open('vg0', { dir });
    expect(again.warnings).toEqual([]);
    for (const n of ['str', 'lin']) expect((await readAll(again.openLv(n))).equals(data.get(n)!), n).toBe(true);
    await again.close();
    const head = await readFile(join(dir, 'b.vdi'));
    expect(head.includes(Buffer.from('LABELONE'))).toBe(false);

    const raws: string[] = [];
    for (const [name, fmt] of [['a.vhd', 'vpc'], ['c.vmdk', 'vmdk']] as const) {
      const raw = join(dir, `${name}.raw`);
      await runOk('qemu-img', ['convert', '-f', fmt, '-O', 'raw', join(dir, name), raw]);
      raws.push(raw);
    }
    await withLvm(raws, async (s) => {
      const [vgs] = await s.report('vgs', 'vg_name,pv_count,lv_count,vg_seqno', ['vg0']);
      expect(vgs).toMatchObject({ vg_name: 'vg0', pv_count: '2', lv_count: '2', vg_seqno: String(vg.seqno) });
      const pvs = await s.report('pvs', 'pv_uuid,pv_pe_alloc_count');
      expect(pvs.map((p) => p.pv_uuid).sort()).toEqual(vg.pvs.map((p) => formatId(p.id)).sort());
      const ck = await s.lvmRun('vgck', ['vg0']);
      expect(ck.code, ck.out).toBe(0);
      const lvsR = await s.report('lvs', 'lv_name,lv_size', ['vg0']);
      expect(Object.fromEntries(lvsR.map((l) => [l.lv_name, Number(l.lv_size)]))).toEqual({ str: 16 * MiB, lin: 40 * MiB });
      // Every byte, the moved extents included, sits where LVM2's seg_pe_ranges place it.
      const files = new Map(s.devices.map((d, i) => [d, raws[i]!]));
      for (const n of ['str', 'lin']) {
        for (const [lvOff, file, off, len] of await lvmPlacement(s, 'vg0', n, files)) {
          expect((await readAt(file, off, len)).equals(data.get(n)!.subarray(lvOff, lvOff + len)), `${n} at ${lvOff}`).toBe(true);
        }
      }
    });
  }, 120_000);

  it('an interrupted removal leaves the member unallocatable and a re-run finishes it', async () => {
    const dir = await threeMembers();
    const pool = await Pool.create('vg0', ['a.vhd', 'b.vdi', 'c.vmdk'], { dir });
    await pool.lvCreate('lin', 60 * MiB);
    const lv = pool.openLv('lin');
    const d = patternBytes(lv.size, 5);
    await lv.write(d, 0);
    let steps = 0;
    await expect(
      pool.remove('b.vdi', {
        chunkExtents: 1,
        progress: () => {
          if (++steps === 3) throw new Error('interrupted');
        },
      }),
    ).rejects.toThrow('interrupted');
    await pool.close();
    const p2 = await Pool.open('vg0', { dir });
    const b = p2.vg.pvs.find((p) => p.key === p2.members.find((m) => m.path.endsWith('b.vdi'))!.key)!;
    expect(b.status).not.toContain('ALLOCATABLE');
    expect((await readAll(p2.openLv('lin'))).equals(d)).toBe(true);
    await p2.remove('b.vdi');
    expect((await readAll(p2.openLv('lin'))).equals(d)).toBe(true);
    expect(p2.vg.pvs).toHaveLength(2);
    await p2.close();
  });

  it('a member left with its label by a crash between the last commit and the wipe can be added again', async () => {
    const dir = await threeMembers();
    const pool = await Pool.create('vg0', ['a.vhd', 'b.vdi', 'c.vmdk'], { dir });
    await pool.lvCreate('lin', 60 * MiB);
    const d = patternBytes(60 * MiB, 9);
    await pool.openLv('lin').write(d, 0);
    // Progress reports the last chunk before the commit that drops the member: the
    // file then is what a crash before the wipe would leave.
    const b = join(dir, 'b.vdi');
    let total = 0;
    await pool.remove('b.vdi', {
      progress: (done, all) => {
        total = all;
        if (done === all) copyFileSync(b, `${b}.crash`);
      },
    });
    expect(total).toBeGreaterThan(0);
    await pool.close();
    renameSync(`${b}.crash`, b);
    const p2 = await Pool.open('vg0', { dir });
    expect(p2.members.map((m) => m.path.split('/').pop())).toEqual(['a.vhd', 'c.vmdk']);
    await p2.add('b.vdi');
    expect(p2.vg.pvs).toHaveLength(3);
    // Another VG's member is still refused.
    await (await create(join(dir, 'x.vhd'), { format: 'vhd', size: 16 * MiB })).close();
    await (await Pool.create('vg1', ['x.vhd'], { dir })).close();
    await expectCode(p2.add('x.vhd'), 'E_EXISTS');
    await p2.close();
    const p3 = await Pool.open('vg0', { dir });
    expect(p3.warnings).toEqual([]);
    expect(p3.members).toHaveLength(3);
    expect((await readAll(p3.openLv('lin'))).equals(d)).toBe(true);
    await p3.close();
  });

  it('refuses what it cannot do: no room elsewhere, the last member, a stranger', async () => {
    const dir = await threeMembers();
    const pool = await Pool.create('vg0', ['a.vhd', 'b.vdi'], { dir });
    await pool.lvCreate('big', 60 * MiB);
    await expectCode(pool.remove('b.vdi'), 'E_NOSPC');
    await expectCode(pool.remove('c.vmdk'), 'E_NOENT');
    await pool.lvRemove('big');
    await pool.remove('b.vdi');
    await expectCode(pool.remove('a.vhd'), 'E_USAGE');
    await pool.close();
    expect(planMove((await Pool.open('vg0', { dir, readOnly: true })).vg, 'pv0', 1)).toBeUndefined();
  });
});
