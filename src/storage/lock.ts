import { open, readFile, unlink } from 'node:fs/promises';
import { VdiskError, fromSystemError } from '../errors.js';

/** Path of the lock file that guards writes to `path`. */
export function lockPathFor(path: string): string {
  return `${path}.lock`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Take the exclusive write lock on `path`: a lock file created with O_EXCL holding our
 * pid. A lock left by a dead process is broken; a live holder gives E_LOCKED.
 * Returns a function that releases the lock.
 */
export async function acquireWriteLock(path: string): Promise<() => Promise<void>> {
  const lockPath = lockPathFor(path);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(lockPath, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await unlink(lockPath).catch(() => undefined);
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(err, lockPath);
    }
    const text = await readFile(lockPath, 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    if (Number.isSafeInteger(pid) && pid > 0 && pidAlive(pid)) {
      throw new VdiskError('E_LOCKED', `${path}: open for writing by process ${pid} (lock file ${lockPath})`);
    }
    // Stale or half-written lock of a process that is gone: break it and retry.
    await unlink(lockPath).catch(() => undefined);
  }
  throw new VdiskError('E_LOCKED', `${path}: could not take the lock ${lockPath}`);
}
