import { VdiskError } from '../errors.js';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/**
 * Parse a size as qemu-img takes it: `512`, `64K`, `10M`, `2G`, `1T` (binary units;
 * `KiB`/`KB` spellings and fractions such as `1.5G` accepted). E_USAGE if unparsable.
 */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?\s*$/i.exec(text) ?? /^\s*(\d+)\s*(b)\s*$/i.exec(text);
  if (!m) throw new VdiskError('E_USAGE', `invalid ${what} "${text}" (use bytes or a K, M, G, T suffix, e.g. 64M)`);
  const unit = UNITS[(m[2] ?? '').toLowerCase()] ?? 1;
  const value = Number(m[1]) * unit;
  if (!Number.isFinite(value) || !Number.isSafeInteger(Math.round(value)) || (unit === 1 && !Number.isInteger(value))) {
    throw new VdiskError('E_USAGE', `invalid ${what} "${text}": not a whole number of bytes within range`);
  }
  const bytes = Math.round(value);
  if (bytes !== value) throw new VdiskError('E_USAGE', `invalid ${what} "${text}": not a whole number of bytes`);
  return bytes;
}

/** Format a byte count the way qemu-img prints it: `64 MiB`, `1.5 GiB`, `512 B`. */
export function formatSize(bytes: number): string {
  const names = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < names.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${bytes} B`;
  const s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  // Strip trailing zeros of a fraction only ("1.50" → "1.5"), never of a whole number ("700").
  return `${s.includes('.') ? s.replace(/\.?0+$/, '') : s} ${names[i]}`;
}
