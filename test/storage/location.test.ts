/** FileLocation.rename is durable when it returns: the folder is synced after the rename (unless the caller syncs it itself). */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect } from 'vitest';
import { itWith, run } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';

describe('FileLocation.rename', () => {
  itWith(['strace'], 'fsyncs the folder after renaming; syncRenames: false leaves that to the caller', async () => {
    const dir = await tempDir('vdisk-loc-');
    const mod = pathToFileURL(join(process.cwd(), 'dist/storage/location.js')).href;
    const script = (sync: boolean): string =>
      `import { FileLocation } from ${JSON.stringify(mod)};\n` +
      `const loc = new FileLocation(process.argv[2], [], { syncRenames: ${sync} });\n` +
      `await loc.rename(process.argv[3], process.argv[2]);\n`;
    for (const sync of [true, false]) {
      const from = join(dir, `a-${sync}.tmp`);
      const to = join(dir, `a-${sync}.img`);
      await writeFile(from, `content ${sync}`);
      const js = join(dir, `rename-${sync}.mjs`);
      await writeFile(js, script(sync));
      const r = await run('strace', ['-f', '-e', 'trace=fsync,rename,renameat,renameat2', process.execPath, js, to, from]);
      expect(r.code, r.stderr).toBe(0);
      expect(await readFile(to, 'utf8')).toBe(`content ${sync}`);
      const lines = r.stderr.split('\n');
      const renameAt = lines.findIndex((l) => /rename(at2?)?\(/.test(l) && l.includes('a-'));
      expect(renameAt).toBeGreaterThanOrEqual(0);
      const fsyncs = lines.slice(renameAt).filter((l) => /fsync\(/.test(l)).length;
      expect(fsyncs).toBe(sync ? 1 : 0);
    }
  });
});
