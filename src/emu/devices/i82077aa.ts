/**
 * Intel 82077AA floppy disk controller (ports 3F2h DOR, 3F4h MSR, 3F5h FIFO, 3F7h
 * DIR/CCR, IRQ 6, DMA channel 2) with drive A as a BlockDevice: the commands a PC
 * BIOS issues (82077AA data sheet, "Command Set"): SPECIFY, SENSE DRIVE STATUS,
 * RECALIBRATE, SENSE INTERRUPT STATUS (with the four polling interrupts after a
 * reset), SEEK, READ ID, READ DATA and WRITE DATA through DMA, VERSION, CONFIGURE,
 * LOCK, PERPENDICULAR MODE, DUMPREG; anything else answers "invalid". A data
 * transfer runs for as many sectors as the DMA channel's count allows, from the CHS
 * address on; disk I/O is asynchronous (the machine awaits it, as for ATA). Data
 * rates are not checked against the media.
 */
import type { BlockDevice } from '../../device/block-device.js';
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';
import type { I8237 } from './i8237.js';

const SECTOR = 512;
const DMA_CHANNEL = 2;
/** DOR bits. */
const DOR_RESET = 0x04;
const DOR_DMA_IRQ = 0x08;
/** MSR bits. */
const RQM = 0x80;
const DIO = 0x40;
const CB = 0x10;
/** ST0: interrupt code 11b after a reset's polling, 10b invalid command, SE seek end. */
const ST0_POLL = 0xc0;
const ST0_INVALID = 0x80;
const ST0_ABNORMAL = 0x40;
const ST0_SEEK_END = 0x20;
/** ST1 bits. */
const ST1_NOT_WRITABLE = 0x02;
const ST1_NO_DATA = 0x04;
/** The VERSION command's answer for an 82077AA. */
const VERSION_82077 = 0x90;

/** Parameter bytes after each command's opcode (low 5 bits), and result bytes. */
const COMMANDS: Record<number, [params: number, results: number]> = {
  0x03: [2, 0], // SPECIFY
  0x04: [1, 1], // SENSE DRIVE STATUS
  0x05: [8, 7], // WRITE DATA
  0x06: [8, 7], // READ DATA
  0x07: [1, 0], // RECALIBRATE
  0x08: [0, 2], // SENSE INTERRUPT STATUS
  0x0a: [1, 7], // READ ID
  0x0e: [0, 10], // DUMPREG
  0x0f: [2, 0], // SEEK
  0x10: [0, 1], // VERSION
  0x12: [1, 0], // PERPENDICULAR MODE
  0x13: [3, 0], // CONFIGURE
  0x14: [0, 1], // LOCK (bit 7 of the opcode: lock or unlock)
};

/** The floppy controller with one drive. */
export class I82077aa implements Stateful {
  private dor = 0;
  private command: number[] = [];
  private results: number[] = [];
  /** SENSE INTERRUPT STATUS answers owed: [ST0, present cylinder]. */
  private pending: [number, number][] = [];
  private cylinder = 0;
  private busy = false;
  private specify = [0, 0];
  private configure = [0, 0, 0];
  private locked = false;
  private dataRate = 0;

  constructor(
    io: IoBus,
    private readonly disk: BlockDevice | null,
    private readonly geometry: { heads: number; sectorsPerTrack: number },
    private readonly dma: I8237,
    private readonly raiseIrq: () => void,
    /** Hand an asynchronous step to the machine, which waits for it before the next instruction. */
    private readonly defer: (p: Promise<void>) => void,
    private readonly readOnly: boolean,
  ) {
    io.register([0x3f2], { read: () => this.dor, write: (_p, v) => this.writeDor(v) });
    io.register([0x3f4], { read: () => this.msr(), write: (_p, v) => this.dataRateSelect(v) });
    io.register([0x3f5], { read: () => this.readFifo(), write: (_p, v) => this.writeFifo(v) });
    // DIR bit 7: disk changed (never: the medium stays in); CCR: the data rate.
    io.register([0x3f7], { read: () => 0x00, write: (_p, v) => (this.dataRate = v & 3) });
  }

  private writeDor(v: number): void {
    const wasReset = !(this.dor & DOR_RESET);
    this.dor = v;
    if (!(v & DOR_RESET)) {
      this.command = [];
      this.results = [];
      this.busy = false;
    } else if (wasReset) {
      // Leaving reset: one interrupt, and a polling status for each of the four drives.
      this.pending = [0, 1, 2, 3].map((d) => [ST0_POLL | d, 0]);
      this.interrupt();
    }
  }

  private dataRateSelect(v: number): void {
    this.dataRate = v & 3;
    if (v & 0x80) {
      // Software reset through DSR.
      this.writeDor(this.dor & ~DOR_RESET);
      this.writeDor(this.dor | DOR_RESET);
    }
  }

  private interrupt(): void {
    if (this.dor & DOR_DMA_IRQ) this.raiseIrq();
  }

  private msr(): number {
    if (this.busy) return CB;
    if (this.results.length) return RQM | DIO | CB;
    return this.command.length ? RQM | CB : RQM;
  }

  private readFifo(): number {
    if (!this.results.length) return 0xff;
    return this.results.shift()!;
  }

  private writeFifo(v: number): void {
    if (this.busy || this.results.length || !(this.dor & DOR_RESET)) return;
    this.command.push(v);
    const op = this.command[0]! & 0x1f;
    const shape = COMMANDS[op];
    if (!shape) {
      this.command = [];
      this.results = [ST0_INVALID];
      return;
    }
    if (this.command.length < shape[0] + 1) return;
    const cmd = this.command;
    this.command = [];
    this.execute(cmd);
  }

  private execute(cmd: number[]): void {
    const op = cmd[0]! & 0x1f;
    const drive = (cmd[1] ?? 0) & 3;
    const head = ((cmd[1] ?? 0) >> 2) & 1;
    switch (op) {
      case 0x03:
        this.specify = [cmd[1]!, cmd[2]!];
        return;
      case 0x04:
        // ST3: ready, track 0, two-sided, write protect as the drive is opened.
        this.results = [0x20 | (this.cylinder === 0 ? 0x10 : 0) | 0x08 | (this.readOnly ? 0x40 : 0) | (head << 2) | drive];
        return;
      case 0x07:
        this.cylinder = 0;
        this.pending = [[ST0_SEEK_END | drive, 0]];
        this.interrupt();
        return;
      case 0x08: {
        const p = this.pending.shift();
        this.results = p ? [p[0], p[1]] : [ST0_INVALID];
        return;
      }
      case 0x0f:
        this.cylinder = cmd[2]!;
        this.pending = [[ST0_SEEK_END | (head << 2) | drive, this.cylinder]];
        this.interrupt();
        return;
      case 0x0a:
        this.finish(drive === 0 && this.disk ? [(head << 2) | drive, 0, 0, this.cylinder, head, 1, 2] : [ST0_ABNORMAL | (head << 2) | drive, ST1_NO_DATA, 0, this.cylinder, head, 1, 2]);
        return;
      case 0x05:
      case 0x06:
        this.transfer(cmd, op === 0x06);
        return;
      case 0x0e:
        this.results = [this.cylinder, 0, 0, 0, this.specify[0]!, this.specify[1]!, 0, (this.locked ? 0x80 : 0), this.configure[1]!, this.configure[2]!];
        return;
      case 0x10:
        this.results = [VERSION_82077];
        return;
      case 0x12:
        return;
      case 0x13:
        this.configure = [cmd[1]!, cmd[2]!, cmd[3]!];
        return;
      case 0x14:
        this.locked = (cmd[0]! & 0x80) !== 0;
        this.results = [this.locked ? 0x10 : 0];
        return;
      default:
        this.results = [ST0_INVALID];
    }
  }

  /** End an execution phase: the result bytes and the interrupt. */
  private finish(results: number[]): void {
    this.busy = false;
    this.results = results;
    this.interrupt();
  }

  /** READ DATA / WRITE DATA: C, H, R, N, EOT, GPL, DTL in cmd[2..8]. */
  private transfer(cmd: number[], read: boolean): void {
    const drive = cmd[1]! & 3;
    const head = (cmd[1]! >> 2) & 1;
    const [c, h, r, n] = [cmd[2]!, cmd[3]!, cmd[4]!, cmd[5]!];
    const g = this.geometry;
    const fail = (st1: number): void => this.finish([ST0_ABNORMAL | (head << 2) | drive, st1, 0, c, h, r, n]);
    if (drive !== 0 || !this.disk || n !== 2 || r < 1 || r > g.sectorsPerTrack || h >= g.heads) return fail(ST1_NO_DATA);
    if (!read && this.readOnly) return fail(ST1_NOT_WRITABLE);
    const lba = (c * g.heads + h) * g.sectorsPerTrack + (r - 1);
    const total = Math.floor(this.disk.size / SECTOR);
    // The DMA count decides how many sectors move (terminal count ends the command).
    const want = this.dmaBytes();
    const sectors = Math.min(Math.ceil(want / SECTOR), total - lba);
    if (sectors <= 0) return fail(ST1_NO_DATA);
    const buf = new Uint8Array(sectors * SECTOR);
    this.busy = true;
    const end = (): void => {
      // The address after the last sector moved, as the chip reports it.
      const next = lba + sectors;
      const s = next % g.sectorsPerTrack;
      const t = Math.floor(next / g.sectorsPerTrack);
      this.cylinder = Math.floor(t / g.heads);
      this.finish([(head << 2) | drive, 0, 0, this.cylinder, t % g.heads, s + 1, n]);
    };
    const disk = this.disk;
    if (read) {
      this.defer(
        disk.read(buf, lba * SECTOR).then(
          () => {
            this.dma.transfer(DMA_CHANNEL, buf, true);
            end();
          },
          () => fail(ST1_NO_DATA),
        ),
      );
    } else {
      this.dma.transfer(DMA_CHANNEL, buf, false);
      this.defer(disk.write(buf, lba * SECTOR).then(end, () => fail(ST1_NO_DATA)));
    }
  }

  /** Bytes channel 2 is programmed to move (count + 1), without moving them. */
  private dmaBytes(): number {
    return this.dma.pendingBytes(DMA_CHANNEL);
  }

  saveState(w: StateWriter): void {
    w.u8(this.dor).bytes(Uint8Array.from(this.command)).bytes(Uint8Array.from(this.results));
    w.u32(this.pending.length);
    for (const [st0, pcn] of this.pending) w.u8(st0).u8(pcn);
    w.u8(this.cylinder).bool(this.busy).u8(this.specify[0]!).u8(this.specify[1]!).raw(Uint8Array.from(this.configure)).bool(this.locked).u8(this.dataRate);
  }
  loadState(r: StateReader): void {
    this.dor = r.u8('FDC DOR');
    this.command = [...r.bytes('FDC command bytes', 9)];
    this.results = [...r.bytes('FDC result bytes', 10)];
    const n = r.uint('FDC pending interrupts', 4);
    this.pending = [];
    for (let i = 0; i < n; i++) this.pending.push([r.u8('FDC ST0'), r.u8('FDC cylinder')]);
    this.cylinder = r.u8('FDC cylinder');
    this.busy = r.bool('FDC busy');
    this.specify = [r.u8('FDC specify'), r.u8('FDC specify')];
    this.configure = [...r.raw(3, 'FDC configure')];
    this.locked = r.bool('FDC lock');
    this.dataRate = r.u8('FDC data rate') & 3;
  }
}
