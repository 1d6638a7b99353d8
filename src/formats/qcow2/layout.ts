/**
 * The qcow2 header, described once: the version 2 header (72 bytes), the version 3
 * additions (to 104 bytes, optionally the compression type byte), and the header
 * extensions that follow it in the first cluster. Layout from qemu's
 * docs/interop/qcow2.txt ("Header", "Header extensions"); all numbers big-endian.
 */
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';

/** "QFI\xfb" (qcow2.txt, Header: magic). */
export const QCOW2_MAGIC = 0x514649fb;
/** Smallest and largest cluster_bits qemu accepts (512 bytes .. 2 MiB). */
export const QCOW2_MIN_CLUSTER_BITS = 9;
export const QCOW2_MAX_CLUSTER_BITS = 21;
/** Header length of version 2 (fields up to snapshots_offset). */
export const QCOW2_V2_HEADER_LENGTH = 72;
/** Header length of version 3 without the optional compression_type byte. */
export const QCOW2_V3_HEADER_LENGTH = 104;
/** qcow2.txt: backing_file_size "must not be longer than 1023 bytes". */
export const QCOW2_MAX_BACKING_NAME = 1023;
/** qemu's QCOW_MAX_L1_SIZE: 32 MiB of L1 entries. */
export const QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024;
/** qemu's QCOW_MAX_REFTABLE_SIZE: 8 MiB of refcount table. */
export const QCOW2_MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
/** qemu's QCOW_MAX_SNAPSHOTS. */
export const QCOW2_MAX_SNAPSHOTS = 65536;
/** Largest virtual size vdisk accepts: offsets stay exact in a number (qemu: 2^55 - 1). */
export const QCOW2_MAX_SIZE = 2 ** 53;

/** Incompatible feature bits (qcow2.txt, Header: incompatible_features). */
export const Incompatible = {
  DIRTY: 1 << 0,
  CORRUPT: 1 << 1,
  EXTERNAL_DATA_FILE: 1 << 2,
  COMPRESSION_TYPE: 1 << 3,
  EXTENDED_L2: 1 << 4,
} as const;
/** Names of the incompatible bits vdisk knows, for messages. */
const INCOMPATIBLE_NAMES: Record<number, string> = {
  0: 'dirty bit',
  1: 'corrupt bit',
  2: 'external data file',
  3: 'compression type',
  4: 'extended L2 entries',
};
/** Compatible feature bits. */
export const Compatible = { LAZY_REFCOUNTS: 1 << 0 } as const;
/** qcow2.txt crypt_method values. */
const CRYPT_NAMES: Record<number, string> = { 1: 'AES', 2: 'LUKS' };

/** Header extension types (qcow2.txt, Header extensions). */
export const Extension = {
  END: 0x00000000,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_NAME_TABLE: 0x6803f857,
  BITMAPS: 0x23852875,
  FULL_DISK_ENCRYPTION: 0x0537be77,
  EXTERNAL_DATA_FILE: 0x44415441,
} as const;

/** Byte offsets of the header fields. */
export const Qcow2Field = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

/** One entry of the feature name table extension. */
export interface FeatureName {
  type: 'incompatible' | 'compatible' | 'autoclear';
  bit: number;
  name: string;
}

/** The decoded header with its extensions. */
export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  /** Feature bit masks (as numbers: only the low 53 bits are meaningful to us). */
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** The backing_fmt extension, if present. */
  backingFormat?: string;
  /** The backing file name, if any. */
  backingFile?: string;
  featureNames: FeatureName[];
  /** Extension types present that vdisk does not interpret. */
  otherExtensions: number[];
  /** Where the extensions end (the first byte after the end marker). */
  extensionsEnd: number;
}

function u64(buf: Buffer, at: number, field: string, name: string): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new VdiskError('E_CORRUPT', `${name}: qcow2 ${field} ${v} is out of range`, { file: name, field, offset: at, value: v.toString() });
  return Number(v);
}

/** Decode the header in `buf` (the first cluster, or as much of it as the file has). */
export function decodeHeader(buf: Buffer, name: string): Qcow2Header {
  if (buf.length < QCOW2_V2_HEADER_LENGTH) throw new VdiskError('E_FORMAT', `${name}: ${buf.length} bytes is too short for a qcow2 header`);
  if (buf.readUInt32BE(Qcow2Field.magic) !== QCOW2_MAGIC) {
    throw new VdiskError('E_FORMAT', `${name}: no qcow2 magic`, { file: name, field: 'magic', offset: Qcow2Field.magic, value: buf.readUInt32BE(Qcow2Field.magic) });
  }
  const version = buf.readUInt32BE(Qcow2Field.version);
  if (version !== 2 && version !== 3) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: qcow2 version ${version} (vdisk reads versions 2 and 3)`, { file: name, field: 'version', offset: Qcow2Field.version, value: version });
  }
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(buf, Qcow2Field.backingFileOffset, 'backing_file_offset', name),
    backingFileSize: buf.readUInt32BE(Qcow2Field.backingFileSize),
    clusterBits: buf.readUInt32BE(Qcow2Field.clusterBits),
    size: u64(buf, Qcow2Field.size, 'size', name),
    cryptMethod: buf.readUInt32BE(Qcow2Field.cryptMethod),
    l1Size: buf.readUInt32BE(Qcow2Field.l1Size),
    l1TableOffset: u64(buf, Qcow2Field.l1TableOffset, 'l1_table_offset', name),
    refcountTableOffset: u64(buf, Qcow2Field.refcountTableOffset, 'refcount_table_offset', name),
    refcountTableClusters: buf.readUInt32BE(Qcow2Field.refcountTableClusters),
    nbSnapshots: buf.readUInt32BE(Qcow2Field.nbSnapshots),
    snapshotsOffset: u64(buf, Qcow2Field.snapshotsOffset, 'snapshots_offset', name),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: QCOW2_V2_HEADER_LENGTH,
    compressionType: 0,
    featureNames: [],
    otherExtensions: [],
    extensionsEnd: QCOW2_V2_HEADER_LENGTH,
  };
  if (version === 3) {
    if (buf.length < QCOW2_V3_HEADER_LENGTH) throw new VdiskError('E_CORRUPT', `${name}: ${buf.length} bytes is too short for a qcow2 version 3 header`);
    h.incompatibleFeatures = buf.readBigUInt64BE(Qcow2Field.incompatibleFeatures);
    h.compatibleFeatures = buf.readBigUInt64BE(Qcow2Field.compatibleFeatures);
    h.autoclearFeatures = buf.readBigUInt64BE(Qcow2Field.autoclearFeatures);
    h.refcountOrder = buf.readUInt32BE(Qcow2Field.refcountOrder);
    h.headerLength = buf.readUInt32BE(Qcow2Field.headerLength);
    if (h.headerLength < QCOW2_V3_HEADER_LENGTH || h.headerLength > buf.length) {
      throw new VdiskError('E_CORRUPT', `${name}: qcow2 header_length ${h.headerLength} is not between ${QCOW2_V3_HEADER_LENGTH} and ${buf.length}`);
    }
    if (h.headerLength > Qcow2Field.compressionType) h.compressionType = buf.readUInt8(Qcow2Field.compressionType);
  }
  decodeExtensions(buf, h, name);
  return h;
}

/** Walk the header extensions after header_length (8-byte aligned) to the end marker. */
function decodeExtensions(buf: Buffer, h: Qcow2Header, name: string): void {
  let at = Math.ceil(h.headerLength / 8) * 8;
  // qcow2.txt: extensions lie in the first cluster; a v2 image may end them at EOF.
  while (at + 8 <= buf.length) {
    const type = buf.readUInt32BE(at);
    const len = buf.readUInt32BE(at + 4);
    at += 8;
    if (type === Extension.END) {
      h.extensionsEnd = at;
      return;
    }
    if (len > buf.length - at) throw new VdiskError('E_CORRUPT', `${name}: qcow2 header extension 0x${type.toString(16)} of ${len} bytes runs past the first cluster`);
    const data = buf.subarray(at, at + len);
    if (type === Extension.BACKING_FORMAT) {
      h.backingFormat = data.toString('latin1');
    } else if (type === Extension.FEATURE_NAME_TABLE) {
      for (let e = 0; e + 48 <= data.length; e += 48) {
        const t = data[e]!;
        const kind = t === 0 ? 'incompatible' : t === 1 ? 'compatible' : t === 2 ? 'autoclear' : undefined;
        if (!kind) continue;
        const raw = data.subarray(e + 2, e + 48);
        const nul = raw.indexOf(0);
        h.featureNames.push({ type: kind, bit: data[e + 1]!, name: raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1') });
      }
    } else {
      h.otherExtensions.push(type);
    }
    at += Math.ceil(len / 8) * 8;
  }
  h.extensionsEnd = at;
}

/** Names of the set bits of `mask` that are not in `known`, using the feature table where it names them. */
function unknownBits(mask: bigint, known: number, kind: FeatureName['type'], h: Qcow2Header): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (((mask >> BigInt(bit)) & 1n) === 0n || (bit < 31 && known & (1 << bit))) continue;
    const named = h.featureNames.find((f) => f.type === kind && f.bit === bit)?.name;
    out.push(named ? `bit ${bit} (${named})` : `bit ${bit}`);
  }
  return out;
}

/** The header's fields as qcow2.txt (and qemu's messages) name them, with their keys in {@link Qcow2Field}. */
const SPEC_NAMES = {
  cluster_bits: 'clusterBits',
  header_length: 'headerLength',
  refcount_order: 'refcountOrder',
  size: 'size',
  l1_size: 'l1Size',
  l1_table_offset: 'l1TableOffset',
  refcount_table_offset: 'refcountTableOffset',
  refcount_table_clusters: 'refcountTableClusters',
  nb_snapshots: 'nbSnapshots',
  snapshots_offset: 'snapshotsOffset',
  backing_file_offset: 'backingFileOffset',
  backing_file_size: 'backingFileSize',
} as const satisfies Record<string, keyof typeof Qcow2Field & keyof Qcow2Header>;

/**
 * Check every header field against the file and sane bounds, before anything is
 * allocated or read from them; refuse features vdisk cannot honour.
 */
export function validateHeader(h: Qcow2Header, fileSize: number, name: string): void {
  const bad = (field: keyof typeof SPEC_NAMES, why: string): never => {
    const key = SPEC_NAMES[field];
    throw new VdiskError('E_CORRUPT', `${name}: qcow2 ${field} ${why}`, { file: name, field, offset: Qcow2Field[key], value: h[key] });
  };
  if (h.clusterBits < QCOW2_MIN_CLUSTER_BITS || h.clusterBits > QCOW2_MAX_CLUSTER_BITS) {
    bad('cluster_bits', `${h.clusterBits} is not between ${QCOW2_MIN_CLUSTER_BITS} and ${QCOW2_MAX_CLUSTER_BITS}`);
  }
  const cs = 2 ** h.clusterBits;
  if (h.headerLength > cs) bad('header_length', `${h.headerLength} is larger than a cluster (${cs})`);
  if (h.cryptMethod !== 0) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: qcow2 encryption (crypt_method ${h.cryptMethod}${CRYPT_NAMES[h.cryptMethod] ? `, ${CRYPT_NAMES[h.cryptMethod]}` : ''}) is not supported`, {
      file: name,
      field: 'crypt_method',
      offset: Qcow2Field.cryptMethod,
      value: h.cryptMethod,
    });
  }
  if (h.otherExtensions.includes(Extension.FULL_DISK_ENCRYPTION)) throw new VdiskError('E_UNSUPPORTED', `${name}: qcow2 full disk encryption header is not supported`);
  const unknown = unknownBits(h.incompatibleFeatures, Incompatible.DIRTY | Incompatible.CORRUPT | Incompatible.COMPRESSION_TYPE | Incompatible.EXTENDED_L2, 'incompatible', h);
  if (unknown.length > 0) {
    const names = unknown.map((u) => {
      const bit = Number(/^bit (\d+)/.exec(u)![1]);
      return INCOMPATIBLE_NAMES[bit] && !u.includes('(') ? `${u} (${INCOMPATIBLE_NAMES[bit]})` : u;
    });
    throw new VdiskError('E_UNSUPPORTED', `${name}: qcow2 incompatible features vdisk does not implement: ${names.join(', ')}`);
  }
  if (h.incompatibleFeatures & BigInt(Incompatible.COMPRESSION_TYPE) && h.headerLength <= Qcow2Field.compressionType) {
    bad('header_length', `${h.headerLength} leaves out compression_type, which the incompatible bit says is there`);
  }
  if (h.compressionType !== 0) {
    throw new VdiskError('E_UNSUPPORTED', `${name}: qcow2 compression_type ${h.compressionType}${h.compressionType === 1 ? ' (zstd)' : ''} is not supported (vdisk reads zlib)`, {
      file: name,
      field: 'compression_type',
      offset: Qcow2Field.compressionType,
      value: h.compressionType,
    });
  }
  if (h.refcountOrder > 6) bad('refcount_order', `${h.refcountOrder} is more than 6 (64-bit refcounts)`);
  if (h.size > QCOW2_MAX_SIZE) bad('size', `${h.size} is larger than ${QCOW2_MAX_SIZE}`);
  const extended = (h.incompatibleFeatures & BigInt(Incompatible.EXTENDED_L2)) !== 0n;
  // qcow2.txt, Extended L2 Entries: 32 subclusters per cluster, each at least a sector.
  if (extended && h.clusterBits < 14) bad('cluster_bits', `${h.clusterBits} is too small for extended L2 entries (32 subclusters of at least 512 bytes)`);
  const l2Entries = cs / (extended ? 16 : 8);
  const needL1 = Math.ceil(h.size / (cs * l2Entries));
  if (h.l1Size < needL1) bad('l1_size', `${h.l1Size} is too small for size ${h.size} (needs ${needL1})`);
  if (h.l1Size * 8 > QCOW2_MAX_L1_BYTES) bad('l1_size', `${h.l1Size} is larger than ${QCOW2_MAX_L1_BYTES / 8} entries`);
  if (h.l1Size > 0) {
    if (h.l1TableOffset % cs !== 0) bad('l1_table_offset', `${h.l1TableOffset} is not cluster-aligned`);
    if (h.l1TableOffset === 0 || h.l1TableOffset + h.l1Size * 8 > fileSize) bad('l1_table_offset', `${h.l1TableOffset} (+${h.l1Size * 8}) lies outside the ${fileSize}-byte file`);
  }
  if (h.refcountTableOffset % cs !== 0 || h.refcountTableOffset === 0) bad('refcount_table_offset', `${h.refcountTableOffset} is not a cluster-aligned offset after the header`);
  if (h.refcountTableClusters === 0 || h.refcountTableClusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
    bad('refcount_table_clusters', `${h.refcountTableClusters} is not between 1 and ${QCOW2_MAX_REFTABLE_BYTES / cs}`);
  }
  if (h.refcountTableOffset + h.refcountTableClusters * cs > fileSize) bad('refcount_table_offset', `${h.refcountTableOffset} (+${h.refcountTableClusters} clusters) lies outside the ${fileSize}-byte file`);
  if (h.nbSnapshots > QCOW2_MAX_SNAPSHOTS) bad('nb_snapshots', `${h.nbSnapshots} is more than ${QCOW2_MAX_SNAPSHOTS}`);
  if (h.nbSnapshots > 0 && (h.snapshotsOffset % 8 !== 0 || h.snapshotsOffset === 0 || h.snapshotsOffset >= fileSize)) {
    bad('snapshots_offset', `${h.snapshotsOffset} is not an 8-byte aligned offset inside the ${fileSize}-byte file`);
  }
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > QCOW2_MAX_BACKING_NAME) bad('backing_file_size', `${h.backingFileSize} is longer than ${QCOW2_MAX_BACKING_NAME} bytes`);
    if (h.backingFileOffset + h.backingFileSize > Math.min(cs, fileSize)) bad('backing_file_offset', `${h.backingFileOffset} (+${h.backingFileSize}) lies outside the first cluster`);
  }
}

/** What {@link encodeHeader} writes: a version 3 header, its extensions and the backing name. */
export interface NewHeader {
  clusterBits: number;
  size: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountOrder: number;
  compatibleFeatures: bigint;
  backingFile?: string;
  backingFormat?: string;
}

/** One header extension: type, length, and the data padded to a multiple of 8 bytes (qcow2.txt, "Header extensions"). */
export function encodeExtension(type: number, data: Buffer): Buffer {
  const e = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
  e.writeUInt32BE(type, 0);
  e.writeUInt32BE(data.length, 4);
  data.copy(e, 8);
  return e;
}

/**
 * Encode a new version 3 header (header_length 104) with a backing-format extension
 * when given, the end marker, and the backing file name after it; one buffer to
 * write at offset 0 (it must fit the first cluster).
 */
export function encodeHeader(n: NewHeader): Buffer {
  const exts: Buffer[] = [];
  if (n.backingFormat !== undefined) exts.push(encodeExtension(Extension.BACKING_FORMAT, Buffer.from(n.backingFormat, 'latin1')));
  exts.push(Buffer.alloc(8)); // END
  const name = n.backingFile !== undefined ? Buffer.from(n.backingFile, 'utf8') : Buffer.alloc(0);
  const extLen = exts.reduce((s, e) => s + e.length, 0);
  const buf = Buffer.alloc(QCOW2_V3_HEADER_LENGTH + extLen + name.length);
  buf.writeUInt32BE(QCOW2_MAGIC, Qcow2Field.magic);
  buf.writeUInt32BE(3, Qcow2Field.version);
  if (name.length > 0) {
    buf.writeBigUInt64BE(BigInt(QCOW2_V3_HEADER_LENGTH + extLen), Qcow2Field.backingFileOffset);
    buf.writeUInt32BE(name.length, Qcow2Field.backingFileSize);
  }
  buf.writeUInt32BE(n.clusterBits, Qcow2Field.clusterBits);
  buf.writeBigUInt64BE(BigInt(n.size), Qcow2Field.size);
  buf.writeUInt32BE(n.l1Size, Qcow2Field.l1Size);
  buf.writeBigUInt64BE(BigInt(n.l1TableOffset), Qcow2Field.l1TableOffset);
  buf.writeBigUInt64BE(BigInt(n.refcountTableOffset), Qcow2Field.refcountTableOffset);
  buf.writeUInt32BE(n.refcountTableClusters, Qcow2Field.refcountTableClusters);
  buf.writeBigUInt64BE(n.compatibleFeatures, Qcow2Field.compatibleFeatures);
  buf.writeUInt32BE(n.refcountOrder, Qcow2Field.refcountOrder);
  buf.writeUInt32BE(QCOW2_V3_HEADER_LENGTH, Qcow2Field.headerLength);
  let at = QCOW2_V3_HEADER_LENGTH;
  for (const e of exts) {
    e.copy(buf, at);
    at += e.length;
  }
  name.copy(buf, at);
  if (buf.length > 2 ** n.clusterBits) throw new VdiskError('E_USAGE', `qcow2 header with a ${name.length}-byte backing name does not fit one cluster`);
  return buf;
}

/** One internal snapshot, as `qemu-img info` lists it (qcow2.txt, "Snapshots"). */
export interface Qcow2Snapshot {
  id: string;
  name: string;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  'vm-state-size': number;
  /** Guest size when the snapshot was taken (extra data, version 3). */
  'disk-size'?: number;
  'l1-size': number;
  'l1-offset': number;
}

/** Fixed part of a snapshot table entry. */
const SNAPSHOT_HEADER = 40;
/** Bytes of snapshot table vdisk reads at most (qemu's QCOW_MAX_SNAPSHOTS_SIZE is 64 MiB). */
export const QCOW2_MAX_SNAPSHOT_TABLE = 64 * 1024 * 1024;

/**
 * Decode the snapshot table: `count` variable-length entries from `offset`, each
 * checked against the file; `read` fetches bytes (bounded by the caller's file).
 */
export async function readSnapshots(read: (len: number, at: number) => Promise<Buffer>, offset: number, count: number, fileSize: number, name: string): Promise<Qcow2Snapshot[]> {
  const out: Qcow2Snapshot[] = [];
  let at = offset;
  for (let n = 0; n < count; n++) {
    if (at + SNAPSHOT_HEADER > fileSize || at - offset > QCOW2_MAX_SNAPSHOT_TABLE) {
      throw new VdiskError('E_CORRUPT', `${name}: qcow2 snapshot ${n} of ${count} at ${at} lies outside the file or the table's bound`);
    }
    const h = await read(SNAPSHOT_HEADER, at);
    const idLen = h.readUInt16BE(12);
    const nameLen = h.readUInt16BE(14);
    const extraLen = h.readUInt32BE(36);
    if (extraLen > 1024) throw new VdiskError('E_CORRUPT', `${name}: qcow2 snapshot ${n} has ${extraLen} bytes of extra data (at most 1024)`);
    const rest = extraLen + idLen + nameLen;
    if (at + SNAPSHOT_HEADER + rest > fileSize) throw new VdiskError('E_CORRUPT', `${name}: qcow2 snapshot ${n} at ${at} runs past the end of the file`);
    const body = await read(rest, at + SNAPSHOT_HEADER);
    const clock = Number(h.readBigUInt64BE(24));
    const s: Qcow2Snapshot = {
      id: body.subarray(extraLen, extraLen + idLen).toString('utf8'),
      name: body.subarray(extraLen + idLen, rest).toString('utf8'),
      'date-sec': h.readUInt32BE(16),
      'date-nsec': h.readUInt32BE(20),
      'vm-clock-sec': Math.floor(clock / 1e9),
      'vm-clock-nsec': clock % 1e9,
      'vm-state-size': h.readUInt32BE(32),
      'l1-size': h.readUInt32BE(8),
      'l1-offset': Number(h.readBigUInt64BE(0) & 0x00fffffffffffe00n),
    };
    if (extraLen >= 16) s['disk-size'] = Number(body.readBigUInt64BE(8));
    if (extraLen >= 8) {
      const large = Number(body.readBigUInt64BE(0));
      if (large > 0) s['vm-state-size'] = large;
    }
    out.push(s);
    at += Math.ceil((SNAPSHOT_HEADER + rest) / 8) * 8;
  }
  return out;
}

/** The header (first cluster) decoded and checked against the file, with the backing name. */
export async function loadHeader(storage: Storage): Promise<Qcow2Header> {
  const first = Buffer.alloc(Math.min(storage.size, 72));
  await storage.read(first, 0);
  const bits = first.length >= 24 ? first.readUInt32BE(20) : 0;
  // The header and its extensions lie in the first cluster; read no more than that.
  const cs = bits >= 9 && bits <= 21 ? 2 ** bits : 512;
  const raw = Buffer.alloc(Math.min(storage.size, cs));
  await storage.read(raw, 0);
  const h = decodeHeader(raw, storage.name);
  validateHeader(h, storage.size, storage.name);
  if (h.backingFileOffset !== 0 && h.backingFileSize > 0) {
    h.backingFile = raw.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString('utf8');
  }
  return h;
}

