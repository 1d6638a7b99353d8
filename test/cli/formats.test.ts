/**
 * `vdisk info --formats`: the capabilities each driver table declares are what works.
 * For every format, each capability it claims is exercised through the CLI on an image
 * it created and judged by qemu-img where qemu reads the result; each capability it
 * does not claim is refused with E_UNSUPPORTED (or, for check, exit 63).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { vdisk } from '../helpers/cli.js';
import { itWith, qemuInfo, runOk } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

interface Listed {
  name: string;
  aliases: string[];
  capabilities: string[];
  createOptions: Record<string, string>;
}

/** qemu-img's name for each format vdisk lists. */
const QEMU_FORMAT: Readonly<Record<string, string>> = { vhd: 'vpc', vhdx: 'vhdx', vmdk: 'vmdk', vdi: 'vdi', qcow2: 'qcow2', raw: 'raw' };

/** Write `data` at `offset` into the image at `path` through the library. */
async function writeInto(path: string, data: Buffer, offset: number): Promise<void> {
  const img = await open(path);
  try {
    await img.write(data, offset);
    await img.flush();
  } finally {
    await img.close();
  }
}

describe('vdisk info --formats', () => {
  let dir: string;
  let listed: Listed[];

  beforeAll(async () => {
    dir = await tempDir('formats-');
    const r = await vdisk(['info', '--formats', '--output', 'json'], dir);
    expect(r.code, r.stderr).toBe(0);
    listed = JSON.parse(r.stdout) as Listed[];
  });

  it('lists every format once, with create among its capabilities, and prints one line each for humans', async () => {
    expect(listed.map((f) => f.name).sort()).toEqual(Object.keys(QEMU_FORMAT).sort());
    for (const f of listed) expect(f.capabilities, f.name).toContain('create');
    expect(listed.find((f) => f.name === 'vhd')?.aliases).toEqual(['vpc']);
    const human = await vdisk(['info', '--formats'], dir);
    expect(human.code, human.stderr).toBe(0);
    const lines = human.stdout.trim().split('\n');
    expect(lines.map((l) => l.split(/\s+/)[0])).toEqual(listed.map((f) => f.name));
    for (const [i, f] of listed.entries()) expect(lines[i]).toContain(f.capabilities.join(' '));
  });

  it('refuses an image together with --formats, and info without either', async () => {
    expect((await vdisk(['info', '--formats', 'x.img'], dir)).code).toBe(1);
    const r = await vdisk(['info'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/needs an image/);
  });

  itWith(['qemu-img'], 'resize, compact and check work exactly for the formats that claim them', async () => {
    for (const f of listed) {
      const q = QEMU_FORMAT[f.name]!;
      const img = join(dir, `m.${f.name}`);
      const c = await vdisk(['create', '-f', f.name, img, '8M'], dir);
      expect(c.code, `${f.name}: ${c.stderr}`).toBe(0);
      await writeInto(img, patternBytes(MiB, 7), 2 * MiB);

      const rs = await vdisk(['resize', img, '16M'], dir);
      if (f.capabilities.includes('resize')) {
        expect(rs.code, `${f.name} resize: ${rs.stderr}`).toBe(0);
        expect((await qemuInfo(img, q))['virtual-size'], f.name).toBe(16 * MiB);
      } else {
        expect(rs.code, f.name).toBe(1);
        expect(rs.stderr, f.name).toMatch(/cannot be resized/);
      }

      // Zero the written megabyte, so a compact has a block to release.
      await writeInto(img, Buffer.alloc(MiB), 2 * MiB);
      const cp = await vdisk(['compact', img], dir);
      if (f.capabilities.includes('compact')) {
        expect(cp.code, `${f.name} compact: ${cp.stderr}`).toBe(0);
        const size = (await qemuInfo(img, q))['virtual-size'] as number;
        const zeros = join(dir, `zeros-${f.name}.raw`);
        await runOk('qemu-img', ['create', '-f', 'raw', zeros, String(size)]);
        await runOk('qemu-img', ['compare', '-f', q, '-F', 'raw', img, zeros]);
      } else {
        expect(cp.code, f.name).toBe(1);
        expect(cp.stderr, f.name).toMatch(/no blocks to release/);
      }

      const ck = await vdisk(['check', img], dir);
      expect(ck.code, `${f.name} check: ${ck.stdout}${ck.stderr}`).toBe(f.capabilities.includes('check') ? 0 : 63);
    }
  }, 180_000);

  itWith(['qemu-img'], 'differencing, commit and relink work exactly for the formats that claim them', async () => {
    for (const f of listed) {
      const q = QEMU_FORMAT[f.name]!;
      const base = join(dir, `base.${f.name}`);
      const other = join(dir, `other.${f.name}`);
      const child = join(dir, `child.${f.name}`);
      expect((await vdisk(['create', '-f', f.name, base, '4M'], dir)).code, f.name).toBe(0);
      expect((await vdisk(['create', '-f', f.name, other, '4M'], dir)).code, f.name).toBe(0);
      const mk = await vdisk(['create', '-f', f.name, '-b', base, '-F', f.name, child], dir);
      if (!f.capabilities.includes('differencing')) {
        expect(mk.code, f.name).toBe(1);
        for (const op of [['commit', child], ['rebase', '-u', '-b', other, child]]) {
          const r = await vdisk(op, dir);
          expect(r.code, `${f.name} ${op[0]}`).toBe(1);
        }
        continue;
      }
      expect(mk.code, `${f.name} create -b: ${mk.stderr}`).toBe(0);
      const data = patternBytes(MiB, 11);
      await writeInto(child, data, MiB);

      if (f.capabilities.includes('relink')) {
        // Away to an identical empty parent and back (-u: only the link changes).
        const away = await vdisk(['rebase', '-u', '-b', other, child], dir);
        expect(away.code, `${f.name} rebase: ${away.stderr}`).toBe(0);
        const info = JSON.parse((await vdisk(['info', '--output', 'json', child], dir)).stdout) as Record<string, unknown>;
        expect(info['backing-filename'], f.name).toMatch(/other\./);
        expect((await vdisk(['rebase', '-u', '-b', base, child], dir)).code, f.name).toBe(0);
      } else {
        const r = await vdisk(['rebase', '-u', '-b', other, child], dir);
        expect(r.code, f.name).toBe(1);
        expect(r.stderr, f.name).toMatch(/cannot change their backing file/);
      }

      expect(f.capabilities, f.name).toContain('commit');
      const cm = await vdisk(['commit', child], dir);
      expect(cm.code, `${f.name} commit: ${cm.stderr}`).toBe(0);
      // The parent, standing alone, now holds what was written into the child.
      const expected = join(dir, `expected-${f.name}.raw`);
      const raw = Buffer.alloc(4 * MiB);
      data.copy(raw, MiB);
      await writeFile(expected, raw);
      await runOk('qemu-img', ['compare', '-f', q, '-F', 'raw', base, expected]);
    }
  }, 180_000);
});
