/**
 * The port I/O bus: devices register byte handlers for their ports; word and
 * dword accesses are split into bytes unless a device registers wider handlers.
 */

/**
 * Port handlers a device registers: byte-wide, and optionally word- and dword-wide
 * ones for ports whose wide access is one operation (the ATA data port moves a word
 * per IN; PCI configuration data is a dword), not two byte accesses.
 */
export interface PortHandler {
  read?: (port: number) => number;
  write?: (port: number, value: number) => void;
  read16?: (port: number) => number;
  write16?: (port: number, value: number) => void;
  read32?: (port: number) => number;
  write32?: (port: number, value: number) => void;
}

/** The 64 KiB I/O space. */
export class IoBus {
  private readonly readers: ((port: number) => number)[] = [];
  private readonly writers: ((port: number, value: number) => void)[] = [];
  private readonly wide = new Map<number, PortHandler>();
  /** Called for accesses to ports nobody claimed (for --debug). */
  onUnclaimed: ((port: number, write: boolean, value: number) => void) | null = null;

  constructor() {
    const none = (port: number): number => {
      if (this.onUnclaimed) this.onUnclaimed(port, false, 0);
      return 0xff;
    };
    const drop = (port: number, value: number): void => {
      if (this.onUnclaimed) this.onUnclaimed(port, true, value);
    };
    for (let i = 0; i < 0x10000; i++) {
      this.readers.push(none);
      this.writers.push(drop);
    }
  }

  /** Claim `ports` for a device. */
  register(ports: Iterable<number>, h: PortHandler): void {
    for (const p of ports) {
      if (h.read) this.readers[p & 0xffff] = h.read;
      if (h.write) this.writers[p & 0xffff] = h.write;
      if (h.read16 || h.write16 || h.read32 || h.write32) this.wide.set(p & 0xffff, h);
    }
  }

  in8(port: number): number {
    return this.readers[port & 0xffff]!(port & 0xffff) & 0xff;
  }
  out8(port: number, v: number): void {
    this.writers[port & 0xffff]!(port & 0xffff, v & 0xff);
  }
  in16(port: number): number {
    const h = this.wide.size ? this.wide.get(port & 0xffff)?.read16 : undefined;
    if (h) return h(port & 0xffff) & 0xffff;
    return this.in8(port) | (this.in8(port + 1) << 8);
  }
  out16(port: number, v: number): void {
    const h = this.wide.size ? this.wide.get(port & 0xffff)?.write16 : undefined;
    if (h) return h(port & 0xffff, v & 0xffff);
    this.out8(port, v);
    this.out8(port + 1, v >> 8);
  }
  in32(port: number): number {
    const h = this.wide.size ? this.wide.get(port & 0xffff)?.read32 : undefined;
    if (h) return h(port & 0xffff) >>> 0;
    return (this.in16(port) | (this.in16(port + 2) << 16)) >>> 0;
  }
  out32(port: number, v: number): void {
    const h = this.wide.size ? this.wide.get(port & 0xffff)?.write32 : undefined;
    if (h) return h(port & 0xffff, v >>> 0);
    this.out16(port, v & 0xffff);
    this.out16(port + 2, (v >>> 16) & 0xffff);
  }
}

/** Ports `[from, from+count)`. */
export function portRange(from: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => from + i);
}
