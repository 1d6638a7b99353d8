import type { DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { driverOf, open } from '../formats/registry.js';
import { FileLocation } from '../storage/location.js';
import { IO_CHUNK } from '../storage/storage.js';

/** Options for {@link rebase}. */
export interface RebaseOptions {
  /** Change only the link (qemu-img rebase -u): the caller vouches that content matches. */
  unsafe?: boolean;
  /** Format of the new parent (detected when absent). */
  backingFormat?: string;
  /** Folders references inside the image may lead into. */
  allowPaths?: readonly string[];
  /** Called with bytes compared so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Re-point a differencing image at `newParent` (or at nothing, with `undefined`),
 * keeping its guest content: wherever the child shows its old parent and the new
 * parent differs, the old content is first copied into the child. Only then does the
 * link change, so a crash leaves the old chain intact. `image` and `newParent` are
 * addresses (opened and closed again) or open images (left open; the child writable).
 *
 * @example
 * ```ts
 * import { create, info, rebase } from 'vdisk';
 *
 * await (await create('base.vdi', { format: 'vdi', size: '4M' })).close();
 * await (await create('child.vdi', { format: 'vdi', backing: 'base.vdi' })).close();
 * await rebase('child.vdi', undefined); // the child now stands alone
 * const [report] = await info('child.vdi');
 * console.log(report['backing-filename']); // undefined
 * ```
 */
export async function rebase(image: string | DiskImage, newParent: string | DiskImage | undefined, opts: RebaseOptions = {}): Promise<{ copied: number }> {
  // -u reads nothing through the old parent, so it is not opened: a link that no longer opens (a VMDK parent whose CID changed) can be repaired.
  const child = typeof image === 'string' ? await open(image, { allowPaths: opts.allowPaths, noBacking: opts.unsafe === true }) : image;
  const path = typeof image === 'string' ? image : image.filename;
  let parent: DiskImage | undefined = typeof newParent === 'string' ? undefined : newParent;
  try {
    const driver = driverOf(child);
    if (!driver?.relink) throw new VdiskError('E_UNSUPPORTED', `${path}: ${child.format} images cannot change their backing file`);
    if (typeof newParent === 'string') parent = await open(newParent, { format: opts.backingFormat, readOnly: true, allowPaths: opts.allowPaths });
    if (parent && parent.size !== child.size && !opts.unsafe) {
      throw new VdiskError('E_USAGE', `${path}: the new parent ${typeof newParent === 'string' ? newParent : parent.filename} is ${parent.size} bytes but the image is ${child.size}; use -u to change only the link`);
    }
    let copied = 0;
    if (!opts.unsafe) {
      const a = Buffer.alloc(IO_CHUNK);
      const b = Buffer.alloc(IO_CHUNK);
      let done = 0;
      for await (const e of child.extents()) {
        if (e.depth === 0 && e.kind !== 'hole') {
          done += e.length;
          continue;
        }
        for (let off = e.offset; off < e.offset + e.length; off += IO_CHUNK) {
          const n = Math.min(IO_CHUNK, e.offset + e.length - off);
          const oldView = a.subarray(0, n);
          const newView = b.subarray(0, n);
          await child.read(oldView, off);
          if (parent && off < parent.size) await parent.read(newView.subarray(0, Math.min(n, parent.size - off)), off);
          if (parent && off + n > parent.size) newView.fill(0, Math.max(0, parent.size - off));
          if (!parent) newView.fill(0);
          // Copy only the sectors that differ, so the child stays as sparse as it can.
          for (let s = 0; s < n; ) {
            if (Buffer.compare(oldView.subarray(s, s + 512), newView.subarray(s, s + 512)) === 0) {
              s += 512;
              continue;
            }
            let t = s + 512;
            while (t < n && Buffer.compare(oldView.subarray(t, t + 512), newView.subarray(t, t + 512)) !== 0) t += 512;
            await child.write(oldView.subarray(s, t), off + s);
            copied += t - s;
            s = t;
          }
          done += n;
          opts.onProgress?.(done, child.size);
        }
      }
      await child.flush();
    }
    const ref = parent === undefined ? undefined : new FileLocation(path).relativeName(typeof newParent === 'string' ? newParent : parent.filename);
    await driver.relink(child, parent, ref);
    return { copied };
  } finally {
    if (child !== image) await child.close();
    if (parent !== newParent) await parent?.close();
  }
}
