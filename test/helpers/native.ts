import { nativeSeek } from '../../src/storage/native-seek.js';

/** How a raw file's holes are found: `native` (lseek SEEK_DATA/SEEK_HOLE through the addon) or `scan` (reading, the fallback). */
export type HoleMode = 'native' | 'scan';

/** True when the prebuilt addon loads on this machine. */
export const nativeLoads = nativeSeek() !== undefined;

/**
 * Run `fn` with raw files opened the given way: `scan` sets VDISK_NO_NATIVE=1 while
 * it runs (a file decides at open, so a device opened inside keeps its mode).
 */
export async function withHoleMode<T>(mode: HoleMode, fn: () => Promise<T>): Promise<T> {
  const before = process.env.VDISK_NO_NATIVE;
  if (mode === 'scan') process.env.VDISK_NO_NATIVE = '1';
  else delete process.env.VDISK_NO_NATIVE;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.VDISK_NO_NATIVE;
    else process.env.VDISK_NO_NATIVE = before;
  }
}
