/**
 * ustar (POSIX.1-1988, IEEE Std 1003.1 "ustar Interchange Format"): the container of
 * an OVA (DSP0243 §5.3). The writer streams entries into a Storage in order; the
 * reader lists entries without reading their data, so a disk inside is opened in
 * place through a window.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../storage.js';
import { safeMemberName } from './names.js';

/** Size of a tar header and of the unit data is padded to. */
export const TAR_BLOCK = 512;

/** ustar header fields: offset and width (POSIX pax "ustar Interchange Format", Table: ustar Header Block). */
const F = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const;

/** `magic` + `version` of POSIX ustar, and of GNU tar's older variant. */
const USTAR_MAGIC = 'ustar\u000000';
const GNU_MAGIC = 'ustar  \u0000';

/** typeflag values (POSIX ustar; `x`/`g` pax; `L`/`K` GNU long names). */
export const TYPE = {
  file: '0',
  oldFile: '\u0000',
  hardLink: '1',
  symLink: '2',
  charDev: '3',
  blockDev: '4',
  directory: '5',
  fifo: '6',
  contiguous: '7',
  paxHeader: 'x',
  paxGlobal: 'g',
  gnuLongName: 'L',
  gnuLongLink: 'K',
} as const;

/** Largest value an 11-digit octal size field holds; bigger sizes use base-256 (GNU/star). */
const MAX_OCTAL_SIZE = 8 ** 11 - 1;
/** Longest pax or GNU long-name record vdisk reads. */
const MAX_META_RECORD = 1024 * 1024;
/** Most entries vdisk lists in one archive. */
export const MAX_TAR_ENTRIES = 10_000;

/** One decoded header block. */
export interface TarHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  checksum: number;
  typeflag: string;
  linkname: string;
  magic: string;
  uname: string;
  gname: string;
  prefix: string;
}

function text(b: Uint8Array, [off, len]: readonly [number, number]): string {
  const s = b.subarray(off, off + len);
  const end = s.indexOf(0);
  return Buffer.from(end < 0 ? s : s.subarray(0, end)).toString('utf8');
}

function numeric(where: string, field: string, b: Uint8Array, [off, len]: readonly [number, number]): number {
  const s = b.subarray(off, off + len);
  if (s[0]! & 0x80) {
    // base-256: big-endian two's complement with the top bit of the first byte as marker
    if (s[0]! & 0x40) throw new VdiskError('E_CORRUPT', `${where}: tar header field ${field} is negative`);
    let v = s[0]! & 0x3f;
    for (let i = 1; i < s.length; i++) {
      v = v * 256 + s[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw new VdiskError('E_CORRUPT', `${where}: tar header field ${field} is too large`);
    }
    return v;
  }
  const t = Buffer.from(s).toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (t === '') return 0;
  if (!/^[0-7]+$/.test(t)) throw new VdiskError('E_CORRUPT', `${where}: tar header field ${field} is not an octal number ("${t}")`);
  return parseInt(t, 8);
}

/** Sum of the header bytes with the chksum field read as spaces. */
function headerChecksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= F.chksum[0] && i < F.chksum[0] + F.chksum[1] ? 0x20 : b[i]!;
  return sum;
}

/** Decode one header block; E_CORRUPT if its checksum or numbers are wrong. */
export function decodeTarHeader(where: string, b: Uint8Array): TarHeader {
  const h: TarHeader = {
    name: text(b, F.name),
    mode: numeric(where, 'mode', b, F.mode),
    uid: numeric(where, 'uid', b, F.uid),
    gid: numeric(where, 'gid', b, F.gid),
    size: numeric(where, 'size', b, F.size),
    mtime: numeric(where, 'mtime', b, F.mtime),
    checksum: numeric(where, 'chksum', b, F.chksum),
    typeflag: String.fromCharCode(b[F.typeflag[0]]!),
    linkname: text(b, F.linkname),
    magic: Buffer.from(b.subarray(F.magic[0], F.magic[0] + 8)).toString('latin1'),
    uname: text(b, F.uname),
    gname: text(b, F.gname),
    prefix: '',
  };
  if (headerChecksum(b) !== h.checksum) throw new VdiskError('E_CORRUPT', `${where}: tar header chksum ${h.checksum} does not match its bytes (${headerChecksum(b)})`);
  if (h.magic === USTAR_MAGIC) h.prefix = text(b, F.prefix);
  return h;
}

function putText(b: Buffer, [off, len]: readonly [number, number], s: string): void {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > len) throw new VdiskError('E_USAGE', `tar: "${s}" is longer than ${len} bytes`);
  bytes.copy(b, off);
}

function putOctal(b: Buffer, [off, len]: readonly [number, number], v: number): void {
  b.write(`${v.toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

/** Encode a header block for a regular file or folder (name split into prefix/name as ustar allows). */
export function encodeTarHeader(h: { name: string; size: number; mtime: number; typeflag?: string; mode?: number }): Buffer {
  const b = Buffer.alloc(TAR_BLOCK);
  let name = h.name;
  let prefix = '';
  if (Buffer.byteLength(name) > F.name[1]) {
    const cut = name.lastIndexOf('/', F.prefix[1]);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > F.name[1]) throw new VdiskError('E_USAGE', `tar: name "${h.name}" is too long for ustar`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  putText(b, F.name, name);
  putOctal(b, F.mode, h.mode ?? 0o644);
  putOctal(b, F.uid, 0);
  putOctal(b, F.gid, 0);
  if (h.size <= MAX_OCTAL_SIZE) {
    putOctal(b, F.size, h.size);
  } else {
    // base-256 (GNU tar, star): marker bit then the value big-endian
    let v = h.size;
    for (let i = F.size[0] + F.size[1] - 1; i > F.size[0]; i--) {
      b[i] = v % 256;
      v = Math.floor(v / 256);
    }
    b[F.size[0]] = 0x80;
  }
  putOctal(b, F.mtime, h.mtime);
  b.write(h.typeflag ?? TYPE.file, F.typeflag[0], 1, 'latin1');
  b.write(USTAR_MAGIC, F.magic[0], 8, 'latin1');
  putText(b, F.uname, 'root');
  putText(b, F.gname, 'root');
  putOctal(b, F.devmajor, 0);
  putOctal(b, F.devminor, 0);
  putText(b, F.prefix, prefix);
  // chksum: six octal digits, NUL, space (POSIX)
  b.write(`${headerChecksum(b).toString(8).padStart(6, '0')}\0 `, F.chksum[0], 8, 'latin1');
  return b;
}

function padding(size: number): number {
  return (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
}

/** Writes a ustar archive front to back into a Storage. */
export class TarWriter {
  private pos = 0;
  private readonly mtime: number;

  constructor(private readonly out: Storage, mtime = Math.floor(Date.now() / 1000)) {
    this.mtime = mtime;
  }

  /** Bytes written so far. */
  get position(): number {
    return this.pos;
  }

  /** Add a file whose bytes are in memory. */
  async addBuffer(name: string, data: Uint8Array): Promise<void> {
    await this.begin(name, data.length);
    await this.put(data);
    await this.end(data.length);
  }

  /** Add a file of `size` bytes copied from `src` in 1 MiB pieces. */
  async addStorage(name: string, src: Storage, onBytes?: (n: number) => void): Promise<void> {
    const size = src.size;
    await this.begin(name, size);
    const buf = Buffer.alloc(Math.min(size, 1024 * 1024));
    for (let off = 0; off < size; ) {
      const n = Math.min(buf.length, size - off);
      const piece = buf.subarray(0, n);
      await src.read(piece, off);
      await this.put(piece);
      off += n;
      onBytes?.(n);
    }
    await this.end(size);
  }

  /** Write the end-of-archive marker (two zero blocks). */
  async finish(): Promise<void> {
    await this.put(Buffer.alloc(2 * TAR_BLOCK));
  }

  private async begin(name: string, size: number): Promise<void> {
    await this.put(encodeTarHeader({ name: safeMemberName('tar', name), size, mtime: this.mtime }));
  }

  private async end(size: number): Promise<void> {
    const pad = padding(size);
    if (pad) await this.put(Buffer.alloc(pad));
  }

  private async put(b: Uint8Array): Promise<void> {
    await this.out.write(b, this.pos);
    this.pos += b.length;
  }
}

/** A regular file found in a tar archive. */
export interface TarEntry {
  /** Normalised member name. */
  name: string;
  size: number;
  /** Offset of the first data byte in the archive. */
  dataOffset: number;
}

function isZeroBlock(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

/** Parse pax `len key=value\n` records (POSIX pax extended header). */
function parsePax(where: string, data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const sp = data.indexOf(0x20, pos);
    const len = sp < 0 ? NaN : Number(data.toString('latin1', pos, sp));
    if (!Number.isSafeInteger(len) || len <= 0 || pos + len > data.length) throw new VdiskError('E_CORRUPT', `${where}: bad pax extended header record at ${pos}`);
    const rec = data.toString('utf8', sp + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    pos += len;
  }
  return out;
}

/** True when the first block of `storage` is a tar header (valid checksum and a ustar magic). */
export async function isTar(storage: Storage): Promise<boolean> {
  if (storage.size < TAR_BLOCK) return false;
  const b = Buffer.alloc(TAR_BLOCK);
  await storage.read(b, 0);
  const magic = b.toString('latin1', F.magic[0], F.magic[0] + 8);
  if (magic !== USTAR_MAGIC && magic !== GNU_MAGIC) return false;
  try {
    decodeTarHeader(storage.name, b);
    return true;
  } catch {
    return false;
  }
}

/**
 * List the regular files of the tar archive in `storage` without reading their
 * data. Refuses (E_PATH) names with `..` or an absolute path, and symlinks, hard
 * links and device nodes; E_CORRUPT when a header is damaged or an entry runs past
 * the end of the archive.
 */
export async function readTarEntries(storage: Storage): Promise<TarEntry[]> {
  const where = storage.name;
  const out: TarEntry[] = [];
  const block = Buffer.alloc(TAR_BLOCK);
  let pos = 0;
  let longName: string | undefined;
  let pax = new Map<string, string>();
  let headers = 0;
  while (pos + TAR_BLOCK <= storage.size) {
    await storage.read(block, pos);
    if (isZeroBlock(block)) break; // end of archive
    if (++headers > MAX_TAR_ENTRIES * 3) throw new VdiskError('E_UNSUPPORTED', `${where}: more than ${MAX_TAR_ENTRIES} entries`);
    const h = decodeTarHeader(`${where} at ${pos}`, block);
    const dataOffset = pos + TAR_BLOCK;
    if (dataOffset + h.size > storage.size) {
      throw new VdiskError('E_CORRUPT', `${where}: tar entry "${h.name}" size ${h.size} runs past the end of the archive (${storage.size} bytes)`);
    }
    pos = dataOffset + h.size + padding(h.size);
    const readMeta = async (): Promise<Buffer> => {
      if (h.size > MAX_META_RECORD) throw new VdiskError('E_UNSUPPORTED', `${where}: tar metadata entry of ${h.size} bytes is over ${MAX_META_RECORD}`);
      const b = Buffer.alloc(h.size);
      await storage.read(b, dataOffset);
      return b;
    };
    switch (h.typeflag) {
      case TYPE.paxHeader:
        pax = parsePax(where, await readMeta());
        continue;
      case TYPE.paxGlobal:
        continue;
      case TYPE.gnuLongName: {
        const b = await readMeta();
        const end = b.indexOf(0);
        longName = b.toString('utf8', 0, end < 0 ? b.length : end);
        continue;
      }
      case TYPE.gnuLongLink:
        continue; // the link entry that follows is refused below
      default:
        break;
    }
    const rawName = pax.get('path') ?? longName ?? (h.prefix ? `${h.prefix}/${h.name}` : h.name);
    const paxSize = pax.get('size');
    pax = new Map();
    longName = undefined;
    if (h.typeflag === TYPE.hardLink || h.typeflag === TYPE.symLink) {
      throw new VdiskError('E_PATH', `${where}: tar entry "${rawName}" is a ${h.typeflag === TYPE.symLink ? 'symbolic' : 'hard'} link to "${h.linkname}"; links are refused in a package`);
    }
    if (h.typeflag === TYPE.directory) {
      safeMemberName(where, rawName.replace(/\/+$/, '') || '.', 'tar entry');
      continue;
    }
    if (h.typeflag !== TYPE.file && h.typeflag !== TYPE.oldFile && h.typeflag !== TYPE.contiguous) {
      throw new VdiskError('E_UNSUPPORTED', `${where}: tar entry "${rawName}" has type "${h.typeflag}" (only regular files and folders are accepted)`);
    }
    const name = safeMemberName(where, rawName, 'tar entry');
    let size = h.size;
    if (paxSize !== undefined) {
      size = Number(paxSize);
      if (!/^\d+$/.test(paxSize) || !Number.isSafeInteger(size) || dataOffset + size > storage.size) {
        throw new VdiskError('E_CORRUPT', `${where}: pax size "${paxSize}" of "${name}" is invalid or runs past the end of the archive`);
      }
      pos = dataOffset + size + padding(size);
    }
    if (out.some((e) => e.name === name)) throw new VdiskError('E_CORRUPT', `${where}: tar entry "${name}" appears twice`);
    if (out.length >= MAX_TAR_ENTRIES) throw new VdiskError('E_UNSUPPORTED', `${where}: more than ${MAX_TAR_ENTRIES} entries`);
    out.push({ name, size, dataOffset });
  }
  return out;
}
