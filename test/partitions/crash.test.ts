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

  const BACKUP_GUID = -512 + 60; // DiskGUID of the backup header, from the end: its HeaderCRC32 then mismatches
  const PRIMARY_GUID = 512 + 60;
  for (const [what, grow, damage, op] of [
    ['moveBackupGptToEnd after a grow', true, undefined, moveBackupGptToEnd],
    ['moveBackupGptToEnd in place from the backup when the primary is damaged', false, PRIMARY_GUID, moveBackupGptToEnd],
    ['repairBackupGpt over a damaged backup', false, BACKUP_GUID, repairBackupGpt],
  ] as const) {
    itWith(['sfdisk'], what, async () => {
      const path = await sfdiskImage(dir, `${op.name}-${grow}-${damage}.img`, 1, SCRIPT);
      if (grow) await truncate(path, 2 * 1024 * 1024);
      const bytes = await bytesOf(path);
      if (damage !== undefined) {
        const at = damage < 0 ? bytes.length + damage : damage;
        bytes[at] = bytes[at]! ^ 0xff;
      }
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
      expect(want.source).toBe(damage === PRIMARY_GUID ? 'backup' : 'primary');
    });
  }
});
