import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/tmp.js';

const execFileP = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-docs-');
});

describe('API docs', () => {
  it('typedoc builds the public surface with no warnings (treatWarningsAsErrors)', async () => {
    const typedoc = join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');
    const r = await execFileP(process.execPath, [typedoc, '--out', dir], { cwd: root, encoding: 'utf8' });
    expect(r.stdout + r.stderr).not.toMatch(/warning/i);
    const { stdout } = await execFileP('ls', [join(dir, 'functions')], { encoding: 'utf8' });
    expect(stdout).toContain('open.html');
    expect(stdout).toContain('create.html');
  }, 120_000);
});
