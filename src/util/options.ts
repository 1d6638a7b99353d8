import { VdiskError } from '../errors.js';

/**
 * Parse `-o key=value,key=value` (repeatable) into a record. A bare key means
 * `on`. Commas inside a value are written `,,` as qemu-img does.
 */
export function parseKeyValues(items: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const parts = item.replace(/,,/g, '\u0000').split(',');
    for (const raw of parts) {
      const part = raw.replace(/\u0000/g, ',').trim();
      if (part === '') continue;
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim();
      const value = eq < 0 ? 'on' : part.slice(eq + 1).trim();
      if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new VdiskError('E_USAGE', `invalid option "${part}" (expected key=value)`);
      out[key] = value;
    }
  }
  return out;
}

/** Throw E_USAGE naming the valid keys if `opts` holds one not in `valid`. */
export function checkOptionKeys(opts: Record<string, string>, valid: Readonly<Record<string, string>>, what: string): void {
  for (const key of Object.keys(opts)) {
    if (!Object.hasOwn(valid, key)) {
      const list = Object.keys(valid);
      throw new VdiskError('E_USAGE', `${what} has no option "${key}" (valid: ${list.length ? list.join(', ') : 'none'})`);
    }
  }
}

/** Read an on/off option (`on|off|true|false|yes|no|1|0`), E_USAGE otherwise. */
export function boolOption(opts: Record<string, string>, key: string, fallback: boolean): boolean {
  const v = opts[key];
  if (v === undefined) return fallback;
  const l = v.toLowerCase();
  if (['on', 'true', 'yes', '1'].includes(l)) return true;
  if (['off', 'false', 'no', '0'].includes(l)) return false;
  throw new VdiskError('E_USAGE', `option ${key}=${v}: expected on or off`);
}
