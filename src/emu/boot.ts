/** `boot(device, opts)`: start a PC on a disk image and run it to an outcome. */
import type { BlockDevice } from '../device/block-device.js';
import { OverlayDevice } from '../device/overlay.js';
import { Machine, type BootResult, type MachineOptions } from './machine.js';

/** Options for {@link boot}. */
export interface BootOptions extends Omit<MachineOptions, 'disk'> {
  /** Keep the guest's writes in memory instead of writing the image(s). */
  snapshot?: boolean;
  /** Called for each chunk of console output (COM1 bytes and INT 10h teletype characters). */
  onSerial?: (text: string) => void;
  onTty?: (text: string) => void;
  /** Called with the console as a terminal shows it: both streams merged, each line once, partial lines at once. */
  onConsole?: (text: string) => void;
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
  const wrap = (d: BlockDevice | null | undefined): BlockDevice | null => (d ? (opts.snapshot ? new OverlayDevice(d) : d) : null);
  const machine = new Machine({ ...opts, disk: wrap(device), floppy: wrap(opts.floppy) });
  if (opts.onSerial) machine.on('serial', opts.onSerial);
  if (opts.onTty) machine.on('tty', opts.onTty);
  if (opts.onConsole) machine.on('console', opts.onConsole);
  // Start on the next turn so callers can attach listeners first.
  const result = new Promise<void>((r) => setImmediate(r)).then(() => machine.run());
  return { machine, result };
}

export { Machine, type BootResult, type BootOutcome, type MachineOptions, type KeyStep } from './machine.js';
