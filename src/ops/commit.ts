import { IO_CHUNK } from '../device/base.js';
import { VdiskError } from '../errors.js';
import { open } from '../formats/registry.js';

/** Options for {@link commit}. */
export interface CommitOptions {
  /** Keep the child's blocks after the merge (qemu-img commit -d); by default they are released. */
  keepChild?: boolean;
  /** Folders references inside the image may lead into. */
  allowPaths?: readonly string[];
  /** Called with bytes merged so far and the total to merge. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Merge a differencing image into its parent: every range the child holds itself
 * is written into the parent, the parent is flushed, and only then are the child's
 * blocks released, so a crash at any point leaves the child's guest content whole.
 */
export async function commit(path: string, opts: CommitOptions = {}): Promise<{ bytes: number }> {
  const child = await open(path, { allowPaths: opts.allowPaths });
  try {
    const parentRo = child.backing;
    if (!parentRo) throw new VdiskError('E_CHAIN', `${path}: has no backing file to commit into`);
    const own = [];
    let total = 0;
    for await (const e of child.extents()) {
      if (e.depth === 0 && e.kind !== 'hole') {
        own.push(e);
        total += e.length;
      }
    }
    const parent = await open(parentRo.filename, { allowPaths: opts.allowPaths, noBacking: false }).catch((err: unknown) => {
      throw new VdiskError('E_READONLY', `${path}: cannot open the parent ${parentRo.filename} for writing: ${(err as Error).message}`, { cause: err });
    });
    let done = 0;
    try {
      if (parent.size < child.size) {
        throw new VdiskError('E_UNSUPPORTED', `${path}: the parent ${parent.filename} (${parent.size} bytes) is smaller than the child (${child.size} bytes); resize it first`);
      }
      const buf = Buffer.alloc(IO_CHUNK);
      for (const e of own) {
        if (e.kind === 'zero') {
          await parent.writeZeroes(e.offset, e.length);
        } else {
          for (let off = e.offset; off < e.offset + e.length; off += IO_CHUNK) {
            const piece = buf.subarray(0, Math.min(IO_CHUNK, e.offset + e.length - off));
            await child.read(piece, off);
            await parent.write(piece, off);
            opts.onProgress?.(done + (off - e.offset) + piece.length, total);
          }
        }
        done += e.length;
        opts.onProgress?.(done, total);
      }
      await parent.flush();
      // Writing gives some parents a new identity (a VMDK's CID): re-link the child to the parent as it is now.
      const ref = (await child.info()).backingFilename;
      if (total > 0 && child.setBacking && ref !== undefined) await child.setBacking(parent, ref);
    } finally {
      await parent.close();
    }
    if (!opts.keepChild) {
      // The parent now holds everything; releasing the child's blocks lets reads fall through.
      for (const e of own) await child.discard(e.offset, e.length);
      await child.flush();
    }
    return { bytes: total };
  } finally {
    await child.close();
  }
}
