// `vdisk boot` of an LV holds its pool like `vdisk serve` does: `pool lv extend` from
// another process goes through the control socket while the guest runs.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/pool/pool.js';
import { vdisk } from '../helpers/cli.js';
import { children } from '../helpers/serve.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

describe('vdisk boot of an LV', () => {
  it('answers the pool control socket while the guest runs, and removes it when the run stops', async () => {
    const dir = await tempDir('vdisk-boothold-');
    expect((await vdisk(['pool', 'create', 'vg0', 'a.raw', '--new', 'raw:40M'], dir)).code).toBe(0);
    expect((await vdisk(['pool', 'lv', 'create', 'vg0/sys', '8M'], dir)).code).toBe(0);
    // A boot sector that spins forever (jmp $), so the run lasts until stopped.
    const pool = await Pool.open('vg0', { dir });
    const lv = pool.openLv('sys');
    const mbr = Buffer.alloc(512);
    mbr.set([0xeb, 0xfe], 0);
    mbr.set([0x55, 0xaa], 510);
    await lv.write(mbr, 0);
    await lv.close();
    await pool.close();

    const child = spawn(process.execPath, [VDISK_BIN, 'boot', 'lvm:vg0/sys', '--timeout', '30'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const sock = join(dir, '.vdisk-vg0.ctl');
    for (let i = 0; i < 100 && !(await lstat(sock).catch(() => undefined)); i++) await new Promise((r) => setTimeout(r, 100));
    expect((await lstat(sock)).isSocket()).toBe(true);
    const ext = await vdisk(['pool', 'lv', 'extend', 'vg0/sys', '+4M'], dir);
    expect(ext.code, ext.stderr).toBe(0);
    expect(ext.stderr).toContain(`held by process ${child.pid}`);
    expect(ext.stdout).toContain(`changed from ${8 * MiB} to ${12 * MiB} bytes`);
    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(await lstat(sock).catch(() => undefined)).toBeUndefined();
    const after = await Pool.open('vg0', { dir, readOnly: true });
    expect(after.lvSize('sys')).toBe(12 * MiB);
    await after.close();
  }, 60_000);
});
