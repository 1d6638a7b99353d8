/** Shared helpers for the vmdk tests. */
import { open as fsOpen } from 'node:fs/promises';
import type { BlockDevice } from '../../../src/device/block-device.js';
import { isZero } from '../../../src/device/zero.js';

/** Write what `dev` reads into a sparse raw file at `path` (zero chunks left as holes). */
export async function dumpRaw(dev: BlockDevice, path: string): Promise<void> {
  const fh = await fsOpen(path, 'w');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    for await (const e of dev.extents()) {
      if (e.kind !== 'data') continue;
      for (let off = e.offset; off < e.offset + e.length; ) {
        const n = Math.min(buf.length, e.offset + e.length - off);
        const piece = buf.subarray(0, n);
        await dev.read(piece, off);
        if (!isZero(piece)) await fh.write(piece, 0, n, off);
        off += n;
      }
    }
    await fh.truncate(dev.size);
  } finally {
    await fh.close();
  }
}

/**
 * Compare `dev` with the raw file `rawPath` over the given ranges (for multi-GiB flat
 * disks, where a full read would take too long); returns the first mismatch offset or -1.
 */
export async function compareRanges(dev: BlockDevice, rawPath: string, ranges: Array<[number, number]>): Promise<number> {
  const fh = await fsOpen(rawPath, 'r');
  try {
    for (const [off, len] of ranges) {
      const s = Math.max(0, off);
      const n = Math.min(len, dev.size - s);
      if (n <= 0) continue;
      const a = Buffer.alloc(n);
      const b = Buffer.alloc(n);
      await dev.read(a, s);
      await fh.read(b, 0, n, s);
      if (!a.equals(b)) return s;
    }
    return -1;
  } finally {
    await fh.close();
  }
}
