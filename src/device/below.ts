import type { BlockDevice } from './block-device.js';

/**
 * Fill `buf` with what lies under an image at `offset`: its parent's bytes where the
 * parent reaches, zeros past the parent's end, zeros everywhere when there is no
 * parent. Every differencing format reads unallocated blocks through this.
 */
export async function readBelow(parent: BlockDevice | undefined, buf: Uint8Array, offset: number): Promise<void> {
  const n = parent ? Math.max(0, Math.min(buf.length, parent.size - offset)) : 0;
  if (parent && n > 0) await parent.read(n === buf.length ? buf : buf.subarray(0, n), offset);
  if (n < buf.length) buf.fill(0, n);
}
