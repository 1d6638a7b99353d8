/**
 * VMDK resize, compact and re-linking in every subformat, judged by qemu-img (info,
 * check, compare; qemu-io writing into the grown space) and libvmdk's vmdkinfo.
 */
import { appendFile, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { open } from '../../../src/formats/registry.js';
import { vmdkDriver } from '../../../src/formats/vmdk/index.js';
import { FileLocation } from '../../../src/storage/location.js';
import { commit } from '../../../src/ops/commit.js';
import { compact } from '../../../src/ops/compact.js';
import { create } from '../../../src/ops/create.js';
import { rebase } from '../../../src/ops/rebase.js';
import { resize } from '../../../src/ops/resize.js';
import { itWith, qemuInfo, qemuSame, run, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;
const SPLIT = 4192256 * 512;

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A sparse raw reference file holding `pieces`. */
async function rawRef(path: string, size: number, pieces: Array<[number, Buffer]>): Promise<void> {
  await writeFile(path, '');
  await runOk('qemu-img', ['resize', '-f', 'raw', path, String(size)]);
  const img = await open(path);
  for (const [off, data] of pieces) await img.write(data, off);
  await img.close();
}

async function qemuCheck(path: string): Promise<void> {
  const r = await run('qemu-img', ['check', '-f', 'vmdk', path]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}

async function vmdkinfoSize(path: string): Promise<void> {
  const r = await run('vmdkinfo', [path]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/Media size/);
}

/** Everything one subformat's resize is judged by, after each step. */
async function judge(path: string, sub: string, size: number, ref: string): Promise<void> {
  expect((await qemuInfo(path, 'vmdk'))['virtual-size']).toBe(size);
  if (!sub.endsWith('Flat')) await qemuCheck(path);
  expect(await qemuSame(path, 'vmdk', ref, 'raw')).toBe(true);
  await vmdkinfoSize(path);
  const r = await run('vmdkinfo', [path]);
  expect(r.stdout).toContain(`(${size} bytes)`);
  const text = sub === 'monolithicSparse' || sub === 'streamOptimized' ? (await readFile(path)).subarray(512, 512 + 20 * 512).toString('latin1') : await readFile(path, 'latin1');
  // ddb.geometry follows the size (ide: 16 heads, 63 sectors; capped at 16383 cylinders).
  expect(text).toContain(`ddb.geometry.cylinders = "${Math.max(1, Math.min(16383, Math.floor(size / 512 / (16 * 63))))}"`);
}

const CASES = [
  // Past 4 GiB the one-sector grain directory must move (128 entries of 32 MiB).
  { sub: 'monolithicSparse', from: 8 * MiB, to: 5 * 1024 * MiB, shrink: 6 * MiB + 1536 },
  { sub: 'monolithicFlat', from: 8 * MiB, to: 40 * MiB, shrink: 6 * MiB },
  { sub: 'twoGbMaxExtentSparse', from: 64 * MiB, to: 2 * SPLIT + 100 * MiB, shrink: SPLIT + 8 * MiB },
  { sub: 'twoGbMaxExtentFlat', from: 64 * MiB, to: SPLIT + 16 * MiB, shrink: 32 * MiB },
  { sub: 'streamOptimized', from: 8 * MiB, to: 24 * MiB, shrink: 6 * MiB },
];

describe('vmdk resize', () => {
  for (const c of CASES) {
    itWith(['qemu-img', 'qemu-io', 'vmdkinfo'], `${c.sub}: grows ${c.from} → ${c.to} and shrinks to ${c.shrink}, content, extents and geometry right`, async () => {
      const p = join(dir, `${c.sub}.vmdk`);
      const ref = join(dir, `${c.sub}.ref.raw`);
      const pieces: Array<[number, Buffer]> = [
        [0, patternBytes(200 * 1024, 1)],
        [5 * MiB + 512, patternBytes(3 * 512, 2)],
        [c.from - 4096, patternBytes(4096, 3)],
      ];
      const img = await create(p, { format: 'vmdk', size: c.from, options: { subformat: c.sub } });
      for (const [off, data] of pieces) await img.write(data, off);
      await img.close();

      expect(await resize(p, c.to)).toEqual({ oldSize: c.from, newSize: c.to });
      await rawRef(ref, c.to, pieces);
      await judge(p, c.sub, c.to, ref);
      const files = (await readdir(dir)).filter((f) => f.startsWith(`${c.sub}-`) || f === `${c.sub}.vmdk`);
      if (c.sub.startsWith('twoGb')) {
        // VMware's 4192256-sector pieces: the first filled, then new files.
        expect(files.filter((f) => /-[sf]\d{3}\.vmdk$/.test(f)).length).toBe(Math.ceil(c.to / SPLIT));
        expect(await readFile(p, 'latin1')).toContain(`RW 4192256 ${c.sub.endsWith('Sparse') ? 'SPARSE' : 'FLAT'}`);
      }

      if (c.sub !== 'streamOptimized') {
        // qemu writes into the grown space (for sparse: into the new, preallocated grain tables) and vdisk reads it.
        const at = c.to - 3 * MiB;
        await runOk('qemu-io', ['-f', 'vmdk', '-c', `write -P 0x5a ${at} 65536`, p]);
        pieces.push([at, Buffer.alloc(65536, 0x5a)]);
        const back = await open(p, { readOnly: true });
        const got = Buffer.alloc(65536);
        await back.read(got, at);
        await back.close();
        expect(got.equals(Buffer.alloc(65536, 0x5a))).toBe(true);
      }

      await expect(resize(p, c.shrink)).rejects.toMatchObject({ code: 'E_USAGE' });
      const before = (await stat(p)).size;
      expect(await resize(p, c.shrink, { shrink: true })).toEqual({ oldSize: c.to, newSize: c.shrink });
      await rm(ref);
      await rawRef(ref, c.shrink, pieces.filter(([off]) => off < c.shrink).map(([off, d]) => [off, d.subarray(0, Math.max(0, Math.min(d.length, c.shrink - off)))]));
      await judge(p, c.sub, c.shrink, ref);
      if (c.sub.startsWith('twoGb')) {
        const left = (await readdir(dir)).filter((f) => f.startsWith(`${c.sub}-`) && /-[sf]\d{3}\.vmdk$/.test(f));
        expect(left.length).toBe(Math.ceil(c.shrink / SPLIT));
      }
      if (c.sub === 'monolithicSparse') expect((await stat(p)).size).toBeLessThan(before);
      if (c.sub === 'monolithicFlat') expect((await stat(join(dir, `${c.sub}-flat.vmdk`))).size).toBe(c.shrink);

      // Growing again shows zeros where the cut data was.
      await resize(p, c.shrink + 4 * MiB);
      await rm(ref);
      await rawRef(ref, c.shrink + 4 * MiB, pieces.filter(([off]) => off < c.shrink).map(([off, d]) => [off, d.subarray(0, Math.max(0, Math.min(d.length, c.shrink - off)))]));
      await judge(p, c.sub, c.shrink + 4 * MiB, ref);
    }, 120_000);
  }
});

describe('vmdk compact', () => {
  itWith(['qemu-img', 'vmdkinfo'], 'twoGbMaxExtentSparse: zero grains in every extent are released, files get shorter', async () => {
    const p = join(dir, 'cs.vmdk');
    const size = SPLIT + 8 * MiB;
    const img = await create(p, { format: 'vmdk', size, options: { subformat: 'twoGbMaxExtentSparse' } });
    await img.write(patternBytes(2 * MiB, 4), 0);
    await img.write(patternBytes(2 * MiB, 5), SPLIT);
    await img.write(Buffer.alloc(MiB), 0);
    await img.write(Buffer.alloc(MiB), SPLIT + MiB);
    await img.close();
    const ref = join(dir, 'cs.ref.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', p, ref]);
    const s1 = (await stat(join(dir, 'cs-s001.vmdk'))).size;
    const s2 = (await stat(join(dir, 'cs-s002.vmdk'))).size;
    const r = await compact(p);
    expect(r.releasedBlocks).toBe(32);
    expect((await stat(join(dir, 'cs-s001.vmdk'))).size).toBe(s1 - 16 * 65536);
    expect((await stat(join(dir, 'cs-s002.vmdk'))).size).toBe(s2 - 16 * 65536);
    await qemuCheck(p);
    expect(await qemuSame(p, 'vmdk', ref, 'raw')).toBe(true);
    await vmdkinfoSize(p);
  });

  itWith(['qemu-img'], 'leaked space (unused grains in the middle, junk at the end) is given back; check then finds no leak', async () => {
    const p = join(dir, 'leak.vmdk');
    const img = await create(p, { format: 'vmdk', size: '4M' });
    await img.write(patternBytes(8 * 65536, 14), 0);
    // Released grains leave holes in the middle of the file.
    await img.discard(2 * 65536, 2 * 65536);
    await img.close();
    await appendFile(p, Buffer.alloc(100 * 1024, 0x33));
    const loc = new FileLocation(p);
    const leaksBefore = await vmdkDriver.check!(await loc.open(p, { readOnly: true }), loc, { readOnly: true, openParent: () => Promise.reject(new Error('no')) });
    expect(leaksBefore.problems.map((x) => x.severity)).toEqual(['leak']);
    const ref = join(dir, 'leak.ref.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', p, ref]);
    const r = await compact(p);
    expect(r.releasedBlocks).toBe(0);
    // 128 sectors of metadata, then the 6 grains still in use, back to back.
    expect(r.sizeAfter).toBe(128 * 512 + 6 * 65536);
    const after = await vmdkDriver.check!(await loc.open(p, { readOnly: true }), loc, { readOnly: true, openParent: () => Promise.reject(new Error('no')) });
    expect(after.problems).toEqual([]);
    expect(await qemuSame(p, 'vmdk', ref, 'raw')).toBe(true);
    await qemuCheck(p);
  });

  itWith(['qemu-img'], 'a delta link keeps zero grains its parent would show through', async () => {
    const base = join(dir, 'cd-base.vmdk');
    const top = join(dir, 'cd-top.vmdk');
    await (await create(base, { format: 'vmdk', size: '4M' })).close();
    const b = await open(base);
    await b.write(patternBytes(4 * MiB, 6), 0);
    await b.close();
    await (await create(top, { format: 'vmdk', backing: base })).close();
    const t = await open(top);
    await t.write(Buffer.alloc(MiB), MiB);
    await t.close();
    const ref = join(dir, 'cd.ref.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', top, ref]);
    const r = await compact(top);
    expect(r.releasedBlocks).toBe(0);
    expect(await qemuSame(top, 'vmdk', ref, 'raw')).toBe(true);
    await qemuCheck(top);
  });

  itWith(['qemu-img', 'vmdkinfo'], 'streamOptimized is rewritten in a temp file and renamed: same content, still a valid stream', async () => {
    const p = join(dir, 'so.vmdk');
    const raw = join(dir, 'so.src.raw');
    await rawRef(raw, 16 * MiB, [[MiB, patternBytes(3 * MiB, 7)], [12 * MiB, patternBytes(4096, 8)]]);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, p]);
    const r = await compact(p);
    expect(r.sizeBefore).toBeGreaterThan(0);
    expect((await stat(p)).size).toBe(r.sizeAfter);
    expect((await readdir(dir)).filter((f) => f.includes('vdisk-tmp'))).toEqual([]);
    await qemuCheck(p);
    expect(await qemuSame(p, 'vmdk', raw, 'raw')).toBe(true);
    const info = await qemuInfo(p, 'vmdk');
    expect(JSON.stringify(info)).toContain('streamOptimized');
    await vmdkinfoSize(p);
  });
});

describe('vmdk maintenance within one session and on bad input', () => {
  itWith(['qemu-img'], 'writes after a resize that renamed the descriptor land in the new extent and update the new descriptor', async () => {
    const p = join(dir, 'session.vmdk');
    await (await create(p, { format: 'vmdk', size: '8M', options: { subformat: 'twoGbMaxExtentFlat' } })).close();
    const img = await open(p);
    const cid0 = (await img.info()).formatSpecific!['cid'];
    await img.resize!(SPLIT + MiB);
    await img.write(Buffer.alloc(4096, 7), SPLIT + 4096);
    await img.close();
    const text = await readFile(p, 'latin1');
    expect(text).toContain('RW 2048 FLAT "session-f002.vmdk" 0');
    expect(text).not.toContain(`CID=${(cid0 as number).toString(16).padStart(8, '0')}`);
    const r = await run('qemu-io', ['-f', 'vmdk', '-c', `read -P 7 ${SPLIT + 4096} 4096`, p]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toContain('Pattern verification failed');
  });

  itWith(['qemu-img'], 'compact refuses a grain table entry that points into the metadata (E_CORRUPT), file unchanged', async () => {
    const p = join(dir, 'bad.vmdk');
    const img = await create(p, { format: 'vmdk', size: '4M' });
    await img.write(patternBytes(2 * 65536, 11), 0);
    await img.close();
    const bytes = await readFile(p);
    const gd = Number(bytes.readBigUInt64LE(56));
    const gt = bytes.readUInt32LE(gd * 512);
    const rgd = Number(bytes.readBigUInt64LE(48));
    const rgt = bytes.readUInt32LE(rgd * 512);
    // Both copies say grain 1 lives at sector 2 (inside the header/descriptor area).
    bytes.writeUInt32LE(2, gt * 512 + 4);
    bytes.writeUInt32LE(2, rgt * 512 + 4);
    await writeFile(p, bytes);
    await expect(compact(p)).rejects.toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining('grain table entry 1') });
    expect((await readFile(p)).equals(bytes)).toBe(true);
  });
});

describe('vmdk commit', () => {
  itWith(['qemu-img', 'vmdkinfo'], "commit re-links the child to the parent's new CID and releases the child's grains (compact then gives the space back)", async () => {
    const base = join(dir, 'cm-base.vmdk');
    const top = join(dir, 'cm-top.vmdk');
    await (await create(base, { format: 'vmdk', size: '4M' })).close();
    const b = await open(base);
    await b.write(patternBytes(4 * MiB, 12), 0);
    await b.close();
    await (await create(top, { format: 'vmdk', backing: base })).close();
    const t = await open(top);
    await t.write(patternBytes(MiB, 13), MiB);
    await t.close();
    const ref = join(dir, 'cm.ref.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', top, ref]);
    await commit(top);
    expect(await qemuSame(top, 'vmdk', ref, 'raw')).toBe(true);
    expect(await qemuSame(base, 'vmdk', ref, 'raw')).toBe(true);
    // Nothing of the child's own shows in qemu's map any more: every range comes from the parent.
    const map = JSON.parse(await runOk('qemu-img', ['map', '--output=json', '-f', 'vmdk', top])) as Array<{ depth: number; data: boolean }>;
    expect(map.filter((m) => m.depth === 0 && m.data)).toEqual([]);
    const before = (await stat(top)).size;
    const r = await compact(top);
    expect(r.sizeAfter).toBe(before - 16 * 65536);
    expect(await qemuSame(top, 'vmdk', ref, 'raw')).toBe(true);
    await qemuCheck(top);
    await qemuCheck(base);
    await vmdkinfoSize(top);
  });
});

describe('vmdk setBacking', () => {
  itWith(['qemu-img'], 'a child whose parent changed after it (an interrupted commit) is refused, and rebase -u re-links it', async () => {
    const base = join(dir, 'ic-base.vmdk');
    const top = join(dir, 'ic-top.vmdk');
    await (await create(base, { format: 'vmdk', size: '4M' })).close();
    await (await create(top, { format: 'vmdk', backing: base })).close();
    const t = await open(top);
    await t.write(patternBytes(65536, 15), 0);
    await t.close();
    // What a crash between the parent's first write (new CID) and the child's re-link leaves.
    const b = await open(base);
    await b.write(patternBytes(65536, 15), 0);
    await b.close();
    await expect(open(top, { readOnly: true })).rejects.toMatchObject({ code: 'E_CHAIN', message: expect.stringContaining('rebase -u') });
    await rebase(top, base, { unsafe: true });
    const back = await open(top, { readOnly: true });
    const got = Buffer.alloc(65536);
    await back.read(got, 0);
    await back.close();
    expect(got.equals(patternBytes(65536, 15))).toBe(true);
    await qemuCheck(top);
  });

  itWith(['qemu-img', 'vmdkinfo'], 'rebase -b "" makes a delta link stand alone (parentCID=ffffffff, no hint), content kept', async () => {
    const base = join(dir, 'sb-base.vmdk');
    const top = join(dir, 'sb-top.vmdk');
    await (await create(base, { format: 'vmdk', size: '4M' })).close();
    const b = await open(base);
    await b.write(patternBytes(4 * MiB, 9), 0);
    await b.close();
    await (await create(top, { format: 'vmdk', backing: base })).close();
    const t = await open(top);
    await t.write(patternBytes(4096, 10), 8192);
    await t.close();
    const ref = join(dir, 'sb.ref.raw');
    await runOk('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', top, ref]);
    await rebase(top, undefined);
    const text = (await readFile(top)).subarray(512, 512 * 21).toString('latin1');
    expect(text).toContain('parentCID=ffffffff');
    expect(text).not.toContain('parentFileNameHint');
    expect(text).toContain('createType="monolithicSparse"');
    const info = await qemuInfo(top, 'vmdk');
    expect(info['backing-filename']).toBeUndefined();
    expect(await qemuSame(top, 'vmdk', ref, 'raw')).toBe(true);
    await qemuCheck(top);
    await vmdkinfoSize(top);
  });

  itWith(['qemu-img'], 'a split delta link is re-pointed through a renamed descriptor; a non-VMDK parent is refused, image unchanged', async () => {
    const a = join(dir, 'sp-a.vmdk');
    const b = join(dir, 'sp-b.vmdk');
    const top = join(dir, 'sp-top.vmdk');
    for (const x of [a, b]) await (await create(x, { format: 'vmdk', size: '4M' })).close();
    await (await create(top, { format: 'vmdk', backing: a, options: { subformat: 'twoGbMaxExtentSparse' } })).close();
    await rebase(top, b, { unsafe: true });
    const text = await readFile(top, 'latin1');
    expect(text).toContain('parentFileNameHint="sp-b.vmdk"');
    expect(text).toContain('createType="twoGbMaxExtentSparse"');
    expect((await qemuInfo(top, 'vmdk'))['backing-filename']).toBe('sp-b.vmdk');
    const vhd = join(dir, 'sp.vhd');
    await runOk('qemu-img', ['create', '-f', 'vpc', vhd, '4M']);
    await expect(rebase(top, vhd, { unsafe: true })).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    expect(await readFile(top, 'latin1')).toBe(text);
  });
});
