// `npm run fuzz`: a short pass over every reader (the long runs are by hand; see the
// README), and proof that the harness catches what it claims to catch.
import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/tmp.js';

const execFileP = promisify(execFile);
const FUZZ = new URL('../../scripts/fuzz.mjs', import.meta.url).pathname;

interface TargetStats {
  cases: number;
  opened: number;
  outcomes: Record<string, number>;
  rejected: Record<string, number>;
  crashes: Array<{ index: number; error: string; fixture: string; replay: string }>;
}

async function fuzz(args: string[]): Promise<{ code: number; report: Record<string, TargetStats>; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [FUZZ, '--json', ...args], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, report: JSON.parse(stdout) as Record<string, TargetStats>, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, report: e.stdout ? (JSON.parse(e.stdout) as Record<string, TargetStats>) : {}, stderr: e.stderr };
  }
}

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-fuzz-');
});

describe('npm run fuzz', () => {
  it('a short pass of every target: no crash, and the damage both opens and is refused', async () => {
    const cases = 120;
    const r = await fuzz(['--target', 'all', '--cases', String(cases), '--seed', '22', '--crashes', join(dir, 'crashes')]);
    expect(r.stderr).toBe('');
    const names = Object.keys(r.report);
    for (const t of ['vhd-dynamic', 'vhd-fixed', 'vhd-differencing', 'vdi-dynamic', 'vdi-differencing', 'vmdk-sparse', 'vmdk-stream', 'vmdk-descriptor', 'ova', 'ovf-descriptor', 'zip', 'gpt', 'mbr']) {
      expect(names).toContain(t);
    }
    for (const [name, s] of Object.entries(r.report)) {
      expect(s.crashes, name).toEqual([]);
      expect(s.cases, name).toBe(cases);
      expect(s.opened, name).toBeGreaterThan(0);
      if (name === 'gpt' || name === 'mbr') {
        // Partition readers report damage as problems rather than refusing the disk.
        expect(Object.keys(s.outcomes).some((k) => k.includes('with problems')), name).toBe(true);
      } else {
        expect(s.cases - s.opened, name).toBeGreaterThan(cases / 20);
      }
    }
    expect(r.code).toBe(0);
  }, 300_000);

  it('a crash, a hang, a heap blow-up and a dropped promise are each caught, saved with their seed, and replay alone', async () => {
    const crashes = join(dir, 'selftest');
    const r = await fuzz(['--target', 'harness-selftest', '--cases', '12', '--seed', '3', '--timeout', '4000', '--memory', '256', '--crashes', crashes]);
    expect(r.code).toBe(1);
    const s = r.report['harness-selftest']!;
    expect(s.cases).toBe(12);
    expect(s.opened).toBe(8);
    const byCase = new Map(s.crashes.map((c) => [c.index, c.error]));
    expect(byCase.get(3)).toMatch(/TypeError: deliberate crash/);
    expect(byCase.get(5)).toMatch(/no answer within 4000 ms/);
    expect(byCase.get(7)).toMatch(/heap out of memory/);
    expect(byCase.get(9)).toMatch(/never settled/);
    expect((await readdir(crashes)).sort()).toEqual([3, 5, 7, 9].map((i) => `harness-selftest-seed3-case${i}`));
    const saved = JSON.parse(await readFile(join(crashes, 'harness-selftest-seed3-case3', 'case.json'), 'utf8')) as { seed: number; case: number; mutation: string; replay: string };
    expect(saved).toMatchObject({ seed: 3, case: 3, replay: 'npm run fuzz -- --target harness-selftest --seed 3 --case 3' });
    // The saved bytes are the ones the replay makes.
    const again = await fuzz(['--target', 'harness-selftest', '--seed', '3', '--case', '3', '--crashes', join(dir, 'replay')]);
    expect(again.report['harness-selftest']!.crashes.map((c) => c.index)).toEqual([3]);
    const a = await readFile(join(crashes, 'harness-selftest-seed3-case3', 'x.bin'));
    const b = await readFile(join(dir, 'replay', 'harness-selftest-seed3-case3', 'x.bin'));
    expect(a.equals(b)).toBe(true);
    const replayed = JSON.parse(await readFile(join(dir, 'replay', 'harness-selftest-seed3-case3', 'case.json'), 'utf8')) as { mutation: string };
    expect(replayed.mutation).toBe(saved.mutation);
  }, 120_000);

  it('an unknown target or a bad number is a clear error', async () => {
    const r = await fuzz(['--target', 'nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no fuzz target "nope"/);
    const n = await fuzz(['--cases', 'lots']);
    expect(n.code).toBe(2);
    expect(n.stderr).toMatch(/--cases must be a whole number/);
  });
});
