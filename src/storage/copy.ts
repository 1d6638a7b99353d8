import { IO_CHUNK, type Storage } from './storage.js';

/**
 * Copy `length` bytes from `src` at `from` to `dst` at `to` (the same Storage is
 * fine when the ranges do not overlap), in chunks of at most 1 MiB; `onBytes` hears
 * of each chunk written.
 */
export async function copyBytes(src: Storage, from: number, dst: Storage, to: number, length: number, onBytes?: (n: number) => void): Promise<void> {
  const buf = Buffer.alloc(Math.min(IO_CHUNK, Math.max(length, 1)));
  for (let done = 0; done < length; ) {
    const piece = buf.subarray(0, Math.min(buf.length, length - done));
    await src.read(piece, from + done);
    await dst.write(piece, to + done);
    done += piece.length;
    onBytes?.(piece.length);
  }
}
