/**
 * The byte codec every part of a machine state is written with: a growing little-endian
 * writer and a bounded reader that never trusts a length before checking it against
 * what is left (and a caller's limit), so a damaged or hostile state file gets a
 * `VdiskError` rather than a huge allocation.
 */
import { VdiskError } from '../../errors.js';

/** Appends little-endian fields to a buffer that grows as needed. */
export class StateWriter {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): this {
    this.room(1);
    this.view.setUint8(this.pos, v);
    this.pos += 1;
    return this;
  }
  bool(v: boolean): this {
    return this.u8(v ? 1 : 0);
  }
  u16(v: number): this {
    this.room(2);
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.room(4);
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
    return this;
  }
  i32(v: number): this {
    this.room(4);
    this.view.setInt32(this.pos, v | 0, true);
    this.pos += 4;
    return this;
  }
  /** A double: virtual clock values and byte counts beyond 32 bits. */
  f64(v: number): this {
    this.room(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
    return this;
  }
  /** Raw bytes, without a length (the reader knows how many). */
  raw(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  /** Bytes with a u32 length in front. */
  bytes(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }
  /** A string as UTF-8 with a u32 byte length. */
  str(s: string): this {
    return this.bytes(new TextEncoder().encode(s));
  }
  /** A list of strings with a u32 count. */
  strs(list: readonly string[]): this {
    this.u32(list.length);
    for (const s of list) this.str(s);
    return this;
  }

  /** What has been written. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** Reads what a {@link StateWriter} wrote; every read is bounded by the bytes left. */
export class StateReader {
  private readonly view: DataView;
  private pos = 0;

  /** `what` names the part being read in error messages (e.g. "state file section PIT"). */
  constructor(
    private readonly buf: Uint8Array,
    readonly what: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** Bytes not read yet. */
  get left(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, field: string): void {
    if (n > this.left) throw new VdiskError('E_CORRUPT', `${this.what}: truncated at ${field} (needs ${n} bytes, ${this.left} left)`);
  }

  u8(field = 'a byte'): number {
    this.need(1, field);
    return this.view.getUint8(this.pos++);
  }
  bool(field = 'a flag'): boolean {
    const v = this.u8(field);
    if (v > 1) throw new VdiskError('E_CORRUPT', `${this.what}: ${field} is ${v}, not 0 or 1`);
    return v === 1;
  }
  u16(field = 'a word'): number {
    this.need(2, field);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(field = 'a dword'): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(field = 'a dword'): number {
    this.need(4, field);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f64(field = 'a number'): number {
    this.need(8, field);
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    if (!Number.isFinite(v)) throw new VdiskError('E_CORRUPT', `${this.what}: ${field} is not a finite number`);
    return v;
  }
  /** A u32 checked to lie in [min, max]. */
  uint(field: string, max: number, min = 0): number {
    const v = this.u32(field);
    if (v < min || v > max) throw new VdiskError('E_CORRUPT', `${this.what}: ${field} is ${v}, outside ${min}..${max}`);
    return v;
  }
  /** `n` raw bytes (a view into the input). */
  raw(n: number, field = 'bytes'): Uint8Array {
    this.need(n, field);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  /** Bytes with a u32 length, at most `max` of them. */
  bytes(field: string, max: number): Uint8Array {
    const n = this.u32(`${field} length`);
    if (n > max) throw new VdiskError('E_CORRUPT', `${this.what}: ${field} length ${n} exceeds ${max}`);
    return this.raw(n, field);
  }
  /** Fill `into` exactly (fixed-size register files). */
  into(into: Uint8Array, field: string): void {
    into.set(this.raw(into.length, field));
  }
  str(field: string, max = 1 << 20): string {
    return new TextDecoder().decode(this.bytes(field, max));
  }
  strs(field: string, maxCount: number, maxLen = 1 << 20): string[] {
    const n = this.uint(`${field} count`, maxCount);
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.str(field, maxLen));
    return out;
  }
  /** Fail unless everything was read (a section longer than its layout is damaged). */
  end(): void {
    if (this.left !== 0) throw new VdiskError('E_CORRUPT', `${this.what}: ${this.left} unexpected bytes at the end`);
  }
}

/** A part of the machine that saves and restores its own state. */
export interface Stateful {
  saveState(w: StateWriter): void;
  loadState(r: StateReader): void;
}
