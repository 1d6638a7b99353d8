import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { TAR_BLOCK, TarWriter, decodeTarHeader, encodeTarHeader, isTar, readTarEntries } from '../../../src/storage/containers/tar.js';
import { WindowStorage } from '../../../src/storage/containers/window.js';
import { FileStorage } from '../../../src/storage/file.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { itWith, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { python, errorOf as code } from '../../formats/ovf/helpers.js';

describe('ustar header', () => {
  it('encode/decode round trip, including base-256 sizes over 8 GiB and a prefix for long names', () => {
    for (const [name, size] of [
      ['disk1.vmdk', 12345],
      ['a/'.repeat(60) + 'long-name.vmdk', 0],
      ['big.vmdk', 9 * 2 ** 30 + 7],
    ] as const) {
      const h = decodeTarHeader('t', encodeTarHeader({ name, size, mtime: 1_700_000_000 }));
      expect([h.prefix ? `${h.prefix}/${h.name}` : h.name, h.size, h.mtime, h.typeflag, h.mode]).toEqual([name, size, 1_700_000_000, '0', 0o644]);
    }
  });

  it('a damaged header is E_CORRUPT naming the field', () => {
    const b = encodeTarHeader({ name: 'x', size: 1, mtime: 0 });
    b[0] = 0x79;
    expect(() => decodeTarHeader('t', b)).toThrow(/chksum/);
  });
});

describe('tar written by vdisk, read by GNU tar and python; and the reverse', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('vdisk-tar-');
  });

  itWith(['tar'], 'GNU tar lists and extracts our archive byte for byte', async () => {
    const path = join(dir, 'ours.tar');
    const out = await FileStorage.open(path, { create: 'new' });
    const a = patternBytes(1000, 3);
    const b = patternBytes(70_000, 4);
    const w = new TarWriter(out, 1_700_000_000);
    await w.addBuffer('a.ovf', a);
    await w.addStorage('sub/b.vmdk', new MemoryStorage(b));
    await w.addBuffer('empty', Buffer.alloc(0));
    await w.finish();
    await out.close();
    const list = await runOk('tar', ['tvf', path, '--utc']);
    expect(list.trim().split('\n').map((l) => l.split(/\s+/).slice(2).join(' '))).toEqual([
      '1000 2023-11-14 22:13 a.ovf',
      '70000 2023-11-14 22:13 sub/b.vmdk',
      '0 2023-11-14 22:13 empty',
    ]);
    const x = join(dir, 'x');
    await mkdir(x);
    await runOk('tar', ['xf', path, '-C', x]);
    expect((await readFile(join(x, 'a.ovf'))).equals(a)).toBe(true);
    expect((await readFile(join(x, 'sub/b.vmdk'))).equals(b)).toBe(true);
  });

  itWith(['tar'], 'reads GNU tar archives (ustar, gnu long names, pax) and windows match the files', async () => {
    const src = join(dir, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    const long = `${'n'.repeat(120)}.vmdk`;
    // ustar splits this one into prefix and name
    const split = `${'p'.repeat(70)}/${'q'.repeat(70)}.vmdk`;
    await mkdir(join(src, 'p'.repeat(70)));
    await writeFile(join(src, 'one.bin'), patternBytes(5000, 9));
    await writeFile(join(src, 'd', long), patternBytes(777, 10));
    await writeFile(join(src, split), patternBytes(300, 11));
    for (const fmt of ['ustar', 'gnu', 'pax']) {
      const t = join(dir, `${fmt}.tar`);
      const files = fmt === 'ustar' ? ['one.bin', split] : ['one.bin', `d/${long}`];
      await runOk('tar', [`--format=${fmt}`, '-cf', t, '-C', src, ...files]);
      const s = await FileStorage.open(t, { readOnly: true });
      try {
        expect(await isTar(s)).toBe(true);
        const entries = await readTarEntries(s);
        if (fmt === 'ustar') {
          expect(entries.map((e) => [e.name, e.size])).toEqual([
            ['one.bin', 5000],
            [split, 300],
          ]);
        } else {
          expect(entries.map((e) => [e.name, e.size])).toEqual([
            ['one.bin', 5000],
            [`d/${long}`, 777],
          ]);
        }
        for (const e of entries) {
          const w = new WindowStorage(e.name, s, e.dataOffset, e.size);
          const got = Buffer.alloc(e.size);
          await w.read(got, 0);
          expect(got.equals(await readFile(join(src, e.name)))).toBe(true);
          expect(await code(w.read(Buffer.alloc(1), e.size))).toMatch(/^E_BOUNDS/);
          expect(await code(w.write(Buffer.alloc(1), 0))).toMatch(/^E_READONLY/);
        }
      } finally {
        await s.close();
      }
    }
  });

  itWith(['python3'], 'hostile entries are refused with E_PATH, damaged ones with E_CORRUPT', async () => {
    const cases: Array<[string, RegExp]> = [
      ["ti = tarfile.TarInfo('../../etc/cron.d/x'); ti.size = 4; t.addfile(ti, io.BytesIO(b'abcd'))", /^E_PATH: .*"\.\.\/\.\.\/etc\/cron\.d\/x".*\.\./],
      ["ti = tarfile.TarInfo('/etc/passwd'); ti.size = 4; t.addfile(ti, io.BytesIO(b'abcd'))", /^E_PATH: .*absolute/],
      ["ti = tarfile.TarInfo('x.vmdk'); ti.type = tarfile.SYMTYPE; ti.linkname = '/etc/shadow'; t.addfile(ti)", /^E_PATH: .*symbolic link to "\/etc\/shadow"/],
      ["ti = tarfile.TarInfo('x.vmdk'); ti.type = tarfile.LNKTYPE; ti.linkname = 'a'; t.addfile(ti)", /^E_PATH: .*hard link/],
      ["ti = tarfile.TarInfo('dev'); ti.type = tarfile.CHRTYPE; t.addfile(ti)", /^E_UNSUPPORTED: .*type "3"/],
      ["ti = tarfile.TarInfo('a\\\\b.vmdk'); ti.size = 1; t.addfile(ti, io.BytesIO(b'a'))", /^E_PATH: .*backslash/],
    ];
    for (const [i, [body, re]] of cases.entries()) {
      const t = join(dir, `bad${i}.tar`);
      python(`import sys, tarfile, io\nwith tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT) as t:\n    ${body}\n`, [t]);
      const s = await FileStorage.open(t, { readOnly: true });
      try {
        expect(await code(readTarEntries(s))).toMatch(re);
      } finally {
        await s.close();
      }
    }
  });

  it('an entry running past the end, and a flipped header byte', async () => {
    const m = new MemoryStorage();
    const w = new TarWriter(m, 0);
    await w.addBuffer('disk.vmdk', patternBytes(4096, 1));
    await w.finish();
    const full = m.snapshot();
    const cut = new MemoryStorage(full.subarray(0, TAR_BLOCK + 1000), { name: 'cut.tar' });
    expect(await code(readTarEntries(cut))).toMatch(/^E_CORRUPT: .*size 4096 runs past the end/);
    const flipped = Buffer.from(full);
    flipped[130] = 0x37; // a size digit
    expect(await code(readTarEntries(new MemoryStorage(flipped, { name: 'f.tar' })))).toMatch(/^E_CORRUPT: .*chksum/);
    const hostileSize = Buffer.from(full);
    // a valid header claiming 8 PiB: checked against the archive, no allocation
    const h = encodeTarHeader({ name: 'disk.vmdk', size: 2 ** 53 - 1, mtime: 0 });
    h.copy(hostileSize, 0);
    expect(await code(readTarEntries(new MemoryStorage(hostileSize, { name: 'h.tar' })))).toMatch(/^E_CORRUPT: .*runs past the end/);
  });
});
