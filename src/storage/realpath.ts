import { realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { VdiskError, fromSystemError } from '../errors.js';

/** True when `p` is `dir` or lies below it (both absolute and already resolved). */
export function isInside(dir: string, p: string): boolean {
  const rel = relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * Where `p` really is: symbolic links resolved in every folder on the way and in the
 * last component. A name that does not exist yet is placed under the real path of its
 * nearest existing folder. Symlink loops are E_PATH.
 */
export function realPathOf(p: string): string {
  const abs = resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...tail);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw new VdiskError('E_PATH', `${p}: symbolic link loop`, { cause: err });
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw fromSystemError(err, p);
      const up = dirname(head);
      if (up === head) return abs;
      tail.unshift(basename(head));
      head = up;
    }
  }
}

/**
 * The one confinement rule: `target` (already resolved) must lie, once every symbolic
 * link on its way is followed, inside one of the `allowed` folders (themselves taken
 * at their real paths). Throws E_PATH naming `image` and the reference otherwise.
 */
export function confine(image: string, ref: string, target: string, allowed: readonly string[], what = 'reference'): string {
  const real = realPathOf(target);
  const roots = allowed.map((d) => realPathOf(d));
  if (!roots.some((d) => isInside(d, real))) {
    const via = real === resolve(target) ? '' : ` (through a symbolic link, to ${real})`;
    throw new VdiskError('E_PATH', `${image}: ${what} "${ref}" leads outside ${allowed.join(', ')}${via} (allow the folder explicitly to follow it)`, { file: image, field: what, value: ref });
  }
  return real;
}
