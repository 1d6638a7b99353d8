/**
 * The pool control socket: how `vdisk pool add` and `vdisk pool lv extend` (and
 * `lv create`) reach the one process that holds a pool open for writing (a `vdisk
 * serve` of `lvm:VG/LV`, a `vdisk boot` of an LV) instead of failing on its members'
 * write locks. The holder carries the change out through its own {@link Pool}, whose
 * `io()` gate and serial commits make it safe while its LVs are in use.
 *
 * Where: a Unix socket `.vdisk-VG.ctl` in the pool folder (its real path), hidden so
 * a folder scan never takes it for a member. When that path would not fit `sun_path`
 * (108 bytes with its NUL), `vdisk-UID-HASH-VG.ctl` under `$XDG_RUNTIME_DIR` (or the
 * system's temporary folder), HASH being the first 16 hex digits of the folder's
 * SHA-256. The socket is made mode 0600, and a client refuses a socket that is not
 * its own user's (root excepted), so only the owner talks to the holder.
 *
 * Protocol (version 1): newline-delimited JSON, one request per line, each answered
 * by one reply line in order; a client may close after its reply.
 *
 * ```
 * → {"v":1,"op":"status","vg":"vg0"}
 * ← {"v":1,"ok":true,"result":{"vg":"vg0","pid":1234,"seqno":7,"members":[...],"lvs":{"data":8388608}}}
 * → {"v":1,"op":"add","vg":"vg0","member":"/abs/c.vmdk","force":false,"new":[{"format":"vmdk","size":33554432}]}
 * ← {"v":1,"ok":true,"result":{"vg":"vg0","member":"/abs/c.vmdk","seqno":8}}
 * → {"v":1,"op":"lvExtend","vg":"vg0","lv":"data","size":8388608,"relative":true}
 * ← {"v":1,"ok":true,"result":{"vg":"vg0","lv":"data","from":8388608,"to":16777216,"seqno":9}}
 * → {"v":1,"op":"lvCreate","vg":"vg0","lv":"logs","size":4194304,"stripes":1,"stripeSize":65536}
 * ← {"v":1,"ok":false,"error":{"code":"E_NOSPC","message":"VG vg0: ..."}}
 * ```
 *
 * Member paths are absolute (the client resolves them against its own folder).
 * Errors carry a {@link VdiskErrorCode} the client raises again: a line that is not a
 * JSON object, an unknown op or a bad field is E_USAGE; another protocol version is
 * E_UNSUPPORTED; a VG other than the holder's is E_NOENT; a line longer than
 * {@link MAX_CONTROL_LINE} bytes is E_USAGE and the holder then hangs up. A bad
 * request never disturbs the holder's other work. A socket whose holder died
 * (connect gives ECONNREFUSED) is stale: the client falls back to opening the pool
 * itself, and once it holds the members' locks it removes the socket; a holder that
 * does not answer within the timeout gives E_IO, never a hang.
 */
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { VdiskError, type VdiskErrorCode } from '../errors.js';
import { Pool } from './pool.js';

/** The protocol version this code speaks. */
export const CONTROL_VERSION = 1;
/** Longest request or reply line, in bytes (the newline excluded). */
export const MAX_CONTROL_LINE = 64 * 1024;
/** How long a client waits for the holder to answer, by default. */
export const CONTROL_TIMEOUT_MS = 30_000;
/** How long the holder keeps a connection that sends nothing. */
const IDLE_MS = 30_000;
/** `sun_path` is 108 bytes on Linux, the terminating NUL included. */
const SUN_PATH_MAX = 107;

const CODES: readonly VdiskErrorCode[] = [
  'E_FORMAT', 'E_CORRUPT', 'E_BOUNDS', 'E_UNSUPPORTED', 'E_PATH', 'E_IO', 'E_LOCKED',
  'E_EXISTS', 'E_USAGE', 'E_NOENT', 'E_READONLY', 'E_CHAIN', 'E_CLOSED', 'E_NOSPC',
];

/** One change (or question) a client asks of the holder. */
export type ControlOp =
  | { op: 'status' }
  | { op: 'add'; member: string; force?: boolean; new?: Array<{ format: string; size: number }> }
  | { op: 'lvExtend'; lv: string; size: number; relative?: boolean }
  | { op: 'lvCreate'; lv: string; size: number; stripes?: number; stripeSize?: number };

/** A request as sent on the wire. */
export type ControlRequest = ControlOp & { v: number; vg: string };

/** What a request returns (JSON). */
export type ControlResult = Record<string, unknown>;

/** Real path of the pool folder (the folder itself when it cannot be resolved). */
function realDir(dir: string): string {
  try {
    return realpathSync(resolve(dir));
  } catch {
    return resolve(dir);
  }
}

/** The control socket's path for VG `vg` in folder `dir` (see the module comment). */
export function controlSocketPath(dir: string, vg: string): string {
  const real = realDir(dir);
  const inFolder = join(real, `.vdisk-${vg}.ctl`);
  if (Buffer.byteLength(inFolder) <= SUN_PATH_MAX) return inFolder;
  const hash = createHash('sha256').update(real).digest('hex').slice(0, 16);
  const base = process.env.XDG_RUNTIME_DIR || tmpdir();
  const uid = process.getuid?.() ?? 0;
  const p = join(base, `vdisk-${uid}-${hash}-${vg}.ctl`);
  if (Buffer.byteLength(p) > SUN_PATH_MAX) throw new VdiskError('E_USAGE', `VG ${vg}: no control socket path fits in ${SUN_PATH_MAX} bytes (set XDG_RUNTIME_DIR to a short folder)`);
  return p;
}

// ---- checking requests ----

function bad(message: string): VdiskError {
  return new VdiskError('E_USAGE', `control request: ${message}`);
}

function str(o: Record<string, unknown>, key: string, max = 4096): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(`"${key}" must be a non-empty string of at most ${max} characters`);
  return v;
}

function size(o: Record<string, unknown>, key: string, optional = false): number | undefined {
  const v = o[key];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad(`"${key}" must be a positive whole number of bytes`);
  return v;
}

function bool(o: Record<string, unknown>, key: string): boolean | undefined {
  const v = o[key];
  if (v !== undefined && typeof v !== 'boolean') throw bad(`"${key}" must be true or false`);
  return v;
}

/** Parse and check one request line against the holder's VG. */
export function parseControlRequest(line: string, vg: string): ControlOp {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw bad('not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bad('not a JSON object');
  const o = parsed as Record<string, unknown>;
  if (o.v !== CONTROL_VERSION) throw new VdiskError('E_UNSUPPORTED', `control request: protocol version ${JSON.stringify(o.v ?? null)}; this holder speaks version ${CONTROL_VERSION}`);
  const reqVg = str(o, 'vg', 128);
  if (reqVg !== vg) throw new VdiskError('E_NOENT', `control request: this socket serves VG ${vg}, not ${reqVg}`);
  switch (o.op) {
    case 'status':
      return { op: 'status' };
    case 'add': {
      const list = o.new;
      if (list !== undefined && (!Array.isArray(list) || list.length > 16)) throw bad('"new" must be a list of at most 16 {format, size}');
      const images = (list ?? []).map((x: unknown) => {
        if (typeof x !== 'object' || x === null) throw bad('"new" entries are {format, size}');
        const e = x as Record<string, unknown>;
        return { format: str(e, 'format', 16), size: size(e, 'size')! };
      });
      return { op: 'add', member: str(o, 'member'), force: bool(o, 'force'), new: images };
    }
    case 'lvExtend':
      return { op: 'lvExtend', lv: str(o, 'lv', 128), size: size(o, 'size')!, relative: bool(o, 'relative') };
    case 'lvCreate': {
      const stripes = o.stripes;
      if (stripes !== undefined && (typeof stripes !== 'number' || !Number.isSafeInteger(stripes))) throw bad('"stripes" must be a whole number');
      return { op: 'lvCreate', lv: str(o, 'lv', 128), size: size(o, 'size')!, stripes, stripeSize: size(o, 'stripeSize', true) };
    }
    default:
      throw bad(`unknown op ${JSON.stringify(o.op ?? null).slice(0, 64)} (status, add, lvExtend, lvCreate)`);
  }
}

/** Carry out `op` on `pool`: the same code for the holder and for a process that opened the pool itself. */
export async function runControlOp(pool: Pool, op: ControlOp): Promise<ControlResult> {
  switch (op.op) {
    case 'status':
      return {
        vg: pool.name,
        pid: process.pid,
        seqno: pool.vg.seqno,
        members: pool.members.map((m) => m.path),
        lvs: Object.fromEntries(pool.vg.lvs.map((l) => [l.name, pool.lvSize(l.name)])),
      };
    case 'add':
      await pool.add(op.member, { newImages: op.new, force: op.force });
      return { vg: pool.name, member: op.member, seqno: pool.vg.seqno };
    case 'lvExtend': {
      const from = pool.lvSize(op.lv);
      await pool.lvExtend(op.lv, op.relative ? from + op.size : op.size);
      return { vg: pool.name, lv: op.lv, from, to: pool.lvSize(op.lv), seqno: pool.vg.seqno };
    }
    case 'lvCreate':
      await pool.lvCreate(op.lv, op.size, { stripes: op.stripes, stripeSize: op.stripeSize });
      return { vg: pool.name, lv: op.lv, size: pool.lvSize(op.lv), seqno: pool.vg.seqno };
  }
}

function errorReply(err: unknown): string {
  const e = err instanceof VdiskError ? err : new VdiskError('E_IO', err instanceof Error ? err.message : String(err));
  return `${JSON.stringify({ v: CONTROL_VERSION, ok: false, error: { code: e.code, message: e.message } })}\n`;
}

/** A connect that fails with `code` says no live holder is there. */
function noHolder(code: string | undefined): boolean {
  return code === 'ECONNREFUSED' || code === 'ENOENT';
}

/** Try to reach a holder at `path`: true when something answers a connect. */
function answers(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(path);
    const t = setTimeout(() => {
      s.destroy();
      res(true);
    }, 2000);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      res(true);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      res(!noHolder(e.code));
    });
  });
}

/** The holder's side: answers requests on the pool's control socket. */
export class ControlServer {
  private readonly sockets = new Set<Socket>();
  /** Changes run one after another, so `+SIZE` is read and applied as one step. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly pool: Pool,
    readonly path: string,
    private readonly server: Server,
  ) {}

  /**
   * Listen on `pool`'s control socket (mode 0600). A socket left by a dead holder is
   * removed first (this process holds the members' locks, so no one else can); a
   * socket that answers is E_LOCKED.
   */
  static async listen(pool: Pool, opts: { path?: string } = {}): Promise<ControlServer> {
    const path = opts.path ?? controlSocketPath(pool.dir, pool.name);
    const server = createServer();
    const cs = new ControlServer(pool, path, server);
    server.on('connection', (s) => cs.accept(s));
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((res, rej) => {
          server.once('error', rej);
          // A socket is created with the umask's mode: make it 0600 from its first moment.
          const old = process.umask(0o177);
          try {
            server.listen(path, () => {
              server.off('error', rej);
              res();
            });
          } finally {
            process.umask(old);
          }
        });
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EADDRINUSE' && attempt === 0) {
          if (await answers(path)) throw new VdiskError('E_LOCKED', `VG ${pool.name}: another process answers on the control socket ${path}`);
          const st = await lstat(path).catch(() => undefined);
          if (st?.isSocket()) await unlink(path).catch(() => undefined);
          else throw new VdiskError('E_EXISTS', `VG ${pool.name}: ${path} exists and is not a socket; remove it`);
          continue;
        }
        throw new VdiskError('E_IO', `VG ${pool.name}: cannot listen on the control socket ${path}: ${(err as Error).message}`, { cause: err });
      }
    }
    await chmod(path, 0o600).catch(() => undefined);
    return cs;
  }

  private accept(s: Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
    s.setTimeout(IDLE_MS, () => s.destroy());
    let pending = '';
    let chain: Promise<void> = Promise.resolve();
    let over = false;
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      if (over) return;
      pending += chunk;
      for (;;) {
        const nl = pending.indexOf('\n');
        if (nl < 0) break;
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (Buffer.byteLength(line) > MAX_CONTROL_LINE) {
          this.tooLong(s, chain);
          over = true;
          return;
        }
        chain = chain.then(() => this.answer(s, line));
      }
      if (Buffer.byteLength(pending) > MAX_CONTROL_LINE) {
        over = true;
        this.tooLong(s, chain);
      }
    });
  }

  private tooLong(s: Socket, chain: Promise<void>): void {
    void chain.then(() => {
      if (!s.destroyed) s.end(errorReply(bad(`line longer than ${MAX_CONTROL_LINE} bytes`)));
    });
  }

  private async answer(s: Socket, line: string): Promise<void> {
    let reply: string;
    try {
      const op = parseControlRequest(line.trim(), this.pool.name);
      const run = this.queue.then(() => runControlOp(this.pool, op));
      this.queue = run.catch(() => undefined);
      reply = `${JSON.stringify({ v: CONTROL_VERSION, ok: true, result: { ...(await run), holder: process.pid } })}\n`;
    } catch (err) {
      reply = errorReply(err);
    }
    if (!s.destroyed) s.write(reply);
  }

  /** Stop answering, let changes under way finish, and remove the socket. */
  async close(): Promise<void> {
    const closed = new Promise<void>((res) => this.server.close(() => res()));
    for (const s of this.sockets) s.end();
    await this.queue;
    setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, 1000).unref();
    await closed;
  }
}

/** What {@link askHolder} found at the socket. */
export type HolderAnswer = { kind: 'answer'; result: ControlResult } | { kind: 'none' } | { kind: 'stale'; path: string };

/**
 * Send `op` to the process holding VG `vg` of folder `dir`. `none` when no socket is
 * there, `stale` when a socket is there but nobody listens (its holder died); the
 * holder's error is thrown again as the VdiskError it was. E_IO when the holder does
 * not answer within `timeoutMs`.
 */
export async function askHolder(dir: string, vg: string, op: ControlOp, opts: { timeoutMs?: number; path?: string } = {}): Promise<HolderAnswer> {
  const path = opts.path ?? controlSocketPath(dir, vg);
  const st = await lstat(path).catch(() => undefined);
  if (!st || !st.isSocket()) return { kind: 'none' };
  const uid = process.getuid?.();
  if (uid !== undefined && uid !== 0 && st.uid !== uid) {
    throw new VdiskError('E_LOCKED', `VG ${vg}: the control socket ${path} belongs to user ${st.uid}, not to you`);
  }
  const line = `${JSON.stringify({ v: CONTROL_VERSION, vg, ...op })}\n`;
  const timeoutMs = opts.timeoutMs ?? CONTROL_TIMEOUT_MS;
  return new Promise<HolderAnswer>((res, rej) => {
    const s = createConnection(path);
    let buf = '';
    let done = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      f();
    };
    const timer = setTimeout(() => finish(() => rej(new VdiskError('E_IO', `VG ${vg}: the holder on ${path} did not answer within ${timeoutMs / 1000} s`))), timeoutMs);
    s.setEncoding('utf8');
    s.once('connect', () => s.write(line));
    s.on('error', (e: NodeJS.ErrnoException) =>
      finish(() => (noHolder(e.code) ? res(e.code === 'ENOENT' ? { kind: 'none' } : { kind: 'stale', path }) : rej(new VdiskError('E_IO', `VG ${vg}: control socket ${path}: ${e.message}`, { cause: e })))),
    );
    s.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_CONTROL_LINE * 4) finish(() => rej(new VdiskError('E_IO', `VG ${vg}: the holder on ${path} sent an overlong reply`)));
        return;
      }
      finish(() => {
        try {
          res({ kind: 'answer', result: decodeReply(buf.slice(0, nl), path) });
        } catch (e) {
          rej(e);
        }
      });
    });
    s.on('end', () => finish(() => rej(new VdiskError('E_IO', `VG ${vg}: the holder on ${path} hung up without an answer`))));
  });
}

function decodeReply(line: string, path: string): ControlResult {
  let r: unknown;
  try {
    r = JSON.parse(line);
  } catch {
    throw new VdiskError('E_IO', `control socket ${path}: the reply is not JSON`);
  }
  const o = (typeof r === 'object' && r !== null ? r : {}) as { v?: unknown; ok?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown } };
  if (o.v !== CONTROL_VERSION) throw new VdiskError('E_UNSUPPORTED', `control socket ${path}: reply of protocol version ${JSON.stringify(o.v ?? null)}`);
  if (o.ok === true && typeof o.result === 'object' && o.result !== null) return o.result as ControlResult;
  const code = CODES.find((c) => c === o.error?.code) ?? 'E_IO';
  const message = typeof o.error?.message === 'string' ? o.error.message : `control socket ${path}: malformed reply`;
  throw new VdiskError(code, message);
}

/**
 * Make a change to VG `vg` of folder `dir` wherever it can be made: through the
 * holder's control socket when a process holds the pool, else by opening the pool
 * here (its members' write locks taken). A stale socket is removed once this process
 * holds the locks that prove its holder gone.
 */
export async function changePool(dir: string, vg: string, op: ControlOp, opts: { timeoutMs?: number; onWarning?: (w: string) => void } = {}): Promise<ControlResult & { via: 'holder' | 'local' }> {
  const a = await askHolder(dir, vg, op, opts);
  if (a.kind === 'answer') return { ...a.result, via: 'holder' };
  const pool = await Pool.open(vg, { dir, readOnly: op.op === 'status' });
  try {
    for (const w of pool.warnings) opts.onWarning?.(w);
    if (a.kind === 'stale' && !pool.readOnly) {
      const st = await lstat(a.path).catch(() => undefined);
      if (st?.isSocket()) await unlink(a.path).catch(() => undefined);
    }
    return { ...(await runControlOp(pool, op)), via: 'local' };
  } finally {
    await pool.close();
  }
}

/** A pool held open for long-lived use (serve, boot), with its control socket when writable. */
export interface HeldPool {
  pool: Pool;
  control?: ControlServer;
  /** Close the control socket, then the pool. */
  close(): Promise<void>;
}

/** Open VG `vg` of folder `dir` for long-lived use and, when writable, answer its control socket. */
export async function holdPool(vg: string, dir: string, opts: { readOnly?: boolean } = {}): Promise<HeldPool> {
  const pool = await Pool.open(vg, { dir, readOnly: opts.readOnly });
  let control: ControlServer | undefined;
  try {
    if (!pool.readOnly) control = await ControlServer.listen(pool);
  } catch (e) {
    await pool.close().catch(() => undefined);
    throw e;
  }
  let closed = false;
  return {
    pool,
    control,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await control?.close();
      } finally {
        await pool.close();
      }
    },
  };
}
