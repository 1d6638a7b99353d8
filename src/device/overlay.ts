/**
 * A copy-on-write overlay: a writable BlockDevice over any (possibly read-only)
 * device that keeps every write in memory and never writes the device below.
 * `vdisk boot --snapshot` runs guests on one.
 */
import type { BlockDevice, Extent } from './block-device.js';
import { BlockDeviceBase } from './base.js';
import { blockPieces } from './blocks.js';

/** Granularity of the overlay's copy-on-write chunks. */
export const OVERLAY_CHUNK = 4096;

/** Copy-on-write overlay kept in memory. */
export class OverlayDevice extends BlockDeviceBase {
  readonly size: number;
  readonly readOnly = false;
  readonly filename: string;
  private readonly chunks = new Map<number, Uint8Array>();

  /** Wrap `base`; closing the overlay does not close `base` unless `closeBase`. */
  constructor(
    private readonly base: BlockDevice,
    private readonly closeBase = false,
  ) {
    super();
    this.size = base.size;
    this.filename = `overlay of ${(base as { filename?: string }).filename ?? 'device'}`;
  }

  /** Bytes held by the overlay. */
  get overlayBytes(): number {
    return this.chunks.size * OVERLAY_CHUNK;
  }

  /** The device below the overlay (never written). */
  get lower(): BlockDevice {
    return this.base;
  }

  /** The chunks the overlay holds, by chunk index (for saving a machine state). */
  heldChunks(): ReadonlyMap<number, Uint8Array> {
    return this.chunks;
  }

  /** Replace the overlay's contents with `chunks` (each {@link OVERLAY_CHUNK} bytes, inside the device). */
  loadChunks(chunks: ReadonlyMap<number, Uint8Array>): void {
    for (const [idx, c] of chunks) {
      if (!Number.isInteger(idx) || idx < 0 || idx * OVERLAY_CHUNK >= this.size || c.length !== OVERLAY_CHUNK) {
        throw new RangeError(`overlay chunk ${idx} (${c.length} bytes) does not fit a ${this.size}-byte device`);
      }
    }
    this.chunks.clear();
    for (const [idx, c] of chunks) this.chunks.set(idx, Uint8Array.from(c));
  }

  protected async readAt(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const idx = Math.floor(pos / OVERLAY_CHUNK);
      const within = pos - idx * OVERLAY_CHUNK;
      const chunk = this.chunks.get(idx);
      if (chunk) {
        const n = Math.min(buf.length - done, OVERLAY_CHUNK - within);
        buf.set(chunk.subarray(within, within + n), done);
        done += n;
        continue;
      }
      // Read a run of chunks the overlay does not hold in one request.
      let end = pos + Math.min(buf.length - done, OVERLAY_CHUNK - within);
      while (end < offset + buf.length && !this.chunks.has(Math.floor(end / OVERLAY_CHUNK))) {
        end = Math.min(offset + buf.length, end + OVERLAY_CHUNK);
      }
      await this.base.read(buf.subarray(done, end - offset), pos);
      done = end - offset;
    }
  }

  protected async writeAt(buf: Uint8Array, offset: number): Promise<void> {
    for (const { index: idx, within, done, length: n } of blockPieces(offset, buf.length, OVERLAY_CHUNK)) {
      let chunk = this.chunks.get(idx);
      if (!chunk) {
        const start = idx * OVERLAY_CHUNK;
        chunk = new Uint8Array(OVERLAY_CHUNK);
        const len = Math.min(OVERLAY_CHUNK, this.size - start);
        if (n < len) await this.base.read(chunk.subarray(0, len), start);
        this.chunks.set(idx, chunk);
      }
      chunk.set(buf.subarray(done, done + n), within);
    }
  }

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const idx = Math.floor(pos / OVERLAY_CHUNK);
      const chunkEnd = Math.min(end, (idx + 1) * OVERLAY_CHUNK);
      if (this.chunks.has(idx)) {
        yield { offset: pos, length: chunkEnd - pos, kind: 'data', depth: 0 };
        pos = chunkEnd;
        continue;
      }
      let runEnd = chunkEnd;
      while (runEnd < end && !this.chunks.has(Math.floor(runEnd / OVERLAY_CHUNK))) runEnd = Math.min(end, runEnd + OVERLAY_CHUNK);
      for await (const e of this.base.extents(pos, runEnd - pos)) yield { ...e, depth: e.depth + 1 };
      pos = runEnd;
    }
  }

  protected async flushAll(): Promise<void> {}

  protected async closeAll(): Promise<void> {
    this.chunks.clear();
    if (this.closeBase) await this.base.close();
  }
}
