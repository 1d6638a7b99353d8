import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
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
    const pages = stdout.split('\n');
    // The main entry point shows the operations, each with its example.
    for (const op of ['open', 'create', 'convert', 'check', 'commit', 'compare', 'resize', 'compact', 'rebase', 'info', 'map', 'createOva', 'extractPackage', 'readPartitions']) {
      expect(pages, op).toContain(`vdisk.${op}.html`);
      expect(await readFile(join(dir, 'functions', `vdisk.${op}.html`), 'utf8'), `${op}: example`).toMatch(/Example/);
    }
    // Plumbing is documented under its subpath, not the main entry point.
    expect(pages).toContain('vdisk_driver.blockPieces.html');
    expect(pages).not.toContain('vdisk.blockPieces.html');
    const modules = await execFileP('ls', [join(dir, 'modules')], { encoding: 'utf8' });
    for (const m of ['vdisk.html', 'vdisk_driver.html', 'vdisk_testing.html', 'vdisk_nbd.html']) expect(modules.stdout.split('\n')).toContain(m);
  }, 120_000);
});
