/** VHDX layout: every decode/encode pair round-trips, and CRC-32C is the Castagnoli CRC. */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../../src/storage/memory.js';
import {
  BAT_REGION_GUID,
  METADATA_REGION_GUID,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  VHDX_PARENT_LOCATOR_TYPE,
  batGeometry,
  bitmapEntryIndex,
  crc32c,
  decodeBatEntry,
  decodeGuid,
  decodeHeader,
  decodeMetadataTable,
  decodeParentLocator,
  decodeRegionTable,
  encodeBatEntry,
  encodeGuid,
  encodeHeader,
  encodeLogEntry,
  encodeMetadataTable,
  encodeParentLocator,
  encodeRegionTable,
  headerProblem,
  payloadEntryIndex,
  randomGuid,
} from '../../../src/formats/vhdx/layout.js';
import { findActiveSequence } from '../../../src/formats/vhdx/log.js';

describe('VHDX layout', () => {
  it('CRC-32C check value (RFC 3720 B.4 / the Castagnoli polynomial): "123456789" → e3069283', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa);
  });

  it('GUIDs in Windows byte order', () => {
    const b = Buffer.alloc(16);
    encodeGuid(BAT_REGION_GUID, b);
    expect(b.subarray(0, 4).toString('hex')).toBe('6677c22d');
    expect(decodeGuid(b)).toBe(BAT_REGION_GUID);
    const g = randomGuid();
    encodeGuid(`{${g}}`, b);
    expect(decodeGuid(b)).toBe(g);
  });

  it('header, region table, metadata table, parent locator and BAT entries round-trip', () => {
    const h = { sequenceNumber: 2n ** 40n + 3n, fileWriteGuid: randomGuid(), dataWriteGuid: randomGuid(), logGuid: randomGuid(), logVersion: 0, version: 1, logLength: 2 ** 20, logOffset: 2 ** 20 };
    const hb = encodeHeader(h);
    expect(decodeHeader(hb, 't')).toMatchObject(h);
    expect(headerProblem(hb, 4 * 2 ** 20, 't')).toBeUndefined();
    const regions = [
      { guid: BAT_REGION_GUID, fileOffset: 3 * 2 ** 20, length: 2 ** 20, required: true },
      { guid: METADATA_REGION_GUID, fileOffset: 2 * 2 ** 20, length: 2 ** 20, required: false },
    ];
    expect(decodeRegionTable(encodeRegionTable(regions), 't')).toEqual(regions);
    const entries = [{ itemId: randomGuid(), offset: 65536, length: 8, isUser: false, isVirtualDisk: true, isRequired: true }, { itemId: randomGuid(), offset: 65544, length: 100, isUser: true, isVirtualDisk: false, isRequired: false }];
    expect(decodeMetadataTable(encodeMetadataTable(entries), 2 ** 20, 't')).toEqual(entries);
    const loc = { locatorType: VHDX_PARENT_LOCATOR_TYPE, entries: { parent_linkage: `{${randomGuid()}}`, relative_path: '..\\dir\\père.vhdx' } };
    expect(decodeParentLocator(encodeParentLocator(loc), 't')).toEqual(loc);
    const bat = Buffer.alloc(16);
    encodeBatEntry(bat, 8, PAYLOAD_BLOCK_FULLY_PRESENT, 2 ** 44 + 7 * 2 ** 20);
    expect(decodeBatEntry(bat, 8)).toEqual({ state: PAYLOAD_BLOCK_FULLY_PRESENT, offset: 2 ** 44 + 7 * 2 ** 20 });
  });

  it('BAT geometry: chunk ratio and interleaved sector bitmap entries (2.5)', () => {
    const g = batGeometry({ blockSize: 32 * 2 ** 20, logicalSectorSize: 512, virtualDiskSize: 127 * 2 ** 30, hasParent: false });
    expect(g.chunkRatio).toBe(128);
    expect(g.payloadBlocks).toBe(4064);
    expect(g.totalEntries).toBe(4064 + Math.floor(4063 / 128));
    expect(payloadEntryIndex(128, 128)).toBe(129);
    expect(bitmapEntryIndex(0, 128)).toBe(128);
    const d = batGeometry({ blockSize: 2 ** 20, logicalSectorSize: 4096, virtualDiskSize: 2 ** 30, hasParent: true });
    expect(d.chunkRatio).toBe(32768);
    expect(d.totalEntries).toBe(32769);
  });

  it('a log entry encoded is found again as the active sequence, sector for sector', async () => {
    const log = Buffer.alloc(2 ** 20);
    const guid = randomGuid();
    const data = Buffer.alloc(4096);
    for (let i = 0; i < data.length; i++) data[i] = i * 7;
    const e = encodeLogEntry({ tail: 8192, sequenceNumber: 0x1_0000_0005n, logGuid: guid, flushedFileOffset: 2 ** 22, lastFileOffset: 2 ** 22 }, [{ fileOffset: 3 * 2 ** 20, data }, { fileOffset: 2 * 2 ** 20, zeroLength: 8192 }]);
    e.copy(log, 8192);
    const file = Buffer.concat([Buffer.alloc(2 ** 20), log, Buffer.alloc(2 ** 21)]);
    const seq = await findActiveSequence(new MemoryStorage(file), { offset: 2 ** 20, length: 2 ** 20, guid });
    expect(seq?.entries).toHaveLength(1);
    expect(seq!.entries[0]!.writes).toEqual([{ fileOffset: 3 * 2 ** 20, data }, { fileOffset: 2 * 2 ** 20, zeroLength: 8192 }]);
    // Another LogGuid sees nothing.
    expect(await findActiveSequence(new MemoryStorage(file), { offset: 2 ** 20, length: 2 ** 20, guid: randomGuid() })).toBeUndefined();
  });
});
