/**
 * The package as users get it: `npm pack`, install the tarball into a fresh project,
 * type-check a file that imports `open` (and the subpaths: vdisk/pool, vdisk/nbd,
 * vdisk/driver, vdisk/testing), and run it.
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
        "import { BlockDeviceBase, OverlayDevice, blockPieces, findDriver, rawDriver } from 'vdisk/driver';",
        "import { FaultPlan, FaultStorage, MemoryLocation, MemoryStorage } from 'vdisk/testing';",
        "import { isVdiskError } from 'vdisk';",
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
        // vdisk/driver and vdisk/testing: a raw image made by its driver in a memory folder, read through an overlay,
        // and storage that fails on a plan.
        "const mem = new MemoryLocation('m.raw');",
        'const raw = await rawDriver.create(mem, { size: 1 << 20, options: {} });',
        "await raw.write(Buffer.from('mem'), 0);",
        'const top = new OverlayDevice(raw);',
        'const m = Buffer.alloc(3);',
        'await top.read(m, 0);',
        "const faulty = new FaultStorage(Buffer.alloc(4096), new FaultPlan(1));",
        "const failed = await faulty.write(Buffer.alloc(512), 0).then(() => 'ok', (e: unknown) => (isVdiskError(e) ? e.code : 'other'));",
        "console.log(m.toString(), [...blockPieces(0, 3 << 20, 1 << 20)].length, findDriver('vpc').name, top instanceof BlockDeviceBase, failed, new MemoryStorage(8).size);",
        'await raw.close();',
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
    expect(run.stdout.trim()).toBe(`1048576 hi E_USAGE ${holes}\n${20 << 20} pool true function\nmem 3 vhd true E_IO 8`);
    const cli = await execFileP(join(app, 'node_modules', '.bin', 'vdisk'), ['info', '--output', 'json', 'x.img'], { cwd: app, encoding: 'utf8' });
    expect(JSON.parse(cli.stdout)).toMatchObject({ format: 'raw', 'virtual-size': 1048576 });
  }, 180_000);
});
