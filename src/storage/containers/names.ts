/** Names of members inside a package (tar/zip entries, OVF hrefs), confined to the package. */
import { VdiskError } from '../../errors.js';

/**
 * The member name `raw` normalised (`./` and duplicate slashes removed), or E_PATH
 * when it could lead outside the package: empty, absolute, a drive letter, a `..`
 * component, a backslash or a NUL.
 */
export function safeMemberName(where: string, raw: string, what = 'entry'): string {
  const bad = (why: string): VdiskError => new VdiskError('E_PATH', `${where}: ${what} "${raw}" ${why}`, { file: where, field: what, value: raw });
  if (raw.length === 0) throw bad('has an empty name');
  if (raw.includes('\0')) throw bad('contains a NUL byte');
  if (raw.includes('\\')) throw bad('contains a backslash');
  if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw bad('is an absolute path');
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw bad('has a ".." component (leads outside the package)');
  if (parts.length === 0) throw bad('names no file');
  return parts.join('/');
}

/** The folder part of a member name (`''` at the top). */
export function memberDir(name: string): string {
  const i = name.lastIndexOf('/');
  return i < 0 ? '' : name.slice(0, i);
}
