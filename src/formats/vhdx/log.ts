/**
 * The VHDX metadata log ([MS-VHDX] 2.3): finding the active sequence, replaying it
 * (onto the file, or into an in-memory overlay for a read-only open), and writing
 * our own metadata updates through it so a crash at any write leaves an image that
 * replays to a consistent state.
 */
import { VdiskError } from '../../errors.js';
import { filterStorage } from '../../storage/filter.js';
import { IO_CHUNK, type Storage } from '../../storage/storage.js';
import {
  DATA_SECTOR_PAYLOAD,
  DATA_SECTOR_SIGNATURE,
  LOG_DESCRIPTOR_SIZE,
  LOG_ENTRY_HEADER_SIZE,
  LOG_ENTRY_SIGNATURE,
  LOG_SECTOR_SIZE,
  REGION_TABLE1_OFFSET,
  checksumWithFieldZero,
  decodeLogDescriptor,
  decodeLogEntryHeader,
  descriptorSectors,
  encodeLogEntry,
  type LogEntryHeader,
} from './layout.js';

/** Largest log entry vdisk reads (an entry of a 1 MiB log is at most 1 MiB; Hyper-V's are small). */
export const MAX_LOG_ENTRY = 32 * 1024 * 1024;
/** Largest file a log may say the image has (LastFileOffset): 256 TiB, beyond any 64 TiB disk's file. */
const MAX_LAST_FILE_OFFSET = 2 ** 48;

/** One write the replay makes: a 4 KiB sector, or a run of zeros. */
export type LogWrite = { fileOffset: number; data: Buffer } | { fileOffset: number; zeroLength: number };

/** A valid log entry, decoded. */
export interface LogEntry {
  /** Offset of the entry inside the log. */
  position: number;
  header: LogEntryHeader;
  writes: LogWrite[];
}

/** The active sequence: the entries to replay, in order. */
export interface ActiveSequence {
  entries: LogEntry[];
  /** The file size the replayed metadata expects (the last entry's LastFileOffset). */
  lastFileOffset: number;
  flushedFileOffset: number;
}

/** Where the log is and which entries belong to it (from the current header). */
export interface LogPlace {
  offset: number;
  length: number;
  guid: string;
}

/** Read `len` bytes at `pos` of the circular log. */
async function readLog(storage: Storage, log: LogPlace, pos: number, len: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  const first = Math.min(len, log.length - pos);
  await storage.read(b.subarray(0, first), log.offset + pos);
  if (first < len) await storage.read(b.subarray(first), log.offset);
  return b;
}

/** The entry at `pos` if it is valid for this log (2.3.1: signature, length, GUID, checksum, descriptors, data sectors). */
async function entryAt(storage: Storage, log: LogPlace, pos: number): Promise<LogEntry | undefined> {
  const name = storage.name;
  const head = await readLog(storage, log, pos, LOG_ENTRY_HEADER_SIZE);
  if (head.readUInt32LE(0) !== LOG_ENTRY_SIGNATURE) return undefined;
  const h = decodeLogEntryHeader(head, name);
  const sectors = h.entryLength / LOG_SECTOR_SIZE;
  if (!Number.isInteger(sectors) || sectors < 1 || h.entryLength > log.length || h.entryLength > MAX_LOG_ENTRY) return undefined;
  if (h.logGuid !== log.guid || h.tail % LOG_SECTOR_SIZE !== 0 || h.tail >= log.length) return undefined;
  if (descriptorSectors(h.descriptorCount) > sectors) return undefined;
  if (h.lastFileOffset > MAX_LAST_FILE_OFFSET || h.flushedFileOffset > h.lastFileOffset) return undefined;
  const raw = await readLog(storage, log, pos, h.entryLength);
  if (checksumWithFieldZero(raw, 4) !== h.checksum) return undefined;
  const writes: LogWrite[] = [];
  let dataSector = descriptorSectors(h.descriptorCount);
  for (let i = 0; i < h.descriptorCount; i++) {
    const d = decodeLogDescriptor(raw, LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE, name);
    if (typeof d === 'string' || d.sequenceNumber !== h.sequenceNumber || d.fileOffset % LOG_SECTOR_SIZE !== 0) return undefined;
    if (d.kind === 'zero') {
      if (d.zeroLength === 0 || d.zeroLength % LOG_SECTOR_SIZE !== 0 || d.fileOffset + d.zeroLength > h.lastFileOffset) return undefined;
      writes.push({ fileOffset: d.fileOffset, zeroLength: d.zeroLength });
    } else {
      if (dataSector >= sectors || d.fileOffset + LOG_SECTOR_SIZE > h.lastFileOffset) return undefined;
      const s = raw.subarray(dataSector * LOG_SECTOR_SIZE, (dataSector + 1) * LOG_SECTOR_SIZE);
      dataSector++;
      const seq = (BigInt(s.readUInt32LE(4)) << 32n) | BigInt(s.readUInt32LE(4092));
      if (s.readUInt32LE(0) !== DATA_SECTOR_SIGNATURE || seq !== h.sequenceNumber) return undefined;
      writes.push({ fileOffset: d.fileOffset, data: Buffer.concat([d.leading, s.subarray(8, 8 + DATA_SECTOR_PAYLOAD), d.trailing]) });
    }
  }
  // Every sector of the entry is a descriptor sector or the data sector of one descriptor.
  if (dataSector !== sectors) return undefined;
  return { position: pos, header: h, writes };
}

/**
 * Find the active sequence of the log (2.3.3): the valid entries, the one with the
 * highest sequence number as its head, and the run of entries from the head's Tail up
 * to it with sequence numbers rising by one, each following the last in the
 * circular buffer. Undefined when no entry belongs to the log. E_CORRUPT when entries
 * exist but none leads to a complete sequence, or the file lost flushed data.
 */
export async function findActiveSequence(storage: Storage, log: LogPlace): Promise<ActiveSequence | undefined> {
  const name = storage.name;
  const found = new Map<number, LogEntry>();
  const chunk = Buffer.alloc(Math.min(log.length, IO_CHUNK));
  for (let at = 0; at < log.length; at += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, log.length - at));
    await storage.read(part, log.offset + at);
    for (let s = 0; s < part.length; s += LOG_SECTOR_SIZE) {
      if (part.readUInt32LE(s) !== LOG_ENTRY_SIGNATURE) continue;
      const e = await entryAt(storage, log, at + s);
      if (e) found.set(at + s, e);
    }
  }
  if (found.size === 0) return undefined;
  const bySeq = [...found.values()].sort((a, b) => (a.header.sequenceNumber < b.header.sequenceNumber ? 1 : -1));
  for (const head of bySeq) {
    const seq: LogEntry[] = [];
    let e = found.get(head.header.tail);
    while (e && seq.length <= found.size) {
      seq.push(e);
      if (e === head) break;
      const next = found.get((e.position + e.header.entryLength) % log.length);
      e = next && next.header.sequenceNumber === e.header.sequenceNumber + 1n ? next : undefined;
    }
    if (seq[seq.length - 1] !== head) continue;
    if (storage.size < head.header.flushedFileOffset) {
      throw new VdiskError('E_CORRUPT', `${name}: the log's FlushedFileOffset is ${head.header.flushedFileOffset} but the file has only ${storage.size} bytes: data the log relies on was lost`);
    }
    return { entries: seq, lastFileOffset: head.header.lastFileOffset, flushedFileOffset: head.header.flushedFileOffset };
  }
  throw new VdiskError('E_CORRUPT', `${name}: the log holds ${found.size} entries for its LogGuid but no complete sequence to replay`);
}

/** Refuse replay writes into the file identifier, the headers or the log itself. */
function checkTargets(name: string, seq: ActiveSequence, log: LogPlace): void {
  for (const e of seq.entries) {
    for (const w of e.writes) {
      const len = 'data' in w ? w.data.length : w.zeroLength;
      if (w.fileOffset < REGION_TABLE1_OFFSET || (w.fileOffset < log.offset + log.length && log.offset < w.fileOffset + len)) {
        throw new VdiskError('E_CORRUPT', `${name}: a log entry writes ${len} bytes at ${w.fileOffset}, over the headers or the log itself`);
      }
    }
  }
}

/** Apply the active sequence to the file, in order, then extend it to LastFileOffset (2.3.3). */
export async function replayOnto(storage: Storage, seq: ActiveSequence, log: LogPlace): Promise<void> {
  checkTargets(storage.name, seq, log);
  const zeros = Buffer.alloc(IO_CHUNK);
  for (const e of seq.entries) {
    for (const w of e.writes) {
      if ('data' in w) {
        await storage.write(w.data, w.fileOffset);
        continue;
      }
      for (let done = 0; done < w.zeroLength; done += zeros.length) {
        const n = Math.min(zeros.length, w.zeroLength - done);
        await storage.write(zeros.subarray(0, n), w.fileOffset + done);
      }
    }
  }
  if (storage.size < seq.lastFileOffset) await storage.truncate(seq.lastFileOffset);
  await storage.flush();
}

/**
 * A read-only view of `storage` as it would be after replaying `seq`: replayed
 * sectors and zero runs laid over the file, the size at least LastFileOffset.
 */
export function replayedView(storage: Storage, seq: ActiveSequence, log: LogPlace): Storage {
  checkTargets(storage.name, seq, log);
  const sectors = new Map<number, Buffer>();
  const zeroRuns: Array<[number, number]> = [];
  for (const e of seq.entries) {
    for (const w of e.writes) {
      if ('data' in w) {
        sectors.set(w.fileOffset, w.data);
      } else {
        const end = w.fileOffset + w.zeroLength;
        zeroRuns.push([w.fileOffset, end]);
        for (const k of [...sectors.keys()]) if (k >= w.fileOffset && k < end) sectors.delete(k);
      }
    }
  }
  const size = Math.max(storage.size, seq.lastFileOffset);
  const view = filterStorage(storage, {
    read: async (buf, offset) => {
      if (offset + buf.length > size) throw new VdiskError('E_BOUNDS', `${storage.name}: read ${offset}+${buf.length} past the replayed ${size}-byte file`);
      const inFile = Math.max(0, Math.min(buf.length, storage.size - offset));
      if (inFile > 0) await storage.read(buf.subarray(0, inFile), offset);
      buf.fill(0, inFile);
      const end = offset + buf.length;
      for (const [a, z] of zeroRuns) {
        if (a < end && offset < z) buf.fill(0, Math.max(a, offset) - offset, Math.min(z, end) - offset);
      }
      for (const [at, data] of sectors) {
        if (at < end && offset < at + data.length) {
          const from = Math.max(at, offset);
          const to = Math.min(at + data.length, end);
          data.copy(buf, from - offset, from - at, to - at);
        }
      }
    },
    write: () => Promise.reject(new VdiskError('E_READONLY', `${storage.name}: a replayed log view is read-only`)),
    truncate: () => Promise.reject(new VdiskError('E_READONLY', `${storage.name}: a replayed log view is read-only`)),
  });
  return Object.defineProperties(view, { size: { get: () => size }, readOnly: { value: true } });
}

/**
 * Our side of the log: each {@link LogWriter.commit} writes one entry holding the
 * given 4 KiB sectors (whose Tail is itself, so it is a whole sequence), flushes,
 * applies the sectors in place and flushes again. A crash before the first flush
 * leaves the old sectors; after it, replay writes the new ones.
 */
export class LogWriter {
  private position = 0;
  private sequence: bigint;

  constructor(
    private readonly storage: Storage,
    private readonly log: LogPlace,
    firstSequence = 1n,
  ) {
    this.sequence = firstSequence;
  }

  /** Sectors one entry can carry in this log. */
  get maxSectorsPerEntry(): number {
    const total = this.log.length / LOG_SECTOR_SIZE;
    let n = Math.min(total - 1, MAX_LOG_ENTRY / LOG_SECTOR_SIZE - 1);
    while (n > 0 && descriptorSectors(n) + n > Math.min(total, MAX_LOG_ENTRY / LOG_SECTOR_SIZE)) n--;
    return n;
  }

  /** Write `sectors` (4 KiB each, at 4 KiB-aligned offsets) through the log, as many entries as needed. */
  async commit(sectors: ReadonlyArray<{ fileOffset: number; data: Buffer }>): Promise<void> {
    const per = this.maxSectorsPerEntry;
    for (let i = 0; i < sectors.length; i += per) await this.commitEntry(sectors.slice(i, i + per));
  }

  private async commitEntry(sectors: ReadonlyArray<{ fileOffset: number; data: Buffer }>): Promise<void> {
    const size = this.storage.size;
    const probe = (descriptorSectors(sectors.length) + sectors.length) * LOG_SECTOR_SIZE;
    // An entry never wraps: when it does not fit before the end, it starts the log again.
    if (this.position + probe > this.log.length) this.position = 0;
    const entry = encodeLogEntry({ tail: this.position, sequenceNumber: this.sequence, logGuid: this.log.guid, flushedFileOffset: size, lastFileOffset: size }, sectors);
    await this.storage.write(entry, this.log.offset + this.position);
    await this.storage.flush();
    for (const s of sectors) await this.storage.write(s.data, s.fileOffset);
    await this.storage.flush();
    this.position = (this.position + entry.length) % this.log.length;
    this.sequence++;
  }
}
