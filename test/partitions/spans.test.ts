/**
 * partitionSpans (what the SVG map draws) and tables on 4096-byte-sector disks,
 * both against what sfdisk wrote.
 */
import { describe, expect } from 'vitest';
import type { BlockDevice, Extent } from '../../src/device/block-device.js';
import { open } from '../../src/formats/registry.js';
import { partitionSpans, readPartitions } from '../../src/partitions/index.js';
import type { GptTable } from '../../src/partitions/index.js';
import { itWith, runOk } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { blankImage, nodeIndex, sfdiskJson } from './helpers.js';

/** The same bytes seen as a disk with 4096-byte logical sectors. */
function as4k(dev: BlockDevice): BlockDevice {
  return {
    size: dev.size,
    sectorSize: 4096,
    readOnly: dev.readOnly,
    read: (b, o) => dev.read(b, o),
    write: (b, o) => dev.write(b, o),
    writeZeroes: (o, l) => dev.writeZeroes(o, l),
    discard: (o, l) => dev.discard(o, l),
    flush: () => dev.flush(),
    extents: (o?: number, l?: number): AsyncIterable<Extent> => dev.extents(o, l),
    close: () => dev.close(),
  };
}

describe('partition spans and sector sizes', async () => {
  const dir = await tempDir('vdisk-parts-spans-');

  itWith(['sfdisk'], 'spans are the byte ranges sfdisk reports, labelled by name or type', async () => {
    const path = await blankImage(dir, 'spans.img', 16);
    await runOk('sh', ['-c', `printf 'label: dos\\nsize=2M, type=83\\ntype=f\\nsize=3M, type=82\\n' | sfdisk -q "$0"`, path]);
    const sf = await sfdiskJson(path);
    const img = await open(path, { readOnly: true });
    try {
      const spans = partitionSpans(await readPartitions(img));
      expect(spans.map((s) => [s.index, s.offset, s.length, s.kind, s.label])).toEqual(
        sf.partitions.map((p, i) => [nodeIndex(p.node), p.start * 512, p.size * 512, ['primary', 'extended', 'logical'][i], ['Linux', "W95 Ext'd (LBA)", 'Linux swap / Solaris'][i]]),
      );
    } finally {
      await img.close();
    }
  });

  itWith(['fdisk'], 'a GPT written by fdisk -b 4096 reads to the 4096-byte-sector numbers fdisk -l prints', async () => {
    const path = await blankImage(dir, '4k.img', 16);
    // fdisk dialogue: new GPT label, partition 1 of 2 MiB, partition 2 to the end, type 19 (Linux swap), write.
    await runOk('sh', ['-c', `printf 'g\\nn\\n1\\n\\n+2M\\nn\\n2\\n\\n\\nt\\n2\\n19\\nw\\n' | fdisk -b 4096 "$0" >/dev/null`, path]);
    const listing = await runOk('fdisk', ['-b', '4096', '-l', '-o', 'Device,Start,Sectors,Type-UUID', path]);
    const guid = /Disk identifier: (\S+)/.exec(listing)![1];
    const rows = [...listing.matchAll(/^\S+?(\d+)\s+(\d+)\s+(\d+)\s+([0-9A-F-]{36})$/gm)].map((m) => [Number(m[1]), Number(m[2]), Number(m[3]), m[4]]);
    expect(rows).toHaveLength(2);
    const img = await open(path, { readOnly: true });
    try {
      const t = (await readPartitions(as4k(img))) as GptTable;
      expect(t.problems).toEqual([]);
      expect(t.diskGuid).toBe(guid);
      expect(t.partitions.map((p) => [p.index, p.start, p.sectors, p.typeGuid])).toEqual(rows);
      expect(t.partitions[0]!.offset).toBe(256 * 4096);
      expect(t.backup?.lba).toBe(16 * 256 - 1);
      // Read with 512-byte sectors the same bytes hold no GPT at LBA 1.
      expect((await readPartitions(img)).scheme).not.toBe('gpt');
    } finally {
      await img.close();
    }
  });
});
