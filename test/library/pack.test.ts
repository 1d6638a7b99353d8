/**
 * The package as users get it: `npm pack`, install the tarball into a fresh project,
 * type-check a file that imports `open`, and run it.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/tmp.js';

const execFileP = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-pack-');
});

describe('npm package', () => {
  it('installs from its tarball, type-checks and runs for a consumer', async () => {
    const { stdout } = await execFileP('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: root, encoding: 'utf8' });
    const tarball = join(dir, stdout.trim().split('\n').pop()!.trim());
    const app = join(dir, 'app');
    await execFileP('mkdir', ['-p', app]);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    // Dependencies come from the npm cache that `npm ci` filled.
    await execFileP('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app, encoding: 'utf8' });
    await writeFile(
      join(app, 'main.ts'),
      [
        "import { create, open, VdiskError, type BlockDevice } from 'vdisk';",
        "import { Pool, openLv } from 'vdisk/pool';",
        "import { NbdServer, isNbdUri } from 'vdisk/nbd';",
        "const made = await create('x.img', { format: 'raw', size: '1M' });",
        "await made.write(Buffer.from('hi'), 512);",
        'await made.close();',
        "const img: BlockDevice = await open('x.img', { readOnly: true });",
        'const b = Buffer.alloc(2);',
        'await img.read(b, 512);',
        "console.log(img.size, b.toString(), new VdiskError('E_USAGE', 'x').code, img.extentsReadContent ? 'scan' : 'seek');",
        'await img.close();',
        // The subpath entry points: a pool over a VHD and a VDI, its LV opened by address.
        "const pool = await Pool.create('vg0', ['a.vhd', 'b.vdi'], { newImages: [{ format: 'vhd', size: 16 << 20 }, { format: 'vdi', size: 16 << 20 }] });",
        "await pool.lvCreate('data', 20 << 20);",
        'await pool.close();',
        "const lv = await open('lvm:vg0/data');",
        "await lv.write(Buffer.from('pool'), 18 << 20);",
        'await lv.close();',
        "const back = await openLv('lvm:vg0/data', { readOnly: true });",
        'const p = Buffer.alloc(4);',
        'await back.read(p, 18 << 20);',
        "console.log(back.size, p.toString(), isNbdUri('nbd://127.0.0.1/x'), typeof NbdServer);",
        'await back.close();',
        '',
      ].join('\n'),
    );
    // The consumer has no @types/node of its own; borrow ours for the Buffer/console types.
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, typeRoots: [join(root, 'node_modules', '@types')], types: ['node'], outDir: 'out' },
      }),
    );
    await execFileP(process.execPath, [tsc, '--noEmit', '-p', app], { cwd: app, encoding: 'utf8' });
    await execFileP(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' });
    const run = await execFileP(process.execPath, [join(app, 'out', 'main.js')], { cwd: app, encoding: 'utf8' });
    // On linux-x64 the prebuilt SEEK_DATA/SEEK_HOLE addon ships in the package and loads from it.
    const holes = `${process.platform}-${process.arch}` === 'linux-x64' && process.env.VDISK_NO_NATIVE !== '1' ? 'seek' : 'scan';
    expect(run.stdout.trim()).toBe(`1048576 hi E_USAGE ${holes}\n${20 << 20} pool true function`);
    const cli = await execFileP(join(app, 'node_modules', '.bin', 'vdisk'), ['info', '--output', 'json', 'x.img'], { cwd: app, encoding: 'utf8' });
    expect(JSON.parse(cli.stdout)).toMatchObject({ format: 'raw', 'virtual-size': 1048576 });
  }, 180_000);
});
