/**
 * Zip packages (an .ovf with its disks, or an .ova, inside a .zip), read with yauzl
 * through a Storage. A stored (uncompressed) entry is opened in place as a window; a
 * deflated entry cannot be read at random offsets (deflate has no index), so it is
 * inflated once, under the size and ratio limits, into memory when small or an
 * unlinked temporary file when large.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type * as Yauzl from 'yauzl';
import { VdiskError, isVdiskError } from '../../errors.js';
import { FileStorage } from '../file.js';
import { MemoryStorage } from '../memory.js';
import type { Storage } from '../storage.js';
import { safeMemberName } from './names.js';
import { WindowStorage } from './window.js';

/** "Local file header signature" (APPNOTE.TXT §4.3.7) and "end of central dir signature" (§4.3.16). */
const LOCAL_FILE_HEADER_SIG = 0x04034b50;
const END_OF_CENTRAL_DIR_SIG = 0x06054b50;
/** compression method values (APPNOTE.TXT §4.4.5). */
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
/** Upper 16 bits of external attributes hold the Unix mode when made on Unix (§4.4.2, §4.4.15). */
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

/** Limits that stop a zip bomb (applied to deflated entries before and while inflating). */
export interface ZipLimits {
  /** Largest uncompressed size of one entry (default 1 TiB). */
  maxEntryBytes: number;
  /** Largest uncompressed/compressed ratio of an entry over 1 MiB (default 200). */
  maxRatio: number;
  /** Entries at most this big are inflated into memory, larger ones into a temp file (default 64 MiB). */
  memoryInflateBytes: number;
  /** Most entries in one zip (default 10 000). */
  maxEntries: number;
}

/** Default {@link ZipLimits}. */
export const DEFAULT_ZIP_LIMITS: ZipLimits = {
  maxEntryBytes: 2 ** 40,
  maxRatio: 200,
  memoryInflateBytes: 64 * 1024 * 1024,
  maxEntries: 10_000,
};

type ReaderClass = new (storage: Storage) => Yauzl.RandomAccessReader;
let loaded: { yauzl: typeof Yauzl; StorageReader: ReaderClass } | undefined;

/** yauzl, loaded on first use so commands that never meet a zip do not pay for it. */
function zipLib(): { yauzl: typeof Yauzl; StorageReader: ReaderClass } {
  if (loaded) return loaded;
  const yauzl = createRequire(import.meta.url)('yauzl') as typeof Yauzl;
  /** yauzl reads the zip through this, so a zip inside any Storage (a tar entry, ...) works. */
  class StorageReader extends yauzl.RandomAccessReader {
    constructor(private readonly storage: Storage) {
      super();
    }

    override _readStreamForRange(start: number, end: number): Readable {
      const storage = this.storage;
      let pos = start;
      return new Readable({
        read() {
          if (pos >= end) {
            this.push(null);
            return;
          }
          const n = Math.min(256 * 1024, end - pos);
          const b = Buffer.alloc(n);
          storage.read(b, pos).then(
            () => {
              pos += n;
              this.push(b);
            },
            (err: unknown) => this.destroy(err instanceof Error ? err : new Error(String(err))),
          );
        },
      });
    }
  }
  loaded = { yauzl, StorageReader };
  return loaded;
}

/** True when `storage` starts like a zip (a local file header, or the end record of an empty zip). */
export async function isZip(storage: Storage): Promise<boolean> {
  if (storage.size < 22) return false;
  const b = Buffer.alloc(4);
  await storage.read(b, 0);
  const sig = b.readUInt32LE(0);
  return sig === LOCAL_FILE_HEADER_SIG || sig === END_OF_CENTRAL_DIR_SIG;
}

/** One file in a zip. */
export interface ZipMember {
  name: string;
  /** Uncompressed size. */
  size: number;
  compressedSize: number;
  /** `stored` entries open in place; `deflated` ones are inflated. */
  method: 'stored' | 'deflated';
}

function zipError(where: string, err: unknown): VdiskError {
  if (isVdiskError(err)) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const code = /absolute path|invalid relative path|invalid characters/i.test(msg) ? 'E_PATH' : 'E_CORRUPT';
  return new VdiskError(code, `${where}: ${msg}`, { cause: err });
}

/** A zip read through yauzl. */
export class ZipArchive {
  private constructor(
    readonly name: string,
    private readonly storage: Storage,
    private readonly zip: Yauzl.ZipFile,
    private readonly byName: Map<string, { member: ZipMember; entry: Yauzl.Entry }>,
    private readonly limits: ZipLimits,
  ) {}

  /**
   * List the zip in `storage`. Refuses (E_PATH) entries with `..`, absolute names or
   * backslashes, and symbolic links; encrypted entries and methods other than
   * stored/deflated are E_UNSUPPORTED.
   */
  static async open(storage: Storage, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
    const lim = { ...DEFAULT_ZIP_LIMITS, ...limits };
    const where = storage.name;
    let zip: Yauzl.ZipFile;
    try {
      const { yauzl, StorageReader } = zipLib();
      zip = await yauzl.fromRandomAccessReaderPromise(new StorageReader(storage), storage.size, {
        lazyEntries: true,
        autoClose: false,
        decodeStrings: true,
        strictFileNames: true,
        validateEntrySizes: true,
      });
    } catch (err) {
      throw zipError(where, err);
    }
    try {
      if (zip.entryCount > lim.maxEntries) throw new VdiskError('E_UNSUPPORTED', `${where}: ${zip.entryCount} entries is over the limit of ${lim.maxEntries}`);
      const byName = new Map<string, { member: ZipMember; entry: Yauzl.Entry }>();
      try {
        for await (const entry of zip.eachEntry()) {
          const raw = entry.fileName;
          const unixMode = entry.versionMadeBy >> 8 === 3 ? (entry.externalFileAttributes >>> 16) & S_IFMT : 0;
          if (unixMode === S_IFLNK) throw new VdiskError('E_PATH', `${where}: zip entry "${raw}" is a symbolic link; links are refused in a package`);
          if (raw.endsWith('/') || unixMode === S_IFDIR) {
            safeMemberName(where, raw.replace(/\/+$/, ''), 'zip entry');
            continue;
          }
          if (unixMode !== 0 && unixMode !== S_IFREG) throw new VdiskError('E_UNSUPPORTED', `${where}: zip entry "${raw}" is not a regular file`);
          const name = safeMemberName(where, raw, 'zip entry');
          if (entry.isEncrypted()) throw new VdiskError('E_UNSUPPORTED', `${where}: zip entry "${name}" is encrypted`);
          if (entry.compressionMethod !== METHOD_STORED && entry.compressionMethod !== METHOD_DEFLATED) {
            throw new VdiskError('E_UNSUPPORTED', `${where}: zip entry "${name}" uses compression method ${entry.compressionMethod} (only stored and deflated are read)`);
          }
          if (entry.compressionMethod === METHOD_STORED && entry.compressedSize !== entry.uncompressedSize) {
            throw new VdiskError('E_CORRUPT', `${where}: stored zip entry "${name}" has compressed size ${entry.compressedSize} but uncompressed size ${entry.uncompressedSize}`);
          }
          if (byName.has(name)) throw new VdiskError('E_CORRUPT', `${where}: zip entry "${name}" appears twice`);
          const method = entry.compressionMethod === METHOD_STORED ? 'stored' : 'deflated';
          byName.set(name, { member: { name, size: entry.uncompressedSize, compressedSize: entry.compressedSize, method }, entry });
        }
      } catch (err) {
        throw zipError(where, err);
      }
      return new ZipArchive(where, storage, zip, byName, lim);
    } catch (err) {
      zip.close();
      throw err;
    }
  }

  /** The files in the zip, in central-directory order. */
  get members(): ZipMember[] {
    return [...this.byName.values()].map((v) => v.member);
  }

  /**
   * Open member `name` read-only: a window for a stored entry; for a deflated one, its
   * inflated bytes (refused when over the size or ratio limits).
   */
  async openMember(name: string): Promise<Storage> {
    const found = this.byName.get(name);
    if (!found) throw new VdiskError('E_NOENT', `${this.name}: no member "${name}"`);
    const { member, entry } = found;
    const label = `${this.name}:${name}`;
    if (member.method === 'stored') {
      let start: number;
      try {
        ({ fileDataStart: start } = await this.zip.readLocalFileHeaderPromise(entry, { minimal: true }));
      } catch (err) {
        throw zipError(this.name, err);
      }
      return new WindowStorage(label, this.storage, start, member.size);
    }
    checkBomb(label, member, this.limits);
    const stream = await new Promise<Readable>((res, rej) => {
      this.zip.openReadStream(entry, (err, s) => (err ? rej(zipError(this.name, err)) : res(s)));
    });
    return member.size <= this.limits.memoryInflateBytes ? inflateToMemory(label, stream, member.size) : inflateToTempFile(label, stream, member.size);
  }

  /** Release yauzl (the Storage under it belongs to the caller). */
  async close(): Promise<void> {
    this.zip.close();
  }
}

/** E_UNSUPPORTED when a deflated entry's declared size or ratio marks it as a zip bomb. */
export function checkBomb(label: string, m: ZipMember, lim: ZipLimits): void {
  if (m.size > lim.maxEntryBytes) {
    throw new VdiskError('E_UNSUPPORTED', `${label}: uncompressed size ${m.size} is over the limit of ${lim.maxEntryBytes} bytes (zip bomb?)`);
  }
  if (m.size > 1024 * 1024 && m.size > lim.maxRatio * Math.max(1, m.compressedSize)) {
    throw new VdiskError('E_UNSUPPORTED', `${label}: compression ratio ${Math.round(m.size / Math.max(1, m.compressedSize))}:1 is over the limit of ${lim.maxRatio}:1 (zip bomb?)`);
  }
}

async function drain(label: string, stream: Readable, size: number, sink: (chunk: Buffer, at: number) => Promise<void>): Promise<void> {
  let at = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      // yauzl also checks this; the bound here keeps memory flat whatever it does
      if (at + chunk.length > size) throw new VdiskError('E_CORRUPT', `${label}: inflates to more than its declared ${size} bytes`);
      await sink(chunk, at);
      at += chunk.length;
    }
  } catch (err) {
    stream.destroy();
    throw zipError(label, err);
  }
  if (at !== size) throw new VdiskError('E_CORRUPT', `${label}: inflated to ${at} bytes, declared ${size}`);
}

async function inflateToMemory(label: string, stream: Readable, size: number): Promise<Storage> {
  const buf = Buffer.alloc(size);
  await drain(label, stream, size, async (chunk, at) => {
    chunk.copy(buf, at);
  });
  return new MemoryStorage(buf, { name: label, readOnly: true });
}

async function inflateToTempFile(label: string, stream: Readable, size: number): Promise<Storage> {
  const dir = await mkdtemp(join(tmpdir(), 'vdisk-zip-'));
  const path = join(dir, 'entry');
  try {
    const out = await FileStorage.open(path, { create: 'new', noLock: true });
    try {
      await drain(label, stream, size, (chunk, at) => out.write(chunk, at));
    } finally {
      await out.close();
    }
    const ro = await FileStorage.open(path, { readOnly: true });
    // The open handle keeps the bytes; the name can go now so nothing is left behind.
    await rm(dir, { recursive: true, force: true });
    return renamed(label, ro);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** `s` under another name (for messages). */
function renamed(name: string, s: Storage): Storage {
  return {
    name,
    get size() {
      return s.size;
    },
    readOnly: true,
    read: (b, o) => s.read(b, o),
    write: (b, o) => s.write(b, o),
    truncate: (n) => s.truncate(n),
    flush: () => s.flush(),
    close: () => s.close(),
    allocatedSize: async () => s.size,
  };
}
