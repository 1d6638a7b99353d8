/**
 * The NBD wire protocol, as NetworkBlockDevice's `doc/proto.md` defines it: magic
 * numbers, option, reply, command and flag values, and the fixed-size messages as
 * typed encode/decode pairs. Section names below are proto.md's.
 */
import { VdiskError, type VdiskErrorCode } from '../../errors.js';

/** "Newstyle negotiation": `NBDMAGIC`, then `IHAVEOPT` (also the magic of every option request). */
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** "Fixed newstyle negotiation": magic of every option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
/** "Request message". */
export const REQUEST_MAGIC = 0x25609513;
/** "Simple reply message". */
export const SIMPLE_REPLY_MAGIC = 0x67446698;
/** "Structured reply chunk message". */
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** "Handshake flags" (server) and "Client flags". */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

/** "Transmission flags". */
export const TF = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** "Option types". */
export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

/** "Option reply types"; errors have bit 31 set. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

/** `NBD_REP_INFO` information types. */
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** "Request types". */
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

/** "Command flags". */
export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

/** "Structured reply flags" and "Structured reply types". */
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001, ERROR_OFFSET: 0x8002 } as const;

/** "Error values". */
export const NBD_ERR = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;

/** `base:allocation` flags ("`base:allocation` metadata context"). */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

/** The metadata contexts vdisk serves. */
export const CONTEXT_BASE_ALLOCATION = 'base:allocation';
export const CONTEXT_ALLOCATION_DEPTH = 'qemu:allocation-depth';

/** "Size constraints": strings (names, messages) are at most 4096 bytes. */
export const MAX_STRING = 4096;

/** One request header ("Request message"), 28 bytes. */
export interface RequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

export const REQUEST_SIZE = 28;

/** Decode a request header; `magic` false when the first four bytes are not the request magic. */
export function decodeRequest(b: Buffer): RequestHeader & { magicOk: boolean; offset64: bigint } {
  const offset64 = b.readBigUInt64BE(16);
  return {
    magicOk: b.readUInt32BE(0) === REQUEST_MAGIC,
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    cookie: b.readBigUInt64BE(8),
    offset64,
    // Offsets past 2^53 are reported as Infinity, which every range check refuses.
    offset: offset64 > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(offset64),
    length: b.readUInt32BE(24),
  };
}

export function encodeRequest(r: RequestHeader): Buffer {
  const b = Buffer.alloc(REQUEST_SIZE);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

/** A simple reply header, 16 bytes. */
export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

/** A structured reply chunk header, 20 bytes. */
export function encodeChunkHeader(flags: number, type: number, cookie: bigint, length: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

/** An option request: IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  return Buffer.concat([b, data]);
}

/** An option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  return Buffer.concat([b, data]);
}

/** A string with its 32-bit length in front (export names, context queries). */
export function lengthPrefixed(s: string): Buffer {
  const body = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length, 0);
  return Buffer.concat([len, body]);
}

/** The NBD error a vdisk error becomes on the wire. */
export function nbdErrorFor(err: unknown): number {
  const code = (err as { code?: VdiskErrorCode }).code;
  switch (code) {
    case 'E_READONLY':
      return NBD_ERR.EPERM;
    case 'E_BOUNDS':
    case 'E_USAGE':
      return NBD_ERR.EINVAL;
    case 'E_NOSPC':
      return NBD_ERR.ENOSPC;
    case 'E_UNSUPPORTED':
      return NBD_ERR.ENOTSUP;
    default:
      return NBD_ERR.EIO;
  }
}

/** The vdisk error an NBD error from a server becomes. */
export function vdiskErrorFor(where: string, error: number, message?: string): VdiskError {
  const text = message ? `: ${message}` : '';
  switch (error) {
    case NBD_ERR.EPERM:
      return new VdiskError('E_READONLY', `${where}: the server refused the write (EPERM)${text}`);
    case NBD_ERR.EINVAL:
      return new VdiskError('E_BOUNDS', `${where}: the server called the request invalid (EINVAL)${text}`);
    case NBD_ERR.ENOSPC:
      return new VdiskError('E_NOSPC', `${where}: no space left on the export (ENOSPC)${text}`);
    case NBD_ERR.ENOTSUP:
      return new VdiskError('E_UNSUPPORTED', `${where}: the server does not support that (ENOTSUP)${text}`);
    case NBD_ERR.EOVERFLOW:
      return new VdiskError('E_BOUNDS', `${where}: request too large for the server (EOVERFLOW)${text}`);
    default:
      return new VdiskError('E_IO', `${where}: the server reported error ${error}${text}`);
  }
}
