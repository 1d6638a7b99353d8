import { VdiskError } from '../errors.js';
import { MemoryStorage } from './memory.js';
import type { Storage } from './storage.js';

/**
 * When to fail. One plan may be shared by several {@link FaultStorage}s (an image and
 * its extents or parent) so that "the Nth write" counts across all of them.
 */
export class FaultPlan {
  /** Writes and truncates seen so far, across all storages of this plan. */
  writes = 0;
  /** True once the planned fault has happened. */
  crashed = false;
  /** Called after any storage of this plan flushes (a crash model notes what is durable then). */
  onFlush?: () => void;
  /** Count flushes as write points too (a crash just before a flush: nothing since the last one is durable). */
  countFlushes = false;

  /**
   * @param crashAt 1-based index of the write (or truncate) that fails; 0 = never.
   * @param tear    'none': the failing write leaves nothing; 'half': its first half
   *                (rounded down to 512 bytes) reaches the medium, as a torn write.
   * @param sticky  After the fault every call fails, as after a power loss. With
   *                false only the one write fails (an I/O error the caller survives).
   */
  constructor(
    readonly crashAt = 0,
    readonly tear: 'none' | 'half' = 'none',
    readonly sticky = true,
  ) {}

  /**
   * Count one write point that is not a storage write (a file created, renamed or
   * removed): throws E_IO when it is the planned one, or when the device is gone.
   */
  step(what: string): void {
    if (this.crashed && this.sticky) throw new VdiskError('E_IO', `${what}: simulated crash (device gone)`);
    if (this.hit()) throw new VdiskError('E_IO', `${what}: simulated fault at #${this.writes}`);
  }

  /** Count one write point; true when it is the planned fault (from then on the plan has crashed). */
  hit(): boolean {
    if (this.crashed && !this.sticky) return false;
    this.writes++;
    if (this.crashAt > 0 && this.writes === this.crashAt) {
      this.crashed = true;
      return true;
    }
    return false;
  }

}

/**
 * A Storage in memory that fails the planned write and then models what survives:
 * {@link afterCrash} returns the bytes that are left either if writes reached the
 * medium in order ('ordered') or if everything since the last flush is lost
 * ('power-loss').
 */
export class FaultStorage implements Storage {
  readonly readOnly = false;
  private readonly live: MemoryStorage;
  private durable: Buffer;

  constructor(
    initial: Uint8Array,
    readonly plan: FaultPlan,
    readonly name = 'fault',
  ) {
    this.live = new MemoryStorage(initial, { name });
    this.durable = Buffer.from(initial);
  }

  get size(): number {
    return this.live.size;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.check();
    await this.live.read(buf, offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.check();
    if (this.hit()) {
      if (this.plan.tear === 'half') {
        const part = Math.floor(buf.length / 2 / 512) * 512;
        if (part > 0) await this.live.write(buf.subarray(0, part), offset);
      }
      throw this.fault('write', offset);
    }
    await this.live.write(buf, offset);
  }

  async truncate(size: number): Promise<void> {
    this.check();
    if (this.hit()) throw this.fault('truncate', size);
    await this.live.truncate(size);
  }

  async flush(): Promise<void> {
    this.check();
    if (this.plan.countFlushes && this.hit()) throw this.fault('flush', 0);
    this.durable = this.live.snapshot();
    this.plan.onFlush?.();
  }

  async close(): Promise<void> {
    /* the contents stay inspectable after close */
  }

  async allocatedSize(): Promise<number> {
    return this.live.size;
  }

  /** Bytes that survive the fault: 'ordered' keeps every write that completed, 'power-loss' only what was flushed. */
  afterCrash(mode: 'ordered' | 'power-loss'): Buffer {
    return mode === 'ordered' ? this.live.snapshot() : Buffer.from(this.durable);
  }

  private hit(): boolean {
    return this.plan.hit();
  }


  private check(): void {
    if (this.plan.crashed && this.plan.sticky) throw new VdiskError('E_IO', `${this.name}: simulated crash (device gone)`);
  }

  private fault(op: string, at: number): VdiskError {
    return new VdiskError('E_IO', `${this.name}: simulated fault at ${op} #${this.plan.writes} (offset ${at})`);
  }
}
