/**
 * An NBD client: connects to an export (fixed newstyle, structured replies,
 * `base:allocation`) and offers it as a {@link Storage}, so any format inside an
 * export opens like a local file, and a raw export's extents come from BLOCK_STATUS.
 */
import { connect, type Socket } from 'node:net';
import { userInfo } from 'node:os';
import { VdiskError } from '../../errors.js';
import type { Storage, StorageExtent } from '../storage.js';
import {
  CMD,
  CONTEXT_BASE_ALLOCATION,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBDMAGIC,
  OPT,
  OPTION_REPLY_MAGIC,
  REP,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_REPLY_MAGIC,
  TF,
  encodeOption,
  encodeRequest,
  lengthPrefixed,
  vdiskErrorFor,
} from './protocol.js';
import { SocketReader } from './reader.js';
import { readPskFile, startTls } from './tls.js';
import { parseNbdUri, type NbdAddress } from './uri.js';

/** How to connect. */
export interface NbdConnectOptions {
  /** Refuse writes even when the export allows them. */
  readOnly?: boolean;
  /** Give up connecting after this many ms (default 10 000). */
  timeoutMs?: number;
  /** For nbds://: the PSK file (else the URI's `?tls-psk-file=`). */
  tlsPskFile?: string;
  /** For nbds://: the PSK identity (else the URI's user, else the login name, as libnbd does). */
  tlsUsername?: string;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** READ: where the data goes. */
  buf?: Uint8Array;
  /** BLOCK_STATUS: where the descriptors for our context go. */
  status?: { descriptors?: Array<[number, number]> };
  error?: VdiskError;
  resolve: () => void;
  reject: (err: VdiskError) => void;
}

/** Largest request this client sends, whatever the server allows. */
const CLIENT_MAX_REQUEST = 32 * 1024 * 1024;

/** A connection to one export. */
export class NbdClient {
  private reader: SocketReader;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private failure: VdiskError | undefined;
  private closed = false;
  size = 0;
  flags = 0;
  structured = false;
  /** The id of `base:allocation`, when the server agreed to it. */
  allocationContext: number | undefined;
  maxPayload = CLIENT_MAX_REQUEST;

  private constructor(
    private socket: Socket,
    readonly address: NbdAddress,
    private readonly psk?: { identity: string; key: Buffer },
  ) {
    this.reader = new SocketReader(socket, address.uri, 64 * 1024 * 1024);
  }

  /** Connect and negotiate; the connection is in transmission when this resolves. */
  static async connect(address: string | NbdAddress, opts: NbdConnectOptions = {}): Promise<NbdClient> {
    const a = typeof address === 'string' ? parseNbdUri(address) : address;
    let psk: { identity: string; key: Buffer } | undefined;
    if (a.tls) {
      const file = opts.tlsPskFile ?? a.tlsPskFile;
      if (!file) throw new VdiskError('E_USAGE', `${a.uri}: nbds:// needs a PSK file (?tls-psk-file=FILE)`);
      const identity = opts.tlsUsername ?? a.user ?? userInfo().username;
      const key = (await readPskFile(file)).get(identity);
      if (!key) throw new VdiskError('E_USAGE', `${file}: no key for "${identity}"`);
      psk = { identity, key };
    }
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = a.socket ? connect({ path: a.socket }) : connect({ host: a.host, port: a.port ?? 10809 });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new VdiskError('E_IO', `${a.uri}: no answer within ${opts.timeoutMs ?? 10000} ms`));
      }, opts.timeoutMs ?? 10000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const why = err.code === 'ECONNREFUSED' ? 'connection refused (is a server listening there?)' : err.code === 'ENOENT' ? 'no such socket' : err.message;
        reject(new VdiskError('E_IO', `${a.uri}: ${why}`, { cause: err }));
      });
    });
    socket.setNoDelay(true);
    const c = new NbdClient(socket, a, psk);
    try {
      await c.negotiate();
    } catch (err) {
      socket.destroy();
      throw err;
    }
    if (opts.readOnly) c.flags |= TF.READ_ONLY;
    c.readReplies().catch(() => undefined);
    return c;
  }

  get readOnly(): boolean {
    return (this.flags & TF.READ_ONLY) !== 0;
  }

  private bad(why: string): VdiskError {
    return new VdiskError('E_CORRUPT', `${this.address.uri}: the server broke the protocol: ${why}`);
  }

  private async negotiate(): Promise<void> {
    const hello = await this.reader.read(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw new VdiskError('E_FORMAT', `${this.address.uri}: not an NBD server`);
    if (hello.readBigUInt64BE(8) !== IHAVEOPT) throw new VdiskError('E_UNSUPPORTED', `${this.address.uri}: the server speaks only oldstyle NBD`);
    const hflags = hello.readUInt16BE(16);
    if (!(hflags & FLAG_FIXED_NEWSTYLE)) throw new VdiskError('E_UNSUPPORTED', `${this.address.uri}: the server does not speak fixed newstyle NBD`);
    const cf = Buffer.alloc(4);
    cf.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0), 0);
    this.socket.write(cf);

    if (this.psk) {
      const t = await this.option(OPT.STARTTLS, Buffer.alloc(0));
      if (t.final !== REP.ACK) throw new VdiskError('E_UNSUPPORTED', `${this.address.uri}: the server does not offer TLS${t.message ? `: ${t.message}` : ''}`);
      if (this.reader.detach() !== 0) throw this.bad('data after the STARTTLS reply');
      this.socket = await startTls(this.socket, this.psk.identity, this.psk.key, this.address.uri);
      this.reader = new SocketReader(this.socket, this.address.uri, 64 * 1024 * 1024);
    }
    const sr = await this.option(OPT.STRUCTURED_REPLY, Buffer.alloc(0));
    this.structured = sr.final === REP.ACK;
    if (this.structured) {
      const q = Buffer.concat([lengthPrefixed(this.address.export), Buffer.from([0, 0, 0, 1]), lengthPrefixed(CONTEXT_BASE_ALLOCATION)]);
      const mc = await this.option(OPT.SET_META_CONTEXT, q);
      if (mc.final === REP.ACK) {
        for (const r of mc.replies) {
          if (r.type === REP.META_CONTEXT && r.data.length >= 4 && r.data.toString('utf8', 4) === CONTEXT_BASE_ALLOCATION) this.allocationContext = r.data.readUInt32BE(0);
        }
      }
    }
    const go = Buffer.concat([lengthPrefixed(this.address.export), Buffer.from([0, 1, 0, INFO.BLOCK_SIZE])]);
    const g = await this.option(OPT.GO, go);
    if (g.final === REP.ERR_UNSUP) {
      // An old server: NBD_OPT_EXPORT_NAME, which ends negotiation without a reply header.
      this.socket.write(encodeOption(OPT.EXPORT_NAME, Buffer.from(this.address.export, 'utf8')));
      const b = await this.reader.read(hflags & FLAG_NO_ZEROES ? 10 : 134);
      const size = b.readBigUInt64BE(0);
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw this.bad(`export size ${size} is too large`);
      this.size = Number(size);
      this.flags = b.readUInt16BE(8);
      return;
    }
    if (g.final !== REP.ACK) {
      const msg = g.message ? `: ${g.message}` : '';
      if (g.final === REP.ERR_UNKNOWN) throw new VdiskError('E_NOENT', `${this.address.uri}: the server has no export "${this.address.export}"${msg}`);
      if (g.final === REP.ERR_TLS_REQD) throw new VdiskError('E_UNSUPPORTED', `${this.address.uri}: the server requires TLS (connect with nbds://…?tls-psk-file=FILE)`);
      throw new VdiskError('E_IO', `${this.address.uri}: the server refused the export (reply 0x${g.final.toString(16)})${msg}`);
    }
    let sawExport = false;
    for (const r of g.replies) {
      if (r.type !== REP.INFO || r.data.length < 2) continue;
      const t = r.data.readUInt16BE(0);
      if (t === INFO.EXPORT) {
        if (r.data.length !== 12) throw this.bad('NBD_INFO_EXPORT of the wrong length');
        const size = r.data.readBigUInt64BE(2);
        if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw this.bad(`export size ${size} is too large`);
        this.size = Number(size);
        this.flags = r.data.readUInt16BE(10);
        sawExport = true;
      } else if (t === INFO.BLOCK_SIZE && r.data.length === 14) {
        const max = r.data.readUInt32BE(10);
        if (max >= 512) this.maxPayload = Math.min(CLIENT_MAX_REQUEST, max);
      }
    }
    if (!sawExport) throw this.bad('NBD_OPT_GO succeeded without NBD_INFO_EXPORT');
  }

  /** Send one option; collect its replies up to the final one (ACK or an error). */
  private async option(option: number, data: Buffer): Promise<{ final: number; replies: Array<{ type: number; data: Buffer }>; message?: string }> {
    this.socket.write(encodeOption(option, data));
    const replies: Array<{ type: number; data: Buffer }> = [];
    for (let n = 0; n < 100_000; n++) {
      const h = await this.reader.read(20);
      if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw this.bad('bad option reply magic');
      if (h.readUInt32BE(8) !== option) throw this.bad('a reply to an option we did not send');
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      if (len > 16 * 1024 * 1024) throw this.bad(`option reply of ${len} bytes`);
      const body = await this.reader.read(len);
      if (type === REP.ACK || type >= 0x80000000) return { final: type, replies, message: type >= 0x80000000 && len > 0 ? body.toString('utf8') : undefined };
      replies.push({ type, data: body });
    }
    throw this.bad('endless option replies');
  }

  /** Read replies until the connection ends, settling each pending request. */
  private async readReplies(): Promise<void> {
    try {
      for (;;) {
        const magic = (await this.reader.read(4)).readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) {
          const h = await this.reader.read(12);
          const error = h.readUInt32BE(0);
          const cookie = h.readBigUInt64BE(4);
          const p = this.take(cookie);
          if (error !== 0) p.reject(vdiskErrorFor(this.address.uri, error));
          else {
            if (p.type === CMD.READ) {
              const data = await this.reader.read(p.length);
              p.buf!.set(data);
            }
            p.resolve();
          }
        } else if (magic === STRUCTURED_REPLY_MAGIC) {
          const h = await this.reader.read(16);
          const flags = h.readUInt16BE(0);
          const type = h.readUInt16BE(2);
          const cookie = h.readBigUInt64BE(4);
          const length = h.readUInt32BE(12);
          const p = this.pending.get(cookie);
          if (!p) throw this.bad(`a reply for cookie ${cookie}, which no request has`);
          if (length > this.maxPayload + 4096 && type !== REPLY_TYPE.BLOCK_STATUS) throw this.bad(`a reply chunk of ${length} bytes`);
          if (length > 8 * 1024 * 1024 + 16 && type === REPLY_TYPE.BLOCK_STATUS) throw this.bad(`a block status chunk of ${length} bytes`);
          const body = await this.reader.read(length);
          this.chunk(p, type, body);
          if (flags & REPLY_FLAG_DONE) {
            this.pending.delete(cookie);
            if (p.error) p.reject(p.error);
            else p.resolve();
          }
        } else {
          throw this.bad(`bad reply magic 0x${magic.toString(16)}`);
        }
      }
    } catch (err) {
      const e = err instanceof VdiskError ? err : new VdiskError('E_IO', `${this.address.uri}: ${String(err)}`);
      this.fail(this.closed ? new VdiskError('E_CLOSED', `${this.address.uri}: connection closed`) : e);
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw this.bad(`a reply for cookie ${cookie}, which no request has`);
    this.pending.delete(cookie);
    return p;
  }

  private chunk(p: Pending, type: number, body: Buffer): void {
    switch (type) {
      case REPLY_TYPE.NONE:
        return;
      case REPLY_TYPE.OFFSET_DATA:
      case REPLY_TYPE.OFFSET_HOLE: {
        if (p.type !== CMD.READ || body.length < (type === REPLY_TYPE.OFFSET_DATA ? 9 : 12)) throw this.bad('a content chunk that does not fit the request');
        const off = Number(body.readBigUInt64BE(0));
        const len = type === REPLY_TYPE.OFFSET_DATA ? body.length - 8 : body.readUInt32BE(8);
        if (off < p.offset || off + len > p.offset + p.length) throw this.bad(`content at ${off}+${len} outside the request ${p.offset}+${p.length}`);
        if (type === REPLY_TYPE.OFFSET_DATA) p.buf!.set(body.subarray(8), off - p.offset);
        else p.buf!.fill(0, off - p.offset, off - p.offset + len);
        return;
      }
      case REPLY_TYPE.BLOCK_STATUS: {
        if (p.type !== CMD.BLOCK_STATUS || body.length < 12 || (body.length - 4) % 8 !== 0) throw this.bad('a malformed block status chunk');
        if (body.readUInt32BE(0) !== this.allocationContext) return;
        const d: Array<[number, number]> = [];
        for (let at = 4; at < body.length; at += 8) d.push([body.readUInt32BE(at), body.readUInt32BE(at + 4)]);
        if (p.status) p.status.descriptors = d;
        return;
      }
      default:
        if (type & 0x8000) {
          const error = body.length >= 6 ? body.readUInt32BE(0) : 5;
          const mlen = body.length >= 6 ? Math.min(body.readUInt16BE(4), body.length - 6) : 0;
          p.error ??= vdiskErrorFor(this.address.uri, error, body.toString('utf8', 6, 6 + mlen));
          return;
        }
        throw this.bad(`unknown reply chunk type ${type}`);
    }
  }

  private fail(err: VdiskError): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.socket.destroy();
  }

  private request(type: number, flags: number, offset: number, length: number, extra: Partial<Pending> = {}, payload?: Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new VdiskError('E_CLOSED', `${this.address.uri}: closed`));
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(cookie, { type, offset, length, ...extra, resolve, reject });
      this.socket.cork();
      this.socket.write(encodeRequest({ flags, type, cookie, offset, length }));
      if (payload) this.socket.write(payload);
      this.socket.uncork();
    });
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset + length > this.size) {
      throw new VdiskError('E_BOUNDS', `${this.address.uri}: ${offset}+${length} is outside the export (${this.size} bytes)`);
    }
  }

  /** Read `buf.length` bytes at `offset`, in requests of at most the server's payload size, all in flight at once. */
  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.checkRange(offset, buf.length);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < buf.length; at += this.maxPayload) {
      const n = Math.min(this.maxPayload, buf.length - at);
      parts.push(this.request(CMD.READ, 0, offset + at, n, { buf: buf.subarray(at, at + n) }));
    }
    await Promise.all(parts);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.address.uri}: the export is read-only`);
    this.checkRange(offset, buf.length);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < buf.length; at += this.maxPayload) {
      const n = Math.min(this.maxPayload, buf.length - at);
      parts.push(this.request(CMD.WRITE, 0, offset + at, n, {}, buf.subarray(at, at + n)));
    }
    await Promise.all(parts);
  }

  async flush(): Promise<void> {
    if (this.readOnly || !(this.flags & TF.SEND_FLUSH)) return;
    await this.request(CMD.FLUSH, 0, 0, 0);
  }

  /** Zero a range: WRITE_ZEROES where the server offers it, else written zeros. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new VdiskError('E_READONLY', `${this.address.uri}: the export is read-only`);
    this.checkRange(offset, length);
    if (this.flags & TF.SEND_WRITE_ZEROES) {
      for (let at = 0; at < length; at += 0x80000000) await this.request(CMD.WRITE_ZEROES, 0, offset + at, Math.min(0x80000000, length - at));
      return;
    }
    const zeros = new Uint8Array(Math.min(length, this.maxPayload));
    for (let at = 0; at < length; at += zeros.length) await this.write(zeros.subarray(0, Math.min(zeros.length, length - at)), offset + at);
  }

  /** True when the server answers BLOCK_STATUS for `base:allocation`. */
  get hasBlockStatus(): boolean {
    return this.allocationContext !== undefined;
  }

  /** The allocation of `[offset, offset+length)` from BLOCK_STATUS, covering the range exactly. */
  async *blockStatus(offset: number, length: number): AsyncGenerator<StorageExtent> {
    this.checkRange(offset, length);
    for (let pos = offset; pos < offset + length; ) {
      const want = Math.min(offset + length - pos, 0xfffffe00);
      const status: { descriptors?: Array<[number, number]> } = {};
      await this.request(CMD.BLOCK_STATUS, 0, pos, want, { status });
      const d = status.descriptors;
      if (!d || d.length === 0) throw this.bad('BLOCK_STATUS without descriptors for base:allocation');
      for (const [len, flags] of d) {
        if (len === 0) throw this.bad('a block status descriptor of length 0');
        const n = Math.min(len, offset + length - pos);
        yield { offset: pos, length: n, kind: flags & STATE_HOLE ? 'hole' : flags & STATE_ZERO ? 'zero' : 'data' };
        pos += n;
        if (pos >= offset + length) break;
      }
    }
  }

  /** Disconnect (NBD_CMD_DISC) after the requests in flight. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.failure) {
      await Promise.allSettled([...this.pending.values()].map((p) => new Promise<void>((res) => {
        const { resolve, reject } = p;
        p.resolve = () => (resolve(), res());
        p.reject = (e) => (reject(e), res());
      })));
      this.socket.write(encodeRequest({ flags: 0, type: CMD.DISC, cookie: 0n, offset: 0, length: 0 }));
      this.socket.end();
    }
    this.socket.destroy();
  }
}

/** An NBD export as the Storage a format driver reads. */
export class NbdStorage implements Storage {
  readonly name: string;

  private constructor(private readonly client: NbdClient) {
    this.name = client.address.uri;
  }

  /** Connect to `uri`; `readOnly` refuses writes even if the server allows them. */
  static async open(uri: string, opts: NbdConnectOptions = {}): Promise<NbdStorage> {
    return new NbdStorage(await NbdClient.connect(uri, opts));
  }

  get size(): number {
    return this.client.size;
  }

  get readOnly(): boolean {
    return this.client.readOnly;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.client.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.client.write(buf, offset);
  }

  async truncate(size: number): Promise<void> {
    if (size !== this.client.size) throw new VdiskError('E_UNSUPPORTED', `${this.name}: an NBD export cannot change its size from the client (${this.client.size} bytes)`);
  }

  flush(): Promise<void> {
    return this.client.flush();
  }

  close(): Promise<void> {
    return this.client.close();
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.client.writeZeroes(offset, length);
  }

  /** The export's allocation from BLOCK_STATUS (absent when the server offers none). */
  get extents(): ((offset: number, length: number) => AsyncIterable<StorageExtent>) | undefined {
    return this.client.hasBlockStatus ? (o, l) => this.client.blockStatus(o, l) : undefined;
  }
}
