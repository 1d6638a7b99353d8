import type { Duplex } from 'node:stream';
import { VdiskError } from '../../errors.js';

/**
 * Exact-length reads from a socket: `read(n)` resolves with the next n bytes, or
 * rejects with E_IO once the peer has gone and fewer remain. Incoming chunks are
 * queued, not copied, until a read takes them; the socket is paused while more than
 * `highWater` bytes wait unread, so a peer cannot make us buffer without bound.
 */
export class SocketReader {
  private readonly chunks: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private failure: Error | undefined;
  private waiter: (() => void) | undefined;

  private readonly onData = (d: Buffer): void => {
    this.chunks.push(d);
    this.queued += d.length;
    if (this.queued > this.highWater) this.socket.pause();
    this.wake();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };
  private readonly onError = (err: Error): void => {
    this.failure = err;
    this.wake();
  };

  constructor(
    private readonly socket: Duplex,
    private readonly where: string,
    private readonly highWater = 4 * 1024 * 1024,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /**
   * Stop reading the socket (before TLS takes it over). Returns the number of bytes
   * that had arrived unread: after STARTTLS's reply there must be none.
   */
  detach(): number {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return this.queued;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Bytes already received and not yet read. */
  get buffered(): number {
    return this.queued;
  }

  /** The next `n` bytes. */
  async read(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    while (this.queued < n) {
      if (this.failure) throw new VdiskError('E_IO', `${this.where}: connection failed: ${this.failure.message}`, { cause: this.failure });
      if (this.ended) throw new VdiskError('E_IO', `${this.where}: connection closed`);
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((res) => {
        this.waiter = res;
      });
    }
    let out: Buffer;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const c = this.chunks[0]!;
        const take = Math.min(c.length, n - got);
        c.copy(out, got, 0, take);
        got += take;
        if (take === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(take);
      }
    }
    this.queued -= n;
    if (this.queued <= this.highWater && this.socket.isPaused()) this.socket.resume();
    return out;
  }

  /** Read and drop `n` bytes (an option's data we do not use), a slice at a time. */
  async skip(n: number): Promise<void> {
    for (let left = n; left > 0; ) {
      const take = Math.min(left, 64 * 1024);
      await this.read(take);
      left -= take;
    }
  }
}
