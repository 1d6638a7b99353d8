/** `boot(device, opts)`: start a PC on a disk image and run it to an outcome. */
import type { BlockDevice } from '../device/block-device.js';
import { OverlayDevice } from '../device/overlay.js';
import { Machine, type BootResult, type MachineOptions } from './machine.js';
import { inspectState } from './state/machine-state.js';

/** Options for {@link boot}. */
export interface BootOptions extends Omit<MachineOptions, 'disk'> {
  /** Keep the guest's writes in memory instead of writing the image(s). */
  snapshot?: boolean;
  /** Called for each chunk of console output (COM1 bytes and INT 10h teletype characters). */
  onSerial?: (text: string) => void;
  onTty?: (text: string) => void;
  /** Called with the console as a terminal shows it: both streams merged, each line once, partial lines at once. */
  onConsole?: (text: string) => void;
  /**
   * Resume from a state file made by `machine.saveState()` instead of powering on: the
   * guest carries on exactly where it stopped. Drives it kept an overlay for get one again
   * (with the saved writes), memory is the state's; the disks must be the ones it was
   * saved with (E_MISMATCH otherwise).
   */
  restoreState?: { bytes: Uint8Array; name: string };
}

/** A running boot: the machine (an EventEmitter) and the promise of its result. */
export interface BootSession {
  machine: Machine;
  result: Promise<BootResult>;
}

/**
 * Boot a PC from `device` (hard disk; null for floppy-only) and run it. Console
 * output arrives through `opts.onSerial`/`opts.onTty` or the machine's `serial`/`tty` events.
 */
export function boot(device: BlockDevice | null, opts: BootOptions = {}): BootSession {
  const setup = opts.restoreState ? inspectState(opts.restoreState.bytes, opts.restoreState.name) : null;
  const wrap = (d: BlockDevice | null | undefined, n: number): BlockDevice | null =>
    d ? (opts.snapshot || setup?.overlayDrives.has(n) ? new OverlayDevice(d) : d) : null;
  const machine = new Machine({ ...opts, memoryMiB: setup?.memoryMiB ?? opts.memoryMiB, disk: wrap(device, 0x80), floppy: wrap(opts.floppy, 0x00) });
  if (opts.onSerial) machine.on('serial', opts.onSerial);
  if (opts.onTty) machine.on('tty', opts.onTty);
  if (opts.onConsole) machine.on('console', opts.onConsole);
  // Start on the next turn so callers can attach listeners first.
  const restore = opts.restoreState;
  const result = new Promise<void>((r) => setImmediate(r))
    .then(() => (restore ? machine.loadState(restore.bytes, restore.name) : undefined))
    .then(() => machine.run());
  return { machine, result };
}

export type { LinuxImage } from './linux.js';
export { Machine, type BootResult, type BootOutcome, type MachineOptions, type KeyStep } from './machine.js';
