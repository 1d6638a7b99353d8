import { VdiskError } from '../errors.js';

/** Largest byte offset vdisk handles: 8 PiB, well inside Number's exact range. */
export const MAX_OFFSET = 2 ** 53;

/** Throw E_BOUNDS unless `offset`/`length` are non-negative safe integers. */
export function checkIoArgs(name: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > MAX_OFFSET) {
    throw new VdiskError('E_BOUNDS', `${name}: bad I/O range offset=${offset} length=${length}`);
  }
}

/** Throw E_BOUNDS when [offset, offset+length) is not inside [0, size). */
export function checkInside(name: string, offset: number, length: number, size: number): void {
  checkIoArgs(name, offset, length);
  if (offset + length > size) {
    throw new VdiskError('E_BOUNDS', `${name}: range ${offset}+${length} is past the end (${size} bytes)`);
  }
}
