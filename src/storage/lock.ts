import { lstat, open, readFile, readdir, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { VdiskError, fromSystemError } from '../errors.js';
import { realPathOf } from './realpath.js';

/**
 * Path of the lock file that guards writes to `path`: next to the file's real path,
 * so every symbolic link to one image shares one lock.
 */
export function lockPathFor(path: string): string {
  return `${realPathOf(path)}.lock`;
}

/** True if a process with this pid exists (EPERM: it does, under another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What a lock file records: the holder's pid and the locked file's identity (device:inode). */
interface LockRecord {
  pid: number;
  identity: string | undefined;
}

function parseLock(text: string): LockRecord | undefined {
  const [pidLine, idLine] = text.split('\n');
  const pid = Number.parseInt((pidLine ?? '').trim(), 10);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  const id = idLine?.trim();
  return { pid, identity: id && /^\d+:\d+$/.test(id) ? id : undefined };
}

/**
 * Read the lock at `lockPath`, refusing a lock that is a symbolic link, not a plain file,
 * or another user's (we would not know whether to break it). Undefined if it is gone.
 */
async function readLock(path: string, lockPath: string): Promise<LockRecord | 'unreadable' | undefined> {
  const st = await lstat(lockPath).catch(() => undefined);
  if (!st) return undefined;
  if (st.isSymbolicLink() || !st.isFile()) {
    throw new VdiskError('E_LOCKED', `${path}: the lock ${lockPath} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a plain file'}; remove it if no vdisk is writing the image`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && uid !== 0 && st.uid !== uid) {
    throw new VdiskError('E_LOCKED', `${path}: the lock ${lockPath} belongs to user ${st.uid}; that user must release it`);
  }
  const text = await readFile(lockPath, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  return parseLock(text) ?? 'unreadable';
}

/**
 * Another live lock in the same folder for the same file under another name (a hard
 * link): its record carries the same device:inode. Returns the holder's pid.
 */
async function hardLinkHolder(ownLock: string, identity: string): Promise<{ pid: number; lock: string } | undefined> {
  const dir = dirname(ownLock);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.endsWith('.lock') || join(dir, n) === ownLock) continue;
    const p = join(dir, n);
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isFile() || st.size > 256) continue;
    const rec = parseLock(await readFile(p, 'utf8').catch(() => ''));
    if (rec?.identity === identity && pidAlive(rec.pid)) return { pid: rec.pid, lock: p };
  }
  return undefined;
}

/**
 * Take the exclusive write lock on `path`: a lock file next to its real path, created
 * with O_EXCL, holding our pid and the file's device:inode. A lock left by a dead
 * process is broken; a live holder gives E_LOCKED, and so does a live lock on another
 * hard link to the same file in the same folder. Returns a function that releases the lock.
 */
export async function acquireWriteLock(path: string): Promise<() => Promise<void>> {
  const lockPath = lockPathFor(path);
  const st = await stat(path).catch(() => undefined);
  const identity = st?.isFile() ? `${st.dev}:${st.ino}` : undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(lockPath, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n${identity ?? ''}\n`);
      } finally {
        await fh.close();
      }
      let released = false;
      const release = async (): Promise<void> => {
        if (released) return;
        released = true;
        await unlink(lockPath).catch(() => undefined);
      };
      if (identity && st && st.nlink > 1) {
        const other = await hardLinkHolder(lockPath, identity);
        if (other) {
          await release();
          throw new VdiskError('E_LOCKED', `${path}: the same file (a hard link) is open for writing by process ${other.pid} (lock file ${other.lock})`);
        }
      }
      return release;
    } catch (err) {
      if (err instanceof VdiskError) throw err;
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        const e = fromSystemError(err, lockPath);
        throw new VdiskError(e.code, `${path}: cannot create the lock file ${lockPath}: ${e.message.slice(lockPath.length + 2)}`, { cause: err });
      }
    }
    const rec = await readLock(path, lockPath);
    if (rec !== undefined && rec !== 'unreadable' && pidAlive(rec.pid)) {
      throw new VdiskError('E_LOCKED', `${path}: open for writing by process ${rec.pid} (lock file ${lockPath})`);
    }
    // Stale or half-written lock of a process that is gone: break it and retry.
    await unlink(lockPath).catch(() => undefined);
  }
  throw new VdiskError('E_LOCKED', `${path}: could not take the lock ${lockPath}`);
}

/** One leftover of a dead vdisk process that {@link removeLeftovers} took away. */
export interface Leftover {
  /** The file or folder removed. */
  path: string;
  /** The pid it recorded, which no longer runs (0 when the leftover records none: a pool's build LV). */
  pid: number;
}

/** Prefix of the hidden folder convert builds `name` in; the pid that builds it follows. */
export function buildFolderPrefix(name: string): string {
  return `.${basename(name)}.vdisk-convert-`;
}

/**
 * Find and remove what a killed vdisk process left beside `path`: its hidden convert
 * build folders and a stale lock (with the `.vdisk-tmp` file a maintenance run
 * under that lock was writing). Only leftovers whose recorded pid is dead are touched.
 */
export async function removeLeftovers(path: string): Promise<Leftover[]> {
  const removed: Leftover[] = [];
  const real = realPathOf(path);
  const dir = dirname(real);
  const prefix = buildFolderPrefix(real);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const pid = Number.parseInt(n.slice(prefix.length).split('-')[0] ?? '', 10);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
    const p = join(dir, n);
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    await rm(p, { recursive: true, force: true });
    removed.push({ path: p, pid });
  }
  const lockPath = `${real}.lock`;
  const lst = await lstat(lockPath).catch(() => undefined);
  if (lst?.isFile() && lst.size <= 256) {
    const rec = parseLock(await readFile(lockPath, 'utf8').catch(() => ''));
    if (rec && !pidAlive(rec.pid)) {
      const tmp = `${real}.vdisk-tmp`;
      if ((await lstat(tmp).catch(() => undefined))?.isFile()) {
        await unlink(tmp).catch(() => undefined);
        removed.push({ path: tmp, pid: rec.pid });
      }
      await unlink(lockPath).catch(() => undefined);
      removed.push({ path: lockPath, pid: rec.pid });
    }
  }
  return removed;
}
