/**
 * A logical volume as a BlockDevice. Every request is split along the LV's segments
 * (and, in striped segments, along stripe chunks) into requests on the member images,
 * so holes, zeroing and discards pass through to the members' own formats. The map is
 * read from the pool's committed metadata on every request: an extend committed while
 * the LV is in use simply makes the LV larger.
 */
import { BlockDeviceBase } from '../device/base.js';
import type { DiskImage, Extent, ImageInfo } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { SECTOR } from './layout.js';
import { extentBytes, lvExtents } from './metadata.js';
import type { Pool, PoolMember } from './pool.js';

/** One piece of an LV request: where it lands on which member. */
export interface LvPiece {
  /** Offset in the LV. */
  lvOffset: number;
  length: number;
  member: PoolMember;
  /** Byte offset in the member's guest-visible disk. */
  devOffset: number;
}

/** Pieces of one request that follow each other on one member. */
interface MemberRun {
  devOffset: number;
  length: number;
  pieces: LvPiece[];
}

export class LogicalVolume extends BlockDeviceBase implements DiskImage {
  readonly format = 'lvm';
  readonly filename: string;

  constructor(
    private readonly pool: Pool,
    readonly lvName: string,
    private readonly ownsPool: boolean,
  ) {
    super();
    this.filename = `lvm:${pool.name}/${lvName}`;
  }

  get size(): number {
    return lvExtents(this.pool.lv(this.lvName)) * extentBytes(this.pool.vg);
  }

  get readOnly(): boolean {
    return this.pool.readOnly;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Split `[offset, offset+length)` into member pieces, in LV order. */
  *pieces(offset: number, length: number): Generator<LvPiece> {
    const vg = this.pool.vg;
    const E = extentBytes(vg);
    const lv = this.pool.lv(this.lvName);
    let pos = offset;
    const end = offset + length;
    for (const seg of lv.segments) {
      const segStart = seg.startExtent * E;
      const segEnd = segStart + seg.extentCount * E;
      if (segEnd <= pos) continue;
      if (segStart >= end) break;
      if (seg.type !== 'striped') throw new VdiskError('E_UNSUPPORTED', `${this.filename}: "${seg.type}" segments are not read by vdisk`);
      const k = seg.stripes.length;
      const chunk = k > 1 ? seg.stripeSize! * SECTOR : seg.extentCount * E;
      if (k > 1 && E % chunk !== 0) throw new VdiskError('E_UNSUPPORTED', `${this.filename}: stripe size ${chunk} does not divide the extent size`);
      while (pos < Math.min(end, segEnd)) {
        const rel = pos - segStart;
        const c = Math.floor(rel / chunk);
        const stripe = seg.stripes[c % k]!;
        const row = Math.floor(c / k);
        const within = rel - c * chunk;
        const len = Math.min(chunk - within, Math.min(end, segEnd) - pos);
        const pv = vg.pvs.find((p) => p.key === stripe.pv)!;
        const member = this.pool.member(stripe.pv);
        yield { lvOffset: pos, length: len, member, devOffset: pv.peStart * SECTOR + stripe.pe * E + row * chunk + within };
        pos += len;
      }
    }
  }

  private dev(p: LvPiece): DiskImage {
    if (!p.member.dev) throw new VdiskError('E_IO', `${this.filename}: bytes ${p.lvOffset}+${p.length} lie on the missing PV ${p.member.key} (${p.member.path})`);
    return p.member.dev;
  }

  /**
   * A request's pieces as runs per member: pieces that follow each other on a member
   * (the rows of a striped segment do) join into one run, so a 1 MiB request over
   * three 64 KiB stripes is three member requests, not sixteen. Members are served
   * one after the other: running them at once measured slower here (reads from the
   * page cache are copies, and the thread-pool hops cost more than they overlap).
   */
  private runs(offset: number, length: number): Map<DiskImage, MemberRun[]> {
    const out = new Map<DiskImage, MemberRun[]>();
    for (const p of this.pieces(offset, length)) {
      const dev = this.dev(p);
      const list = out.get(dev) ?? [];
      const last = list.at(-1);
      if (last && last.devOffset + last.length === p.devOffset) {
        last.pieces.push(p);
        last.length += p.length;
      } else list.push({ devOffset: p.devOffset, length: p.length, pieces: [p] });
      out.set(dev, list);
    }
    return out;
  }

  /**
   * Scratch buffers for runs that gather several pieces, kept for reuse: a fresh
   * buffer per request costs more than the copy (new memory is faulted in page by
   * page; 256 MiB read through 3 × 64 KiB stripes took 100-500 ms with a new buffer
   * per run, 35-40 ms with reused ones, against 35-45 ms reading the members
   * directly). Requests in flight at once each take their own.
   */
  private readonly spare: Buffer[] = [];

  private async withScratch<T>(length: number, fn: (b: Buffer) => Promise<T>): Promise<T> {
    const i = this.spare.findIndex((b) => b.length >= length);
    const b = i >= 0 ? this.spare.splice(i, 1)[0]! : Buffer.allocUnsafe(Math.max(length, 1 << 20));
    try {
      return await fn(b.subarray(0, length));
    } finally {
      if (this.spare.length < 4) this.spare.push(b);
    }
  }

  /** The one piece holding all of `[offset, offset+length)`, when one does (linear LVs, mostly). */
  private single(offset: number, length: number): LvPiece | undefined {
    const it = this.pieces(offset, length);
    const first = it.next();
    if (first.done || first.value.length !== length) return undefined;
    return first.value;
  }

  /**
   * Run `fn` over each member's runs of `[offset, offset+length)`, the members at the
   * same time: a striped request keeps every member busy at once, as striping is for
   * (each member's own requests stay in order; a member serialises its writes itself).
   */
  private async eachMember(offset: number, length: number, fn: (dev: DiskImage, runs: MemberRun[]) => Promise<void>): Promise<void> {
    const byMember = [...this.runs(offset, length)];
    if (byMember.length === 1) return fn(byMember[0]![0], byMember[0]![1]);
    const results = await Promise.allSettled(byMember.map(([dev, list]) => fn(dev, list)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  protected readAt(buf: Uint8Array, offset: number): Promise<void> {
    return this.pool.io(async () => {
      const one = this.single(offset, buf.length);
      if (one) return this.dev(one).read(buf, one.devOffset);
      await this.eachMember(offset, buf.length, async (dev, list) => {
        for (const r of list) {
          if (r.pieces.length === 1) {
            const p = r.pieces[0]!;
            await dev.read(buf.subarray(p.lvOffset - offset, p.lvOffset - offset + p.length), p.devOffset);
            continue;
          }
          // One read of the member's run, then each piece to its place in the request.
          await this.withScratch(r.length, async (tmp) => {
            await dev.read(tmp, r.devOffset);
            let at = 0;
            for (const p of r.pieces) {
              buf.set(tmp.subarray(at, at + p.length), p.lvOffset - offset);
              at += p.length;
            }
          });
        }
      });
    });
  }

  protected writeAt(buf: Uint8Array, offset: number): Promise<void> {
    return this.pool.io(async () => {
      const one = this.single(offset, buf.length);
      if (one) return this.dev(one).write(buf, one.devOffset);
      const part = (p: LvPiece): Uint8Array => buf.subarray(p.lvOffset - offset, p.lvOffset - offset + p.length);
      await this.eachMember(offset, buf.length, async (dev, list) => {
        for (const r of list) {
          if (r.pieces.length === 1) {
            await dev.write(part(r.pieces[0]!), r.devOffset);
            continue;
          }
          await this.withScratch(r.length, async (tmp) => {
            let at = 0;
            for (const p of r.pieces) {
              tmp.set(part(p), at);
              at += p.length;
            }
            await dev.write(tmp, r.devOffset);
          });
        }
      });
    });
  }

  protected override writeZeroesAt(offset: number, length: number): Promise<void> {
    return this.pool.io(async () => {
      for (const p of this.pieces(offset, length)) await this.dev(p).writeZeroes(p.devOffset, p.length);
    });
  }

  protected override discardAt(offset: number, length: number): Promise<void> {
    return this.pool.io(async () => {
      for (const p of this.pieces(offset, length)) await this.dev(p).discard(p.devOffset, p.length);
    });
  }

  protected async *extentsIn(offset: number, length: number): AsyncIterable<Extent> {
    // One piece at a time, each mapped and listed inside pool.io, so a migration step
    // is never held off by a caller that consumes extents slowly.
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const got = await this.pool.io(async () => {
        const p = this.pieces(pos, end - pos).next().value as LvPiece | undefined;
        if (!p) return undefined;
        const out: Extent[] = [];
        for await (const e of this.dev(p).extents(p.devOffset, p.length)) {
          out.push({ offset: p.lvOffset + (e.offset - p.devOffset), length: e.length, kind: e.kind, depth: 0 });
        }
        return { out, next: p.lvOffset + p.length };
      });
      if (!got) return;
      yield* got.out;
      pos = got.next;
    }
  }

  get extentsReadContent(): boolean {
    return this.pool.members.some((m) => m.dev?.extentsReadContent);
  }

  protected async flushAll(): Promise<void> {
    await this.pool.flush();
  }

  protected async closeAll(): Promise<void> {
    if (this.ownsPool) await this.pool.close();
  }

  async info(): Promise<ImageInfo> {
    const lv = this.pool.lv(this.lvName);
    const vg = this.pool.vg;
    return {
      clusterSize: extentBytes(vg),
      formatSpecific: {
        vg: vg.name,
        lv: lv.name,
        seqno: vg.seqno,
        segments: lv.segments.map((s) => ({
          startExtent: s.startExtent,
          extentCount: s.extentCount,
          type: s.type,
          ...(s.stripeSize ? { stripeSize: s.stripeSize * SECTOR } : {}),
          stripes: s.stripes.map((a) => ({ member: this.pool.member(a.pv).path, pe: a.pe })),
        })),
      },
      warnings: this.pool.warnings.length ? [...this.pool.warnings] : undefined,
    };
  }

  async actualSize(): Promise<number | undefined> {
    return undefined;
  }
}
