/**
 * Write ordering of the GPT rewrites: a crash at any write of moveBackupGptToEnd or
 * repairBackupGpt leaves a disk whose partitions still read the same from an
 * intact GPT copy.
 */
import { truncate } from 'node:fs/promises';
import { describe, expect } from 'vitest';
import { openLocation } from '../../src/formats/registry.js';
import { moveBackupGptToEnd, readPartitions, repairBackupGpt } from '../../src/partitions/index.js';
import type { GptTable } from '../../src/partitions/index.js';
import { MemoryLocation } from '../../src/storage/location.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { crashSweep } from '../helpers/crash.js';
import { itWith } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { bytesOf, sfdiskImage } from './helpers.js';

/** Open `bytes` as a raw disk in memory. */
function diskOf(bytes: Buffer, readOnly = false): ReturnType<typeof openLocation> {
  return openLocation(new MemoryLocation('d.img', new Map([['d.img', new MemoryStorage(bytes)]])), { format: 'raw', readOnly });
}

const SCRIPT = 'label: gpt\nfirst-lba: 34\nsize=300, type=linux, name="one"\ntype=swap, name="two"\n';

describe('GPT rewrites survive a crash at any write', async () => {
  const dir = await tempDir('vdisk-parts-crash-');

  for (const [what, prepare, op] of [
    ['moveBackupGptToEnd after a grow', (p: string) => truncate(p, 2 * 1024 * 1024), moveBackupGptToEnd],
    ['repairBackupGpt over a damaged backup', async () => undefined, repairBackupGpt],
  ] as const) {
    itWith(['sfdisk'], what, async () => {
      const path = await sfdiskImage(dir, `${op.name}.img`, 1, SCRIPT);
      await prepare(path);
      const bytes = await bytesOf(path);
      if (op === repairBackupGpt) bytes[bytes.length - 512 + 60] ^= 0xff; // backup DiskGUID: HeaderCRC32 mismatch
      const want = (await readPartitions(await diskOf(bytes, true))) as GptTable;
      expect(want.partitions.map((p) => p.name)).toEqual(['one', 'two']);
      const writes = await crashSweep({
        initial: new Map([['d.img', bytes]]),
        name: 'd.img',
        workload: async (loc, progress) => {
          const img = await openLocation(loc, { format: 'raw' });
          await op(img);
          progress.flushedSteps = 1;
          await img.close();
        },
        verify: async (files, progress) => {
          const img = await diskOf(files.get('d.img')!, true);
          const t = (await readPartitions(img)) as GptTable;
          expect(t.scheme).toBe('gpt');
          expect(t.primary?.valid || t.backup?.valid).toBe(true);
          expect(t.partitions).toEqual(want.partitions);
          if (progress.flushedSteps === 1) expect(t.problems).toEqual([]);
        },
      });
      expect(writes).toBeGreaterThanOrEqual(op === repairBackupGpt ? 2 : 4);
    });
  }
});
