/**
 * Resize of split disks with small pieces, judged by qemu-img: a grow fills the last
 * piece up to the disk's own piece size (its first piece's) and adds a new piece file;
 * a shrink cuts a piece and removes the one past the end. qemu-img info shows the new
 * size, qemu-img check passes, qemu-img compare finds the same content as a raw file
 * given the same changes, and vmdkinfo reads the descriptor.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { itWith, qemuInfo, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../../helpers/tmp.js';

const KiB = 1024;

async function vdisk(cwd: string, ...args: string[]): Promise<void> {
  const r = await run(process.execPath, [VDISK_BIN, ...args], { cwd });
  expect(r.code, r.stderr).toBe(0);
}

/** The same qemu-io command on the disk and on the raw reference. */
async function both(vmdk: string, raw: string, cmd: string): Promise<void> {
  await runOk('qemu-io', ['-f', 'vmdk', '-c', cmd, vmdk]);
  await runOk('qemu-io', ['-f', 'raw', '-c', cmd, raw]);
}

describe('split VMDK resize with small pieces, as qemu-img sees it', () => {
  for (const [sub, letter] of [['twoGbMaxExtentFlat', 'f'], ['twoGbMaxExtentSparse', 's']] as const) {
    itWith(['qemu-img', 'qemu-io', 'vmdkinfo'], `${sub}: grow adds a piece, shrink drops one`, async () => {
      const dir = await tempDir('vdisk-vmdk-split-');
      const d = join(dir, 'd.vmdk');
      const raw = join(dir, 'd.raw');
      // A 1 MiB piece made by vdisk, and a 512 KiB second piece added by hand (qemu makes it).
      await vdisk(dir, 'create', '-f', 'vmdk', '-o', `subformat=${sub}`, 'd.vmdk', '1M');
      const second = `d-${letter}002.vmdk`;
      if (letter === 'f') await writeFile(join(dir, second), Buffer.alloc(512 * KiB));
      else await runOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicSparse', join(dir, second), '512K']);
      const text = await readFile(d, 'utf8');
      const line = letter === 'f' ? `RW 1024 FLAT "${second}" 0` : `RW 1024 SPARSE "${second}"`;
      await writeFile(d, text.replace(/(RW 2048 \w+ "d-\w001\.vmdk"(?: 0)?\n)/, `$1${line}\n`));
      await runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, '1536K']);
      expect((await qemuInfo(d, 'vmdk'))['virtual-size']).toBe(1536 * KiB);
      for (const c of ['write -P 0x11 0 64k', 'write -P 0x22 1000k 100k', 'write -P 0x33 1472k 64k']) await both(d, raw, c);

      await vdisk(dir, 'resize', 'd.vmdk', '3M');
      await runOk('qemu-img', ['resize', '-q', '-f', 'raw', raw, '3M']);
      expect((await readdir(dir)).filter((n) => n.startsWith('d-')).sort()).toEqual([`d-${letter}001.vmdk`, `d-${letter}002.vmdk`, `d-${letter}003.vmdk`]);
      expect(await readFile(d, 'utf8')).toMatch(new RegExp(`RW 2048 \\w+ "d-${letter}002\\.vmdk"[^\\n]*\\nRW 2048 \\w+ "d-${letter}003\\.vmdk"`));
      expect((await qemuInfo(d, 'vmdk'))['virtual-size']).toBe(3 * 1024 * KiB);
      const chk = await run('qemu-img', ['check', '-f', 'vmdk', d]);
      expect(chk.code, chk.stdout + chk.stderr).toBe(0);
      await both(d, raw, 'write -P 0x44 2900k 100k');
      expect(await qemuSame(d, 'vmdk', raw, 'raw')).toBe(true);
      expect((await run('vmdkinfo', [d])).stdout).toContain('3145728 bytes');

      await vdisk(dir, 'resize', '--shrink', 'd.vmdk', '768K');
      await runOk('qemu-img', ['resize', '-q', '-f', 'raw', '--shrink', raw, '768K']);
      expect((await readdir(dir)).filter((n) => n.startsWith('d-')).sort()).toEqual([`d-${letter}001.vmdk`]);
      expect((await qemuInfo(d, 'vmdk'))['virtual-size']).toBe(768 * KiB);
      expect(await qemuSame(d, 'vmdk', raw, 'raw')).toBe(true);
      expect((await readdir(dir)).filter((n) => n.includes('vdisk-tmp') || n.endsWith('.lock'))).toEqual([]);
    });
  }
});
