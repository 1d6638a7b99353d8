/** The convert, map, compare, check and info --backing-chain commands, run as users run them. */
import { spawn } from 'node:child_process';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { findDriver } from '../../src/formats/registry.js';
import { VARIANTS, extension, qemuMake, registered, writePatternRaw } from '../ops/variants.js';
import { itWith, qemuSame, run, runOk } from '../helpers/oracle.js';
import { nativeLoads } from '../helpers/native.js';
import { VDISK_BIN, patternBytes, tempDir } from '../helpers/tmp.js';

let dir = '';
let src = '';

beforeAll(async () => {
  dir = await tempDir('vdisk-cli-ops-');
  src = join(dir, 'src.raw');
  await writePatternRaw(src);
});

function vdisk(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [VDISK_BIN, ...args], { cwd: dir });
}

describe('vdisk convert', () => {
  itWith(['qemu-img'], 'converts, with -p printing percentage lines when not on a terminal', async () => {
    const r = await vdisk('convert', '-p', '-O', 'raw', 'src.raw', 'out.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines.every((l) => /^convert: \d+%$/.test(l))).toBe(true);
    expect(lines.at(-1)).toBe('convert: 100%');
    expect(await qemuSame(src, 'raw', join(dir, 'out.raw'), 'raw')).toBe(true);
  });

  itWith(['script'], '-p on a terminal draws a cli-progress bar that ends full', async () => {
    // script(1) gives the command a pseudo-terminal, as an interactive shell would.
    const cmd = `${process.execPath} ${VDISK_BIN} convert -p -O raw src.raw tty.raw`;
    const r = await run('script', ['-qec', cmd, '/dev/null'], { cwd: dir });
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain('convert [');
    expect(r.stdout).toMatch(/\u2588{40}\] 100% \| 8\/8 MiB/);
    expect(r.stdout).not.toMatch(/^convert: \d+%$/m);
  });

  itWith(['strace', 'qemu-img'], '-t unsafe skips fdatasync (qemu-img convert\'s default); the default flushes before renaming', async () => {
    const count = async (extra: string[], out: string): Promise<number> => {
      const r = await run('strace', ['-f', '-e', 'trace=fdatasync,fsync', process.execPath, VDISK_BIN, 'convert', ...extra, '-O', 'raw', 'src.raw', out], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      expect(await qemuSame(src, 'raw', join(dir, out), 'raw')).toBe(true);
      return (r.stderr.match(/fdatasync\(|fsync\(/g) ?? []).length;
    };
    expect(await count(['-t', 'unsafe'], 'unsafe.raw')).toBe(0);
    expect(await count([], 'safe.raw')).toBeGreaterThan(0);
    const bad = await vdisk('convert', '-t', 'none', '-O', 'raw', 'src.raw', 'none.raw');
    expect([bad.code, bad.stderr]).toEqual([1, 'vdisk: -t must be writeback or unsafe, not "none"\n']);
  });

  it('-S 0 allocates every byte', async () => {
    const r = await vdisk('convert', '-S', '0', '-O', 'raw', 'src.raw', 'full.raw');
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(join(dir, 'full.raw'))).blocks * 512).toBeGreaterThanOrEqual(8 * 1024 * 1024);
  });

  it('bad input: clear error, exit 1, nothing written', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['convert', '-O', 'raw', 'src.raw', 'src.raw'], /^vdisk: src\.raw: is the source image src\.raw itself/],
      [['convert', '-O', 'raw', 'src.raw', 'out.raw'], /^vdisk: out\.raw: already exists \(use --force to replace it\)/],
      [['convert', '-O', 'qcow9', 'src.raw', 'new.img'], /^vdisk: unknown format "qcow9" \(known: .*qcow2.*raw.*\)/],
      [['convert', '-O', 'raw', '-o', 'cluster_size=64k', 'src.raw', 'new.img'], /^vdisk: output format raw has no option "cluster_size" \(valid: none\)/],
      [['convert', '-O', 'raw', '-S', 'lots', 'src.raw', 'new.img'], /^vdisk: invalid -S size "lots"/],
      [['convert', '-O', 'raw', 'nothere.raw', 'new.img'], /^vdisk: nothere\.raw: no such file/],
      [['convert', 'src.raw', 'new.img'], /required option '-O, --output-format <fmt>'/],
    ];
    for (const [args, msg] of cases) {
      const r = await vdisk(...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(msg);
    }
    expect((await readdir(dir)).filter((n) => n.startsWith('new.img') || n.includes('vdisk-convert'))).toEqual([]);
    expect((await vdisk('convert', '--force', '-O', 'raw', 'src.raw', 'out.raw')).code).toBe(0);
  });

  it('an interrupted convert (SIGINT) exits 1 and leaves no destination', async () => {
    await writeFile(join(dir, 'big.raw'), patternBytes(96 * 1024 * 1024, 7));
    const child = spawn(process.execPath, [VDISK_BIN, 'convert', '-p', '-O', 'raw', 'big.raw', 'int.raw'], { cwd: dir });
    let err = '';
    let sent = false;
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (!sent && /convert: [1-9]\d*%/.test(err)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((res) => child.on('close', res));
    expect(err).toMatch(/interrupted/);
    expect(code).toBe(1);
    expect((await readdir(dir)).filter((n) => n.startsWith('int.raw') || n.includes('vdisk-convert'))).toEqual([]);
  });
});

describe('vdisk map', () => {
  itWith(['qemu-img'], 'json is qemu-img map json; human is a table; svg is a picture; bad --output is refused', async () => {
    const j = await vdisk('map', '--output', 'json', 'src.raw');
    expect(j.code, j.stderr).toBe(0);
    const ours = JSON.parse(j.stdout) as Array<Record<string, unknown>>;
    const qemu = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'raw', src])) as Array<Record<string, unknown>>;
    expect(Object.keys(ours[0]!).sort()).toEqual(Object.keys(qemu[0]!).filter((k) => k !== 'offset').sort());
    // With lseek the data ranges are qemu-img's exactly (the pattern's written zeros are
    // allocated, so data to both); the reading scan splits them at the zeros.
    const dataRanges = (m: Array<Record<string, unknown>>): unknown[] => m.filter((e) => e.data).map((e) => [e.start, e.length]);
    if (nativeLoads) expect(dataRanges(ours)).toEqual(dataRanges(qemu));
    else expect(dataRanges(ours).length).toBe(5);
    const h = await vdisk('map', 'src.raw');
    expect(h.stdout).toMatch(/^Offset\s+Length\s+Kind\s+Depth\s+File\n0x0 /);
    const s = await vdisk('map', '--output', 'svg', 'src.raw');
    expect(s.stdout).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*<\/svg>\n$/);
    const bad = await vdisk('map', '--output', 'xml', 'src.raw');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--output must be one of human, json, svg/);
  });
});

describe('vdisk compare', () => {
  it('exit 0 identical, 1 different with the offset, 2 on error', async () => {
    expect((await vdisk('convert', '-O', 'raw', 'src.raw', 'copy.raw')).code).toBe(0);
    const same = await vdisk('compare', 'src.raw', 'copy.raw');
    expect([same.code, same.stdout]).toEqual([0, 'Images are identical.\n']);
    await writeFile(join(dir, 'other.raw'), patternBytes(8 * 1024 * 1024, 99));
    const diff = await vdisk('compare', 'src.raw', 'other.raw');
    expect([diff.code, diff.stdout]).toEqual([1, 'Content mismatch at offset 0!\n']);
    const missing = await vdisk('compare', 'src.raw', 'nope.raw');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^vdisk: nope\.raw: no such file/);
    await writeFile(join(dir, 'short.raw'), Buffer.alloc(4096));
    const strict = await vdisk('compare', '-s', 'src.raw', 'short.raw');
    expect([strict.code, strict.stdout]).toEqual([1, 'Strict mode: Image size mismatch!\n']);
  });
});

describe('vdisk check', () => {
  it('raw: "does not support checks", exit 63 (as qemu-img); a bad -r is exit 1', async () => {
    const r = await vdisk('check', 'src.raw');
    expect(r.code).toBe(63);
    expect(r.stderr).toBe('vdisk: src.raw: This image format (raw) does not support checks\n');
    const bad = await vdisk('check', '-r', 'everything', 'src.raw');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/-r must be leaks or all/);
  });
});

describe('vdisk check on formats that have one', () => {
  for (const v of VARIANTS.filter((x) => x.id.endsWith('dynamic') || x.id === 'vmdk-monolithicSparse')) {
    const name = `${v.id}: --output json has qemu-img check's fields, exit 0 on a qemu-made image`;
    if (!registered(v.format) || !findDriver(v.format).check) {
      it.skip(`${name} [skipped: driver ${v.format} not registered or without check]`, () => undefined);
      continue;
    }
    itWith(['qemu-img'], name, async () => {
      const img = `chk-${v.id}.${extension(v)}`;
      await qemuMake(v, src, join(dir, img));
      const r = await vdisk('check', '--output', 'json', img);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const report = JSON.parse(r.stdout) as Record<string, unknown>;
      expect(report).toMatchObject({ filename: img, format: v.format, 'check-errors': 0 });
      expect(report).not.toHaveProperty('corruptions');
      const h = await vdisk('check', img);
      expect(h.stdout).toMatch(/No errors were found on the image\./);
    });
  }
});

describe('vdisk info --backing-chain', () => {
  it('raw: a chain of one', async () => {
    const r = await vdisk('info', '--backing-chain', '--output', 'json', 'src.raw');
    expect(r.code, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout) as Array<{ filename: string; format: string }>;
    expect(list).toEqual([expect.objectContaining({ filename: 'src.raw', format: 'raw', 'virtual-size': 8 * 1024 * 1024 })]);
  });

  for (const fmt of ['vhd', 'vdi', 'vmdk']) {
    const name = `${fmt}: grandchild → child → base, each described in turn`;
    if (!registered(fmt)) {
      it.skip(`${name} [skipped: driver ${fmt} not registered]`, () => undefined);
      continue;
    }
    it(name, async () => {
      for (const [args, what] of [
        [['create', '-f', fmt, `b.${fmt}`, '8M'], 'base'],
        [['create', '-f', fmt, '-b', `b.${fmt}`, `c.${fmt}`], 'child'],
        [['create', '-f', fmt, '-b', `c.${fmt}`, `g.${fmt}`], 'grandchild'],
      ] as const) {
        const r = await vdisk(...args);
        expect(r.code, `${what}: ${r.stderr}`).toBe(0);
      }
      const r = await vdisk('info', '--backing-chain', '--output', 'json', `g.${fmt}`);
      expect(r.code, r.stderr).toBe(0);
      const list = JSON.parse(r.stdout) as Array<{ filename: string; format: string; 'backing-filename'?: string }>;
      expect(list.map((x) => [x.filename, x.format])).toEqual([
        [`g.${fmt}`, fmt],
        [`c.${fmt}`, fmt],
        [`b.${fmt}`, fmt],
      ]);
      expect(list[0]!['backing-filename']).toMatch(new RegExp(`c\\.${fmt}$`));
      expect(list[1]!['backing-filename']).toMatch(new RegExp(`b\\.${fmt}$`));
      expect(list[2]!['backing-filename']).toBeUndefined();
      const human = await vdisk('info', '--backing-chain', `g.${fmt}`);
      expect(human.stdout.match(/^image: /gm)?.length).toBe(3);
      if (fmt === 'vmdk') {
        // qemu-img follows vmdk parents: the same chain.
        const q = JSON.parse(await runOk('qemu-img', ['info', '--backing-chain', '--output', 'json', join(dir, `g.${fmt}`)])) as Array<{ format: string }>;
        expect(q.length).toBe(3);
      }
    });
  }
});
