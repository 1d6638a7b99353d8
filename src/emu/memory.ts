/**
 * Guest physical memory: conventional memory, the upper memory area (video RAM,
 * BIOS ROM) and extended memory in one array, with the A20 gate.
 */
import { deflateSync, inflateSync } from 'node:zlib';
import { VdiskError } from '../errors.js';
import type { StateReader, StateWriter, Stateful } from './state/codec.js';

/** Granularity of the sparse memory image in a saved state: only pages that are not all zero are kept. */
export const STATE_PAGE = 4096;

/** One mebibyte: the real-mode address space. */
export const MIB = 0x100000;
/** The high memory area: the 64 KiB minus 16 bytes above 1 MiB reachable with A20 on. */
export const HMA_SIZE = 0xfff0;
/** Largest guest memory stage 1 accepts (MiB). */
export const MAX_MEMORY_MIB = 1024;

/** Guest RAM with the A20 gate. */
export class Memory implements Stateful {
  /** All RAM, physical address = index. */
  readonly ram: Uint8Array;
  /** Address mask: bit 20 cleared while the A20 gate is off (1 MiB wrap-around). */
  a20Mask = 0xffefffff | 0;

  /** Allocate `mib` MiB of RAM (at least 1 MiB plus the HMA). */
  constructor(mib: number) {
    if (!Number.isInteger(mib) || mib < 1 || mib > MAX_MEMORY_MIB) {
      throw new VdiskError('E_USAGE', `--memory must be a whole number of MiB from 1 to ${MAX_MEMORY_MIB}, not ${mib}`);
    }
    this.ram = new Uint8Array(Math.max(mib * MIB, MIB + 0x10000));
  }

  /** Whether the A20 gate is open. */
  get a20(): boolean {
    return this.a20Mask === -1;
  }
  set a20(on: boolean) {
    this.a20Mask = on ? -1 : 0xffefffff | 0;
    this.onA20(this.a20Mask);
  }
  /** Told about every A20 change (the CPU caches the mask). */
  onA20: (mask: number) => void = () => {};

  /**
   * RAM as a sparse, zlib-compressed image: the RAM size, the A20 gate, then one
   * compressed block holding the count of non-zero pages, their page numbers
   * (ascending) and their bytes.
   */
  saveState(w: StateWriter): void {
    const pages: number[] = [];
    const words = new Uint32Array(this.ram.buffer, this.ram.byteOffset, this.ram.length >>> 2);
    for (let p = 0, n = this.ram.length / STATE_PAGE; p < n; p++) {
      const from = (p * STATE_PAGE) >>> 2;
      for (let i = from, end = from + STATE_PAGE / 4; i < end; i++) {
        if (words[i] !== 0) {
          pages.push(p);
          break;
        }
      }
    }
    const plain = new Uint8Array(4 + pages.length * (4 + STATE_PAGE));
    const dv = new DataView(plain.buffer);
    dv.setUint32(0, pages.length, true);
    pages.forEach((p, i) => {
      dv.setUint32(4 + i * 4, p, true);
      plain.set(this.ram.subarray(p * STATE_PAGE, (p + 1) * STATE_PAGE), 4 + pages.length * 4 + i * STATE_PAGE);
    });
    w.f64(this.ram.length).bool(this.a20).bytes(deflateSync(plain, { level: 6 }));
  }
  loadState(r: StateReader): void {
    const size = r.f64('RAM size');
    if (size !== this.ram.length) {
      throw new VdiskError('E_CORRUPT', `${r.what}: RAM is ${size} bytes in the state but ${this.ram.length} in the machine`);
    }
    const a20 = r.bool('A20 gate');
    const pageCount = this.ram.length / STATE_PAGE;
    const maxPlain = 4 + pageCount * (4 + STATE_PAGE);
    // Deflate grows incompressible input by a few bytes per 16 KiB block at most.
    const packed = r.bytes('compressed memory', maxPlain + (maxPlain >>> 10) + 1024);
    let plain: Buffer;
    try {
      plain = inflateSync(packed, { maxOutputLength: maxPlain });
    } catch (e) {
      throw new VdiskError('E_CORRUPT', `${r.what}: compressed memory does not inflate: ${(e as Error).message}`, { cause: e });
    }
    const dv = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
    const n = plain.length >= 4 ? dv.getUint32(0, true) : -1;
    if (n < 0 || n > pageCount || plain.length !== 4 + n * (4 + STATE_PAGE)) {
      throw new VdiskError('E_CORRUPT', `${r.what}: the memory image holds ${plain.length} bytes, not a page list`);
    }
    this.ram.fill(0);
    let last = -1;
    for (let i = 0; i < n; i++) {
      const p = dv.getUint32(4 + i * 4, true);
      if (p <= last || p >= pageCount) throw new VdiskError('E_CORRUPT', `${r.what}: page number ${p} out of order or past the end of RAM`);
      last = p;
      this.ram.set(plain.subarray(4 + n * 4 + i * STATE_PAGE, 4 + n * 4 + (i + 1) * STATE_PAGE), p * STATE_PAGE);
    }
    this.a20 = a20;
  }

  /**
   * The firmware flash at the top of the 4 GiB space (where a PC's reset vector
   * FFFFFFF0h reaches it), or null (our own BIOS lives in RAM at F0000h).
   */
  private flash: Uint8Array | null = null;
  private flashBase = 0x100000000;

  /** Map `image` (a whole firmware file, e.g. SeaBIOS's bios.bin) so that it ends at 4 GiB. */
  mapFlash(image: Uint8Array): void {
    this.flash = image;
    this.flashBase = 0x100000000 - image.length;
  }

  /** Read-only windows above RAM (PCI expansion ROMs): each gives a byte, or -1 where it does not decode. */
  private readonly windows: ((addr: number) => number)[] = [];

  /** Add a window above RAM that answers reads where `read` returns a byte (not -1). */
  mapWindow(read: (addr: number) => number): void {
    this.windows.push(read);
  }

  /** Bytes past the end of RAM read as all ones (an open bus), except the firmware flash and ROM windows. */
  readUnmapped(addr: number): number {
    if (addr >= this.flashBase) return this.flash![addr - this.flashBase]!;
    for (const w of this.windows) {
      const v = w(addr);
      if (v >= 0) return v;
    }
    return 0xff;
  }
  /** Writes past the end of RAM go nowhere (the flash is read-only). */
  writeUnmapped(_addr: number, _v: number): void {}
}
