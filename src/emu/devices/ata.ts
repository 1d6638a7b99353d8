/**
 * ATA on the primary IDE channel (ports 1F0h-1F7h and 3F6h, IRQ 14), PIO only, as
 * the PIIX3's IDE function presents it: a master drive over a BlockDevice (no
 * slave). Commands from ATA/ATAPI-6 (T13 1410D): IDENTIFY DEVICE, READ/WRITE
 * SECTORS and MULTIPLE with their 48-bit EXT forms, SET MULTIPLE MODE, INITIALIZE
 * DEVICE PARAMETERS, READ VERIFY, SEEK, RECALIBRATE, SET FEATURES, FLUSH CACHE,
 * CHECK POWER MODE; CHS and LBA addressing; software reset through the device
 * control register. Disk I/O is asynchronous: the device hands the promise to the
 * machine (`defer`), which ends the CPU's batch and waits for it, so the guest sees
 * BSY end at the instruction after the command.
 */
import type { BlockDevice } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter } from '../state/codec.js';

const SECTOR = 512;
/** Most sectors one DRQ block moves under READ/WRITE MULTIPLE (IDENTIFY word 47). */
export const MAX_MULTIPLE = 16;

// Status register bits.
const BSY = 0x80;
const DRDY = 0x40;
const DSC = 0x10;
const DRQ = 0x08;
const ERR = 0x01;
// Error register bits.
const ABRT = 0x04;
const IDNF = 0x10;
// Device control bits.
const NIEN = 0x02;
const SRST = 0x04;
const HOB = 0x80;

/** Where a data transfer stands. */
type Transfer = 'none' | 'read' | 'write';

/** The primary channel with one ATA disk as master. */
export class AtaChannel {
  private error = 0x01;
  private features = 0;
  /** Task-file registers, current and previous ("high order byte") values for LBA48. */
  private count = 1;
  private countHob = 0;
  private lbaLow = 1;
  private lbaLowHob = 0;
  private lbaMid = 0;
  private lbaMidHob = 0;
  private lbaHigh = 0;
  private lbaHighHob = 0;
  private select = 0xa0;
  private status = DRDY | DSC;
  private control = 0;
  private irq = false;
  /**
   * READ/WRITE MULTIPLE block size in sectors (0: disabled). Enabled at the largest
   * size from power-on and reset, as IDENTIFY word 59 says (ATA-6 lets a device
   * start so; qemu's IDE does).
   */
  private multiple = MAX_MULTIPLE;
  /** Translation geometry (INITIALIZE DEVICE PARAMETERS). */
  private heads: number;
  private spt: number;
  private readonly buffer = Buffer.alloc(MAX_MULTIPLE * SECTOR);
  private transfer: Transfer = 'none';
  /** Words moved in the current DRQ block, and its length in words. */
  private index = 0;
  private blockWords = 0;
  /** Next sector of the command and sectors left after the current block. */
  private lba = 0;
  private left = 0;
  private perBlock = 1;
  private readonly sectors: number;

  constructor(
    io: IoBus,
    private readonly disk: BlockDevice,
    private readonly geometry: { cylinders: number; heads: number; sectorsPerTrack: number },
    private readonly setIrq: (level: boolean) => void,
    /** Hand an asynchronous step to the machine, which waits for it before the next instruction. */
    private readonly defer: (p: Promise<void>) => void,
    private readonly readOnly = false,
  ) {
    this.sectors = Math.floor(disk.size / SECTOR);
    this.heads = geometry.heads;
    this.spt = geometry.sectorsPerTrack;
    io.register([0x1f0], { read: () => this.readData() & 0xff, read16: () => this.readData(), read32: () => (this.readData() | (this.readData() << 16)) >>> 0, write: (_p, v) => this.writeData(v), write16: (_p, v) => this.writeData(v), write32: (_p, v) => (this.writeData(v & 0xffff), this.writeData(v >>> 16)) });
    for (let p = 0x1f1; p <= 0x1f7; p++) io.register([p], { read: (port) => this.readReg(port), write: (port, v) => this.writeReg(port, v) });
    io.register([0x3f6], { read: () => this.readReg(0x3f6), write: (_p, v) => this.writeControl(v) });
  }

  /** True when the selected device is the (only) master. */
  private get present(): boolean {
    return (this.select & 0x10) === 0;
  }

  private raise(): void {
    if (this.control & NIEN) return;
    this.irq = true;
    this.setIrq(true);
  }

  private lower(): void {
    if (!this.irq) return;
    this.irq = false;
    this.setIrq(false);
  }

  private readReg(port: number): number {
    if (!this.present) return 0;
    const hob = (this.control & HOB) !== 0;
    switch (port) {
      case 0x1f1: return this.error;
      case 0x1f2: return hob ? this.countHob : this.count;
      case 0x1f3: return hob ? this.lbaLowHob : this.lbaLow;
      case 0x1f4: return hob ? this.lbaMidHob : this.lbaMid;
      case 0x1f5: return hob ? this.lbaHighHob : this.lbaHigh;
      case 0x1f6: return this.select;
      case 0x1f7:
        this.lower();
        return this.status;
      default: return this.status; // 3F6h: alternate status, no interrupt acknowledge
    }
  }

  private writeReg(port: number, v: number): void {
    // Writes to the task file clear HOB in the device control register (ATA-6 7.9.6).
    this.control &= ~HOB;
    switch (port) {
      case 0x1f1: this.features = v; return;
      case 0x1f2: this.countHob = this.count; this.count = v; return;
      case 0x1f3: this.lbaLowHob = this.lbaLow; this.lbaLow = v; return;
      case 0x1f4: this.lbaMidHob = this.lbaMid; this.lbaMid = v; return;
      case 0x1f5: this.lbaHighHob = this.lbaHigh; this.lbaHigh = v; return;
      case 0x1f6: this.select = v | 0xa0; return;
      default: this.command(v);
    }
  }

  private writeControl(v: number): void {
    if (v & SRST && !(this.control & SRST)) this.reset();
    this.control = v;
    if (v & NIEN) this.lower();
  }

  /** Software reset: the ATA signature in the task file, diagnostic code 01h. */
  private reset(): void {
    this.transfer = 'none';
    this.error = 0x01;
    this.count = this.lbaLow = 1;
    this.lbaMid = this.lbaHigh = 0;
    this.select = 0xa0;
    this.status = DRDY | DSC;
    this.multiple = MAX_MULTIPLE;
    this.lower();
  }

  private abort(): void {
    this.transfer = 'none';
    this.error = ABRT;
    this.status = DRDY | ERR; // DSC is command-specific in ATA-6; an abort leaves it clear, as qemu does
    this.raise();
  }

  private done(): void {
    this.transfer = 'none';
    this.error = 0;
    this.status = DRDY | DSC;
    this.raise();
  }

  /** The address the task file names, CHS or LBA28. */
  private address28(): number {
    if (this.select & 0x40) return ((this.select & 0x0f) << 24) | (this.lbaHigh << 16) | (this.lbaMid << 8) | this.lbaLow;
    const c = (this.lbaHigh << 8) | this.lbaMid;
    const h = this.select & 0x0f;
    const s = this.lbaLow;
    if (s === 0 || s > this.spt || h >= this.heads) return -1;
    return (c * this.heads + h) * this.spt + s - 1;
  }

  private address48(): number {
    return (this.lbaHighHob * 2 ** 40) + this.lbaMidHob * 2 ** 32 + this.lbaLowHob * 2 ** 24 + ((this.lbaHigh << 16) | (this.lbaMid << 8) | this.lbaLow);
  }

  /** Put the current position back into the task file (after a command, or at an error). */
  private setAddress(lba: number, ext: boolean): void {
    if (ext) {
      this.lbaLow = lba & 0xff;
      this.lbaMid = (lba >>> 8) & 0xff;
      this.lbaHigh = (lba >>> 16) & 0xff;
      this.lbaLowHob = Math.floor(lba / 2 ** 24) & 0xff;
      this.lbaMidHob = Math.floor(lba / 2 ** 32) & 0xff;
      this.lbaHighHob = Math.floor(lba / 2 ** 40) & 0xff;
    } else if (this.select & 0x40) {
      this.lbaLow = lba & 0xff;
      this.lbaMid = (lba >>> 8) & 0xff;
      this.lbaHigh = (lba >>> 16) & 0xff;
      this.select = (this.select & 0xf0) | ((lba >>> 24) & 0x0f);
    } else {
      const s = (lba % this.spt) + 1;
      const t = Math.floor(lba / this.spt);
      const h = t % this.heads;
      const c = Math.floor(t / this.heads);
      this.lbaLow = s;
      this.lbaMid = c & 0xff;
      this.lbaHigh = (c >> 8) & 0xff;
      this.select = (this.select & 0xf0) | h;
    }
  }

  /**
   * At the end of a transfer the task file names the sector after the last one moved
   * and a count of zero (what qemu's IDE shows; ATA-6 leaves a successful command's
   * address undefined).
   */
  private finishAddress(): void {
    this.setAddress(this.lba, this.ext);
    this.count = 0;
    if (this.ext) this.countHob = 0;
  }

  private command(cmd: number): void {
    if (!this.present) return;
    this.lower();
    this.error = 0;
    switch (cmd) {
      case 0xec: return this.identify();
      case 0x20: case 0x21: return this.startRead(false, 1);
      case 0x24: return this.startRead(true, 1);
      case 0xc4: return this.multiple ? this.startRead(false, this.multiple) : this.abort();
      case 0x29: return this.multiple ? this.startRead(true, this.multiple) : this.abort();
      case 0x30: case 0x31: return this.startWrite(false, 1);
      case 0x34: return this.startWrite(true, 1);
      case 0xc5: return this.multiple ? this.startWrite(false, this.multiple) : this.abort();
      case 0x39: return this.multiple ? this.startWrite(true, this.multiple) : this.abort();
      case 0xc6: {
        const n = this.count;
        if (n > MAX_MULTIPLE || (n & (n - 1)) !== 0) return this.abort();
        this.multiple = n;
        return this.done();
      }
      case 0x91:
        // INITIALIZE DEVICE PARAMETERS: heads from the device register, sectors per track from the count.
        if (this.count === 0) return this.abort();
        this.heads = (this.select & 0x0f) + 1;
        this.spt = this.count;
        return this.done();
      case 0x40: case 0x41: case 0x42: {
        // READ VERIFY: check the range exists, move no data.
        const ext = cmd === 0x42;
        const lba = ext ? this.address48() : this.address28();
        const n = ext ? ((this.countHob << 8) | this.count) || 65536 : this.count || 256;
        if (lba < 0 || lba + n > this.sectors) return this.notFound(lba, ext);
        return this.done();
      }
      case 0x70: case 0x10: case 0xef: return this.done();
      case 0xe5: case 0x98:
        this.count = 0xff; // active or idle
        return this.done();
      case 0xe7: case 0xea:
        this.status = BSY;
        this.defer(this.disk.flush().then(() => this.done(), () => this.abort()));
        return;
      default: return this.abort();
    }
  }

  private notFound(lba: number, ext: boolean): void {
    if (lba >= 0) this.setAddress(Math.min(lba, this.sectors), ext);
    this.transfer = 'none';
    this.error = IDNF | ABRT;
    this.status = DRDY | DSC | ERR;
    this.raise();
  }

  private identify(): void {
    const w = new Uint16Array(256);
    const g = this.geometry;
    const str = (at: number, words: number, text: string): void => {
      const s = text.padEnd(words * 2, ' ');
      for (let i = 0; i < words; i++) w[at + i] = (s.charCodeAt(2 * i) << 8) | s.charCodeAt(2 * i + 1);
    };
    const chs = Math.min(this.sectors, g.cylinders * g.heads * g.sectorsPerTrack);
    const lba28 = Math.min(this.sectors, 0x0fffffff);
    w[0] = 0x0040; // fixed device
    w[1] = g.cylinders;
    w[3] = g.heads;
    w[6] = g.sectorsPerTrack;
    str(10, 10, 'VD00000001');
    str(23, 4, '1.0');
    str(27, 20, 'VDISK HARDDISK');
    w[47] = 0x8000 | MAX_MULTIPLE;
    w[49] = 1 << 9; // LBA
    w[50] = 0x4000;
    w[51] = 0x0200; // PIO timing mode 2
    w[53] = 0x0001; // words 54-58 valid
    w[54] = g.cylinders;
    w[55] = this.heads;
    w[56] = this.spt;
    w[57] = chs & 0xffff;
    w[58] = chs >>> 16;
    w[59] = this.multiple ? 0x100 | this.multiple : 0;
    w[60] = lba28 & 0xffff;
    w[61] = lba28 >>> 16;
    w[80] = 0x007e; // ATA-1 to ATA-6
    w[82] = 1 << 14; // NOP
    w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); // FLUSH CACHE EXT, FLUSH CACHE, 48-bit
    w[84] = 1 << 14;
    w[85] = 1 << 14;
    w[86] = (1 << 13) | (1 << 12) | (1 << 10);
    w[87] = 1 << 14;
    for (let i = 0; i < 4; i++) w[100 + i] = Math.floor(this.sectors / 2 ** (16 * i)) & 0xffff;
    Buffer.from(w.buffer).copy(this.buffer);
    this.transfer = 'read';
    this.sectorData = false;
    this.index = 0;
    this.blockWords = 256;
    this.left = 0;
    this.status = DRDY | DSC | DRQ;
    this.raise();
  }

  private startRead(ext: boolean, perBlock: number): void {
    const lba = ext ? this.address48() : this.address28();
    const n = ext ? ((this.countHob << 8) | this.count) || 65536 : this.count || 256;
    if (lba < 0 || lba + n > this.sectors) return this.notFound(lba, ext);
    this.lba = lba;
    this.left = n;
    this.perBlock = perBlock;
    this.ext = ext;
    this.transfer = 'read';
    this.sectorData = true;
    this.loadBlock();
  }

  private ext = false;
  /** The read in progress moves sectors (not IDENTIFY data): its end updates the address. */
  private sectorData = false;

  /** Read the next DRQ block from the disk (BSY until it is in the buffer). */
  private loadBlock(): void {
    const n = Math.min(this.perBlock, this.left);
    this.status = BSY;
    const lba = this.lba;
    this.defer(
      this.disk.read(this.buffer.subarray(0, n * SECTOR), lba * SECTOR).then(
        () => {
          this.lba += n;
          this.left -= n;
          this.index = 0;
          this.blockWords = (n * SECTOR) / 2;
          this.status = DRDY | DSC | DRQ;
          this.raise();
        },
        () => this.notFound(lba, this.ext),
      ),
    );
  }

  private readData(): number {
    if (!this.present || this.transfer !== 'read' || !(this.status & DRQ)) return 0xffff;
    const v = this.buffer.readUInt16LE(this.index * 2);
    if (++this.index === this.blockWords) {
      if (this.left > 0) this.loadBlock();
      else {
        if (this.sectorData) this.finishAddress();
        this.transfer = 'none';
        this.status = DRDY | DSC;
      }
    }
    return v;
  }

  private startWrite(ext: boolean, perBlock: number): void {
    const lba = ext ? this.address48() : this.address28();
    const n = ext ? ((this.countHob << 8) | this.count) || 65536 : this.count || 256;
    if (lba < 0 || lba + n > this.sectors) return this.notFound(lba, ext);
    if (this.readOnly) return this.abort();
    this.lba = lba;
    this.left = n;
    this.perBlock = perBlock;
    this.ext = ext;
    this.transfer = 'write';
    this.openWriteBlock();
    // PIO out: the first block is asked for without an interrupt.
  }

  private openWriteBlock(): void {
    const n = Math.min(this.perBlock, this.left);
    this.index = 0;
    this.blockWords = (n * SECTOR) / 2;
    this.status = DRDY | DSC | DRQ;
  }

  private writeData(v: number): void {
    if (!this.present || this.transfer !== 'write' || !(this.status & DRQ)) return;
    this.buffer.writeUInt16LE(v & 0xffff, this.index * 2);
    if (++this.index < this.blockWords) return;
    const n = this.blockWords / 256;
    const lba = this.lba;
    this.status = BSY;
    this.defer(
      this.disk.write(this.buffer.subarray(0, n * SECTOR), lba * SECTOR).then(
        () => {
          this.lba += n;
          this.left -= n;
          if (this.left > 0) this.openWriteBlock();
          else {
            this.finishAddress();
            this.transfer = 'none';
            this.status = DRDY | DSC;
          }
          this.raise();
        },
        () => this.notFound(lba, this.ext),
      ),
    );
  }

  saveState(w: StateWriter): void {
    w.u8(this.error).u8(this.features).u8(this.count).u8(this.countHob).u8(this.lbaLow).u8(this.lbaLowHob).u8(this.lbaMid).u8(this.lbaMidHob).u8(this.lbaHigh).u8(this.lbaHighHob);
    w.u8(this.select).u8(this.status).u8(this.control).bool(this.irq).u32(this.multiple).u8(this.heads).u8(this.spt);
    w.u32(this.transfer === 'none' ? 0 : this.transfer === 'read' ? 1 : 2).u32(this.index).u32(this.blockWords).f64(this.lba).u32(this.left).u32(this.perBlock).bool(this.ext).bool(this.sectorData);
    w.raw(this.buffer);
  }

  loadState(r: StateReader): void {
    this.error = r.u8('ATA error');
    this.features = r.u8('ATA features');
    this.count = r.u8('ATA count');
    this.countHob = r.u8('ATA count');
    this.lbaLow = r.u8('ATA LBA');
    this.lbaLowHob = r.u8('ATA LBA');
    this.lbaMid = r.u8('ATA LBA');
    this.lbaMidHob = r.u8('ATA LBA');
    this.lbaHigh = r.u8('ATA LBA');
    this.lbaHighHob = r.u8('ATA LBA');
    this.select = r.u8('ATA device');
    this.status = r.u8('ATA status');
    this.control = r.u8('ATA control');
    this.irq = r.bool('ATA interrupt');
    this.multiple = r.uint('ATA multiple', MAX_MULTIPLE);
    this.heads = Math.max(1, r.u8('ATA heads'));
    this.spt = Math.max(1, r.u8('ATA sectors per track'));
    const t = r.uint('ATA transfer', 2);
    this.transfer = t === 0 ? 'none' : t === 1 ? 'read' : 'write';
    this.index = r.uint('ATA data index', 256 * MAX_MULTIPLE);
    this.blockWords = r.uint('ATA block words', 256 * MAX_MULTIPLE);
    if (this.index > this.blockWords) this.index = this.blockWords;
    this.lba = r.f64('ATA next sector');
    if (!Number.isSafeInteger(this.lba) || this.lba < 0) throw new VdiskError('E_CORRUPT', `${r.what}: ATA next sector ${this.lba} is not a sector number`);
    this.left = r.u32('ATA sectors left');
    this.perBlock = Math.max(1, r.uint('ATA block sectors', MAX_MULTIPLE));
    this.ext = r.bool('ATA ext');
    this.sectorData = r.bool('ATA sector data');
    // The interrupt line's level is part of the PIC's own state.
    this.buffer.set(r.raw(this.buffer.length, 'ATA buffer'));
  }
}
