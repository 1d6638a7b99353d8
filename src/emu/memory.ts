/**
 * Guest physical memory: conventional memory, the upper memory area (video RAM,
 * BIOS ROM) and extended memory in one array, with the A20 gate.
 */
import { VdiskError } from '../errors.js';

/** One mebibyte: the real-mode address space. */
export const MIB = 0x100000;
/** The high memory area: the 64 KiB minus 16 bytes above 1 MiB reachable with A20 on. */
export const HMA_SIZE = 0xfff0;
/** Largest guest memory stage 1 accepts (MiB). */
export const MAX_MEMORY_MIB = 1024;

/** Guest RAM with the A20 gate. */
export class Memory {
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

  /** Bytes past the end of RAM read as all ones (an open bus). */
  readUnmapped(_addr: number): number {
    return 0xff;
  }
  /** Writes past the end of RAM go nowhere. */
  writeUnmapped(_addr: number, _v: number): void {}
}
