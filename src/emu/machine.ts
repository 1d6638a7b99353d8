/**
 * The PC: memory, port bus, CPU, chipset devices and the BIOS wired together,
 * with an asynchronous run loop that advances a virtual clock, awaits disk I/O,
 * and stops on an expected text, a timeout, a halt or a triple fault.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { BlockDevice } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { loadMachineState, saveMachineState, type MachineParts } from './state/machine-state.js';
import type { StateReader, StateWriter } from './state/codec.js';
import { section } from './state/file.js';
import { Bios } from './bios/index.js';
import { ConsoleMirror } from './console.js';
import { floppyDrive, hardDrive, type Drive } from './bios/disk.js';
import { CS, IF } from './consts.js';
import { Cpu } from './cpu.js';
import { CMOS_BOOT_FLAGS, CMOS_BOOT_ORDER, Cmos } from './devices/cmos.js';
import { I8042, typeText } from './devices/i8042.js';
import { Pic8259Pair } from './devices/pic8259.js';
import { PIT_HZ, Pit8254 } from './devices/pit8254.js';
import { Uart16550 } from './devices/uart16550.js';
import { Vga } from './devices/vga.js';
import { AtaChannel } from './devices/ata.js';
import { PciBus, i440fxPiix3, stdVga } from './devices/pci.js';
import { PAM0, Pam, SHADOW_SIZE } from './devices/i440fx-pam.js';
import { DebugCon } from './devices/debugcon.js';
import { I8237 } from './devices/i8237.js';
import { FwCfg } from './devices/fw-cfg.js';
import { I82077aa } from './devices/i82077aa.js';
import { loadLinux, type LinuxImage } from './linux.js';
import { IoBus } from './io.js';
import { Memory } from './memory.js';

/** Options for {@link Machine} and `boot()`. */
export interface MachineOptions {
  /** Hard disk (drive 80h). */
  disk?: BlockDevice | null;
  /** Floppy (drive 00h); booted first when present. */
  floppy?: BlockDevice | null;
  /** Guest memory in MiB (default 16). */
  memoryMiB?: number;
  /**
   * Stop successfully once the console shows these, in order: a string is found as
   * it is, a RegExp is matched; each is looked for in the console output after the
   * previous one's match (and on the screen as it is now, for guests that write video
   * memory directly).
   */
  expect?: string | RegExp | readonly (string | RegExp)[];
  /** Wall-clock limit in milliseconds (default: none). */
  timeoutMs?: number;
  /**
   * Text typed into the keyboard, one key each time the guest waits for input; as
   * steps, each step's text is typed once its `after` pattern (if any) shows on the
   * console after the previous step's.
   */
  keys?: string | readonly KeyStep[];
  /** Stop after this many instructions of this run (a resumed one counts from where it resumed; default: none). */
  maxInstructions?: number;
  /** Wall-clock time in milliseconds after which the run stops (outcome `stopped`), to save its state. */
  stopAfterMs?: number;
  /** Diagnostic messages (unknown opcodes, unsupported BIOS calls). */
  debug?: (msg: string) => void;
  /** Boot this Linux kernel directly (like qemu's `-kernel`) instead of a disk's boot sector; disks are still attached. */
  linux?: LinuxImage;
  /**
   * A real PC firmware image (SeaBIOS's bios.bin) to run instead of our own BIOS: it
   * is mapped so that it ends at 4 GiB and its last 128 KiB show at E0000h-FFFFFh
   * through the 440FX's PAM registers, and the CPU starts at its reset vector.
   */
  firmware?: Uint8Array;
  /** With `firmware`: a VGA BIOS (vgabios-stdvga.bin) for a PCI VGA's expansion ROM; without one the firmware finds no VGA. */
  vgaBios?: Uint8Array;
}

/** Keys to type once `after` (if given) appears on the console. */
export interface KeyStep {
  after?: string | RegExp;
  text: string;
}

/** How a run ended. */
export type BootOutcome = 'expect' | 'timeout' | 'halt' | 'triple-fault' | 'reset' | 'no-boot' | 'unsupported' | 'stopped' | 'limit';

/** The result of a run. */
export interface BootResult {
  outcome: BootOutcome;
  /** Human-readable reason, with CS:IP where it applies. */
  message: string;
  cs: number;
  ip: number;
  /** The last screen, 25 lines. */
  screen: string[];
  /** Everything the guest sent to COM1 (latin1). */
  serial: string;
  /** The console as the terminal shows it: screen teletype and COM1 merged, each line once. */
  console: string;
  instructions: number;
  elapsedMs: number;
}

/** Virtual CPU speed: instructions per second of guest time (the PIT and RTC follow it). */
const VIRTUAL_IPS = 100_000_000;
const PIT_TICKS_PER_INSTRUCTION = PIT_HZ / VIRTUAL_IPS;
/** The state of a part this machine does not have (an IDE channel when only a floppy boots). */
const NO_STATE = { saveState: (): void => {}, loadState: (): void => {} };

function sha256(b: Uint8Array): Buffer {
  return createHash('sha256').update(b).digest();
}

/** Instructions between keys typed under real firmware (10 ms of virtual time). */
const KEY_GAP = 1_000_000;
/** Instructions per batch between device updates. */
const BATCH = 20_000;
/** Yield to the event loop this often (ms of wall time). */
const YIELD_MS = 25;

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

/** Find `p` in `text` from `from`: the end of the match, or -1. */
function matchFrom(p: string | RegExp, text: string, from: number): number {
  if (typeof p === 'string') {
    const i = text.indexOf(p, from);
    return i < 0 ? -1 : i + p.length;
  }
  const re = new RegExp(p.source, p.flags.replace(/[gy]/g, '') + 'g');
  re.lastIndex = from;
  const m = re.exec(text);
  return m ? m.index + m[0].length : -1;
}

/** How a pattern is named in messages. */
export function patternText(p: string | RegExp): string {
  return typeof p === 'string' ? p : p.source;
}

/**
 * A PC that boots from a floppy or hard disk. Events: `serial` (string, bytes the
 * guest sends to COM1), `tty` (string, characters written with INT 10h teletype),
 * `console` (string, the two merged as a terminal shows them, see `ConsoleMirror` in console.ts),
 * `debug` (string).
 */
export class Machine extends EventEmitter {
  readonly mem: Memory;
  readonly io = new IoBus();
  readonly cpu: Cpu;
  readonly pic: Pic8259Pair;
  readonly pit: Pit8254;
  readonly cmos: Cmos;
  readonly uart: Uart16550;
  readonly kbc: I8042;
  readonly vga: Vga;
  private readonly pci: PciBus;
  /** qemu's firmware configuration device, when real firmware runs. @internal */
  readonly fwCfg: FwCfg | null = null;
  /** The DMA controllers and the floppy controller, when real firmware runs. */
  private readonly dma: I8237 | null = null;
  /** The floppy controller, when real firmware runs. @internal */
  readonly fdc: I82077aa | null = null;
  /** Shadow RAM control, when real firmware runs (our BIOS writes its ROM into RAM itself). */
  private readonly pam: Pam | null = null;
  /** The primary IDE channel, with the hard disk as master (none when booting a floppy only). */
  private readonly ata: AtaChannel | null;
  readonly bios: Bios;
  /**
   * Virtual time in PIT ticks, updated after each batch: `clockBase` plus the instructions
   * since `clockInstr` (a function of the instruction count, so a run split by a save and
   * restore counts exactly the same time as one that was not).
   */
  private clock = 0;
  private clockBase = 0;
  private clockInstr = 0;
  /** Instruction count the current batch runs to, when a stop cut it short (0: start a new one). */
  private batchEnd = 0;
  private idleSpins = 0;
  private bootTime = Date.now();
  /** True once a saved state has been loaded: run() resumes instead of powering on. */
  private resumed = false;
  /** The console mirror's state when the run stopped, before its final flush. */
  private mirrorAtStop: Uint8Array | null = null;
  private serialText = '';
  private outcome: { kind: BootOutcome; message: string } | null = null;
  private readonly keyQueue: number[][] = [];
  private keyWanted = false;
  /** Instruction count when the last key went in (firmware mode paces keys by it). */
  private lastKeyAt = 0;
  private outputDirty = false;
  private consoleText = '';
  private readonly mirror = new ConsoleMirror((t) => {
    this.consoleText += t;
    this.emit('console', t);
  });
  private readonly expects: readonly (string | RegExp)[];
  /** How many expectations have matched, and where in the console the last one ended. */
  private expectNext = 0;
  private expectPos = 0;
  private readonly keySteps: KeyStep[];
  private keyStepNext = 0;
  private keyPos = 0;

  constructor(private readonly opts: MachineOptions) {
    super();
    const mib = opts.memoryMiB ?? 16;
    this.mem = new Memory(mib);
    this.cpu = new Cpu(this.mem, this.io);
    this.pic = new Pic8259Pair(this.io);
    this.pic.onChange = (on) => this.cpu.setIrq(on);
    this.cpu.intr = this.pic;
    const now = (): number => this.clock;
    this.pit = new Pit8254(this.io, now, () => this.pic.raise(0));
    this.cmos = new Cmos(this.io, () => this.bootTime + (this.clock / PIT_HZ) * 1000);
    this.uart = new Uart16550(this.io, 0x3f8, (level) => this.pic.setLine(4, level));
    this.uart.onTransmit = (b) => {
      const ch = String.fromCharCode(b);
      this.serialText += ch;
      this.outputDirty = true;
      this.mirror.write('serial', ch);
      this.emit('serial', ch);
    };
    this.kbc = new I8042(
      this.io,
      () => this.pic.raise(1),
      () => this.pic.raise(12),
      (on) => (this.mem.a20 = on),
      () => this.mem.a20,
      () => this.finish('reset', 'the guest reset the machine'),
    );
    this.vga = new Vga(this.io, this.mem);
    // Port 80h POST codes and the i8237 DMA page registers: accepted, ignored.
    this.io.register([0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8a, 0x8b, 0x8f], { read: () => 0xff, write: () => {} });
    this.io.register([0xed], { read: () => 0xff, write: () => {} });

    const drives = new Map<number, Drive>();
    if (opts.floppy) drives.set(0x00, floppyDrive(0x00, opts.floppy));
    if (opts.disk) drives.set(0x80, hardDrive(0x80, opts.disk));
    if (opts.linux && opts.firmware) throw new VdiskError('E_USAGE', '--kernel is loaded by our own BIOS; it cannot be combined with --bios');
    if (drives.size === 0 && !opts.linux) throw new VdiskError('E_USAGE', 'boot needs a hard disk image or --floppy');
    this.pci = new PciBus(this.io);
    const chipset = i440fxPiix3(this.pci);
    if (opts.firmware) this.pam = this.firmware(opts.firmware, chipset.host, mib, drives);
    const hd = drives.get(0x80);
    // Disk steps of the IDE channel run as the BIOS's do: the batch ends and the run loop awaits them.
    const defer = (p: Promise<void>): void => {
      const before = this.bios?.pending;
      this.bios.pending = before ? before.then(() => p) : p;
      this.cpu.requestStop();
    };
    if (opts.firmware) {
      // Real firmware drives the floppy through the controller and DMA (our BIOS reads the image itself).
      this.dma = new I8237(this.io, this.mem.ram);
      const fd = drives.get(0x00);
      this.fdc = new I82077aa(this.io, fd?.device ?? null, fd ?? { heads: 2, sectorsPerTrack: 18 }, this.dma, () => this.pic.raise(6), defer, opts.floppy?.readOnly ?? false);
    }
    this.ata = hd ? new AtaChannel(this.io, hd.device, hd, (level) => this.pic.setLine(14, level), defer, opts.disk?.readOnly ?? false) : null;
    this.bios = new Bios(
      {
        cpu: this.cpu,
        mem: this.mem,
        io: this.io,
        vga: this.vga,
        cmos: this.cmos,
        memoryBytes: mib * 1024 * 1024,
        tty: (ch) => {
          this.outputDirty = true;
          const t = String.fromCharCode(ch);
          this.mirror.write('tty', t);
          this.emit('tty', t);
        },
        keyWanted: () => (this.keyWanted = true),
        stop: (kind, message) => this.finish(kind, message),
        debug: (m) => this.debugLog(m),
      },
      drives,
    );
    this.cpu.trap = (c, n) => this.bios.trap(c, n);
    this.cpu.onUndefined = (_c, cs, ip) => this.debugLog(`#UD: undefined opcode at ${hex4(cs)}:${ip >>> 0 > 0xffff ? (ip >>> 0).toString(16).toUpperCase().padStart(8, "0") : hex4(ip)}`);
    this.cpu.onUnknownMsr = (c, msr, write) => this.debugLog(`#GP: ${write ? 'WRMSR' : 'RDMSR'} of unknown MSR ${msr.toString(16).padStart(8, '0')}h at ${hex4(c.sreg[1]!)}:${(c.startEip >>> 0).toString(16)}`);
    const e = opts.expect;
    this.expects = e === undefined || e === '' ? [] : typeof e === 'string' || e instanceof RegExp ? [e] : [...e];
    this.keySteps = typeof opts.keys === 'string' ? [{ text: opts.keys }] : [...(opts.keys ?? [])];
  }

  /**
   * Set the machine up for real firmware: the flash at the top of 4 GiB, its last
   * 128 KiB behind the PAM at E0000h, qemu's debug console, and the CMOS bytes a
   * PC's setup program would have stored (SeaBIOS reads memory sizes and boot order
   * there when qemu's fw_cfg interface is absent, as it is here).
   */
  private firmware(image: Uint8Array, host: { config: Uint8Array; onWrite: ((at: number, size: number) => void) | null }, mib: number, drives: Map<number, Drive>): Pam {
    if (image.length < 0x20000 || image.length % 0x10000 !== 0 || image.length > 0x1000000) {
      throw new VdiskError('E_USAGE', `a firmware image must be a multiple of 64 KiB from 128 KiB to 16 MiB, not ${image.length} bytes`);
    }
    this.mem.mapFlash(image);
    const rom = new Uint8Array(SHADOW_SIZE);
    rom.set(image.subarray(image.length - 0x20000), SHADOW_SIZE - 0x20000);
    const pam = new Pam(this.mem.ram, rom);
    host.onWrite = (at, size) => {
      if (at + size > PAM0 && at < PAM0 + 7) pam.update((i) => host.config[i]!);
    };
    new DebugCon(this.io, (line) => this.debugLog(`firmware: ${line}`));
    (this as { fwCfg: FwCfg | null }).fwCfg = new FwCfg(this.io);
    if (this.opts.vgaBios) {
      const vga = stdVga(this.pci, this.opts.vgaBios);
      this.mem.mapWindow((a) => vga.readRom(a));
    }
    if (this.opts.debug) {
      // Ports no device claims: logged once per port and direction (firmware probes many that a PC leaves empty).
      const seen = new Set<number>();
      this.io.onUnclaimed = (port, write, value) => {
        const key = write ? port | 0x10000 : port;
        if (seen.has(key)) return;
        seen.add(key);
        this.debugLog(write ? `unclaimed port ${port.toString(16)}h written ${value.toString(16)}h` : `unclaimed port ${port.toString(16)}h read`);
      };
    }
    const floppy = drives.get(0);
    this.cmos.configure(mib * 1024 * 1024, floppy?.floppyType ?? 0, drives.has(0x80));
    // Boot order as qemu stores it (CMOS 3Dh low nibble first, then high, then 38h bits 4-7):
    // 1 floppy, 2 hard disk; floppy first as our own BIOS does. 38h bit 0 stays clear: a floppy needs its boot signature.
    this.cmos.ram[CMOS_BOOT_ORDER] = floppy ? 0x21 : 0x02;
    this.cmos.ram[CMOS_BOOT_FLAGS] = 0x00;
    return pam;
  }

  /** The parts a saved state is made of (for the state file's encoder). */
  private parts(): MachineParts {
    const stopped = this.mirrorAtStop;
    const console = stopped ? { saveState: (w: StateWriter) => w.raw(stopped), loadState: (r: StateReader) => this.mirror.loadState(r) } : this.mirror;
    const firmware = this.pam ? { saveState: (w: StateWriter) => this.saveFirmware(w), loadState: (r: StateReader) => this.loadFirmware(r) } : null;
    return { cpu: this.cpu, mem: this.mem, pic: this.pic, pit: this.pit, cmos: this.cmos, uart: this.uart, kbc: this.kbc, vga: this.vga, bios: this.bios, console, pci: this.pci, ide: this.ata ?? NO_STATE, firmware, machine: this };
  }

  /** The firmware files' SHA-256 (a state resumes only on the same ones), key pacing, then shadow RAM, DMA, floppy controller, fw_cfg. */
  private saveFirmware(w: StateWriter): void {
    w.raw(sha256(this.opts.firmware!)).raw(sha256(this.opts.vgaBios ?? new Uint8Array())).f64(this.lastKeyAt);
    for (const part of [this.pam!, this.dma!, this.fdc!, this.fwCfg!]) part.saveState(w);
  }
  private loadFirmware(r: StateReader): void {
    const fw = r.raw(32, 'firmware SHA-256');
    const vga = r.raw(32, 'VGA BIOS SHA-256');
    if (Buffer.compare(fw, sha256(this.opts.firmware!)) !== 0 || Buffer.compare(vga, sha256(this.opts.vgaBios ?? new Uint8Array())) !== 0) {
      throw new VdiskError('E_MISMATCH', `${r.what}: the state was saved with other firmware files (--bios, --vga-bios) than these`);
    }
    this.lastKeyAt = r.f64('last key instruction');
    for (const part of [this.pam!, this.dma!, this.fdc!, this.fwCfg!]) part.loadState(r);
  }

  /**
   * The whole machine as a state file (CPU, memory, devices, BIOS, console, drives with
   * their identity and overlays). Call it once {@link run} has settled with a resumable
   * outcome (`expect`, `stopped`, `timeout`, `limit`).
   */
  async saveState(): Promise<Uint8Array> {
    const kind = this.outcome?.kind;
    if (kind !== 'expect' && kind !== 'stopped' && kind !== 'timeout' && kind !== 'limit') {
      throw new VdiskError('E_USAGE', `cannot save the machine state: ${kind ? `the run ended (${this.outcome!.message})` : 'the machine is running'}`);
    }
    return saveMachineState(this.parts(), this.bios.drives);
  }

  /** Load a state file made by {@link saveState} (before {@link run}, which then resumes); `what` names the file. */
  async loadState(file: Uint8Array, what: string): Promise<void> {
    if (this.resumed) throw new VdiskError('E_USAGE', 'a machine state can be loaded only once');
    await loadMachineState(this.parts(), this.bios.drives, file, what);
    this.resumed = true;
  }

  /** The run loop's own state: virtual clock, the batch in progress, keys waiting to be typed. */
  saveRunState(w: StateWriter): void {
    w.u16(this.opts.memoryMiB ?? 16).f64(this.bootTime).f64(this.clock).f64(this.clockBase).f64(this.clockInstr).f64(this.batchEnd).u32(this.idleSpins).bool(this.keyWanted);
    w.u32(this.keyQueue.length);
    for (const k of this.keyQueue) w.bytes(Uint8Array.from(k));
  }
  loadRunState(r: StateReader): void {
    const mib = r.u16('memory MiB');
    if (mib !== (this.opts.memoryMiB ?? 16)) {
      throw new VdiskError('E_MISMATCH', `${r.what}: the state has ${mib} MiB of memory; restore it with --memory ${mib}`);
    }
    this.bootTime = r.f64('boot time');
    this.clock = r.f64('virtual clock');
    this.clockBase = r.f64('clock base');
    this.clockInstr = r.f64('clock base instruction');
    this.batchEnd = r.f64('batch end');
    this.idleSpins = r.uint('idle halts', 1001);
    this.keyWanted = r.bool('key wanted');
    const n = r.uint('queued keys', 1 << 20);
    this.keyQueue.length = 0;
    for (let i = 0; i < n; i++) this.keyQueue.push([...r.bytes('queued key', 16)]);
    r.end();
  }

  private debugLog(m: string): void {
    this.opts.debug?.(m);
    this.emit('debug', m);
  }

  /** Queue text to type (US layout); a key goes in each time the guest waits for one. */
  typeKeys(text: string): void {
    this.keyQueue.push(...typeText(text.replace(/\\n/g, '\n')));
  }

  /** Ask the run loop to stop. */
  stop(): void {
    this.finish('stopped', 'stopped');
  }

  private finish(kind: BootOutcome, message: string): void {
    if (!this.outcome) this.outcome = { kind, message };
    this.cpu.requestStop();
  }

  /** The visible text screen. */
  screen(): string[] {
    return this.vga.text();
  }

  /** COM1 output so far. */
  get serial(): string {
    return this.serialText;
  }

  /** The merged console so far. */
  get console(): string {
    return this.consoleText;
  }

  /** Advance through the expectations the console now satisfies; true when all have matched. */
  private matchesExpect(): boolean {
    if (!this.expects.length) return false;
    let screen: string | null = null;
    while (this.expectNext < this.expects.length) {
      const p = this.expects[this.expectNext]!;
      let end = matchFrom(p, this.consoleText, this.expectPos);
      if (end < 0) {
        // The screen counts only for text the console never carried (video memory written directly).
        if (matchFrom(p, this.consoleText, 0) >= 0) return false;
        screen ??= this.screen().join('\n');
        if (matchFrom(p, screen, 0) < 0) return false;
        end = this.consoleText.length;
      }
      this.expectPos = end;
      this.expectNext++;
    }
    return true;
  }

  private expectMessage(): string {
    return this.expects.length === 1 ? `found "${patternText(this.expects[0]!)}"` : `found all ${this.expects.length} expected patterns`;
  }

  /** The first expectation not met yet (for a failure message). */
  get pendingExpect(): string | RegExp | undefined {
    return this.expects[this.expectNext];
  }

  /** Queue the key steps whose prompts have appeared. */
  private feedKeySteps(): void {
    while (this.keyStepNext < this.keySteps.length) {
      const step = this.keySteps[this.keyStepNext]!;
      if (step.after !== undefined) {
        const end = matchFrom(step.after, this.consoleText, this.keyPos);
        if (end < 0) return;
        this.keyPos = end;
      }
      this.typeKeys(step.text);
      this.keyStepNext++;
    }
  }

  /** Load a kernel for the 32-bit boot protocol and point the CPU at the loader's real-mode trampoline. */
  private startLinux(image: LinuxImage): void {
    const { header, entry } = loadLinux(this.mem.ram, image);
    this.debugLog(`linux: boot protocol ${header.version >> 8}.${(header.version & 0xff).toString().padStart(2, '0')}, ${header.kernelBytes} bytes at ${header.code32Start.toString(16)}h${header.versionString ? `, ${header.versionString}` : ''}`);
    this.mem.a20 = true;
    const c = this.cpu;
    c.reg.fill(0);
    for (const s of [0, 1, 2, 3, 4, 5]) c.loadSeg(s, 0);
    c.eip = entry;
    c.setFlags(2, 0xffff);
  }

  private where(): string {
    const c = this.cpu;
    return `${hex4(c.sreg[CS]!)}:${c.code32 ? (c.eip >>> 0).toString(16).toUpperCase().padStart(8, '0') : hex4(c.eip & 0xffff)}`;
  }

  /** Power on, boot, and run until an outcome (or, after {@link loadState}, carry on from the saved point). */
  async run(): Promise<BootResult> {
    const t0 = performance.now();
    if (!this.resumed) {
      if (this.pam) this.cpu.reset();
      else {
        this.bios.post();
        if (this.opts.linux) this.startLinux(this.opts.linux);
        else await this.bios.bootstrap();
      }
    }
    let lastYield = t0;
    let lastCheck = t0;
    this.feedKeySteps();
    const limit = this.cpu.instructions + (this.opts.maxInstructions ?? Infinity);
    while (!this.outcome) {
      const before = this.cpu.instructions;
      const target = this.batchEnd > before ? this.batchEnd : before + BATCH;
      this.batchEnd = 0;
      const reason = this.cpu.run(Math.min(target, limit) - before);
      this.clock = this.clockBase + (this.cpu.instructions - this.clockInstr) * PIT_TICKS_PER_INSTRUCTION;
      if (reason === 'limit' && this.cpu.instructions < target) {
        // Cut short by the instruction limit: a resumed run finishes this batch first.
        this.batchEnd = target;
        this.finish('limit', `stopped after ${this.cpu.instructions} instructions at ${this.where()}`);
        break;
      }
      if (this.bios.pending) {
        const p = this.bios.pending;
        this.bios.pending = null;
        await p;
      }
      // A stop asked for while the disk was busy still lets this batch's device work happen, as a saved state expects.
      const ended = this.outcome as { kind: BootOutcome } | null;
      if (ended && ended.kind !== 'stopped') break;
      if (reason === 'triple-fault') {
        this.finish('triple-fault', `triple fault at ${this.where()}`);
        break;
      }
      if (this.cpu.unsupported) {
        this.finish('unsupported', `${this.cpu.unsupported} (at ${this.where()})`);
        break;
      }
      if (reason === 'halt') {
        if (!(this.cpu.flags & IF)) {
          this.finish('halt', `the guest halted with interrupts disabled at ${this.where()}`);
          break;
        }
        // Halted with every interrupt source masked: nothing can ever wake it.
        this.idleSpins = this.cpu.instructions === before ? this.idleSpins + 1 : 0;
        if (this.idleSpins > 1000) {
          this.finish('halt', `the guest halted waiting for an interrupt that cannot arrive at ${this.where()}`);
          break;
        }
        const next = this.pit.nextEvent();
        if (next > this.clock && next !== Infinity) {
          this.clock = this.clockBase = next;
          this.clockInstr = this.cpu.instructions;
        }
      }
      this.pit.update();
      // Real firmware does not say when a guest waits for a key (its INT 16h reads a buffer in
      // RAM): once it has sealed its shadow copy and boots, a key goes in every KEY_GAP instructions.
      if (this.pam?.sealed && this.cpu.instructions - this.lastKeyAt >= KEY_GAP) this.keyWanted = true;
      if (this.keyWanted && this.keyQueue.length && this.kbc.idle) {
        this.lastKeyAt = this.cpu.instructions;
        this.keyWanted = false;
        this.kbc.keyboardBytes(this.keyQueue.shift()!);
      }
      const now = performance.now();
      if (this.outputDirty || now - lastCheck > 100) {
        this.outputDirty = false;
        lastCheck = now;
        this.feedKeySteps();
        if (this.matchesExpect()) {
          this.finish('expect', this.expectMessage());
          break;
        }
      }
      if (this.cpu.instructions >= limit) {
        this.finish('limit', `stopped after ${this.cpu.instructions} instructions at ${this.where()}`);
        break;
      }
      if (this.opts.timeoutMs !== undefined && now - t0 > this.opts.timeoutMs) {
        this.finish('timeout', `timed out after ${(this.opts.timeoutMs / 1000).toFixed(1)} s at ${this.where()}`);
        break;
      }
      if (this.opts.stopAfterMs !== undefined && now - t0 > this.opts.stopAfterMs) {
        this.finish('stopped', `stopped after ${(this.opts.stopAfterMs / 1000).toFixed(1)} s at ${this.where()}`);
        break;
      }
      if (now - lastYield > YIELD_MS) {
        lastYield = now;
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    if (this.outcome!.kind !== 'expect' && this.matchesExpect()) this.outcome = { kind: 'expect', message: this.expectMessage() };
    // A saved state keeps the console where the guest left it, not as the flush below ends it.
    this.mirrorAtStop = section((w) => this.mirror.saveState(w));
    this.mirror.flush();
    return {
      outcome: this.outcome!.kind,
      message: this.outcome!.message,
      cs: this.cpu.sreg[CS]!,
      ip: (this.cpu.eip & this.cpu.ipMask) >>> 0,
      screen: this.screen(),
      serial: this.serialText,
      console: this.consoleText,
      instructions: this.cpu.instructions,
      elapsedMs: performance.now() - t0,
    };
  }
}
