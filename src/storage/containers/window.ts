/**
 * A read-only Storage window over a byte range of another Storage: how a disk inside
 * a tar entry (or a stored zip entry) is opened in place, without extracting it.
 */
import { VdiskError } from '../../errors.js';
import { checkInside } from '../checks.js';
import type { Storage } from '../storage.js';

/** `length` bytes of `outer` starting at `offset`, read-only. */
export class WindowStorage implements Storage {
  readonly readOnly = true;
  private closed = false;

  /**
   * @param onClose called once by close() (e.g. to close the archive the window belongs to)
   */
  constructor(
    readonly name: string,
    private readonly outer: Storage,
    private readonly offset: number,
    private readonly length: number,
    private readonly onClose: () => Promise<void> = async () => {},
  ) {
    checkInside(name, offset, length, outer.size);
  }

  get size(): number {
    return this.length;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.live();
    checkInside(this.name, offset, buf.length, this.length);
    if (buf.length > 0) await this.outer.read(buf, this.offset + offset);
  }

  async write(_buf: Uint8Array, _offset: number): Promise<void> {
    this.live();
    throw new VdiskError('E_READONLY', `${this.name}: a member of an archive is read-only (extract it first)`);
  }

  async truncate(_size: number): Promise<void> {
    this.live();
    throw new VdiskError('E_READONLY', `${this.name}: a member of an archive is read-only (extract it first)`);
  }

  async flush(): Promise<void> {
    this.live();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.onClose();
  }

  async allocatedSize(): Promise<number> {
    return this.length;
  }

  private live(): void {
    if (this.closed) throw new VdiskError('E_CLOSED', `${this.name}: storage is closed`);
  }
}
