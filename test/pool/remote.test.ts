// Pool members may be remote: an NBD export (here nbdkit serving a VHD file) joins a
// pool beside a local VDI (a fixed VHD inside the export opens as a VHD), its URI is the PV's device hint, the pool reopens through
// that hint, and LVM2 reads the VG from the two members' bytes.
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { create } from '../../src/ops/create.js';
import { Pool } from '../../src/pool/pool.js';
import { expectCode } from '../helpers/errors.js';
import { LVM_TOOLS, lvmPlacement, readAt, withLvm } from '../helpers/lvm.js';
import { itWith, runOk } from '../helpers/oracle.js';
import { readAll } from '../helpers/read.js';
import { freePort, start, stop } from '../helpers/serve.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

describe('remote pool members', () => {
  itWith([...LVM_TOOLS, 'nbdkit', 'qemu-img'], 'an nbd:// export served by nbdkit is a member: LVs span it, the pool reopens through its hint, LVM2 agrees', async () => {
    const dir = await tempDir('vdisk-pool-remote-');
    const far = await tempDir('vdisk-pool-far-');
    // An export cannot grow, so the far side is a fixed VHD (dynamic ones allocate at the end).
    await runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', join(far, 'far.vhd'), '48M']);
    await (await create(join(dir, 'near.vdi'), { format: 'vdi', size: 48 * MiB })).close();
    const port = await freePort();
    const kit = await start('nbdkit', ['-f', '-v', '-p', String(port), '-i', '127.0.0.1', 'file', join(far, 'far.vhd')], far, /listening|bound to/i);
    const uri = `nbd://127.0.0.1:${port}`;

    const pool = await Pool.create('vg0', ['near.vdi', uri], { dir });
    expect(pool.vg.pvs.map((p) => p.device)).toEqual(['near.vdi', uri]);
    await pool.lvCreate('str', 16 * MiB, { stripes: 2, stripeSize: 64 << 10 });
    await pool.lvCreate('span', 56 * MiB);
    const data = new Map([['span', patternBytes(56 * MiB, 3)], ['str', patternBytes(16 * MiB, 4)]]);
    for (const [n, d] of data) await pool.openLv(n).write(d, 0);
    await pool.close();

    // The folder holds only near.vdi; the remote member is found through its hint.
    const again = await Pool.open('vg0', { dir });
    expect(again.warnings).toEqual([]);
    expect(again.missing).toEqual([]);
    for (const [n, d] of data) expect((await readAll(again.openLv(n))).equals(d), n).toBe(true);
    await again.close();
    // Adding by URI is refused once it is a member; --new cannot make an export.
    const p2 = await Pool.open('vg0', { dir });
    await expectCode(p2.add(uri), 'E_EXISTS');
    // (nbdkit serves its one file under any export name, so another name is that member too.)
    await expectCode(p2.add(`nbd://127.0.0.1:${port}/other`), 'E_EXISTS');
    await expectCode(p2.add(`nbd://127.0.0.1:${await freePort()}/none`, { newImages: [{ format: 'vhd', size: 8 * MiB }] }), 'E_UNSUPPORTED');
    await p2.close();

    // Without the server the remote PV is missing: read-only, named by uuid and hint.
    expect(await stop(kit.child)).not.toBeNull();
    const partial = await Pool.open('vg0', { dir });
    expect(partial.readOnly).toBe(true);
    expect(partial.missing.map((m) => m.path)).toEqual([uri]);
    await partial.close();

    // LVM2 judges the bytes: both members as raw files on loop devices.
    const raws = [join(dir, 'near.raw'), join(dir, 'far.raw')];
    await runOk('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', join(dir, 'near.vdi'), raws[0]!]);
    await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', join(far, 'far.vhd'), raws[1]!]);
    await withLvm(raws, async (s) => {
      const [vg] = await s.report('vgs', 'vg_name,pv_count,lv_count', ['vg0']);
      expect(vg).toMatchObject({ vg_name: 'vg0', pv_count: '2', lv_count: '2' });
      const files = new Map(s.devices.map((d, i) => [d, raws[i]!]));
      for (const [n, d] of data) {
        for (const [lvOff, file, off, len] of await lvmPlacement(s, 'vg0', n, files)) {
          expect((await readAt(file, off, len)).equals(d.subarray(lvOff, lvOff + len)), `${n} at ${lvOff}`).toBe(true);
        }
      }
    });
  }, 120_000);
});
