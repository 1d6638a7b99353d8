import { IO_CHUNK } from '../storage/storage.js';
import type { BlockDevice } from './block-device.js';
import { forEachZeroRun } from './zero.js';

/** Options for {@link copyDevice}. */
export interface CopyOptions {
  /** Bytes per read (default 1 MiB). */
  chunkSize?: number;
  /**
   * Zero runs at least this long (and aligned to it) are not written to the
   * destination; 0 writes everything. Default 4096.
   */
  sparseSize?: number;
  /** True when the destination already reads as zeros (a new image), so skipped runs need no writeZeroes. */
  destinationZeroed?: boolean;
  /** Called with bytes of the source done so far. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Copy all of `src` into `dst` (same size) in large chunks: holes reported by
 * `extents()` are skipped without reading, and zero runs of at least `sparseSize`
 * found in data are left unallocated.
 */
export async function copyDevice(src: BlockDevice, dst: BlockDevice, opts: CopyOptions = {}): Promise<void> {
  const chunkSize = opts.chunkSize ?? IO_CHUNK;
  const sparse = opts.sparseSize ?? 4096;
  const zeroed = opts.destinationZeroed ?? true;
  const buf = Buffer.alloc(chunkSize);
  let done = 0;
  for await (const ext of src.extents(0, src.size)) {
    if (ext.kind !== 'data' && sparse > 0) {
      if (!zeroed) await dst.writeZeroes(ext.offset, ext.length);
      done += ext.length;
      opts.onProgress?.(done, src.size);
      continue;
    }
    for (let off = ext.offset; off < ext.offset + ext.length; ) {
      const n = Math.min(chunkSize, ext.offset + ext.length - off);
      const piece = buf.subarray(0, n);
      await src.read(piece, off);
      if (sparse > 0) {
        const pieceOff = off;
        const runs: Array<[number, number, boolean]> = [];
        forEachZeroRun(piece, sparse, (s, e, z) => runs.push([s, e, z]));
        for (const [s, e, z] of runs) {
          if (z) {
            if (!zeroed) await dst.writeZeroes(pieceOff + s, e - s);
          } else {
            await dst.write(piece.subarray(s, e), pieceOff + s);
          }
        }
      } else {
        await dst.write(piece, off);
      }
      off += n;
      done += n;
      opts.onProgress?.(done, src.size);
    }
  }
}
