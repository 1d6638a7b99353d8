/**
 * The VHDX log: a dirty image qemu left behind (blkdebug fails its BAT write after
 * the log entry is flushed), and logs crafted by the specification (a sequence of two
 * entries, a stale entry of another LogGuid, a torn entry). qemu judges: `qemu-img
 * check -r all` replays a copy, and `qemu-img convert -O raw` of that copy must equal
 * what we read from the dirty file, in memory (read-only, file unchanged) and after
 * our own replay (writable open).
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { open } from '../../../src/formats/registry.js';
import { create } from '../../../src/ops/create.js';
import {
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SIZE,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  decodeHeader,
  encodeBatEntry,
  encodeHeader,
  encodeLogEntry,
  randomGuid,
} from '../../../src/formats/vhdx/layout.js';
import { itWith, run, runOk } from '../../helpers/oracle.js';
import { readImageFile } from '../../helpers/read.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';
import { MiB, QEMU, qemuRaw } from './helpers.js';

let dir = '';
beforeAll(async () => {
  dir = await tempDir('vdisk-vhdx-log-');
});

/** What qemu reads once it has replayed the log of a copy of `f` itself. */
async function qemuReplayed(f: string): Promise<Buffer> {
  const copy = `${f}.qemu-replayed.vhdx`;
  await copyFile(f, copy);
  const r = await run('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', copy]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return qemuRaw(copy);
}

/** Our read-only view equals qemu's replay, says so, and leaves the file as it was; a writable open applies it. */
async function expectReplayLikeQemu(f: string, entries: number): Promise<Buffer> {
  const theirs = await qemuReplayed(f);
  const before = await readFile(f);
  const img = await open(f, { readOnly: true });
  try {
    const info = await img.info();
    expect(info.dirty).toBe(true);
    expect(info.formatSpecific?.['log-replayed']).toEqual({ entries, inMemory: true });
    expect(info.warnings?.join('\n')).toMatch(/replayed in memory/);
  } finally {
    await img.close();
  }
  expect((await readImageFile(f)).equals(theirs)).toBe(true);
  expect((await readFile(f)).equals(before)).toBe(true);
  const w = await open(f);
  await w.close();
  const c = await run('qemu-img', ['check', '-f', 'vhdx', f]);
  expect(c.code, c.stdout + c.stderr).toBe(0);
  expect((await qemuRaw(f)).equals(theirs)).toBe(true);
  const again = await open(f, { readOnly: true });
  try {
    expect((await again.info()).formatSpecific?.['log-replayed']).toBeUndefined();
  } finally {
    await again.close();
  }
  return theirs;
}

/** Set the LogGuid of both headers of the file `f` (as a writer does before its first log entry). */
async function setLogGuid(f: Buffer, guid: string): Promise<void> {
  for (const at of [HEADER1_OFFSET, HEADER2_OFFSET]) {
    const h = decodeHeader(f.subarray(at, at + HEADER_SIZE), 'test');
    encodeHeader({ ...h, logGuid: guid, sequenceNumber: h.sequenceNumber + 10n }).copy(f, at);
  }
}

describe('VHDX log replay', () => {
  itWith(QEMU, "qemu's own dirty image (BAT write failed after the log entry was flushed)", async () => {
    const f = join(dir, 'qemu-dirty.vhdx');
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', f, '8M']);
    // The BAT of this layout starts at 2 MiB (sector 4096): fail writes there.
    const conf = join(dir, 'blkdebug.conf');
    await writeFile(conf, '[inject-error]\nevent = "pwritev"\nsector = "4096"\nerrno = "5"\n');
    const r = await run('qemu-io', ['-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0x6b 3M 4k', `blkdebug:${conf}:${f}`]);
    expect(r.stdout + r.stderr).toMatch(/Input\/output error/);
    const refused = await run('qemu-img', ['info', '-f', 'vhdx', f]);
    expect(refused.stderr).toMatch(/log that needs to be replayed/);
    const data = await expectReplayLikeQemu(f, 1);
    expect(data.subarray(0, 64 * 1024).every((b) => b === 0x5a)).toBe(true);
  });

  itWith(QEMU, 'a crafted sequence of two entries, beside a stale entry of another LogGuid', async () => {
    const f = join(dir, 'crafted.vhdx');
    const img = await create(f, { format: 'vhdx', size: '8M', options: { block_size: '1M' } });
    await img.close();
    const file = await readFile(f);
    // This layout (create.ts): log at 1 MiB (1 MiB long), metadata at 2 MiB, BAT at 3 MiB, file 4 MiB.
    const logAt = MiB;
    const batAt = 3 * MiB;
    const blocks = [patternBytes(MiB, 1), patternBytes(MiB, 2), patternBytes(MiB, 3)];
    const grown = Buffer.concat([file, ...blocks]);
    const bat = (entries: Array<[number, number]>): Buffer => {
      const s = Buffer.from(grown.subarray(batAt, batAt + 4096));
      for (const [n, at] of entries) encodeBatEntry(s, n * 8, PAYLOAD_BLOCK_FULLY_PRESENT, at);
      return s;
    };
    const guid = randomGuid();
    const size = grown.length;
    const e1 = encodeLogEntry({ tail: 0, sequenceNumber: 41n, logGuid: guid, flushedFileOffset: size, lastFileOffset: size }, [{ fileOffset: batAt, data: bat([[0, 4 * MiB]]) }]);
    // Entry 2 repeats block 0 (it was written after entry 1) and adds block 5, plus zeros over the metadata's spare space.
    const e2 = encodeLogEntry({ tail: 0, sequenceNumber: 42n, logGuid: guid, flushedFileOffset: size, lastFileOffset: size }, [
      { fileOffset: batAt, data: bat([[0, 4 * MiB], [5, 5 * MiB]]) },
      { fileOffset: 2 * MiB + 512 * 1024, zeroLength: 64 * 1024 },
    ]);
    const stale = encodeLogEntry({ tail: 64 * 1024, sequenceNumber: 99n, logGuid: randomGuid(), flushedFileOffset: size, lastFileOffset: size }, [{ fileOffset: batAt, data: bat([[7, 6 * MiB]]) }]);
    e1.copy(grown, logAt);
    e2.copy(grown, logAt + e1.length);
    stale.copy(grown, logAt + 64 * 1024);
    await setLogGuid(grown, guid);
    await writeFile(f, grown);
    const data = await expectReplayLikeQemu(f, 2);
    expect(data.subarray(0, MiB).equals(blocks[0]!)).toBe(true);
    expect(data.subarray(5 * MiB, 6 * MiB).equals(blocks[1]!)).toBe(true);
    expect(data.subarray(7 * MiB).every((b) => b === 0)).toBe(true);
  });

  itWith(QEMU, 'a torn entry (bad checksum) is nothing to replay; a writable open clears the LogGuid', async () => {
    const f = join(dir, 'torn.vhdx');
    const img = await create(f, { format: 'vhdx', size: '4M', options: { block_size: '1M' } });
    await img.close();
    const file = await readFile(f);
    const guid = randomGuid();
    const s = Buffer.from(file.subarray(3 * MiB, 3 * MiB + 4096));
    encodeBatEntry(s, 0, PAYLOAD_BLOCK_FULLY_PRESENT, 4 * MiB);
    const e = encodeLogEntry({ tail: 0, sequenceNumber: 1n, logGuid: guid, flushedFileOffset: file.length, lastFileOffset: file.length + MiB }, [{ fileOffset: 3 * MiB, data: s }]);
    e[e.length - 100] ^= 0xff;
    e.copy(file, MiB);
    await setLogGuid(file, guid);
    await writeFile(f, file);
    const ro = await open(f, { readOnly: true });
    try {
      expect((await ro.info()).warnings?.join('\n')).toMatch(/no whole entry/);
    } finally {
      await ro.close();
    }
    expect((await readImageFile(f)).every((b) => b === 0)).toBe(true);
    const w = await open(f);
    await w.close();
    expect((await run('qemu-img', ['check', '-f', 'vhdx', f])).code).toBe(0);
  });

  itWith(QEMU, 'an entry whose FlushedFileOffset is past the end of the file: refused writable, read-only says it skipped the log', async () => {
    const f = join(dir, 'lost.vhdx');
    const img = await create(f, { format: 'vhdx', size: '4M', options: { block_size: '1M' } });
    await img.close();
    const file = await readFile(f);
    const guid = randomGuid();
    const s = Buffer.from(file.subarray(3 * MiB, 3 * MiB + 4096));
    encodeBatEntry(s, 0, PAYLOAD_BLOCK_FULLY_PRESENT, 4 * MiB);
    encodeLogEntry({ tail: 0, sequenceNumber: 1n, logGuid: guid, flushedFileOffset: file.length + MiB, lastFileOffset: file.length + MiB }, [{ fileOffset: 3 * MiB, data: s }]).copy(file, MiB);
    await setLogGuid(file, guid);
    await writeFile(f, file);
    await expect(open(f)).rejects.toMatchObject({ code: 'E_CORRUPT' });
    const ro = await open(f, { readOnly: true });
    try {
      expect((await ro.info()).warnings?.join('\n')).toMatch(/does not replay.*FlushedFileOffset/);
    } finally {
      await ro.close();
    }
  });
});
