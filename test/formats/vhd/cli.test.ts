/** `vdisk create -f vhd|vpc` and `vdisk info` on VHDs, through the built CLI. */
import { describe, expect, it } from 'vitest';
import { run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../../helpers/tmp.js';

const dir = await tempDir('vdisk-vhd-cli-');

function vdisk(...args: string[]) {
  return run('node', [VDISK_BIN, ...args], { cwd: dir });
}

interface Report {
  'virtual-size': number;
  format: string;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: { type: string; data: Record<string, unknown> };
}

describe('vdisk CLI with VHD', () => {
  it('creates dynamic, fixed and differencing VHDs and reports their facts as JSON', async () => {
    expect((await vdisk('create', '-q', '-f', 'vhd', '-o', 'subformat=dynamic,block_size=512K', 'base.vhd', '10M')).code).toBe(0);
    expect((await vdisk('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', 'fixed.vhd', '3M')).code).toBe(0);
    expect((await vdisk('create', '-q', '-f', 'vhd', '-b', 'base.vhd', 'child.vhd')).code).toBe(0);

    const base = JSON.parse((await vdisk('info', '--output', 'json', 'base.vhd')).stdout) as Report;
    expect(base.format).toBe('vhd');
    expect(base['virtual-size']).toBe(10 * 1024 * 1024);
    expect(base['cluster-size']).toBe(512 * 1024);
    const bd = base['format-specific']!.data;
    expect(bd).toMatchObject({ type: 'dynamic', 'block-size': 524288, 'allocated-blocks': 0, 'total-blocks': 20, creator: { application: 'vdsk' } });
    // The spec's 301x4x17 would be 10 475 520 bytes under qemu; 32x16x40 is 10 MiB exactly.
    expect(bd.geometry).toEqual({ cylinders: 32, heads: 16, 'sectors-per-track': 40 });

    const fixed = JSON.parse((await vdisk('info', '--output', 'json', 'fixed.vhd')).stdout) as Report;
    expect(fixed['format-specific']!.data).toMatchObject({ type: 'fixed', 'current-size': 3 * 1024 * 1024 });

    const chain = JSON.parse((await vdisk('info', '--output', 'json', '--backing-chain', 'child.vhd')).stdout) as Report[];
    expect(chain).toHaveLength(2);
    const cd = chain[0]!['format-specific']!.data;
    expect(cd.type).toBe('differencing');
    expect(cd['parent-uuid']).toBe(bd.uuid);
    expect(cd['parent-name']).toBe('base.vhd');
    expect(chain[0]!['backing-filename']).toBe('.\\base.vhd');
    expect(chain[0]!['full-backing-filename']).toBe('base.vhd');
    expect(chain[1]!['format-specific']!.data.uuid).toBe(bd.uuid);

    const human = await runOk('node', [VDISK_BIN, 'info', 'child.vhd'], { cwd: dir });
    expect(human).toContain('type: differencing');
    expect(human).toContain('backing file: .\\base.vhd');
  });

  it('refuses azure=on for a dynamic disk or a size that is not whole MiB', async () => {
    const ok = await vdisk('create', '-q', '-f', 'vhd', '-o', 'azure=on', 'az.vhd', '5M');
    expect(ok.code).toBe(0);
    const dynamic = await vdisk('create', '-f', 'vhd', '-o', 'azure=on,subformat=dynamic', 'az2.vhd', '5M');
    expect(dynamic.code).toBe(1);
    expect(dynamic.stderr).toContain('azure=on needs subformat=fixed');
    const odd = await vdisk('create', '-f', 'vhd', '-o', 'azure=on', 'az3.vhd', '5243392');
    expect(odd.code).toBe(1);
    expect(odd.stderr).toContain('whole number of MiB');
    const big = await vdisk('create', '-f', 'vhd', 'big.vhd', '2041G');
    expect(big.code).toBe(1);
    expect(big.stderr).toContain('2040 GiB');
  });
});
