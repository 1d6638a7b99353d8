/**
 * A new file put in place all at once: built in a hidden folder beside its
 * destination and renamed into place at the end (the main file last, so it appears
 * only when its extra files are there), so a failed or interrupted build leaves no
 * half file behind. Convert and OVA export write through it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { VdiskError, fromSystemError } from '../errors.js';
import { acquireWriteLock, buildFolderPrefix, removeLeftovers, type Leftover } from './lock.js';
import { FileLocation, syncFolder } from './location.js';

/** Options for {@link stageNewFile}. */
export interface StageOptions {
  /** Replace a destination (and extra files) already there. */
  force?: boolean;
  /** Folders references inside the new image may lead into (its parent's). */
  allowPaths?: readonly string[];
  /** Skip the folder syncs that make the renames durable (qemu-img's cache=unsafe). */
  unsafe?: boolean;
  /** Existing files the destination must not be (the source of a convert, and its parents). */
  notOneOf?: readonly string[];
}

/** A destination being built (see {@link stageNewFile}). */
export interface Staging {
  /** Where the new file is built: create it (and any extra files) through this location. */
  readonly location: FileLocation;
  /** What a killed earlier run left beside the destination and was removed first. */
  readonly leftovers: Leftover[];
  /** Rename everything built into place, the main file last; returns the destination's files (main first). */
  commit(): Promise<string[]>;
  /** Remove the build folder and release the destination's lock; call once, after commit or instead of it. */
  close(): Promise<void>;
  /** `err` with the build folder's names replaced by the destination's, for messages. */
  rename(err: unknown): unknown;
}

async function sameFile(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a).catch(() => undefined), stat(b).catch(() => undefined)]);
  return sa !== undefined && sb !== undefined && sa.dev === sb.dev && sa.ino === sb.ino;
}

/**
 * Start building a new file at `dst`: refuses a folder, an existing file (unless
 * `force`) and one of `notOneOf`; removes a dead run's leftovers, takes the write lock
 * on `dst` and makes the hidden build folder (named with our pid, so a later run can
 * tell a dead build from a live one).
 */
export async function stageNewFile(dst: string, opts: StageOptions = {}): Promise<Staging> {
  for (const f of opts.notOneOf ?? []) {
    if (await sameFile(f, dst)) throw new VdiskError('E_USAGE', `${dst}: is the source image ${f} itself; convert into a new file`);
  }
  const dstStat = await stat(dst).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw fromSystemError(err, dst);
  });
  if (dstStat?.isDirectory()) throw new VdiskError('E_USAGE', `${dst}: is a folder; give the destination file name`);
  if (dstStat && !opts.force) throw new VdiskError('E_EXISTS', `${dst}: already exists (use --force to replace it)`);
  const dir = dirname(resolve(dst));
  const base = basename(dst);
  if (!(await stat(dir).catch(() => undefined))?.isDirectory()) throw new VdiskError('E_NOENT', `${dirname(dst)}: no such folder for ${dst}`);
  const leftovers = await removeLeftovers(dst);
  const unlock = await acquireWriteLock(dst);
  const tmp = join(dir, `${buildFolderPrefix(base)}${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(tmp).catch((err: unknown) => {
      throw fromSystemError(err, tmp);
    });
  } catch (err) {
    await unlock();
    throw err;
  }
  let closed = false;
  return {
    location: new FileLocation(join(tmp, base), opts.allowPaths ?? []),
    leftovers,
    async commit() {
      const names = (await readdir(tmp)).filter((n) => !n.endsWith('.lock'));
      const ordered = [...names.filter((n) => n !== base), base];
      if (!opts.force) {
        for (const n of ordered) {
          if (n !== base && (await stat(join(dir, n)).catch(() => undefined))) {
            throw new VdiskError('E_EXISTS', `${join(dir, n)}: already exists (an extra file of the new image; use --force to replace it)`);
          }
        }
      }
      // One folder sync after all renames (none with unsafe).
      const location = new FileLocation(join(dir, base), [], { syncRenames: false });
      for (const n of ordered) await location.rename(join(tmp, n), join(dir, n));
      if (!opts.unsafe) await syncFolder(dir);
      return [base, ...ordered.filter((n) => n !== base)].map((f) => (f === base ? dst : join(dirname(dst), f)));
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      } finally {
        await unlock();
      }
    },
    rename(err: unknown): unknown {
      if (err instanceof VdiskError && err.message.includes(tmp)) {
        return new VdiskError(err.code, err.message.split(join(tmp, base)).join(dst).split(tmp).join(dirname(dst)), { cause: err });
      }
      return err;
    },
  };
}
