/**
 * qcow2 through the CLI as users run it: `vdisk map` agrees with `qemu-img map`, and
 * `vdisk convert` from qcow2 (chains and compressed clusters included) to the other
 * formats passes `qemu-img compare`. Needs `npm run build`.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { itWith, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, patternBytes, tempDir } from '../../helpers/tmp.js';

const QEMU = ['qemu-img', 'qemu-io'];
let dir = '';

function vdisk(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [VDISK_BIN, ...args], { cwd: dir });
}

beforeAll(async () => {
  dir = await tempDir('vdisk-qcow2-cli-');
  await writeFile(join(dir, 'base.raw'), patternBytes(8 * 1024 * 1024, 7));
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', join(dir, 'base.qcow2'), '8M']);
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', '-c', 'write -z 2M 256k', '-c', 'write -c -P 0x12 4M 64k', join(dir, 'base.qcow2')]);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'), '12M']);
  await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x13 100k 3k', '-c', 'write -P 0x14 9M 1M', '-c', 'write -z 5M 64k', join(dir, 'top.qcow2')]);
}, 60_000);

describe('vdisk on qcow2', () => {
  itWith(QEMU, 'map --output json is qemu-img map without host offsets', async () => {
    for (const f of ['base.qcow2', 'top.qcow2']) {
      const r = await vdisk('map', '--output', 'json', f);
      expect(r.code, r.stderr).toBe(0);
      const ours = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
      const qemu = (JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'qcow2', join(dir, f)])) as Array<Record<string, unknown>>).map((m) => {
        const { offset: _offset, ...rest } = m;
        return rest;
      });
      expect(ours, f).toEqual(qemu);
    }
  });

  for (const fmt of ['vhd', 'vdi', 'vmdk', 'raw'] as const) {
    itWith(QEMU, `convert a qcow2 chain to ${fmt} passes qemu-img compare`, async () => {
      const out = `top-${fmt}.${fmt}`;
      const r = await vdisk('convert', '-O', fmt, 'top.qcow2', out);
      expect(r.code, r.stderr).toBe(0);
      expect(await qemuSame(join(dir, 'top.qcow2'), 'qcow2', join(dir, out), fmt)).toBe(true);
    });
  }

  itWith(QEMU, 'info names the backing file and its format', async () => {
    const r = await vdisk('info', '--output', 'json', 'top.qcow2');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j['backing-filename']).toBe('base.qcow2');
    expect(j.format).toBe('qcow2');
  });
});
