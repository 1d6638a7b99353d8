/**
 * Hostile partition tables: looping or escaping EBR chains, GPT headers with huge
 * or misplaced entry arrays, CRC mismatches, overlapping and out-of-disk
 * partitions. Each is reported as a problem naming the field, never a throw, a
 * hang or a huge allocation; plus layout round trips and a mutation fuzz run.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GPT_MAX_ENTRY_ARRAY_BYTES,
  crc32,
  decodeGptEntry,
  decodeGptHeader,
  decodeGuid,
  encodeGptEntry,
  encodeGptHeader,
  encodeGuid,
  type GptEntry,
} from '../../src/partitions/gpt.js';
import { checkPartitions, partitionSpans, readPartitions } from '../../src/partitions/index.js';
import { formatPartitionsHuman } from '../../src/cli/human.js';
import type { GptTable, MbrTable } from '../../src/partitions/index.js';
import { decodeBootRecord, decodeMbrEntry, encodeBootRecord, encodeMbrEntry, type MbrEntry } from '../../src/partitions/mbr.js';
import { fuzz, mutations, type FuzzField } from '../helpers/fuzz.js';
import { missingTools } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { bytesOf, memoryDisk, sfdiskImage } from './helpers.js';

const SS = 512;
const haveSfdisk = missingTools(['sfdisk']).length === 0;
const withSfdisk = haveSfdisk ? describe : describe.skip;

/** Rewrite both GPT copies of `img` after `edit` changed the entries or header fields, with fresh CRCs. */
function patchGpt(img: Buffer, edit: (entries: Buffer, header: ReturnType<typeof decodeGptHeader>) => void): void {
  const primary = decodeGptHeader(img.subarray(SS, 2 * SS));
  const arrayBytes = primary.numberOfPartitionEntries * primary.sizeOfPartitionEntry;
  const entries = Buffer.from(img.subarray(primary.partitionEntryLba * SS, primary.partitionEntryLba * SS + arrayBytes));
  const h = { ...primary };
  edit(entries, h);
  h.partitionEntryArrayCrc32 = crc32(entries.subarray(0, h.numberOfPartitionEntries * h.sizeOfPartitionEntry));
  const backupLba = primary.alternateLba;
  const backup = decodeGptHeader(img.subarray(backupLba * SS, backupLba * SS + SS));
  for (const [at, entriesLba, alt] of [
    [1, primary.partitionEntryLba, backupLba],
    [backupLba, backup.partitionEntryLba, 1],
  ] as const) {
    entries.copy(img, entriesLba * SS);
    Buffer.from(encodeGptHeader({ ...h, myLba: at, alternateLba: alt, partitionEntryLba: entriesLba }, SS)).copy(img, at * SS);
  }
}

function patchEntry(img: Buffer, slot: number, edit: (e: GptEntry) => void): void {
  patchGpt(img, (entries, h) => {
    const e = decodeGptEntry(entries, slot * h.sizeOfPartitionEntry);
    edit(e);
    encodeGptEntry(e, entries, slot * h.sizeOfPartitionEntry);
  });
}

/** Rewrite only the primary header with a field changed and a correct HeaderCRC32. */
function patchPrimaryHeader(img: Buffer, edit: (h: ReturnType<typeof decodeGptHeader>) => void): void {
  const h = decodeGptHeader(img.subarray(SS, 2 * SS));
  edit(h);
  Buffer.from(encodeGptHeader(h, SS)).copy(img, SS);
}

function setEbrEntry(img: Buffer, ebrLba: number, slot: number, edit: (e: MbrEntry) => void): void {
  const at = ebrLba * SS + 446 + slot * 16;
  const e = decodeMbrEntry(img, at);
  edit(e);
  encodeMbrEntry(e, img, at);
}

function messages(t: { problems: { message: string }[] }): string[] {
  return t.problems.map((p) => p.message);
}

describe('layouts round-trip', () => {
  it('GUIDs are stored mixed-endian (UEFI Appendix A) and come back unchanged', () => {
    const b = new Uint8Array(16);
    encodeGuid('C12A7328-F81F-11D2-BA4B-00A0C93EC93B', b);
    expect(Buffer.from(b).toString('hex')).toBe('28732ac11ff8d211ba4b00a0c93ec93b');
    expect(decodeGuid(b)).toBe('C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
    expect(() => encodeGuid('not-a-guid', b)).toThrow(/not a GUID/);
  });

  it('GPT header and entry encode/decode are inverses; CRC-32 is the IEEE one', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    const h = {
      revision: 0x10000,
      headerSize: 92,
      myLba: 1,
      alternateLba: 2 ** 40 + 7,
      firstUsableLba: 34,
      lastUsableLba: 2 ** 40 - 27,
      diskGuid: '0A1805C7-829F-D649-AFC8-AE6D76C941D5',
      partitionEntryLba: 2,
      numberOfPartitionEntries: 128,
      sizeOfPartitionEntry: 128,
      partitionEntryArrayCrc32: 0xdeadbeef,
    };
    const s = encodeGptHeader(h, 4096);
    expect(s.length).toBe(4096);
    const d = decodeGptHeader(s);
    expect({ ...d, signature: undefined, headerCrc32: undefined }).toEqual({ ...h, signature: undefined, headerCrc32: undefined });
    expect(d.signature).toBe('EFI PART');
    const e: GptEntry = {
      partitionTypeGuid: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
      uniquePartitionGuid: '5A2A65A6-2E36-5445-9769-30CEF46F37C1',
      startingLba: 2048,
      endingLba: 2 ** 33,
      attributes: 0x1000000000000005n,
      partitionName: 'root ✓ 😀',
    };
    const buf = new Uint8Array(256);
    encodeGptEntry(e, buf, 128);
    expect(decodeGptEntry(buf, 128)).toEqual(e);
    expect(() => encodeGptEntry({ ...e, partitionName: 'x'.repeat(37) }, buf, 0)).toThrow(/PartitionName/);
  });

  it('MBR entries and boot records encode/decode as inverses, CHS included', () => {
    const e: MbrEntry = { status: 0x80, startChs: { cylinder: 1023, head: 254, sector: 63 }, type: 0x83, endChs: { cylinder: 5, head: 1, sector: 2 }, startLba: 2048, sizeLba: 0xffffffff };
    const sector = new Uint8Array(512);
    encodeMbrEntry(e, sector, 446);
    expect(Buffer.from(sector.subarray(446, 462)).toString('hex')).toBe('80feff' + 'ff' + '83' + '010205' + '00080000' + 'ffffffff');
    expect(decodeMbrEntry(sector, 446)).toEqual(e);
    const rec = { diskSignature: 0x12345678, entries: [e, e, e, e], bootSignatureOk: true };
    encodeBootRecord(rec, sector);
    expect(decodeBootRecord(sector)).toEqual(rec);
  });
});

withSfdisk('hostile tables', async () => {
  const dir = await tempDir('vdisk-parts-bad-');
  let mbr: Buffer = Buffer.alloc(0);
  let gpt: Buffer = Buffer.alloc(0);
  let ext = 0;
  beforeAll(async () => {
    mbr = await bytesOf(await sfdiskImage(dir, 'mbr.img', 8, 'label: dos\nsize=1M, type=83\ntype=5\nsize=1M, type=83\nsize=1M, type=82\ntype=7\n'));
    gpt = await bytesOf(await sfdiskImage(dir, 'gpt.img', 8, 'label: gpt\nsize=1M, type=linux, name="a"\nsize=1M, type=swap, name="b"\ntype=linux, name="c"\n'));
    ext = decodeBootRecord(mbr).entries[1]!.startLba;
  });

  it('the untouched seeds read cleanly (so every problem below comes from the damage)', async () => {
    const m = (await readPartitions(memoryDisk(mbr))) as MbrTable;
    expect(m.problems).toEqual([]);
    expect(m.partitions.map((p) => p.index)).toEqual([1, 2, 5, 6, 7]);
    expect((await readPartitions(memoryDisk(gpt))).problems).toEqual([]);
  });

  it('an EBR chain that loops back is cut with a problem, the logicals before it kept', async () => {
    const img = Buffer.from(mbr);
    const second = ext + decodeMbrEntry(img, ext * SS + 446 + 16).startLba;
    setEbrEntry(img, second, 1, (e) => (e.startLba = 0)); // next EBR = the first one again
    const t = (await readPartitions(memoryDisk(img))) as MbrTable;
    expect(messages(t)).toEqual([expect.stringMatching(/extended partition 2: EBR chain loops back to sector \d+ \(next-EBR StartingLBA\)/)]);
    expect(t.partitions.map((p) => p.index)).toEqual([1, 2, 5, 6]);
  });

  it('an EBR that links to itself is a loop too', async () => {
    const img = Buffer.from(mbr);
    setEbrEntry(img, ext, 1, (e) => (e.startLba = 0));
    const t = (await readPartitions(memoryDisk(img))) as MbrTable;
    expect(messages(t)).toEqual([expect.stringMatching(/EBR chain loops back to sector/)]);
  });

  it('an EBR link outside the disk is a problem naming the field', async () => {
    const img = Buffer.from(mbr);
    setEbrEntry(img, ext, 1, (e) => (e.startLba = 0xfffffff0));
    const t = (await readPartitions(memoryDisk(img))) as MbrTable;
    expect(messages(t)).toEqual([expect.stringMatching(/EBR at sector \d+ lies outside the 16384-sector disk \(next-EBR StartingLBA\)/)]);
    expect(t.partitions.map((p) => p.index)).toEqual([1, 2, 5]);
  });

  it('a logical partition escaping its extended partition is reported', async () => {
    const img = Buffer.from(mbr);
    setEbrEntry(img, ext, 0, (e) => (e.sizeLba = 0x00ffffff));
    const t = await readPartitions(memoryDisk(img));
    expect(messages(t)).toContainEqual(expect.stringMatching(/^partition 5: sectors \d+-\d+ are not inside extended partition 2 .*\(StartingLBA\/SizeInLBA\)/));
    expect(messages(t)).toContainEqual(expect.stringMatching(/^partition 5: sectors \d+-\d+ run past the end of the 16384-sector disk \(SizeInLBA\)/));
  });

  it('overlapping and out-of-disk MBR primaries are reported', async () => {
    const img = Buffer.from(mbr);
    const rec = decodeBootRecord(img);
    rec.entries[2] = { ...rec.entries[0]!, startLba: rec.entries[0]!.startLba + 100, sizeLba: 50 };
    rec.entries[3] = { ...rec.entries[0]!, startLba: 16000, sizeLba: 1000 };
    encodeBootRecord(rec, img);
    const t = await readPartitions(memoryDisk(img));
    expect(messages(t)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^partitions 1 and 3 overlap: sectors 2148-2197 belong to both/),
        expect.stringMatching(/^partition 4: sectors 16000-16999 run past the end of the 16384-sector disk/),
      ]),
    );
  });

  it('a GPT with a huge NumberOfPartitionEntries (valid CRC) is reported and read from the backup', async () => {
    const img = Buffer.from(gpt);
    patchPrimaryHeader(img, (h) => (h.numberOfPartitionEntries = 0xffffffff));
    const before = process.memoryUsage().arrayBuffers;
    const t = (await readPartitions(memoryDisk(img))) as GptTable;
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(4 * GPT_MAX_ENTRY_ARRAY_BYTES + 32 * 1024 * 1024);
    expect(messages(t)).toContainEqual(expect.stringMatching(/^primary GPT header \(sector 1\): NumberOfPartitionEntries is 4294967295/));
    expect(t.source).toBe('backup');
    expect(t.partitions.map((p) => p.name)).toEqual(['a', 'b', 'c']);
  });

  it('a GPT with a huge SizeOfPartitionEntry is reported naming the field', async () => {
    const img = Buffer.from(gpt);
    patchPrimaryHeader(img, (h) => (h.sizeOfPartitionEntry = 0x80000000));
    const t = (await readPartitions(memoryDisk(img))) as GptTable;
    expect(messages(t)).toContainEqual(expect.stringMatching(/^primary GPT header \(sector 1\): SizeOfPartitionEntry is 2147483648/));
    expect(t.partitions).toHaveLength(3);
  });

  it('a header claiming more entries than fit before FirstUsableLBA is reported', async () => {
    const img = Buffer.from(gpt);
    patchPrimaryHeader(img, (h) => (h.numberOfPartitionEntries = 8192)); // 2048 sectors from LBA 2 run into 2048
    const t = (await readPartitions(memoryDisk(img))) as GptTable;
    expect(messages(t)).toContainEqual('primary GPT header (sector 1): NumberOfPartitionEntries puts the entry array (sectors 2-2049) inside the usable area 2048-16350');
  });

  it('CRC mismatches name HeaderCRC32 and PartitionEntryArrayCRC32', async () => {
    const img = Buffer.from(gpt);
    img[SS + 40] = img[SS + 40]! ^ 1; // FirstUsableLBA, header CRC now wrong
    const backupEntries = decodeGptHeader(img.subarray(16383 * SS)).partitionEntryLba;
    img[backupEntries * SS + 56] = img[backupEntries * SS + 56]! ^ 1; // name of entry 1 in the backup array
    const t = (await readPartitions(memoryDisk(img))) as GptTable;
    expect(messages(t)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^primary GPT header \(sector 1\): HeaderCRC32 is 0x[0-9a-f]{8}, the header's CRC-32 is 0x[0-9a-f]{8}$/),
        expect.stringMatching(/^backup GPT header \(sector 16383\): PartitionEntryArrayCRC32 is 0x[0-9a-f]{8}, the entry array at sector 16351 has CRC-32/),
      ]),
    );
    // Neither copy is intact; what could be read is still shown.
    expect(t.partitions).toHaveLength(3);
    expect((await checkPartitions(memoryDisk(img), { repair: 'all' })).some((p) => p.repaired)).toBe(false);
  });

  it('overlapping, out-of-usable-area and inverted GPT partitions are reported', async () => {
    const img = Buffer.from(gpt);
    patchEntry(img, 1, (e) => (e.startingLba -= 10)); // into partition 1
    patchEntry(img, 2, (e) => (e.endingLba = 16380)); // past LastUsableLBA 16350
    patchEntry(img, 3, (e) => {
      e.partitionTypeGuid = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
      e.startingLba = 5000;
      e.endingLba = 4000;
    });
    const t = (await readPartitions(memoryDisk(img))) as GptTable;
    expect(t.primary?.valid && t.backup?.valid).toBe(true);
    expect(messages(t).sort()).toEqual(
      [
        'partitions 1 and 2 overlap: sectors 4086-4095 belong to both',
        'partition 3: sectors 6144-16380 are outside the usable area 2048-16350 (StartingLBA/EndingLBA)',
        'partition 4: ends before it starts (EndingLBA < StartingLBA)',
      ].sort(),
    );
  });

  it('a primary whose AlternateLBA misses the backup is reported and fixed by -r all', async () => {
    const img = Buffer.from(gpt);
    patchPrimaryHeader(img, (h) => (h.alternateLba = 9000));
    const disk = memoryDisk(img);
    const problems = await checkPartitions(disk, { repair: 'all' });
    expect(problems).toEqual([expect.objectContaining({ message: 'primary GPT header (sector 1): AlternateLBA is 9000, but the backup header is at sector 16383', repaired: true })]);
    expect(await checkPartitions(disk)).toEqual([]);
  });

  it('primary and backup that disagree are reported field by field', async () => {
    const img = Buffer.from(gpt);
    const backupLba = 16383;
    const b = decodeGptHeader(img.subarray(backupLba * SS, backupLba * SS + SS));
    Buffer.from(encodeGptHeader({ ...b, diskGuid: '11111111-2222-3333-4444-555555555555', lastUsableLba: 16000 }, SS)).copy(img, backupLba * SS);
    const t = await readPartitions(memoryDisk(img));
    expect(messages(t)).toEqual([expect.stringMatching(/^primary and backup GPT disagree on DiskGUID: .* \(primary\) vs 11111111-2222-3333-4444-555555555555 \(backup\)$/), 'primary and backup GPT disagree on LastUsableLBA: 16350 (primary) vs 16000 (backup)']);
    const disk = memoryDisk(img);
    const fixed = await checkPartitions(disk, { repair: 'all' });
    expect(fixed.every((p) => p.repaired)).toBe(true);
    expect(await checkPartitions(disk)).toEqual([]);
  });

  it('fuzz: damaged MBR and GPT tables read and check without crash, hang or blow-up', async () => {
    const gptFields: FuzzField[] = [];
    const header = (base: number, tag: string): void => {
      for (const [off, size, name] of [
        [12, 4, 'HeaderSize'],
        [24, 8, 'MyLBA'],
        [32, 8, 'AlternateLBA'],
        [40, 8, 'FirstUsableLBA'],
        [48, 8, 'LastUsableLBA'],
        [72, 8, 'PartitionEntryLBA'],
        [80, 4, 'NumberOfPartitionEntries'],
        [84, 4, 'SizeOfPartitionEntry'],
      ] as const) gptFields.push({ offset: base + off, size, name: `${tag}.${name}` });
    };
    // Small seeds (1 MiB) keep each case cheap: the reader is what is under test, not memcpy.
    const smallGpt = await bytesOf(await sfdiskImage(dir, 'fuzz-gpt.img', 1, 'label: gpt\nfirst-lba: 34\nsize=200, type=linux, name="a"\nsize=300, type=swap, name="b"\ntype=uefi, name="c"\n'));
    const smallMbr = await bytesOf(await sfdiskImage(dir, 'fuzz-mbr.img', 1, 'label: dos\nstart=1, size=100, type=83\nstart=200, type=5\nstart=202, size=100, type=83\nstart=400, size=100, type=82\nstart=600, type=7\n'));
    const smallExt = decodeBootRecord(smallMbr).entries[1]!.startLba;
    header(SS, 'primary');
    header(2047 * SS, 'backup');
    for (let i = 0; i < 3; i++) {
      gptFields.push({ offset: 2 * SS + i * 128 + 32, size: 8, name: `entry${i}.StartingLBA` }, { offset: 2 * SS + i * 128 + 40, size: 8, name: `entry${i}.EndingLBA` });
    }
    const mbrFields: FuzzField[] = [];
    const second = smallExt + decodeMbrEntry(smallMbr, smallExt * SS + 446 + 16).startLba;
    for (const base of [0, smallExt * SS, second * SS]) {
      for (let i = 0; i < 4; i++) {
        mbrFields.push({ offset: base + 446 + i * 16 + 4, size: 1, name: 'OSType' }, { offset: base + 446 + i * 16 + 8, size: 4, name: 'StartingLBA' }, { offset: base + 446 + i * 16 + 12, size: 4, name: 'SizeInLBA' });
      }
    }
    const attempt = async (data: Buffer): Promise<void> => {
      const disk = memoryDisk(data);
      const t = await readPartitions(disk);
      for (const p of t.problems) expect(p.message.length).toBeGreaterThan(0);
      // What info prints and the map draws must cope with whatever was read.
      expect(formatPartitionsHuman(t)[0]).toMatch(/^partition table: /);
      for (const s of partitionSpans(t)) expect(Number.isFinite(s.offset) && s.length >= 0).toBe(true);
      await checkPartitions(disk, { repair: 'all' });
    };
    expect((await readPartitions(memoryDisk(smallGpt))).problems).toEqual([]);
    const sm = (await readPartitions(memoryDisk(smallMbr))) as MbrTable;
    expect([sm.problems, sm.partitions.map((p) => p.index)]).toEqual([[], [1, 2, 5, 6, 7]]);
    const g = await fuzz(mutations(smallGpt, { count: 400, seed: 10, fields: gptFields, hotBytes: 3 * SS }), attempt, { timeoutMs: 2000, maxRssGrowthMiB: 256 });
    const m = await fuzz(mutations(smallMbr, { count: 400, seed: 11, fields: mbrFields, hotBytes: SS }), attempt, { timeoutMs: 2000, maxRssGrowthMiB: 256 });
    expect(g.cases + m.cases).toBe(800);
  });
});
