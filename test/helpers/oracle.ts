/**
 * Real tools that judge our output. A test that needs one asks here: when the tool
 * is missing the test is skipped with the reason, or fails when
 * VDISK_REQUIRE_ORACLES=1 (CI), so a CI machine without the oracle cannot pass.
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { it } from 'vitest';

const execFileP = promisify(execFile);

/** True when CI demands every oracle. */
export const REQUIRE_ORACLES = process.env.VDISK_REQUIRE_ORACLES === '1';

const PATH_EXTRA = ['/usr/sbin', '/sbin', '/usr/local/sbin'];
const found = new Map<string, string | null>();

/** Absolute path of `tool` on PATH (or the sbin folders), or null. */
export function findTool(tool: string): string | null {
  if (found.has(tool)) return found.get(tool) ?? null;
  const path = [process.env.PATH ?? '', ...PATH_EXTRA].join(':');
  const r = spawnSync('sh', ['-c', `command -v "$0"`, tool], { env: { ...process.env, PATH: path }, encoding: 'utf8' });
  const p = r.status === 0 ? r.stdout.trim() : '';
  const result = p ? p : null;
  found.set(tool, result);
  return result;
}

/** The tools in `tools` that are missing. */
export function missingTools(tools: readonly string[]): string[] {
  return tools.filter((t) => !findTool(t));
}

/**
 * `it` that needs oracle tools: runs when all are present, otherwise skips naming
 * what is missing, or fails under VDISK_REQUIRE_ORACLES=1.
 */
export function itWith(tools: readonly string[], name: string, fn: () => Promise<void> | void, timeout?: number): void {
  const missing = missingTools(tools);
  if (missing.length === 0) {
    it(name, fn, timeout);
  } else if (REQUIRE_ORACLES) {
    it(name, () => {
      throw new Error(`oracle missing: ${missing.join(', ')} (VDISK_REQUIRE_ORACLES=1)`);
    });
  } else {
    it.skip(`${name} [skipped: ${missing.join(', ')} not installed]`, () => undefined);
  }
}

/** Result of running a tool. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `tool args…` and return exit code and output (never throws on a non-zero exit). */
export async function run(tool: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  const bin = findTool(tool) ?? tool;
  try {
    const { stdout, stderr } = await execFileP(bin, args as string[], {
      cwd: opts.cwd,
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 256 * 1024 * 1024,
      encoding: 'utf8',
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Run `tool args…` and return stdout; throw with stderr when it exits non-zero. */
export async function runOk(tool: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(tool, args, opts);
  if (r.code !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** qemu's name for a format: `vpc` for VHD. */
function qemuFormat(fmt: string): string {
  return fmt === 'vhd' ? 'vpc' : fmt;
}

/** `qemu-img info --output json` of a file. */
export async function qemuInfo(file: string, fmt?: string): Promise<Record<string, unknown>> {
  // Plainly, as a user runs it: qemu must size our VHDs right without force_size_calc.
  const args = fmt ? ['info', '--output', 'json', '-f', qemuFormat(fmt), file] : ['info', '--output', 'json', file];
  return JSON.parse(await runOk('qemu-img', args)) as Record<string, unknown>;
}

/** `qemu-img compare` of two images: true when identical (exit 0), false when they differ (exit 1). */
export async function qemuSame(a: string, fa: string, b: string, fb: string): Promise<boolean> {
  const r = await run('qemu-img', ['compare', '-f', qemuFormat(fa), '-F', qemuFormat(fb), a, b]);
  if (r.code > 1) throw new Error(`qemu-img compare failed: ${r.stderr}`);
  return r.code === 0;
}
