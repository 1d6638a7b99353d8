/**
 * VHDX through the CLI as users run it: `vdisk create -f vhdx -o …`, `vdisk convert
 * -O vhdx` and back, `info`, `map` and `check`, judged by qemu-img and vhdiinfo.
 * Needs `npm run build`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { itWith, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../../helpers/tmp.js';
import { writePatternRaw } from '../../ops/variants.js';

const QEMU = ['qemu-img', 'qemu-io'];
let dir = '';

function vdisk(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [VDISK_BIN, ...args], { cwd: dir });
}

beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-cli-');
  await writePatternRaw(join(dir, 'pattern.raw'));
  await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', join(dir, 'q.vhdx'), '8M']);
  await runOk('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x11 0 1M', '-c', 'write -z 2M 1M', '-c', 'write -P 0x12 5M 64k', join(dir, 'q.vhdx')]);
}, 60_000);

describe('vdisk on vhdx', () => {
  for (const o of ['subformat=dynamic', 'subformat=fixed,block_size=1M', 'subformat=dynamic,block_size=8M,log_size=2M', 'subformat=dynamic,logical_sector_size=4096']) {
    itWith([...QEMU, 'vhdiinfo'], `create -f vhdx -o ${o}`, async () => {
      const f = `c-${o.replace(/[=,]/g, '-')}.vhdx`;
      const r = await vdisk('create', '-f', 'vhdx', '-o', o, f, '20M');
      expect(r.code, r.stderr).toBe(0);
      const v = await runOk('vhdiinfo', [join(dir, f)]);
      expect(v).toContain('(20971520 bytes)');
      expect(v).toMatch(o.includes('fixed') ? /Disk type\s*: Fixed/ : /Disk type\s*: Dynamic/);
      const info = JSON.parse((await vdisk('info', '--output', 'json', f)).stdout) as Record<string, unknown>;
      expect(info).toMatchObject({ format: 'vhdx', 'virtual-size': 20971520 });
      if (!o.includes('4096')) {
        expect(JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', join(dir, f)]))).toMatchObject({ format: 'vhdx', 'virtual-size': 20971520 });
        expect((await run('qemu-img', ['check', '-f', 'vhdx', join(dir, f)])).code).toBe(0);
      }
      expect((await vdisk('check', f)).code).toBe(0);
    });
  }

  itWith(QEMU, 'convert raw → vhdx → vmdk, and a qemu-made vhdx → qcow2, pass qemu-img compare and check', async () => {
    for (const o of ['subformat=dynamic', 'subformat=fixed', 'block_size=1M']) {
      const out = `p-${o.replace(/[=,]/g, '-')}.vhdx`;
      const r = await vdisk('convert', '-O', 'vhdx', '-o', o, 'pattern.raw', out);
      expect(r.code, r.stderr).toBe(0);
      expect(await qemuSame(join(dir, 'pattern.raw'), 'raw', join(dir, out), 'vhdx')).toBe(true);
      expect((await run('qemu-img', ['check', '-f', 'vhdx', join(dir, out)])).code).toBe(0);
      const back = `${out}.vmdk`;
      expect((await vdisk('convert', '-O', 'vmdk', out, back)).code).toBe(0);
      expect(await qemuSame(join(dir, out), 'vhdx', join(dir, back), 'vmdk')).toBe(true);
    }
    expect((await vdisk('convert', '-O', 'qcow2', 'q.vhdx', 'q.qcow2')).code).toBe(0);
    expect(await qemuSame(join(dir, 'q.vhdx'), 'vhdx', join(dir, 'q.qcow2'), 'qcow2')).toBe(true);
  });

  itWith(QEMU, 'map: data inside what qemu-img map calls data, holes read as zeros', async () => {
    const r = await vdisk('map', '--output', 'json', 'q.vhdx');
    expect(r.code, r.stderr).toBe(0);
    const ours = JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
    const qemu = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'vhdx', join(dir, 'q.vhdx')])) as Array<{ start: number; length: number; data: boolean }>;
    await runOk('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', join(dir, 'q.vhdx'), join(dir, 'q.raw')]);
    const raw = await readFile(join(dir, 'q.raw'));
    let pos = 0;
    for (const m of ours) {
      expect(m.start).toBe(pos);
      pos += m.length;
      if (m.data) expect(qemu.some((q) => q.data && q.start <= m.start && m.start + m.length <= q.start + q.length)).toBe(true);
      else expect(raw.subarray(m.start, m.start + m.length).every((b) => b === 0), `${m.start}+${m.length} reads zeros`).toBe(true);
    }
    expect(pos).toBe(raw.length);
    expect(ours.some((m) => !m.data)).toBe(true);
  });

  itWith(QEMU, 'bad options and sizes are usage errors', async () => {
    for (const [o, size] of [['block_size=3M', '8M'], ['block_size=512K', '8M'], ['logical_sector_size=1024', '8M'], ['subformat=sparse', '8M'], ['log_size=1500K', '8M'], ['', '65T'], ['logical_sector_size=4096', '1001k']]) {
      const r = await vdisk('create', '-f', 'vhdx', ...(o ? ['-o', o] : []), `bad-${o}-${size}.vhdx`, size!);
      expect(r.code, `${o} ${size}: ${r.stderr}`).not.toBe(0);
      expect(r.stderr).toMatch(/E_USAGE|vhdx|size/i);
    }
  });
});
