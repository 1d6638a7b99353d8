// The NBD server judged by libnbd's nbdinfo/nbdcopy and qemu-img, and our client read back through it.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { open } from '../../src/formats/registry.js';
import type { DiskImage } from '../../src/device/block-device.js';
import { NbdServer } from '../../src/nbd/server.js';
import { NbdStorage } from '../../src/storage/nbd/client.js';
import { itWith, run, runOk } from '../helpers/oracle.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

let dir: string;
let server: NbdServer;
let dev: DiskImage;
let port: number;
const data = Buffer.concat([Buffer.alloc(4 << 20), patternBytes(3 << 20, 16), Buffer.alloc(9 << 20)]);

beforeAll(async () => {
  dir = await tempDir('vdisk-nbd-');
  await writeFile(join(dir, 'd.raw'), data);
  await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', join(dir, 'd.raw'), join(dir, 'd.vdi')]).catch(() => undefined);
  dev = await open(join(dir, 'd.vdi'), { readOnly: true }).catch(() => open(join(dir, 'd.raw'), { readOnly: true }));
  server = new NbdServer([{ name: 'disk', device: dev, description: 'a VDI' }]);
  port = (await server.listen({ port: 0 })).port!;
});

afterAll(async () => {
  await server?.close();
  await dev?.close();
});

describe('NBD server', () => {
  itWith(['nbdinfo', 'qemu-img', 'nbdcopy', 'qemu-io'], 'nbdinfo lists and maps the export, qemu-img compares it, nbdcopy copies it, our client reads it', async () => {
    const uri = `nbd://127.0.0.1:${port}/disk`;
    const list = await runOk('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`]);
    expect(list).toMatch(/export="disk"/);
    expect(list).toMatch(/description: a VDI/);
    expect(list).toMatch(/base:allocation/);
    const map = await runOk('nbdinfo', ['--map', uri]);
    // The data run is reported as data, the rest as holes.
    expect(map).toMatch(new RegExp(`\\s${4 << 20}\\s+${3 << 20}\\s+0\\s+data`));
    expect(map).toMatch(/hole,zero/);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir, 'd.raw'), uri]);
    expect(cmp.stdout).toMatch(/identical/);
    await runOk('nbdcopy', [uri, join(dir, 'copy.raw')]);
    expect((await readFile(join(dir, 'copy.raw'))).equals(data)).toBe(true);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 512', uri]);
    expect(w.stdout + w.stderr).toMatch(/Operation not permitted|read-only|Permission denied/i);

    const s = await NbdStorage.open(uri);
    try {
      expect(s.size).toBe(data.length);
      const b = Buffer.alloc(5 << 20);
      await s.read(b, 3 << 20);
      expect(b.equals(data.subarray(3 << 20, 8 << 20))).toBe(true);
      const kinds: string[] = [];
      for await (const e of s.extents!(0, s.size)) kinds.push(`${e.offset}:${e.kind}`);
      expect(kinds).toContain(`${4 << 20}:data`);
      await expect(s.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ code: 'E_READONLY' });
    } finally {
      await s.close();
    }
  });

  itWith(['qemu-img', 'qemu-io'], 'fast zeroing (qemu-io write -z -u -n) succeeds where the map says zero and is refused at once over data', async () => {
    const f = join(dir, 'fz.vdi');
    await runOk('qemu-img', ['create', '-f', 'vdi', f, '16M']);
    await runOk('qemu-io', ['-f', 'vdi', '-c', 'write -P 0x5a 1M 64k', f]);
    const w = await open(f);
    const srv = new NbdServer([{ name: 'w', device: w }]);
    const p = (await srv.listen({ port: 0 })).port!;
    const uri = `nbd://127.0.0.1:${p}/w`;
    try {
      // -u lets qemu leave a hole (no NO_HOLE flag): over a hole there is nothing to do.
      const hole = await run('qemu-io', ['-f', 'raw', '-c', 'write -z -u -n 8M 1M', uri]);
      expect(hole.code, hole.stdout + hole.stderr).toBe(0);
      // Over data, or where NO_HOLE asks for allocated zeros, zeroing is real work: refused.
      for (const cmd of ['write -z -u -n 1M 64k', 'write -z -n 8M 64k']) {
        const over = await run('qemu-io', ['-f', 'raw', '-c', cmd, uri]);
        expect(over.stdout + over.stderr, cmd).toMatch(/not supported/i);
      }
      // The refused request changed nothing; a plain zero write still works.
      const back = await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 1M 64k', '-c', 'write -z 1M 64k', '-c', 'read -P 0 1M 64k', uri]);
      expect(back).not.toMatch(/Pattern verification failed/);
    } finally {
      await srv.close();
      await w.close();
    }
    const after = await runOk('qemu-io', ['-f', 'vdi', '-c', 'read -P 0 0 16M', f]);
    expect(after).not.toMatch(/Pattern verification failed/);
  });
});
