import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { VDISK_BIN } from './tmp.js';

const execFileP = promisify(execFile);

/** What one run of the CLI printed and how it exited. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the built CLI in `cwd`; never throws on a non-zero exit. */
export async function vdisk(args: string[], cwd: string): Promise<CliResult> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [VDISK_BIN, ...args], { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
