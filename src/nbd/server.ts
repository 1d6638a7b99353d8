/**
 * An NBD server over any BlockDevice: fixed newstyle negotiation, structured
 * replies, `base:allocation` and `qemu:allocation-depth` block status, many requests
 * in flight per connection and many connections (NetworkBlockDevice `doc/proto.md`).
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { BlockDevice } from '../device/block-device.js';
import { Gate } from '../device/gate.js';
import { VdiskError } from '../errors.js';
import {
  CMD,
  CMD_FLAG,
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  MAX_STRING,
  NBDMAGIC,
  NBD_ERR,
  OPT,
  REP,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  REQUEST_SIZE,
  STATE_HOLE,
  STATE_ZERO,
  TF,
  decodeRequest,
  encodeChunkHeader,
  encodeOptionReply,
  encodeSimpleReply,
  lengthPrefixed,
  nbdErrorFor,
  type RequestHeader,
} from '../storage/nbd/protocol.js';
import { SocketReader } from '../storage/nbd/reader.js';
import { acceptTls, type PskKeys } from '../storage/nbd/tls.js';

/** One named export. */
export interface NbdExport {
  name: string;
  device: BlockDevice;
  /** Shown by `nbdinfo --list` and NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Serve read-only even if the device is writable. */
  readOnly?: boolean;
}

/** Limits and options of a server. */
export interface NbdServerOptions {
  /** Largest READ or WRITE payload (NBD_INFO_BLOCK_SIZE's maximum); default 32 MiB. */
  maxPayload?: number;
  /** Bytes of requests in flight per connection before the server stops reading; default 64 MiB. */
  maxInFlight?: number;
  /** Options one client may send before the server hangs up (stops haggling loops); default 256. */
  maxOptions?: number;
  /** Option data longer than this is refused (and the connection closed); default 64 KiB. */
  maxOptionLength?: number;
  /**
   * TLS with pre-shared keys: `on` offers STARTTLS and still serves clients that do
   * not use it, `require` serves only clients inside TLS (proto.md's "SELECTIVETLS"
   * is not offered: every export has the same policy).
   */
  tls?: { mode: 'on' | 'require'; keys: PskKeys };
  /** Told about each connection's end, with the reason when it was not a clean one. */
  onConnectionEnd?: (peer: string, reason?: string) => void;
}

const PREFERRED_BLOCK = 4096;
/** Block status descriptors per reply (proto.md suggests at most 2^20). */
const MAX_DESCRIPTORS = 64 * 1024;
/** A descriptor's length is 32 bits; longer extents are split at a 512-aligned bound. */
const MAX_DESCRIPTOR_LENGTH = 0xfffffe00;

interface Served extends NbdExport {
  /** Serialises the export's mutating commands (a device that is not a BlockDeviceBase may not). */
  gate: Gate;
}

/** The transmission flags that tell the truth about `e`. */
function transmissionFlags(e: Served, structured: boolean): number {
  let f = TF.HAS_FLAGS | TF.SEND_CACHE | TF.CAN_MULTI_CONN;
  // One device object serves every connection, so a flush on one covers writes from all: multi-conn is safe.
  if (structured) f |= TF.SEND_DF;
  if (e.readOnly || e.device.readOnly) f |= TF.READ_ONLY;
  else f |= TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_FAST_ZERO;
  return f;
}

/** A listening NBD server. */
export class NbdServer {
  private readonly exports = new Map<string, Served>();
  private readonly connections = new Set<Connection>();
  private server: Server | undefined;
  private stopping = false;
  readonly maxPayload: number;
  readonly maxInFlight: number;
  readonly maxOptions: number;
  readonly maxOptionLength: number;

  constructor(
    exports: readonly NbdExport[],
    readonly opts: NbdServerOptions = {},
  ) {
    for (const e of exports) {
      if (this.exports.has(e.name)) throw new VdiskError('E_USAGE', `two exports are named "${e.name}"`);
      if (Buffer.byteLength(e.name) > MAX_STRING) throw new VdiskError('E_USAGE', `export name longer than ${MAX_STRING} bytes`);
      this.exports.set(e.name, { ...e, gate: new Gate() });
    }
    this.maxPayload = opts.maxPayload ?? 32 * 1024 * 1024;
    this.maxInFlight = opts.maxInFlight ?? 64 * 1024 * 1024;
    this.maxOptions = opts.maxOptions ?? 256;
    this.maxOptionLength = opts.maxOptionLength ?? 64 * 1024;
  }

  /** The export a client's name selects; the empty name is the first export (the default). */
  lookup(name: string): Served | undefined {
    if (name === '' && !this.exports.has('')) return this.exports.values().next().value;
    return this.exports.get(name);
  }

  list(): Served[] {
    return [...this.exports.values()];
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Listen on a TCP port (`port` 0 picks a free one) or a Unix socket; resolves with the bound address. */
  listen(where: { port?: number; host?: string; unix?: string }): Promise<{ port?: number; host?: string; unix?: string }> {
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const at = where.unix ?? `${where.host ?? '127.0.0.1'}:${where.port ?? 10809}`;
        if (err.code === 'EADDRINUSE') reject(new VdiskError('E_USAGE', `${at}: address already in use (is another server running there?)`, { cause: err }));
        else if (err.code === 'EACCES') reject(new VdiskError('E_USAGE', `${at}: not allowed to listen there`, { cause: err }));
        else reject(new VdiskError('E_IO', `${at}: cannot listen: ${err.message}`, { cause: err }));
      });
      const done = (): void => {
        const a = server.address();
        resolve(typeof a === 'string' || a === null ? { unix: where.unix } : { port: a.port, host: a.address });
      };
      if (where.unix) server.listen(where.unix, done);
      else server.listen(where.port ?? 10809, where.host ?? '127.0.0.1', done);
    });
  }

  /** Serve one already-connected socket (a test's socket pair, or an accepted connection). */
  accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const c = new Connection(this, socket);
    this.connections.add(c);
    c.run().finally(() => this.connections.delete(c));
  }

  /**
   * Stop: accept no one new, let every connection finish the requests it has in
   * flight, then flush every writable export. Devices stay open (the caller owns them).
   */
  async close(): Promise<void> {
    this.stopping = true;
    const closed = this.server ? new Promise<void>((res) => this.server!.close(() => res())) : Promise.resolve();
    await Promise.all([...this.connections].map((c) => c.shutdown()));
    await closed;
    for (const e of this.exports.values()) if (!e.device.readOnly && !e.readOnly) await e.device.flush();
  }
}

/** Thrown inside a connection to hang up on a client that broke the protocol. */
class HangUp extends Error {}

/** A request refused with a particular NBD error (where the vdisk code does not say it). */
class Refusal extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/** One client connection: negotiation, then transmission. */
class Connection {
  private reader: SocketReader;
  private socket: Socket;
  private tls = false;
  private readonly peer: string;
  private structured = false;
  private contexts: Array<{ id: number; name: string }> = [];
  private contextExport: string | undefined;
  private inFlight = new Set<Promise<void>>();
  private inFlightBytes = 0;
  private spaceWaiter: (() => void) | undefined;
  private closing = false;

  constructor(
    private readonly server: NbdServer,
    socket: Socket,
  ) {
    this.socket = socket;
    this.peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix socket';
    this.reader = new SocketReader(socket, `NBD client ${this.peer}`);
  }

  private send(...parts: Buffer[]): void {
    if (this.socket.destroyed) return;
    this.socket.cork();
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  async run(): Promise<void> {
    let reason: string | undefined;
    try {
      const e = await this.negotiate();
      if (e) await this.transmit(e);
    } catch (err) {
      if (!(err instanceof HangUp) && !(err instanceof VdiskError && err.code === 'E_IO')) reason = err instanceof Error ? err.message : String(err);
      else if (err instanceof HangUp) reason = err.message;
    } finally {
      await Promise.allSettled([...this.inFlight]);
      this.socket.end();
      this.socket.destroySoon?.();
      this.server.opts.onConnectionEnd?.(this.peer, reason);
    }
  }

  /** Stop reading new requests; wait for the ones in flight, then hang up. */
  async shutdown(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.inFlight]);
    this.socket.end();
    this.socket.destroy();
  }

  // ---- negotiation ("Fixed newstyle negotiation") ----

  private async negotiate(): Promise<Served | undefined> {
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(NBDMAGIC, 0);
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.send(hello);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) throw new HangUp(`unknown client flags 0x${clientFlags.toString(16)}`);
    const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

    for (let n = 0; ; n++) {
      if (n >= this.server.maxOptions) throw new HangUp(`more than ${this.server.maxOptions} options`);
      const head = await this.reader.read(16);
      if (head.readBigUInt64BE(0) !== IHAVEOPT) throw new HangUp('bad option magic');
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (length > this.server.maxOptionLength) {
        this.send(encodeOptionReply(option, REP.ERR_TOO_BIG, Buffer.from(`option data of ${length} bytes is too long`)));
        throw new HangUp(`option data of ${length} bytes`);
      }
      const data = await this.reader.read(length);
      const reply = (type: number, payload: Buffer = Buffer.alloc(0)): void => this.send(encodeOptionReply(option, type, payload));
      const fail = (type: number, message: string): void => reply(type, Buffer.from(message, 'utf8'));
      const tlsPolicy = this.server.opts.tls;
      if (tlsPolicy?.mode === 'require' && !this.tls && option !== OPT.STARTTLS && option !== OPT.ABORT) {
        fail(REP.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
        if (option === OPT.EXPORT_NAME) throw new HangUp('NBD_OPT_EXPORT_NAME without TLS');
        continue;
      }
      if (this.server.isStopping) {
        fail(REP.ERR_SHUTDOWN, 'the server is shutting down');
        if (option === OPT.EXPORT_NAME) throw new HangUp('shutting down');
        continue;
      }
      switch (option) {
        case OPT.EXPORT_NAME: {
          const e = this.server.lookup(data.toString('utf8'));
          if (!e) throw new HangUp(`no export "${data.toString('utf8')}"`);
          const b = Buffer.alloc(noZeroes ? 10 : 134);
          b.writeBigUInt64BE(BigInt(e.device.size), 0);
          b.writeUInt16BE(transmissionFlags(e, this.structured), 8);
          this.send(b);
          this.checkContextExport(e.name);
          return e;
        }
        case OPT.ABORT:
          reply(REP.ACK);
          return undefined;
        case OPT.LIST:
          if (length !== 0) {
            fail(REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          for (const e of this.server.list()) reply(REP.SERVER, Buffer.concat([lengthPrefixed(e.name), Buffer.from(e.description ?? '', 'utf8')]));
          reply(REP.ACK);
          break;
        case OPT.STARTTLS:
          if (!tlsPolicy) fail(REP.ERR_POLICY, 'this server does not offer TLS');
          else if (this.tls) fail(REP.ERR_INVALID, 'TLS is already on');
          else if (length !== 0) fail(REP.ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
          else {
            reply(REP.ACK);
            if (this.reader.detach() !== 0) throw new HangUp('data sent after NBD_OPT_STARTTLS before the TLS handshake');
            this.socket = await acceptTls(this.socket, tlsPolicy.keys, `NBD client ${this.peer}`);
            this.reader = new SocketReader(this.socket, `NBD client ${this.peer}`);
            this.tls = true;
            // proto.md: state from before TLS does not carry into it.
            this.structured = false;
            this.contexts = [];
            this.contextExport = undefined;
          }
          break;
        case OPT.INFO:
        case OPT.GO: {
          const parsed = this.parseInfoRequest(data);
          if (typeof parsed === 'string') {
            fail(REP.ERR_INVALID, parsed);
            break;
          }
          const e = this.server.lookup(parsed.name);
          if (!e) {
            fail(REP.ERR_UNKNOWN, `no export named "${parsed.name}"`);
            break;
          }
          const info = (type: number, body: Buffer): void => {
            const t = Buffer.alloc(2);
            t.writeUInt16BE(type, 0);
            reply(REP.INFO, Buffer.concat([t, body]));
          };
          const ex = Buffer.alloc(10);
          ex.writeBigUInt64BE(BigInt(e.device.size), 0);
          ex.writeUInt16BE(transmissionFlags(e, this.structured), 8);
          info(INFO.EXPORT, ex);
          if (parsed.requests.includes(INFO.NAME)) info(INFO.NAME, Buffer.from(e.name, 'utf8'));
          if (parsed.requests.includes(INFO.DESCRIPTION) && e.description) info(INFO.DESCRIPTION, Buffer.from(e.description, 'utf8'));
          const bs = Buffer.alloc(12);
          bs.writeUInt32BE(1, 0);
          bs.writeUInt32BE(PREFERRED_BLOCK, 4);
          bs.writeUInt32BE(this.server.maxPayload, 8);
          info(INFO.BLOCK_SIZE, bs);
          reply(REP.ACK);
          if (option === OPT.GO) {
            this.checkContextExport(e.name);
            return e;
          }
          break;
        }
        case OPT.STRUCTURED_REPLY:
          if (length !== 0) fail(REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          else if (this.structured) fail(REP.ERR_INVALID, 'structured replies are already on');
          else {
            this.structured = true;
            reply(REP.ACK);
          }
          break;
        case OPT.LIST_META_CONTEXT:
        case OPT.SET_META_CONTEXT: {
          if (!this.structured) {
            fail(REP.ERR_INVALID, 'negotiate structured replies first');
            break;
          }
          const parsed = this.parseContextRequest(data);
          if (typeof parsed === 'string') {
            fail(REP.ERR_INVALID, parsed);
            break;
          }
          if (!this.server.lookup(parsed.name)) {
            fail(REP.ERR_UNKNOWN, `no export named "${parsed.name}"`);
            break;
          }
          const available = [CONTEXT_BASE_ALLOCATION, CONTEXT_ALLOCATION_DEPTH];
          const matched =
            option === OPT.LIST_META_CONTEXT && parsed.queries.length === 0
              ? available
              : available.filter((c) => parsed.queries.some((q) => q === c || (option === OPT.LIST_META_CONTEXT && q.endsWith(':') && c.startsWith(q))));
          if (option === OPT.SET_META_CONTEXT) {
            this.contexts = matched.map((name, i) => ({ id: i + 1, name }));
            this.contextExport = parsed.name;
          }
          for (const [i, c] of matched.entries()) {
            const id = Buffer.alloc(4);
            id.writeUInt32BE(option === OPT.SET_META_CONTEXT ? i + 1 : 0, 0);
            reply(REP.META_CONTEXT, Buffer.concat([id, Buffer.from(c, 'utf8')]));
          }
          reply(REP.ACK);
          break;
        }
        default:
          fail(REP.ERR_UNSUP, `option ${option} is not supported`);
      }
    }
  }

  /** Contexts set for another export than the one chosen do not apply. */
  private checkContextExport(name: string): void {
    const chosen = this.server.lookup(name)?.name;
    if (this.contextExport === undefined || this.server.lookup(this.contextExport)?.name !== chosen) this.contexts = [];
  }

  private parseInfoRequest(d: Buffer): { name: string; requests: number[] } | string {
    if (d.length < 6) return 'request too short';
    const nameLen = d.readUInt32BE(0);
    if (nameLen > d.length - 6) return 'export name longer than the option';
    if (nameLen > MAX_STRING) return 'export name too long';
    const name = d.toString('utf8', 4, 4 + nameLen);
    const count = d.readUInt16BE(4 + nameLen);
    if (d.length !== 6 + nameLen + 2 * count) return 'information request count does not match the option length';
    const requests: number[] = [];
    for (let i = 0; i < count; i++) requests.push(d.readUInt16BE(6 + nameLen + 2 * i));
    return { name, requests };
  }

  private parseContextRequest(d: Buffer): { name: string; queries: string[] } | string {
    if (d.length < 8) return 'request too short';
    const nameLen = d.readUInt32BE(0);
    if (nameLen > MAX_STRING || 4 + nameLen + 4 > d.length) return 'export name longer than the option';
    const name = d.toString('utf8', 4, 4 + nameLen);
    let at = 4 + nameLen;
    const count = d.readUInt32BE(at);
    at += 4;
    if (count > 64) return 'too many queries';
    const queries: string[] = [];
    for (let i = 0; i < count; i++) {
      if (at + 4 > d.length) return 'query count larger than the option';
      const len = d.readUInt32BE(at);
      at += 4;
      if (len > MAX_STRING || at + len > d.length) return 'query longer than the option';
      queries.push(d.toString('utf8', at, at + len));
      at += len;
    }
    if (at !== d.length) return 'data after the last query';
    return { name, queries };
  }

  // ---- transmission ----

  private async transmit(e: Served): Promise<void> {
    for (;;) {
      if (this.closing) return;
      const head = await this.reader.read(REQUEST_SIZE);
      const r = decodeRequest(head);
      if (!r.magicOk) throw new HangUp('bad request magic');
      if (r.type === CMD.DISC) return;
      let payload: Buffer | undefined;
      if (r.type === CMD.WRITE) {
        if (r.length > this.server.maxPayload) {
          // The payload cannot be skipped safely at this size: refuse and hang up.
          this.replyError(r, NBD_ERR.EINVAL, `write of ${r.length} bytes is larger than the maximum payload ${this.server.maxPayload}`);
          throw new HangUp(`write of ${r.length} bytes`);
        }
        payload = await this.reader.read(r.length);
      }
      const cost = r.type === CMD.READ || r.type === CMD.WRITE ? Math.min(r.length, this.server.maxPayload) : 0;
      while (this.inFlightBytes > 0 && this.inFlightBytes + cost > this.server.maxInFlight) {
        await new Promise<void>((res) => {
          this.spaceWaiter = res;
        });
      }
      this.inFlightBytes += cost;
      const p = this.handle(e, r, payload)
        .catch((err: unknown) => this.replyError(r, err instanceof Refusal ? err.errno : nbdErrorFor(err), err instanceof Error ? err.message : String(err)))
        .finally(() => {
          this.inFlightBytes -= cost;
          this.inFlight.delete(p);
          const w = this.spaceWaiter;
          this.spaceWaiter = undefined;
          w?.();
        });
      this.inFlight.add(p);
    }
  }

  private replyError(r: RequestHeader, error: number, message: string): void {
    if (this.structured) {
      const msg = Buffer.from(message.slice(0, 1024), 'utf8');
      const body = Buffer.alloc(6);
      body.writeUInt32BE(error, 0);
      body.writeUInt16BE(msg.length, 4);
      this.send(encodeChunkHeader(REPLY_FLAG_DONE, REPLY_TYPE.ERROR, r.cookie, 6 + msg.length), body, msg);
    } else {
      this.send(encodeSimpleReply(error, r.cookie));
    }
  }

  private replyOk(r: RequestHeader): void {
    if (this.structured) this.send(encodeChunkHeader(REPLY_FLAG_DONE, REPLY_TYPE.NONE, r.cookie, 0));
    else this.send(encodeSimpleReply(0, r.cookie));
  }

  /** Carry out one request and send its reply (errors are thrown, and sent by the caller). */
  private async handle(e: Served, r: RequestHeader, payload: Buffer | undefined): Promise<void> {
    const dev = e.device;
    const readOnly = e.readOnly || dev.readOnly;
    const inRange = r.offset + r.length <= dev.size;
    const allowed = (mask: number): boolean => (r.flags & ~mask) === 0;
    const invalid = (why: string): VdiskError => new VdiskError('E_USAGE', why);
    const writing = (): void => {
      if (readOnly) throw new VdiskError('E_READONLY', `export "${e.name}" is read-only`);
      if (!inRange) throw new VdiskError('E_NOSPC', `${r.offset}+${r.length} is past the end of the export (${dev.size} bytes)`);
    };
    switch (r.type) {
      case CMD.READ: {
        if (!allowed(CMD_FLAG.FUA | CMD_FLAG.DF)) throw invalid('unknown flags on READ');
        if (!inRange) throw invalid(`read of ${r.offset}+${r.length} is past the end of the export (${dev.size} bytes)`);
        if (r.length > this.server.maxPayload) {
          throw new Refusal(NBD_ERR.EOVERFLOW, `read of ${r.length} bytes is larger than the maximum payload ${this.server.maxPayload}`);
        }
        if (r.length === 0) return this.replyOk(r);
        const buf = Buffer.allocUnsafe(r.length);
        await dev.read(buf, r.offset);
        if (this.structured) {
          const off = Buffer.alloc(8);
          off.writeBigUInt64BE(BigInt(r.offset), 0);
          this.send(encodeChunkHeader(REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, r.cookie, 8 + r.length), off, buf);
        } else {
          this.send(encodeSimpleReply(0, r.cookie), buf);
        }
        return;
      }
      case CMD.WRITE:
        if (!allowed(CMD_FLAG.FUA)) throw invalid('unknown flags on WRITE');
        writing();
        await e.gate.run(async () => {
          await dev.write(payload!, r.offset);
          if (r.flags & CMD_FLAG.FUA) await dev.flush();
        });
        return this.replyOk(r);
      case CMD.FLUSH:
        if (readOnly) return this.replyOk(r);
        await e.gate.run(() => dev.flush());
        return this.replyOk(r);
      case CMD.TRIM:
        if (!allowed(CMD_FLAG.FUA)) throw invalid('unknown flags on TRIM');
        writing();
        await e.gate.run(async () => {
          await dev.discard(r.offset, r.length);
          if (r.flags & CMD_FLAG.FUA) await dev.flush();
        });
        return this.replyOk(r);
      case CMD.WRITE_ZEROES:
        if (!allowed(CMD_FLAG.FUA | CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO)) throw invalid('unknown flags on WRITE_ZEROES');
        writing();
        // proto.md: a fast-zero request must fail quickly unless zeroing beats writing. It
        // does where the map already says zero (nothing to do but record it); anywhere
        // else, or where the map is found by reading (raw), it is refused at once.
        if (r.flags & CMD_FLAG.FAST_ZERO && !(await this.alreadyZero(dev, r))) throw new VdiskError('E_UNSUPPORTED', 'fast zeroing is only offered where the range already reads as zeros');
        await e.gate.run(async () => {
          if (r.flags & CMD_FLAG.NO_HOLE) await writeZeroBytes(dev, r.offset, r.length);
          else await dev.writeZeroes(r.offset, r.length);
          if (r.flags & CMD_FLAG.FUA) await dev.flush();
        });
        return this.replyOk(r);
      case CMD.CACHE:
        if (!allowed(0)) throw invalid('unknown flags on CACHE');
        if (!inRange) throw invalid('cache request past the end of the export');
        return this.replyOk(r);
      case CMD.BLOCK_STATUS:
        if (!allowed(CMD_FLAG.REQ_ONE)) throw invalid('unknown flags on BLOCK_STATUS');
        if (!this.structured || this.contexts.length === 0) throw invalid('BLOCK_STATUS needs structured replies and a metadata context');
        if (!inRange) throw invalid(`block status of ${r.offset}+${r.length} is past the end of the export (${dev.size} bytes)`);
        return this.blockStatus(dev, r);
      default:
        throw invalid(`unknown command ${r.type}`);
    }
  }

  /** True when the allocation map (not the content) says `r`'s range reads as zeros. */
  private async alreadyZero(dev: BlockDevice, r: RequestHeader): Promise<boolean> {
    if (dev.extentsReadContent || r.flags & CMD_FLAG.NO_HOLE || r.offset + r.length > dev.size) return false;
    for await (const x of dev.extents(r.offset, r.length)) if (x.kind === 'data') return false;
    return true;
  }

  private async blockStatus(dev: BlockDevice, r: RequestHeader): Promise<void> {
    const reqOne = (r.flags & CMD_FLAG.REQ_ONE) !== 0;
    const chunks: Buffer[] = [];
    // A zero-length query still gets one descriptor (proto.md: at least one), of the smallest length.
    const length = Math.max(1, Math.min(r.length, dev.size - r.offset));
    for (const [i, ctx] of this.contexts.entries()) {
      const flagsOf = ctx.name === CONTEXT_BASE_ALLOCATION
        ? (k: string) => (k === 'hole' ? STATE_HOLE | STATE_ZERO : k === 'zero' ? STATE_ZERO : 0)
        : (k: string, depth: number) => (k === 'hole' ? 0 : depth + 1);
      const descriptors: Array<[number, number]> = [];
      if (dev.size > r.offset) {
        for await (const x of dev.extents(r.offset, length)) {
          let left = x.length;
          const flags = flagsOf(x.kind, x.depth);
          while (left > 0) {
            const last = descriptors[descriptors.length - 1];
            if (last && last[1] === flags && last[0] + left <= MAX_DESCRIPTOR_LENGTH) {
              last[0] += left;
              left = 0;
            } else {
              const n = Math.min(left, MAX_DESCRIPTOR_LENGTH);
              descriptors.push([n, flags]);
              left -= n;
            }
          }
          if (descriptors.length >= (reqOne ? 2 : MAX_DESCRIPTORS)) break;
        }
      }
      if (descriptors.length === 0) descriptors.push([length, 0]);
      const use = reqOne ? descriptors.slice(0, 1) : descriptors.slice(0, MAX_DESCRIPTORS);
      if (reqOne) use[0]![0] = Math.min(use[0]![0], length);
      const body = Buffer.alloc(4 + 8 * use.length);
      body.writeUInt32BE(ctx.id, 0);
      use.forEach(([len, flags], j) => {
        body.writeUInt32BE(len, 4 + 8 * j);
        body.writeUInt32BE(flags, 8 + 8 * j);
      });
      const done = i === this.contexts.length - 1 ? REPLY_FLAG_DONE : 0;
      chunks.push(encodeChunkHeader(done, REPLY_TYPE.BLOCK_STATUS, r.cookie, body.length), body);
    }
    this.send(...chunks);
  }
}

/** Zeros written as data, so the range stays allocated (WRITE_ZEROES with NO_HOLE). */
async function writeZeroBytes(dev: BlockDevice, offset: number, length: number): Promise<void> {
  const zeros = Buffer.alloc(Math.min(length, 1024 * 1024));
  for (let pos = offset; pos < offset + length; pos += zeros.length) {
    await dev.write(zeros.subarray(0, Math.min(zeros.length, offset + length - pos)), pos);
  }
}
