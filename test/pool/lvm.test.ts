// Pools judged by LVM2 both ways: a VG vdisk builds over VHD/VDI/VMDK members is the VG
// pvs/vgs/lvs/pvck/vgck see on the members converted to raw, and a VG LVM2 builds on loop
// devices, converted to VHD/VDI by qemu-img, opens in vdisk with its LVs reading the bytes
// written where LVM2's own reports place them.
import { open as fsOpen, mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { create } from '../../src/ops/create.js';
import { formatId } from '../../src/pool/layout.js';
import { Pool } from '../../src/pool/pool.js';
import { LVM_TOOLS, lvmPlacement, readAt, withLvm } from '../helpers/lvm.js';
import { itWith, runOk } from '../helpers/oracle.js';
import { readAll } from '../helpers/read.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

describe('pools and LVM2', () => {
  itWith([...LVM_TOOLS, 'qemu-img'], 'a VG vdisk makes over VHD, VDI and VMDK members is the VG LVM2 sees: PVs, LVs, segment ranges and data', async () => {
    const dir = await tempDir('vdisk-pool-');
    const members = [
      ['a.vhd', 'vhd', 'vpc', 64 * MiB],
      ['b.vdi', 'vdi', 'vdi', 48 * MiB],
      ['c.vmdk', 'vmdk', 'vmdk', 40 * MiB],
    ] as const;
    for (const [name, fmt, , size] of members) await (await create(join(dir, name), { format: fmt, size })).close();
    const pool = await Pool.create('vg0', members.map((m) => m[0]), { dir });
    await pool.lvCreate('str', 24 * MiB, { stripes: 3, stripeSize: 64 << 10 });
    await pool.lvCreate('lin', 80 * MiB);
    await pool.lvExtend('lin', 92 * MiB);
    const written = new Map<string, Buffer>();
    for (const [name, seed] of [['lin', 7], ['str', 9]] as const) {
      const lv = pool.openLv(name);
      const data = patternBytes(lv.size, seed);
      await lv.write(data, 0);
      await lv.flush();
      written.set(name, data);
      expect((await readAll(lv)).equals(data)).toBe(true);
    }
    const vg = structuredClone(pool.vg);
    await pool.close();

    const raws: string[] = [];
    for (const [name, , qfmt] of members) {
      const raw = join(dir, `${name}.raw`);
      await runOk('qemu-img', ['convert', '-f', qfmt, '-O', 'raw', join(dir, name), raw]);
      raws.push(raw);
    }
    await withLvm(raws, async (s) => {
      const files = new Map(s.devices.map((d, i) => [d, raws[i]!]));
      const [vgs] = await s.report('vgs', 'vg_name,vg_uuid,pv_count,lv_count,vg_extent_size,vg_seqno', ['vg0']);
      expect(vgs).toMatchObject({ vg_name: 'vg0', vg_uuid: formatId(vg.id), pv_count: '3', lv_count: '2', vg_extent_size: String(4 * MiB), vg_seqno: String(vg.seqno) });
      const pvs = await s.report('pvs', 'pv_name,pv_uuid,vg_name,pe_start,pv_pe_count,pv_pe_alloc_count');
      expect(pvs.map((p) => p.pv_uuid).sort()).toEqual(vg.pvs.map((p) => formatId(p.id)).sort());
      for (const p of pvs) {
        const ours = vg.pvs.find((x) => formatId(x.id) === p.pv_uuid)!;
        expect(p).toMatchObject({ vg_name: 'vg0', pe_start: String(MiB), pv_pe_count: String(ours.peCount) });
      }
      const lvs = await s.report('lvs', 'lv_name,lv_size,stripes', ['vg0']);
      expect(Object.fromEntries(lvs.map((l) => [l.lv_name, Number(l.lv_size)]))).toEqual({ lin: written.get('lin')!.length, str: written.get('str')!.length });
      // Segment ranges as LVM2 prints them match our metadata.
      const devOf = new Map(pvs.map((p) => [vg.pvs.find((x) => formatId(x.id) === p.pv_uuid)!.key, p.pv_name!]));
      for (const lv of vg.lvs) {
        const segs = await s.report('lvs', 'seg_start_pe,seg_size_pe,seg_pe_ranges', ['--segments', `vg0/${lv.name}`]);
        expect(segs.map((g) => [Number(g.seg_start_pe), Number(g.seg_size_pe), g.seg_pe_ranges!.trim()])).toEqual(
          lv.segments.map((g) => {
            const len = g.extentCount / g.stripes.length;
            return [g.startExtent, g.extentCount, g.stripes.map((a) => `${devOf.get(a.pv)}:${a.pe}-${a.pe + len - 1}`).join(' ')];
          }),
        );
      }
      for (const d of s.devices) expect((await s.lvmRun('pvck', [d])).code).toBe(0);
      const ck = await s.lvmRun('vgck', ['vg0']);
      expect(ck.code, ck.out).toBe(0);
      expect(ck.out).not.toMatch(/checksum|error|inconsistent/i);
      // The bytes sit where LVM2's metadata says.
      for (const [name, data] of written) {
        for (const [lvOff, file, off, len] of await lvmPlacement(s, 'vg0', name, files)) {
          expect((await readAt(file, off, len)).equals(data.subarray(lvOff, lvOff + len)), `${name} at ${lvOff}`).toBe(true);
        }
      }
    });
  }, 120_000);

  itWith([...LVM_TOOLS, 'qemu-img'], 'a VG LVM2 makes on loop devices, converted to VHD and VDI, opens in vdisk and its LVs read what sits at LVM2\'s offsets', async () => {
    const dir = await tempDir('vdisk-lvm2-');
    const raws = [join(dir, 'a.raw'), join(dir, 'b.raw')];
    await writeFile(raws[0]!, Buffer.alloc(0));
    await writeFile(raws[1]!, Buffer.alloc(0));
    await truncate(raws[0]!, 64 * MiB);
    await truncate(raws[1]!, 48 * MiB);
    const expected = new Map<string, Buffer>();
    await withLvm(raws, async (s) => {
      const files = new Map(s.devices.map((d, i) => [d, raws[i]!]));
      await s.lvm('pvcreate', s.devices);
      await s.lvm('vgcreate', ['vgx', ...s.devices]);
      await s.lvm('lvcreate', ['--driverloaded', 'n', '-y', '-n', 'lin', '-L', '20M', 'vgx']);
      await s.lvm('lvcreate', ['--driverloaded', 'n', '-y', '-n', 'str', '-i', '2', '-I', '64k', '-L', '16M', 'vgx']);
      await s.lvm('lvextend', ['--driverloaded', 'n', '-L', '+12M', 'vgx/lin', s.devices[1]!]);
      for (const [name, seed] of [['lin', 3], ['str', 5]] as const) {
        const place = await lvmPlacement(s, 'vgx', name, files);
        const size = place.reduce((m, [o, , , l]) => Math.max(m, o + l), 0);
        const data = patternBytes(size, seed);
        expected.set(name, data);
        for (const [lvOff, file, off, len] of place) {
          const fh = await fsOpen(file, 'r+');
          await fh.write(data, lvOff, len, off);
          await fh.close();
        }
      }
    });
    const pdir = join(dir, 'pool');
    await mkdir(pdir);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', raws[0]!, join(pdir, 'a.vhd')]);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', raws[1]!, join(pdir, 'b.vdi')]);
    const pool = await Pool.open('vgx', { dir: pdir, readOnly: true });
    try {
      expect(pool.members.map((m) => m.dev?.format).sort()).toEqual(['vdi', 'vhd']);
      expect(pool.vg.lvs.map((l) => l.name)).toEqual(['lin', 'str']);
      expect(pool.vg.lvs[0]!.segments.length).toBe(2);
      for (const [name, data] of expected) {
        const lv = pool.openLv(name);
        expect(lv.size).toBe(data.length);
        expect((await readAll(lv)).equals(data), name).toBe(true);
      }
    } finally {
      await pool.close();
    }
    // The raw files were not touched by the open.
    expect((await readFile(raws[0]!)).length).toBe(64 * MiB);
  }, 120_000);
});
