/**
 * PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, 3.2.2.3.2) on
 * bus 0, with the chips of a PC built around Intel's 440FX: the 82441FX host bridge
 * (00:00.0) and the 82371SB PIIX3's ISA bridge (00:01.0) and IDE function (00:01.1),
 * the functions qemu's `pc` machine and SeaBIOS know. Each function is a 256-byte
 * configuration space with a per-byte mask of the bits software may write (BARs
 * answer a sizing write of all ones with their size, as the spec has it).
 */
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter } from '../state/codec.js';

/** CONFIG_ADDRESS (dword at 0CF8h) and CONFIG_DATA (0CFCh-0CFFh). */
export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_DATA = 0xcfc;
/** Expansion ROM base address register of a type 0 header (PCI 3.0, 6.2.5.2). */
export const PCI_ROM_ADDRESS = 0x30;

/** One function's configuration space. */
export class PciFunction {
  readonly config = new Uint8Array(256);
  /** Bits software may change, byte by byte. */
  readonly wmask = new Uint8Array(256);
  /** Told after software wrote `size` bytes at `at` (chip registers with side effects, such as the PAM). */
  onWrite: ((at: number, size: number) => void) | null = null;

  constructor(
    /** Device number (0-31) and function (0-7) on bus 0. */
    readonly device: number,
    readonly fn: number,
    ids: { vendor: number; device: number; revision: number; classCode: number; headerType: number; subsystemVendor?: number; subsystem?: number },
  ) {
    this.set16(0x00, ids.vendor);
    this.set16(0x02, ids.device);
    this.config[0x08] = ids.revision;
    this.config[0x09] = ids.classCode & 0xff;
    this.config[0x0a] = (ids.classCode >> 8) & 0xff;
    this.config[0x0b] = (ids.classCode >> 16) & 0xff;
    this.config[0x0e] = ids.headerType;
    if (ids.subsystemVendor !== undefined) this.set16(0x2c, ids.subsystemVendor);
    if (ids.subsystem !== undefined) this.set16(0x2e, ids.subsystem);
    // Command: I/O, memory, bus master, SERR, parity (the common writable bits).
    this.wmask[0x04] = 0x47;
    this.wmask[0x05] = 0x01;
    this.wmask[0x0d] = 0xff; // latency timer
    this.wmask[0x3c] = 0xff; // interrupt line
  }

  set16(at: number, v: number): void {
    this.config[at] = v & 0xff;
    this.config[at + 1] = (v >> 8) & 0xff;
  }

  /** Declare an I/O BAR of `size` bytes (a power of two, at least 4) at config offset `at`. */
  ioBar(at: number, size: number): void {
    const mask = ~(size - 1) & 0xfffffffc;
    for (let i = 0; i < 4; i++) this.wmask[at + i] = (mask >>> (8 * i)) & 0xff;
    this.config[at] |= 0x01; // I/O space indicator, read-only
  }

  /**
   * Declare an expansion ROM (configuration offset 30h) holding `rom`, sized to a
   * power of two of at least 2 KiB. While its enable bit and the command register's
   * memory space bit are set, the ROM answers reads at the address software wrote.
   */
  expansionRom(rom: Uint8Array): void {
    let size = 0x800;
    while (size < rom.length) size *= 2;
    const mask = (~(size - 1) & 0xfffff800) | 0x01;
    for (let i = 0; i < 4; i++) this.wmask[PCI_ROM_ADDRESS + i] = (mask >>> (8 * i)) & 0xff;
    this.rom = rom;
    this.romSize = size;
  }
  private rom: Uint8Array | null = null;
  private romSize = 0;

  /** A byte of the expansion ROM at physical `addr`, or -1 when the ROM is not decoded there. */
  readRom(addr: number): number {
    if (!this.rom || !(this.config[0x04]! & 0x02)) return -1;
    const bar = (this.config[PCI_ROM_ADDRESS]! | (this.config[PCI_ROM_ADDRESS + 1]! << 8) | (this.config[PCI_ROM_ADDRESS + 2]! << 16) | (this.config[PCI_ROM_ADDRESS + 3]! << 24)) >>> 0;
    if (!(bar & 0x01)) return -1;
    const off = addr - ((bar & ~(this.romSize - 1) & 0xfffff800) >>> 0);
    if (off < 0 || off >= this.romSize) return -1;
    return off < this.rom.length ? this.rom[off]! : 0xff;
  }

  /** Mark `count` bytes from `at` fully writable (chip-specific registers). */
  writable(at: number, count: number, mask = 0xff): void {
    this.wmask.fill(mask, at, at + count);
  }

  read8(at: number): number {
    return this.config[at & 0xff]!;
  }

  write8(at: number, v: number): void {
    const i = at & 0xff;
    const m = this.wmask[i]!;
    this.config[i] = (this.config[i]! & ~m) | (v & m);
  }
}

/** The host bridge's PAM registers (59h-5Fh): who answers reads and writes of C0000h-FFFFFh. */
export const I440FX_PAM = 0x59;

/** Configuration space of bus 0 and the two ports that reach it. */
export class PciBus {
  private address = 0;
  private readonly functions = new Map<number, PciFunction>();

  constructor(io: IoBus) {
    io.register([PCI_CONFIG_ADDRESS], {
      read32: () => this.address,
      write32: (_p, v) => {
        this.address = v & 0x80fffffc;
      },
    });
    const data = [0, 1, 2, 3].map((i) => PCI_CONFIG_DATA + i);
    io.register(data, {
      read: (p) => this.readData(p - PCI_CONFIG_DATA, 1),
      write: (p, v) => this.writeData(p - PCI_CONFIG_DATA, 1, v),
      read16: (p) => this.readData(p - PCI_CONFIG_DATA, 2),
      write16: (p, v) => this.writeData(p - PCI_CONFIG_DATA, 2, v),
      read32: (p) => this.readData(p - PCI_CONFIG_DATA, 4),
      write32: (p, v) => this.writeData(p - PCI_CONFIG_DATA, 4, v),
    });
  }

  add(f: PciFunction): PciFunction {
    this.functions.set((f.device << 3) | f.fn, f);
    return f;
  }

  /** The function CONFIG_ADDRESS selects, if it exists and the enable bit is set. */
  private selected(): PciFunction | undefined {
    if (!(this.address & 0x80000000)) return undefined;
    if ((this.address >>> 16) & 0xff) return undefined; // only bus 0 exists
    return this.functions.get((this.address >>> 8) & 0xff);
  }

  private readData(lane: number, size: number): number {
    const f = this.selected();
    // No device answers: the master aborts and the read returns all ones.
    if (!f) return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
    const reg = (this.address & 0xfc) + lane;
    let v = 0;
    for (let i = 0; i < size; i++) v |= f.read8(reg + i) << (8 * i);
    return v >>> 0;
  }

  private writeData(lane: number, size: number, v: number): void {
    const f = this.selected();
    if (!f) return;
    const reg = (this.address & 0xfc) + lane;
    for (let i = 0; i < size; i++) f.write8(reg + i, (v >>> (8 * i)) & 0xff);
    f.onWrite?.(reg, size);
  }

  saveState(w: StateWriter): void {
    w.u32(this.address);
    w.u32(this.functions.size);
    for (const [key, f] of this.functions) w.u16(key).raw(f.config);
  }

  loadState(r: StateReader): void {
    this.address = r.u32('PCI config address');
    const n = r.uint('PCI function count', 256);
    for (let i = 0; i < n; i++) {
      const key = r.u16('PCI function');
      const config = r.raw(256, 'PCI config space');
      this.functions.get(key)?.config.set(config);
    }
  }
}

/**
 * Subsystem vendor and ID qemu gives every function (Red Hat, 1100h): SeaBIOS's
 * qemu_detect() knows a qemu machine by them on the host bridge.
 */
const QEMU_SUBSYSTEM = { subsystemVendor: 0x1af4, subsystem: 0x1100 };

/** The 440FX/PIIX3 functions of a `pc` machine, as qemu models them (IDs from the Intel datasheets). */
export function i440fxPiix3(bus: PciBus): { host: PciFunction; isa: PciFunction; ide: PciFunction } {
  // 82441FX PMC: host bridge, class 0600h.
  const host = bus.add(new PciFunction(0, 0, { vendor: 0x8086, device: 0x1237, revision: 0x02, classCode: 0x060000, headerType: 0x00, ...QEMU_SUBSYSTEM }));
  host.writable(I440FX_PAM, 7); // PAM0-PAM6
  host.writable(0x72, 1, 0x78); // SMRAM: D_OPEN, D_CLS, D_LCK, G_SMRAME
  host.config[0x72] = 0x02;
  // 82371SB PIIX3 function 0: PCI-to-ISA bridge, class 0601h, multi-function device.
  const isa = bus.add(new PciFunction(1, 0, { vendor: 0x8086, device: 0x7000, revision: 0x00, classCode: 0x060100, headerType: 0x80, ...QEMU_SUBSYSTEM }));
  isa.writable(0x60, 4); // PIRQ route control A-D
  isa.config.fill(0x80, 0x60, 0x64); // routing disabled at reset
  // Function 1: IDE, class 0101h with programming interface 80h (legacy ports, bus master).
  const ide = bus.add(new PciFunction(1, 1, { vendor: 0x8086, device: 0x7010, revision: 0x00, classCode: 0x010180, headerType: 0x00, ...QEMU_SUBSYSTEM }));
  ide.ioBar(0x20, 16); // BMIBA: bus-master IDE registers
  ide.writable(0x40, 4); // IDETIM primary and secondary
  return { host, isa, ide };
}

/**
 * qemu's standard VGA ("-vga std", PCI 1234:1111, class 0300h) as device 2, carrying
 * a VGA BIOS (SeaBIOS's vgabios-stdvga.bin) in its expansion ROM for the firmware to
 * find, copy to C0000h and run. Only the ROM is decoded: the VGA's registers and
 * memory are the legacy ones (vga.ts); its framebuffer BAR and Bochs VBE registers
 * are not modelled, so the VGA BIOS finds no VBE and drives the VGA alone.
 */
export function stdVga(bus: PciBus, rom: Uint8Array): PciFunction {
  const vga = bus.add(new PciFunction(2, 0, { vendor: 0x1234, device: 0x1111, revision: 0x02, classCode: 0x030000, headerType: 0x00, ...QEMU_SUBSYSTEM }));
  vga.expansionRom(rom);
  return vga;
}
