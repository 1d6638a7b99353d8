import { readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { WindowStorage } from '../../../src/storage/containers/window.js';
import { ZipArchive } from '../../../src/storage/containers/zip.js';
import { FileStorage } from '../../../src/storage/file.js';
import type { Storage } from '../../../src/storage/storage.js';
import { itWith, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { python, errorOf as code } from '../../formats/ovf/helpers.js';

async function all(s: Storage): Promise<Buffer> {
  const b = Buffer.alloc(s.size);
  await s.read(b, 0);
  return b;
}

async function withZip<T>(path: string, limits: Parameters<typeof ZipArchive.open>[1], fn: (z: ZipArchive) => Promise<T>): Promise<T> {
  const s = await FileStorage.open(path, { readOnly: true });
  try {
    const z = await ZipArchive.open(s, limits);
    try {
      return await fn(z);
    } finally {
      await z.close();
    }
  } finally {
    await s.close();
  }
}

describe('zip members through yauzl, made by Info-ZIP zip and python zipfile', () => {
  let dir: string;
  const data = Buffer.concat([patternBytes(300_000, 5), Buffer.alloc(700_000), patternBytes(48_576, 6)]);
  beforeAll(async () => {
    dir = await tempDir('vdisk-zip-test-');
    await writeFile(join(dir, 'disk.raw'), data);
  });

  itWith(['zip'], 'a stored entry opens in place as a window; deflated ones inflate to memory or a temp file', async () => {
    await runOk('zip', ['-q', '-0', join(dir, 'stored.zip'), 'disk.raw'], { cwd: dir });
    await runOk('zip', ['-q', '-9', join(dir, 'deflated.zip'), 'disk.raw'], { cwd: dir });
    await withZip(join(dir, 'stored.zip'), {}, async (z) => {
      expect(z.members).toEqual([{ name: 'disk.raw', size: data.length, compressedSize: data.length, method: 'stored' }]);
      const m = await z.openMember('disk.raw');
      expect(m).toBeInstanceOf(WindowStorage);
      expect((await all(m)).equals(data)).toBe(true);
      await m.close();
      expect(await code(z.openMember('nope'))).toMatch(/^E_NOENT/);
    });
    for (const memoryInflateBytes of [64 * 1024 * 1024, 4096]) {
      await withZip(join(dir, 'deflated.zip'), { memoryInflateBytes }, async (z) => {
        expect(z.members[0]!.method).toBe('deflated');
        const m = await z.openMember('disk.raw');
        expect((await all(m)).equals(data)).toBe(true);
        expect(await code(m.write(Buffer.alloc(1), 0))).toMatch(/^E_READONLY/);
        await m.close();
      });
    }
    // the temp file's name is gone as soon as it is open
    expect((await readdir(tmpdir())).filter((n) => n.startsWith('vdisk-zip-') && !n.startsWith('vdisk-zip-test-'))).toEqual([]);
  });

  itWith(['python3'], 'zip bombs: ratio and size limits, and an entry that inflates past its declared size', async () => {
    const bomb = join(dir, 'bomb.zip');
    python(
      `import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    with z.open('disk.vmdk', 'w') as f:
        for i in range(64): f.write(bytes(1 << 20))
`,
      [bomb],
    );
    await withZip(bomb, {}, async (z) => {
      expect(await code(z.openMember('disk.vmdk'))).toMatch(/^E_UNSUPPORTED: .*ratio \d+:1 is over the limit of 200:1/);
    });
    await withZip(bomb, { maxRatio: 100_000, maxEntryBytes: 32 * 1024 * 1024 }, async (z) => {
      expect(await code(z.openMember('disk.vmdk'))).toMatch(/^E_UNSUPPORTED: .*uncompressed size 67108864 is over the limit/);
    });
    // declared 1000 bytes, inflates to 2 MiB: both size fields patched
    const liar = join(dir, 'liar.zip');
    python(
      `import sys, zipfile, struct
p = sys.argv[1]
with zipfile.ZipFile(p, 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('d.vmdk', bytes(range(256)) * 8192)
b = bytearray(open(p, 'rb').read())
struct.pack_into('<I', b, 22, 1000)
cd = b.rfind(b'PK\\x01\\x02')
struct.pack_into('<I', b, cd + 24, 1000)
open(p, 'wb').write(b)
`,
      [liar],
    );
    await withZip(liar, {}, async (z) => {
      expect(await code(z.openMember('d.vmdk'))).toMatch(/^E_CORRUPT/);
    });
  });

  itWith(['python3', 'zip'], 'hostile names and links are E_PATH; encryption is E_UNSUPPORTED', async () => {
    const cases: Array<[string, RegExp]> = [
      ["z.writestr(zipfile.ZipInfo('../../evil.vmdk'), b'x')", /^E_PATH: .*\.\.\/\.\.\/evil\.vmdk/],
      ["z.writestr(zipfile.ZipInfo('/etc/evil'), b'x')", /^E_PATH: .*absolute/],
      ["i = zipfile.ZipInfo('link.vmdk'); i.create_system = 3; i.external_attr = 0o120777 << 16; z.writestr(i, '/etc/passwd')", /^E_PATH: .*symbolic link/],
    ];
    for (const [i, [body, re]] of cases.entries()) {
      const p = join(dir, `hostile${i}.zip`);
      python(`import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    ${body}\n`, [p]);
      const s = await FileStorage.open(p, { readOnly: true });
      try {
        expect(await code(ZipArchive.open(s))).toMatch(re);
      } finally {
        await s.close();
      }
    }
    const enc = join(dir, 'enc.zip');
    await runOk('zip', ['-q', '-P', 'secret', enc, 'disk.raw'], { cwd: dir });
    const s = await FileStorage.open(enc, { readOnly: true });
    try {
      expect(await code(ZipArchive.open(s))).toMatch(/^E_UNSUPPORTED: .*encrypted/);
    } finally {
      await s.close();
    }
  });
});
