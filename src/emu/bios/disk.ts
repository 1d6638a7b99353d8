/**
 * INT 13h: disk services over BlockDevices — CHS read/write/verify/parameters for
 * floppy and hard disk geometries, and the EDD extensions 41h/42h/43h/44h/48h
 * (Phoenix "BIOS Enhanced Disk Drive Specification" 1.1/3.0).
 */
import type { BlockDevice } from '../../device/block-device.js';
import { DS, ES, EBX, ECX, EDX, EDI, ESI } from '../consts.js';
import type { Cpu } from '../cpu.js';
import type { StateReader, StateWriter } from '../state/codec.js';

/** INT 13h status codes (AH on return). */
export const DISK_OK = 0x00;
export const DISK_BAD_COMMAND = 0x01;
export const DISK_SECTOR_NOT_FOUND = 0x04;
export const DISK_WRITE_PROTECTED = 0x03;
export const DISK_CHANGED = 0x06;
export const DISK_READ_ERROR = 0x10;
export const DISK_NOT_READY = 0xaa;
export const DISK_TIMEOUT = 0x80;

const SECTOR = 512;
/** Most blocks one EDD packet may move (EDD 1.1 says 127; SeaBIOS, like us, takes up to 255). */
const MAX_SECTORS_PER_CALL = 255;

/** A drive the BIOS knows: its device and the geometry it reports. */
export interface Drive {
  number: number;
  device: BlockDevice;
  sectors: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  /** CMOS/INT 13h AH=08h drive type for floppies (0 for hard disks). */
  floppyType: number;
}

/** Standard floppy formats by size: [cylinders, heads, sectors per track, CMOS type]. */
const FLOPPY_FORMATS: Record<number, [number, number, number, number]> = {
  [160 * 1024]: [40, 1, 8, 1],
  [180 * 1024]: [40, 1, 9, 1],
  [320 * 1024]: [40, 2, 8, 1],
  [360 * 1024]: [40, 2, 9, 1],
  [720 * 1024]: [80, 2, 9, 3],
  [1200 * 1024]: [80, 2, 15, 2],
  [1440 * 1024]: [80, 2, 18, 4],
  [2880 * 1024]: [80, 2, 36, 5],
};

/** Geometry for a floppy image of `size` bytes (1.44 MB layout for odd sizes, like SeaBIOS). */
export function floppyDrive(number: number, device: BlockDevice): Drive {
  const f = FLOPPY_FORMATS[device.size] ?? [Math.max(1, Math.ceil(device.size / (2 * 18 * SECTOR))), 2, 18, 4];
  return { number, device, sectors: Math.floor(device.size / SECTOR), cylinders: f[0], heads: f[1], sectorsPerTrack: f[2], floppyType: f[3] };
}

/** Geometry for a hard disk: 16 heads × 63 sectors (255 heads above 504 MiB), cylinders capped at 1024. */
export function hardDrive(number: number, device: BlockDevice): Drive {
  const sectors = Math.floor(device.size / SECTOR);
  const heads = sectors > 1024 * 16 * 63 ? 255 : 16;
  const spt = 63;
  const cylinders = Math.max(1, Math.min(1024, Math.floor(sectors / (heads * spt))));
  return { number, device, sectors, cylinders, heads, sectorsPerTrack: spt, floppyType: 0 };
}

/** The disk BIOS. */
export class DiskBios {
  private lastStatus = new Map<number, number>();

  /** The status of each drive's last operation (INT 13h AH=01h reads it back). */
  saveState(w: StateWriter): void {
    w.u32(this.lastStatus.size);
    for (const [drive, st] of this.lastStatus) w.u8(drive).u8(st);
  }
  loadState(r: StateReader): void {
    const n = r.uint('drive status count', 256);
    this.lastStatus.clear();
    for (let i = 0; i < n; i++) this.lastStatus.set(r.u8('drive'), r.u8('drive status'));
  }

  constructor(
    readonly drives: Map<number, Drive>,
    private readonly diskParamTable: () => [number, number],
    /** Log a message under --debug. */
    private readonly debug: (msg: string) => void,
  ) {}

  private fail(c: Cpu, drive: number, status: number): void {
    this.lastStatus.set(drive, status);
    c.setR8(4, status);
    c.setCFbit(true);
  }
  private ok(c: Cpu, drive: number): void {
    this.lastStatus.set(drive, DISK_OK);
    c.setR8(4, DISK_OK);
    c.setCFbit(false);
  }

  /** Copy between the guest's memory at linear `addr` and the drive. */
  private async transfer(c: Cpu, d: Drive, lba: number, count: number, addr: number, write: boolean): Promise<number> {
    if (lba + count > d.sectors) return DISK_SECTOR_NOT_FOUND;
    const buf = new Uint8Array(count * SECTOR);
    try {
      if (write) {
        if (d.device.readOnly) return DISK_WRITE_PROTECTED;
        for (let i = 0; i < buf.length; i++) buf[i] = c.lin8(addr + i);
        await d.device.write(buf, lba * SECTOR);
      } else {
        await d.device.read(buf, lba * SECTOR);
        for (let i = 0; i < buf.length; i++) c.linW8(addr + i, buf[i]!);
      }
    } catch (e) {
      this.debug(`int 13h: drive ${d.number.toString(16)}h ${write ? 'write' : 'read'} at LBA ${lba} failed: ${(e as Error).message}`);
      return write ? DISK_WRITE_PROTECTED : DISK_READ_ERROR;
    }
    return DISK_OK;
  }

  /** Handle INT 13h; returns a promise when the request needs the device. */
  handle(c: Cpu): Promise<void> | void {
    const ah = c.r8(4);
    const dl = c.r8(2);
    const d = this.drives.get(dl);
    const floppies = [...this.drives.keys()].filter((k) => k < 0x80).length;
    const disks = [...this.drives.keys()].filter((k) => k >= 0x80).length;
    if (ah === 0x00) {
      if (!d && !(dl < 0x80 ? floppies : disks)) return this.fail(c, dl, DISK_BAD_COMMAND);
      return this.ok(c, dl);
    }
    if (ah === 0x01) {
      const st = this.lastStatus.get(dl) ?? 0;
      c.setR8(4, st);
      c.setCFbit(st !== 0);
      return;
    }
    if (ah === 0x08 && !d && dl < 0x80) {
      // Floppy controller present without a drive: report no drives.
      c.setR16(EDX, floppies);
      c.setR16(ECX, 0);
      return this.fail(c, dl, DISK_BAD_COMMAND);
    }
    if (!d) {
      if (ah === 0x15) {
        c.setR8(4, 0);
        c.setCFbit(false);
        return;
      }
      return this.fail(c, dl, DISK_TIMEOUT);
    }
    switch (ah) {
      case 0x02:
      case 0x03:
      case 0x04: {
        const count = c.r8(0);
        const cl = c.r8(1);
        const sector = cl & 0x3f;
        const cyl = c.r8(5) | ((cl & 0xc0) << 2);
        const head = c.r8(6);
        if (count === 0 || sector === 0 || sector > d.sectorsPerTrack || head >= d.heads) {
          c.setR8(0, 0);
          return this.fail(c, dl, DISK_SECTOR_NOT_FOUND);
        }
        const lba = (cyl * d.heads + head) * d.sectorsPerTrack + sector - 1;
        if (ah === 0x04) {
          if (lba + count > d.sectors) return this.fail(c, dl, DISK_SECTOR_NOT_FOUND);
          return this.ok(c, dl);
        }
        const addr = c.sbase[ES]! + c.r16(EBX);
        return this.transfer(c, d, lba, count, addr, ah === 0x03).then((st) => {
          if (st !== DISK_OK) {
            c.setR8(0, 0);
            this.fail(c, dl, st);
          } else this.ok(c, dl);
        });
      }
      case 0x05:
        return this.ok(c, dl);
      case 0x08: {
        // Hard disks report one cylinder fewer: the AT BIOS keeps the last one for diagnostics (SeaBIOS does too).
        const cyl = Math.max(0, Math.min(d.cylinders, 1024) - (dl < 0x80 ? 1 : 2));
        c.setR8(5, cyl & 0xff);
        c.setR8(1, (d.sectorsPerTrack & 0x3f) | ((cyl >> 2) & 0xc0));
        c.setR8(6, d.heads - 1);
        if (dl < 0x80) {
          c.setR8(2, floppies);
          c.setR8(3, d.floppyType);
          c.setR8(7, 0);
          const [seg, off] = this.diskParamTable();
          c.loadSeg(ES, seg);
          c.setR16(EDI, off);
        } else c.setR8(2, disks);
        c.setR8(0, 0);
        return this.ok(c, dl);
      }
      case 0x09: case 0x0c: case 0x0d: case 0x10: case 0x11: case 0x14:
        return this.ok(c, dl);
      case 0x15:
        if (dl < 0x80) {
          c.setR8(4, 0x02); // floppy with change-line support
        } else {
          c.setR8(4, 0x03);
          c.setR16(ECX, Math.floor(d.sectors / 65536));
          c.setR16(EDX, d.sectors & 0xffff);
        }
        c.setCFbit(false);
        return;
      case 0x16:
        return this.ok(c, dl); // media not changed
      case 0x17:
      case 0x18:
        if (ah === 0x18) {
          const [seg, off] = this.diskParamTable();
          c.loadSeg(ES, seg);
          c.setR16(EDI, off);
        }
        return this.ok(c, dl);
      case 0x41:
        if (c.r16(EBX) !== 0x55aa || dl < 0x80) return this.fail(c, dl, DISK_BAD_COMMAND);
        c.setR16(EBX, 0xaa55);
        c.setR16(ECX, 0x0001); // fixed disk access subset (42h-44h, 47h, 48h)
        c.setR8(4, 0x30); // EDD 3.0
        this.lastStatus.set(dl, 0);
        c.setCFbit(false);
        return;
      case 0x42:
      case 0x43:
      case 0x44: {
        if (dl < 0x80) return this.fail(c, dl, DISK_BAD_COMMAND);
        const pkt = c.sbase[DS]! + c.r16(ESI);
        const size = c.lin8(pkt);
        if (size < 0x10) return this.fail(c, dl, DISK_BAD_COMMAND);
        const count = c.lin16(pkt + 2);
        let addr = c.lin16(pkt + 6) * 16 + c.lin16(pkt + 4);
        if (size >= 0x18 && c.lin16(pkt + 4) === 0xffff && c.lin16(pkt + 6) === 0xffff) {
          addr = (c.lin16(pkt + 0x10) | (c.lin16(pkt + 0x12) << 16)) >>> 0;
        }
        const lba = (c.lin16(pkt + 8) | (c.lin16(pkt + 10) << 16)) >>> 0;
        const lbaHi = c.lin16(pkt + 12) | (c.lin16(pkt + 14) << 16);
        if (lbaHi !== 0 || count > MAX_SECTORS_PER_CALL || lba + count > d.sectors) {
          c.linW16(pkt + 2, 0);
          return this.fail(c, dl, DISK_SECTOR_NOT_FOUND);
        }
        if (ah === 0x44 || count === 0) return this.ok(c, dl);
        return this.transfer(c, d, lba, count, addr, ah === 0x43).then((st) => {
          if (st !== DISK_OK) {
            c.linW16(pkt + 2, 0);
            this.fail(c, dl, st);
          } else this.ok(c, dl);
        });
      }
      case 0x48: {
        const p = c.sbase[DS]! + c.r16(ESI);
        const size = c.lin16(p);
        if (size < 0x1a) return this.fail(c, dl, DISK_BAD_COMMAND);
        c.linW16(p, 0x1a);
        c.linW16(p + 2, 0x0002); // CHS information valid
        const w32 = (a: number, v: number): void => {
          c.linW16(a, v & 0xffff);
          c.linW16(a + 2, Math.floor(v / 65536) & 0xffff);
        };
        w32(p + 4, d.cylinders);
        w32(p + 8, d.heads);
        w32(p + 12, d.sectorsPerTrack);
        w32(p + 16, d.sectors % 0x100000000);
        w32(p + 20, Math.floor(d.sectors / 0x100000000));
        c.linW16(p + 24, SECTOR);
        return this.ok(c, dl);
      }
      default:
        this.debug(`int 13h: unsupported function AH=${ah.toString(16)}h`);
        return this.fail(c, dl, DISK_BAD_COMMAND);
    }
  }
}

