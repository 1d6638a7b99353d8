/**
 * The 82441FX's Programmable Attribute Map (PAM0-PAM6, configuration registers
 * 59h-5Fh; Intel 440FX PCIset datasheet, 3.2.12): for each segment of C0000h-FFFFFh
 * whether reads come from DRAM (RE, bit 0 of the nibble) or from the PCI/ISA side,
 * where the BIOS ROM answers, and whether writes go to DRAM (WE, bit 1). PAM0's high
 * nibble governs F0000h-FFFFFh, PAM1-PAM6 a 16 KiB segment per nibble from C0000h.
 *
 * Guest RAM is one flat array that the CPU reads directly, so the array holds what a
 * read sees: the segment's DRAM while RE is set, the ROM's bytes while it is clear
 * (the DRAM below is kept aside in `hidden` and put back when RE is set again). A
 * write lands in what the array shows: writes to a read-only DRAM segment are not
 * refused (the CPU's direct RAM path has no write protection), and writes while RE is
 * clear are lost when RE is set, which is what a write-disabled segment does.
 */
import { deflateSync, inflateSync } from 'node:zlib';
import { VdiskError } from '../../errors.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Start of the shadowable area and its size (C0000h-FFFFFh). */
export const SHADOW_BASE = 0xc0000;
export const SHADOW_SIZE = 0x40000;
/** The configuration register of PAM0. */
export const PAM0 = 0x59;

/** The 13 segments as [config register, nibble (0 low, 1 high), start, length]. */
const SEGMENTS: [number, number, number, number][] = [[PAM0, 1, 0xf0000, 0x10000]];
for (let i = 0; i < 12; i++) SEGMENTS.push([PAM0 + 1 + (i >> 1), i & 1, 0xc0000 + i * 0x4000, 0x4000]);

const RE = 0x1;

/** What C0000h-FFFFFh reads as, following the PAM registers. */
export class Pam implements Stateful {
  /** DRAM of segments whose reads go to the ROM side. */
  private readonly hidden = new Uint8Array(SHADOW_SIZE);
  /** Whether each segment's reads come from DRAM. */
  private readonly readsRam = new Array<boolean>(SEGMENTS.length).fill(false);

  /**
   * `ram` is the guest's memory; `rom` what C0000h-FFFFFh reads as from the PCI side
   * (SHADOW_SIZE bytes: the BIOS's last 128 KiB at E0000h, nothing below).
   */
  constructor(
    private readonly ram: Uint8Array,
    private readonly rom: Uint8Array,
  ) {
    // Power on: every segment reads the ROM side (PAM registers are 0 at reset).
    this.ram.set(rom, SHADOW_BASE);
  }

  /**
   * True once F0000h-FFFFFh reads DRAM that is write-protected: the firmware has
   * shadowed and sealed itself, as SeaBIOS does just before it boots (make_bios_readonly).
   */
  sealed = false;

  /** The PAM registers changed: re-map the segments whose RE bit moved. `reg(i)` reads config register i. */
  update(reg: (i: number) => number): void {
    this.sealed = ((reg(PAM0) >> 4) & 3) === RE;
    SEGMENTS.forEach(([r, nibble, start, len], i) => {
      const re = ((reg(r) >> (4 * nibble)) & RE) !== 0;
      if (re === this.readsRam[i]) return;
      const off = start - SHADOW_BASE;
      if (re) this.ram.set(this.hidden.subarray(off, off + len), start);
      else {
        this.hidden.set(this.ram.subarray(start, start + len), off);
        this.ram.set(this.rom.subarray(off, off + len), start);
      }
      this.readsRam[i] = re;
    });
  }

  /** The hidden DRAM (compressed) and which segments show it; the PAM registers are in the PCI state. */
  saveState(w: StateWriter): void {
    for (const re of this.readsRam) w.bool(re);
    w.bool(this.sealed);
    w.bytes(deflateSync(this.hidden));
  }
  loadState(r: StateReader): void {
    for (let i = 0; i < this.readsRam.length; i++) this.readsRam[i] = r.bool('PAM segment reads DRAM');
    this.sealed = r.bool('firmware sealed');
    const packed = r.bytes('hidden shadow RAM', SHADOW_SIZE * 2);
    let plain: Buffer;
    try {
      plain = inflateSync(packed, { maxOutputLength: SHADOW_SIZE });
    } catch (e) {
      throw new VdiskError('E_CORRUPT', `${r.what}: hidden shadow RAM does not inflate: ${(e as Error).message}`, { cause: e });
    }
    if (plain.length !== SHADOW_SIZE) throw new VdiskError('E_CORRUPT', `${r.what}: hidden shadow RAM is ${plain.length} bytes, not ${SHADOW_SIZE}`);
    this.hidden.set(plain);
  }
}
