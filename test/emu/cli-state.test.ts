/** `vdisk boot --save-state / --stop-after / --restore-state` end to end, in separate processes. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { itWith } from '../helpers/oracle.js';
import { VDISK_BIN, tempDir } from '../helpers/tmp.js';
import { FREEDOS, bootSectorImage, nasm } from './guests.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-emu-cli-state-');
});

function vdisk(...args: string[]) {
  return spawnSync('node', [VDISK_BIN, ...args], { encoding: 'latin1', timeout: 90_000 });
}
/** The guest's COM1 report lines ("D"/"T"), from the merged console on stdout. */
const report = (stdout: string): string[] => stdout.split('\n').filter((l) => /^[DT][0-9A-F]{4} /.test(l));

describe('vdisk boot --save-state / --restore-state', () => {
  itWith(['nasm'], 'a run stopped by --stop-after and resumed in a new process reports what an uninterrupted run does', () => {
    const img = join(dir, 'state.img');
    bootSectorImage(img, nasm(dir, 'state'), 2880);
    const whole = vdisk('boot', img, '--snapshot', '--timeout', '60');
    expect(whole.status).toBe(1); // it ends in cli; hlt
    expect(report(whole.stdout)).toHaveLength(48);
    const st = join(dir, 'a.state');
    const a = vdisk('boot', img, '--snapshot', '--stop-after', '2345678i', '--save-state', st);
    expect(a.status).toBe(0);
    expect(a.stderr).toContain(`vdisk: saved the machine state to ${st} (2345678 instructions)\n`);
    const b = vdisk('boot', img, '--restore-state', st, '--timeout', '60');
    expect(b.status).toBe(1);
    expect([...report(a.stdout), ...report(b.stdout)]).toEqual(report(whole.stdout));
    expect(b.stderr).toBe(whole.stderr);
  });

  it.skipIf(!existsSync(FREEDOS))('Ctrl-C at the FreeDOS prompt saves it; the resumed DOS runs a typed command', async () => {
    const st = join(dir, 'fd.state');
    const child = spawn('node', [VDISK_BIN, 'boot', '--floppy', FREEDOS, '--snapshot', '--save-state', st, '--timeout', '120'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString('latin1')));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no prompt within 90 s; stdout ${JSON.stringify(out)}`)), 90_000);
      child.on('exit', (c) => resolve(c));
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        if (out.includes('A:\\>') && !child.killed) {
          clearTimeout(timer);
          child.kill('SIGINT');
        }
      });
    });
    expect(code).toBe(0);
    expect(err).toMatch(/^vdisk: saved the machine state to .*fd\.state \(\d+ instructions\)\nvdisk: stopped\n$/);
    const r = vdisk('boot', '--floppy', FREEDOS, '--restore-state', st, '--keys', 'dir\\n', '--expect', 'bytes free', '--timeout', '60');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Volume in drive A');
    expect(r.stdout).not.toContain('FreeDOS kernel'); // resumed, not rebooted
  });

  itWith(['nasm'], 'refuses a state for another image, a damaged one, other --memory and bad --stop-after values (exit 2)', () => {
    const img = join(dir, 's2.img');
    bootSectorImage(img, nasm(dir, 'state'), 2880);
    const st = join(dir, 's2.state');
    expect(vdisk('boot', img, '--snapshot', '--stop-after', '100000i', '--save-state', st).status).toBe(0);
    const other = join(dir, 'other.img');
    const bytes = readFileSync(img);
    bytes[600] = 0x42;
    writeFileSync(other, bytes);
    const wrong = vdisk('boot', other, '--restore-state', st);
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/^vdisk: .*s2\.state: hard disk 80h \(.*other\.img\) is not the disk the state was saved with \(.*s2\.img\): its content differs\n$/);
    const floppy = vdisk('boot', '--floppy', img, '--restore-state', st);
    expect(floppy.status).toBe(2);
    expect(floppy.stderr).toContain('the state was saved with hard disk 80h, not floppy 00h');
    const mem = vdisk('boot', img, '--restore-state', st, '--memory', '32');
    expect(mem.status).toBe(2);
    expect(mem.stderr).toContain('the state has 16 MiB of memory, not the --memory 32 asked for');
    const cut = join(dir, 'cut.state');
    writeFileSync(cut, readFileSync(st).subarray(0, 1000));
    const c = vdisk('boot', img, '--restore-state', cut);
    expect(c.status).toBe(2);
    expect(c.stderr).toMatch(/^vdisk: .*cut\.state: /);
    const none = vdisk('boot', img, '--restore-state', join(dir, 'missing.state'));
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('missing.state: no such file');
    for (const bad of ['0', 'soon', '1.5i', '-3']) {
      const r = vdisk('boot', img, '--snapshot', '--stop-after', bad);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('--stop-after must be seconds');
    }
  });

  it('documents save and restore in --help', () => {
    const r = vdisk('boot', '--help');
    expect(r.stdout).toContain('--save-state <file>');
    expect(r.stdout).toContain('--restore-state <file>');
    expect(r.stdout).toContain('--stop-after <S|Ni>');
    expect(r.stdout).toContain('a state file that is damaged, from a newer vdisk, or saved with other images');
  });
});
