import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isVdiskError } from '../../src/errors.js';
import { FileStorage } from '../../src/storage/file.js';
import { lockPathFor } from '../../src/storage/lock.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

describe('FileStorage', () => {
  it('reads what was written and fills the whole buffer', async () => {
    const p = join(dir, 'rw.bin');
    const s = await FileStorage.open(p, { create: 'new' });
    const data = patternBytes(3 * 1024 * 1024 + 17, 7);
    await s.write(data, 100);
    expect(s.size).toBe(data.length + 100);
    const back = Buffer.alloc(data.length);
    await s.read(back, 100);
    expect(back.equals(data)).toBe(true);
    await s.close();
    const onDisk = await readFile(p);
    expect(onDisk.subarray(100).equals(data)).toBe(true);
    expect(onDisk.subarray(0, 100).every((b) => b === 0)).toBe(true);
  });

  it('throws E_BOUNDS instead of returning a short read', async () => {
    const p = join(dir, 'short.bin');
    await writeFile(p, Buffer.alloc(1000, 1));
    const s = await FileStorage.open(p, { readOnly: true });
    await expect(s.read(Buffer.alloc(512), 600)).rejects.toMatchObject({ code: 'E_BOUNDS' });
    await expect(s.read(Buffer.alloc(1), -1)).rejects.toMatchObject({ code: 'E_BOUNDS' });
    await s.close();
  });

  it('truncates and reports the new size; new bytes read as zeros', async () => {
    const p = join(dir, 'trunc.bin');
    const s = await FileStorage.open(p, { create: 'new' });
    await s.write(Buffer.alloc(4096, 0xff), 0);
    await s.truncate(1024);
    await s.truncate(8192);
    expect(s.size).toBe(8192);
    const b = Buffer.alloc(8192);
    await s.read(b, 0);
    expect(b.subarray(0, 1024).every((x) => x === 0xff)).toBe(true);
    expect(b.subarray(1024).every((x) => x === 0)).toBe(true);
    await s.flush();
    await s.close();
  });

  it('refuses writes when read-only and any call after close', async () => {
    const p = join(dir, 'ro.bin');
    await writeFile(p, Buffer.alloc(512));
    const s = await FileStorage.open(p, { readOnly: true });
    await expect(s.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'E_READONLY' });
    await s.close();
    await expect(s.read(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'E_CLOSED' });
  });

  it('names the file for a missing path and a folder', async () => {
    await expect(FileStorage.open(join(dir, 'nope'), { readOnly: true })).rejects.toSatisfy(
      (e: unknown) => isVdiskError(e, 'E_NOENT') && e.message.includes('nope'),
    );
    await expect(FileStorage.open(dir, { readOnly: true })).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(FileStorage.open(join(dir, 'rw.bin'), { create: 'new' })).rejects.toMatchObject({ code: 'E_EXISTS' });
  });

  it('refuses a named pipe without blocking on it', async () => {
    const fifo = join(dir, 'pipe');
    spawnSync('mkfifo', [fifo]);
    await expect(FileStorage.open(fifo, { readOnly: true })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('not a regular file') });
  });
});

describe('write lock', () => {
  it('lets one writer in, refuses a second, never blocks readers, and releases on close', async () => {
    const p = join(dir, 'locked.bin');
    await writeFile(p, Buffer.alloc(512));
    const w = await FileStorage.open(p);
    expect((await readFile(lockPathFor(p), 'utf8')).split('\n')[0]).toBe(String(process.pid));
    await expect(FileStorage.open(p)).rejects.toMatchObject({ code: 'E_LOCKED' });
    const r = await FileStorage.open(p, { readOnly: true });
    await r.close();
    await w.close();
    const again = await FileStorage.open(p);
    await again.close();
  });

  it('breaks the stale lock of a process that is gone', async () => {
    const p = join(dir, 'stale.bin');
    await writeFile(p, Buffer.alloc(512));
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    await writeFile(lockPathFor(p), `${dead.stdout}\n`);
    const w = await FileStorage.open(p);
    await w.close();
  });

  it('is held against another process', async () => {
    const p = join(dir, 'other.bin');
    await writeFile(p, Buffer.alloc(512));
    const w = await FileStorage.open(p);
    const mod = new URL('../../dist/storage/file.js', import.meta.url).href;
    const child = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import {FileStorage} from '${mod}'; try { await FileStorage.open(process.argv[1]); console.log('opened'); } catch (e) { console.log(e.code); }`, p],
      { encoding: 'utf8' },
    );
    expect(child.stdout.trim()).toBe('E_LOCKED');
    await w.close();
  });
});
