import type { DiskImage, Extent } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { driverOf, open } from '../formats/registry.js';
import { IO_CHUNK } from '../storage/storage.js';

/** Options for {@link commit}. */
export interface CommitOptions {
  /** Keep the child's blocks after the merge (qemu-img commit -d); by default they are released. */
  keepChild?: boolean;
  /** Called with bytes merged so far and the total to merge. */
  onProgress?: (done: number, total: number) => void;
  /** Folders references inside the image may lead into (when opening by address). */
  allowPaths?: readonly string[];
  /**
   * A writable open of the child's parent to merge into, when the child is given open;
   * by default the parent is opened for writing by its file name and closed again.
   */
  parent?: DiskImage;
}

/**
 * Merge `child` (open for writing, its parent open as `child.backing`) into
 * `parent`, a second, writable open of that same parent.
 * Order, so a crash at any write leaves the child showing its guest content and
 * the parent holding, per sector, its old bytes or the child's:
 *   1. the child notes the identity the parent is about to take (prepareCommit:
 *      a VMDK's next CID) and flushes, so the link holds whichever CID survives;
 *   2. every range the child holds itself is written into the parent, which is flushed;
 *   3. the child is re-linked to the parent as it is now (the driver's relink);
 *   4. unless `keepChild`, the child's blocks are released (all of them: the parent
 *      now reads as the child does everywhere) and the child flushed.
 * Neither image is closed.
 */
async function commitInto(child: DiskImage, parent: DiskImage, opts: CommitOptions): Promise<{ bytes: number }> {
  if (!child.backing) throw new VdiskError('E_CHAIN', `${child.filename}: has no backing file to commit into`);
  if (parent.readOnly) throw new VdiskError('E_READONLY', `${child.filename}: the parent ${parent.filename} is open read-only`);
  if (child.readOnly && !opts.keepChild) throw new VdiskError('E_READONLY', `${child.filename}: releasing the child's blocks needs it open for writing`);
  if (parent.size < child.size) {
    throw new VdiskError('E_UNSUPPORTED', `${child.filename}: the parent ${parent.filename} (${parent.size} bytes) is smaller than the child (${child.size} bytes); resize it first`);
  }
  const driver = driverOf(child);
  if (!driver?.differencing) throw new VdiskError('E_UNSUPPORTED', `${child.filename}: ${child.format} images have no differencing kind to commit`);
  const own: Extent[] = [];
  let total = 0;
  for await (const e of child.extents()) {
    if (e.depth === 0 && e.kind !== 'hole') {
      own.push(e);
      total += e.length;
    }
  }
  if (total === 0) return { bytes: 0 };
  const ref = (await child.info()).backingFilename;
  await driver.prepareCommit?.(child, parent);
  let done = 0;
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
  // Writing gives some parents a new identity (a VMDK's CID, a VDI's uuidModify): re-link the child to the parent as it is now.
  if (driver.relink && ref !== undefined) await driver.relink(child, parent, ref);
  if (!opts.keepChild) {
    // The parent now holds the child's whole view, so every block of the child can go (also
    // blocks the child held only in part, e.g. a VHD block with some sectors of its own): reads fall through.
    await child.discard(0, child.size);
  }
  await child.flush();
  return { bytes: total };
}

/**
 * Merge the differencing image `child` into its parent, then (unless `keepChild`)
 * release the child's blocks; the chain shows the same guest content before and
 * after. `child` is an address (opened for writing and closed again) or an open image
 * (writable unless `keepChild`, left open). Writes are ordered so a crash at any point
 * leaves the child showing its guest content and the parent holding, per sector, its
 * old bytes or the child's.
 *
 * @example
 * ```ts
 * import { commit, create, open } from 'vdisk';
 *
 * await (await create('base.vhd', { format: 'vhd', size: '4M' })).close();
 * const child = await create('child.vhd', { format: 'vhd', backing: 'base.vhd' });
 * await child.write(Buffer.alloc(512, 0x5a), 0);
 * await child.close();
 * const { bytes } = await commit('child.vhd');
 * const base = await open('base.vhd', { readOnly: true });
 * const sector = Buffer.alloc(512);
 * await base.read(sector, 0);
 * await base.close();
 * console.log(bytes > 0, sector[0]); // true 90
 * ```
 */
export async function commit(child: string | DiskImage, opts: CommitOptions = {}): Promise<{ bytes: number }> {
  if (typeof child !== 'string') {
    if (opts.parent) return commitInto(child, opts.parent, opts);
    return withWritableParent(child, child.filename, opts, (parent) => commitInto(child, parent, opts));
  }
  const image = await open(child, { allowPaths: opts.allowPaths });
  try {
    if (opts.parent) return await commitInto(image, opts.parent, opts);
    return await withWritableParent(image, child, opts, (parent) => commitInto(image, parent, opts));
  } finally {
    await image.close();
  }
}

/** Open the parent of `child` for writing, run `fn` on it, close it. */
async function withWritableParent<T>(child: DiskImage, name: string, opts: CommitOptions, fn: (parent: DiskImage) => Promise<T>): Promise<T> {
  const parentRo = child.backing;
  if (!parentRo) throw new VdiskError('E_CHAIN', `${name}: has no backing file to commit into`);
  const parent = await open(parentRo.filename, { allowPaths: opts.allowPaths, noBacking: false }).catch((err: unknown) => {
    throw new VdiskError('E_READONLY', `${name}: cannot open the parent ${parentRo.filename} for writing: ${(err as Error).message}`, { cause: err });
  });
  try {
    return await fn(parent);
  } finally {
    await parent.close();
  }
}
