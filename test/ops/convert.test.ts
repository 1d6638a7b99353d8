import { spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isVdiskError } from '../../src/errors.js';
import { formatDrivers, open } from '../../src/formats/registry.js';
import { create } from '../../src/ops/create.js';
import { convert } from '../../src/ops/convert.js';
import { itWith, qemuSame, run, runOk } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';
import { DISK_SIZE, VARIANTS, dataFile, extension, qemuMake, registered, writePatternRaw } from './variants.js';

let dir = '';
let src = '';

beforeAll(async () => {
  dir = await tempDir('vdisk-convert-');
  src = join(dir, 'src.raw');
  await writePatternRaw(src);
});

async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

async function leftovers(folder: string): Promise<string[]> {
  return (await readdir(folder)).filter((n) => n.includes('vdisk-convert') || n.endsWith('.lock'));
}

describe('convert raw → raw', () => {
  itWith(['qemu-img'], 'copies the disk exactly (qemu-img compare) and leaves holes and zero runs unallocated', async () => {
    const dst = join(dir, 'a.raw');
    const seen: number[] = [];
    const r = await convert(src, dst, { format: 'raw', onProgress: (done, total) => {
      expect(total).toBe(DISK_SIZE);
      seen.push(done);
    } });
    expect(await qemuSame(src, 'raw', dst, 'raw')).toBe(true);
    expect(r.size).toBe(DISK_SIZE);
    // Data written: 64K + 64K + 512K + 4K, and the 4K page around the lone sector (zero
    // runs are found per 4K); the 128K of written zeros and the holes are not.
    expect(r.bytesWritten).toBe((64 + 64 + 512 + 4 + 4) * 1024);
    expect(await allocated(dst)).toBeLessThanOrEqual(await allocated(src));
    expect(await allocated(dst)).toBeLessThan(1024 * 1024);
    expect(seen.at(-1)).toBe(DISK_SIZE);
    expect(seen.every((d, i) => i === 0 || d > seen[i - 1]!)).toBe(true);
    expect(await leftovers(dir)).toEqual([]);
  });

  itWith(['qemu-img'], '-S 0 allocates every byte; -S 512 leaves zero sectors next to a lone data sector unwritten', async () => {
    const full = join(dir, 'full.raw');
    const r = await convert(src, full, { format: 'raw', sparseSize: 0 });
    expect(r.bytesWritten).toBe(DISK_SIZE);
    expect(await allocated(full)).toBeGreaterThanOrEqual(DISK_SIZE);
    expect(await qemuSame(src, 'raw', full, 'raw')).toBe(true);
    const fine = join(dir, 'fine.raw');
    const rf = await convert(src, fine, { format: 'raw', sparseSize: 512 });
    expect(rf.bytesWritten).toBe((64 + 64 + 512 + 4) * 1024 + 512);
    expect(await qemuSame(src, 'raw', fine, 'raw')).toBe(true);
  });

  it('keeps an odd-sized raw source exactly', async () => {
    const odd = join(dir, 'odd.raw');
    await writeFile(odd, patternBytes(1000, 9));
    await convert(odd, join(dir, 'odd2.raw'), { format: 'raw' });
    expect(Buffer.compare(await readFile(join(dir, 'odd2.raw')), await readFile(odd))).toBe(0);
  });

  it('refuses the source itself, an existing file without force, unknown formats and options, a bad -S', async () => {
    const code = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return 'ok';
      } catch (err) {
        if (!isVdiskError(err)) throw err;
        return `${err.code}: ${err.message}`;
      }
    };
    expect(await code(convert(src, src, { format: 'raw', force: true }))).toMatch(/^E_USAGE: .*source image/);
    // A hard link is the same file too.
    const existing = join(dir, 'existing.raw');
    await writeFile(existing, 'keep me');
    expect(await code(convert(src, existing, { format: 'raw' }))).toMatch(/^E_EXISTS: .*--force/);
    expect(await readFile(existing, 'utf8')).toBe('keep me');
    expect(await code(convert(src, join(dir, 'x'), { format: 'qcow9' }))).toMatch(/^E_USAGE: unknown format "qcow9" \(known: .*raw/);
    expect(await code(convert(src, join(dir, 'x'), { format: 'raw', options: { subformat: 'fixed' } }))).toMatch(/^E_USAGE: .*no option "subformat" \(valid: none\)/);
    expect(await code(convert(src, join(dir, 'x'), { format: 'raw', sparseSize: 1000 }))).toMatch(/^E_USAGE: -S 1000/);
    expect(await code(convert(src, dir, { format: 'raw', force: true }))).toMatch(/^E_USAGE: .*is a folder/);
    expect(await code(convert(join(dir, 'missing.raw'), join(dir, 'x'), { format: 'raw' }))).toMatch(/^E_NOENT/);
    expect(await code(convert(src, join(dir, 'no-folder', 'x.raw'), { format: 'raw' }))).toMatch(/^E_NOENT: .*no-folder: no such folder/);
    expect((await readdir(dir)).includes('x')).toBe(false);
    // --force replaces.
    await convert(src, existing, { format: 'raw', force: true });
    expect((await stat(existing)).size).toBe(DISK_SIZE);
    expect(await leftovers(dir)).toEqual([]);
  });

  it('an unknown -o key names every valid key of that output format (each registered driver)', async () => {
    for (const d of formatDrivers()) {
      const err = await convert(src, join(dir, `opt.${d.name}`), { format: d.name, options: { no_such_key: '1' } }).then(() => undefined, (e: unknown) => e);
      expect(isVdiskError(err, 'E_USAGE'), `${d.name}: ${String(err)}`).toBe(true);
      const keys = Object.keys(d.createOptions);
      expect((err as Error).message).toBe(`output format ${d.name} has no option "no_such_key" (valid: ${keys.length ? keys.join(', ') : 'none'})`);
    }
    expect((await readdir(dir)).filter((n) => n.startsWith('opt.'))).toEqual([]);
  });

  it('an aborted convert leaves no destination and no temporary folder', async () => {
    const big = join(dir, 'big.raw');
    await writeFile(big, patternBytes(8 * 1024 * 1024, 3));
    const ac = new AbortController();
    const dst = join(dir, 'aborted.raw');
    await expect(convert(big, dst, { format: 'raw', signal: ac.signal, onProgress: () => ac.abort() })).rejects.toThrow(/interrupted/);
    expect((await readdir(dir)).includes('aborted.raw')).toBe(false);
    expect(await leftovers(dir)).toEqual([]);
  });
});

/** Mount a small tmpfs (root only); undefined when this machine does not allow it. */
function mountTmpfs(at: string, size: string): boolean {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', at]);
  return r.status === 0;
}

describe('convert onto a full disk', () => {
  it('fails with E_NOSPC and leaves nothing behind (a 2 MiB tmpfs)', async (ctx) => {
    const mnt = join(dir, 'small-fs');
    await mkdir(mnt);
    if (!mountTmpfs(mnt, '2m')) {
      ctx.skip();
      return;
    }
    try {
      const data = join(dir, 'random.raw');
      await writeFile(data, patternBytes(6 * 1024 * 1024, 11));
      const dst = join(mnt, 'out.raw');
      const err = await convert(data, dst, { format: 'raw' }).then(() => undefined, (e: unknown) => e);
      expect(isVdiskError(err, 'E_NOSPC'), String(err)).toBe(true);
      expect((err as Error).message).toBe(`${dst}: no space left on device`);
      expect(await readdir(mnt)).toEqual([]);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});

describe('convert reads through differencing chains (result is flat)', () => {
  for (const fmt of ['vhd', 'vdi', 'vmdk']) {
    const name = `${fmt}: child over parent → raw holds parent data with the child's writes on top`;
    if (!registered(fmt)) {
      it.skip(`${name} [skipped: driver ${fmt} not registered]`, () => undefined);
      continue;
    }
    it(name, async () => {
      const parentPath = join(dir, `chain-parent.${fmt}`);
      const childPath = join(dir, `chain-child.${fmt}`);
      const expected = Buffer.alloc(DISK_SIZE);
      const parent = await create(parentPath, { format: fmt, size: DISK_SIZE });
      const pdata = patternBytes(3 * 1024 * 1024, 21);
      await parent.write(pdata, 1024 * 1024);
      pdata.copy(expected, 1024 * 1024);
      await parent.close();
      const child = await create(childPath, { format: fmt, backing: parentPath });
      const cdata = patternBytes(96 * 1024, 22);
      await child.write(cdata, 2 * 1024 * 1024 + 4096);
      cdata.copy(expected, 2 * 1024 * 1024 + 4096);
      await child.close();
      const out = join(dir, `chain-${fmt}.raw`);
      await convert(childPath, out, { format: 'raw' });
      const got = await readFile(out);
      expect(got.length).toBe(DISK_SIZE);
      expect(Buffer.compare(got, expected)).toBe(0);
      // The flat copy in the same format has no parent.
      const flat = join(dir, `chain-flat.${fmt}`);
      await convert(childPath, flat, { format: fmt });
      const img = await open(flat, { readOnly: true });
      try {
        expect(img.backing).toBeUndefined();
      } finally {
        await img.close();
      }
    });
  }
});

describe('a corrupt source gives an error and no destination', () => {
  for (const v of VARIANTS.filter((x) => x.exactMap)) {
    const name = `${v.id} truncated to half its file`;
    if (!registered(v.format)) {
      it.skip(`${name} [skipped: driver ${v.format} not registered]`, () => undefined);
      continue;
    }
    itWith(['qemu-img'], name, async () => {
      const raw = join(dir, `corrupt-${v.id}.raw`);
      await writeFile(raw, patternBytes(DISK_SIZE, 31));
      const img = join(dir, `corrupt-${v.id}.${extension(v)}`);
      await qemuMake(v, raw, img);
      // The data blocks at the end of the disk now point past the end of the file.
      const main = await dataFile(img);
      await truncate(main, Math.floor((await stat(main)).size / 2));
      const dst = join(dir, `corrupt-out-${v.id}.raw`);
      const err = await convert(img, dst, { format: 'raw' }).then(() => undefined, (e: unknown) => e);
      expect(isVdiskError(err), `expected a VdiskError, got ${String(err)}`).toBe(true);
      expect((err as Error).message).toMatch(/\d/);
      expect((await readdir(dir)).includes(`corrupt-out-${v.id}.raw`)).toBe(false);
      expect(await leftovers(dir)).toEqual([]);
    });
  }
});

describe('multi-file outputs are renamed into place together', () => {
  const name = 'vmdk twoGbMaxExtentSparse: extent files sit next to the descriptor, no temporary folder left';
  if (!registered('vmdk')) it.skip(`${name} [skipped: driver vmdk not registered]`, () => undefined);
  else
    itWith(['qemu-img'], name, async () => {
      const sub = join(dir, 'split');
      await mkdir(sub);
      const dst = join(sub, 'disk.vmdk');
      const r = await convert(src, dst, { format: 'vmdk', options: { subformat: 'twoGbMaxExtentSparse' } });
      expect(r.files.length).toBeGreaterThan(1);
      for (const f of r.files) expect((await stat(f)).isFile()).toBe(true);
      expect((await readdir(sub)).sort()).toEqual(r.files.map((f) => f.slice(sub.length + 1)).sort());
      expect(await qemuSame(src, 'raw', dst, 'vmdk')).toBe(true);
      const info = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', dst])) as { format: string };
      expect(info.format).toBe('vmdk');
      const chk = await run('qemu-img', ['check', dst]);
      expect(chk.code).toBe(0);
    });
});
