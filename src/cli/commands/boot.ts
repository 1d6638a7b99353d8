import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { DiskImage } from '../../device/block-device.js';
import type { KeyStep } from '../../emu/machine.js';
import { MAX_STATE_FILE } from '../../emu/state/file.js';
import { VdiskError, fromSystemError } from '../../errors.js';
import { open } from '../../formats/registry.js';
import { isLvAddress, parseLvAddress } from '../../storage/address.js';
import { holdPool, type HeldPool } from '../../pool/control.js';
import { action, collect, type GlobalFlags } from '../common.js';

interface BootFlags {
  kernel?: string;
  initrd?: string;
  append?: string;
  floppy?: string;
  memory?: string;
  saveState?: string;
  restoreState?: string;
  stopAfter?: string;
  expect?: string[];
  timeout?: string;
  screenshot?: string;
  snapshot?: boolean;
  bios?: string;
  vgaBios?: string;
}

/** Exit codes of `vdisk boot` (also printed by `vdisk boot --help`). */
export const BOOT_EXIT = {
  /** Every --expect matched; or Ctrl-C or --stop-after stopped the run; or, without --expect, --timeout ended it. */
  ok: 0,
  /** The guest did not do what was asked: an --expect not met, a halt with interrupts off, a triple fault, a reset, nothing bootable. */
  guest: 1,
  /** The run could not start: a bad option value, an image that cannot be opened. */
  usage: 2,
} as const;

const HELP_AFTER = `
Patterns: --expect and --keys-after take JavaScript regular expressions, matched
against the console output (screen teletype and COM1 merged) and the screen.
Several --expect must all match, in the order given. --keys TEXT is typed (\\n for
Enter) a key each time the guest waits for one; a --keys-after REGEX before it makes
that TEXT wait until REGEX has appeared (after the previous --keys-after's match):
  vdisk boot disk.img --keys-after 'login: $' --keys 'root\\n' --keys-after '# $' --keys 'ls\\n'

Save and restore: --save-state FILE writes the whole machine (CPU, memory, devices,
the guest's --snapshot writes) when the run stops: at Ctrl-C, at --stop-after (S
seconds of wall time, or N guest instructions written Ni, e.g. 50000000i), or when
every --expect has matched. --restore-state FILE resumes it exactly where it stopped,
on the same image(s), which it checks (size and content), with the memory size and
--snapshot overlay it was saved with; --expect, --keys and a new --save-state apply
to the resumed run:
  vdisk boot --floppy dos.img --snapshot --expect 'A:\\\\>' --save-state dos.state
  vdisk boot --floppy dos.img --restore-state dos.state --keys 'dir\\n' --expect 'bytes free'

Exit codes:
  ${BOOT_EXIT.ok}  every --expect matched; or the run was stopped by Ctrl-C or --stop-after; or,
     without --expect, it ran to --timeout
  ${BOOT_EXIT.guest}  an --expect was not met (timeout, halt, triple fault, reset), the guest halted
     with interrupts off, triple-faulted, reset, or nothing was bootable
  ${BOOT_EXIT.usage}  the run could not start: a bad option value, an image that cannot be opened,
     a state file that is damaged, from a newer vdisk, or saved with other images
`;

/** `--stop-after`: seconds of wall time (`12`, `1.5s`) or guest instructions (`5000000i`). */
function stopAfter(text: string): { ms?: number; instructions?: number } {
  const m = /^(\d+(?:\.\d+)?)(s|i)?$/.exec(text.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!m || !(n > 0) || (m[2] === 'i' && !Number.isSafeInteger(n))) {
    throw new VdiskError('E_USAGE', `--stop-after must be seconds (e.g. 10 or 2.5s) or a whole number of instructions (e.g. 50000000i), not "${text}"`);
  }
  return m[2] === 'i' ? { instructions: n } : { ms: n * 1000 };
}

/** Where Debian's seabios package puts the firmware `--bios seabios` names. */
const SEABIOS = '/usr/share/seabios/bios.bin';
/** SeaBIOS's VGA BIOS for qemu's standard VGA (PCI 1234:1111), from the same package. */
const SEAVGABIOS = '/usr/share/seabios/vgabios-stdvga.bin';

/** A firmware file: `--bios` (a path, or "seabios") or `--vga-bios`. */
function readFirmware(name: string): Uint8Array {
  const path = name === 'seabios' ? SEABIOS : name;
  try {
    return readFileSync(path);
  } catch (e) {
    throw fromSystemError(e, path);
  }
}

/** Largest --kernel or --initrd file read (guest memory is at most 1 GiB). */
const MAX_BOOT_FILE = 1024 * 1024 * 1024;

/** Read a --kernel or --initrd file, refusing one larger than any guest memory before reading it. */
function readBootFile(path: string, what: string): Uint8Array {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw fromSystemError(e, path);
  }
  if (size > MAX_BOOT_FILE) throw new VdiskError('E_USAGE', `${path}: a ${size}-byte ${what} is larger than any guest memory`, { file: path });
  try {
    return readFileSync(path);
  } catch (e) {
    throw fromSystemError(e, path);
  }
}

/** Read a state file, refusing one too large to be a state before reading it. */
function readState(path: string): Uint8Array {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw fromSystemError(e, path);
  }
  if (size > MAX_STATE_FILE) throw new VdiskError('E_CORRUPT', `${path}: ${size} bytes is larger than any machine state (${MAX_STATE_FILE})`);
  try {
    return readFileSync(path);
  } catch (e) {
    throw fromSystemError(e, path);
  }
}


function frame(lines: string[]): string {
  const bar = `+${'-'.repeat(80)}+`;
  return [bar, ...lines.map((l) => `|${l.padEnd(80)}|`), bar].join('\n');
}

function pattern(flag: string, text: string): RegExp {
  try {
    return new RegExp(text, 'm');
  } catch (e) {
    throw new VdiskError('E_USAGE', `${flag} ${JSON.stringify(text)} is not a regular expression: ${(e as Error).message}`);
  }
}

/** `vdisk boot`: start a PC on an image (hard disk and/or floppy) and show what the guest prints. */
export function register(program: Command): void {
  const cmd = program
    .command('boot')
    .description('boot a real-mode guest from an image (our own BIOS); mirror the screen and COM1 to the terminal')
    .argument('[image]', 'hard disk image (any format vdisk opens)')
    .option('--floppy <img>', 'floppy image (booted first when given)')
    .option('--bios <name|file>', 'firmware: "vdisk" (our own BIOS, the default), "seabios" (Debian\'s /usr/share/seabios/bios.bin) or a bios.bin file')
    .option('--vga-bios <file>', 'with --bios: the VGA BIOS for the PCI VGA\'s ROM (default with --bios seabios: Debian\'s vgabios-stdvga.bin)')
    .option('--kernel <bzImage>', 'boot this Linux kernel directly, as qemu -kernel does (the image, if given, is attached as the hard disk)')
    .option('--initrd <file>', 'with --kernel: the initial RAM disk')
    .option('--append <text>', 'with --kernel: the kernel command line (e.g. "console=ttyS0")')
    .option('--memory <MiB>', 'guest memory in MiB (default 16; a restored state keeps its own)')
    .option('--expect <regex>', 'exit 0 once REGEX has appeared on the console (repeatable: all, in order); 1 if not', collect)
    .option('--timeout <s>', 'stop after S seconds of wall time')
    .option('--screenshot <out.png>', 'write the final screen as a PNG (80x25 text as 640x400, mode 13h as 320x200)')
    .option('--keys <text>', 'type TEXT into the keyboard (\\n for Enter), a key each time the guest waits (repeatable)')
    .option('--keys-after <regex>', 'type the next --keys only once REGEX has appeared on the console')
    .option('--snapshot', 'keep the guest\'s writes in memory instead of writing the image(s)')
    .option('--save-state <file>', 'when the run stops (Ctrl-C, --stop-after, every --expect met), save the machine to FILE')
    .option('--stop-after <S|Ni>', 'stop after S seconds of wall time, or N instructions (50000000i), exit 0 (with --save-state: to save)')
    .option('--restore-state <file>', 'resume a machine saved with --save-state, on the same image(s)')
    .addHelpText('after', HELP_AFTER);
  // --keys-after applies to the next --keys: commander reports options in command-line order.
  const keySteps: KeyStep[] = [];
  let waitFor: RegExp | undefined;
  let waitFlag = false;
  cmd.on('option:keys-after', (v: string) => {
    waitFor = pattern('--keys-after', v);
    waitFlag = true;
  });
  cmd.on('option:keys', (v: string) => {
    keySteps.push({ after: waitFor, text: v });
    waitFor = undefined;
    waitFlag = false;
  });
  cmd.action(
    action(
      cmd,
      async (image: string | undefined, o: BootFlags) => {
        // The emulator is loaded only for this command: every other command starts faster.
        const [{ boot }, { loadFont, screenshotPng }, { patternText }] = await Promise.all([
          import('../../emu/boot.js'),
          import('../../emu/screenshot.js'),
          import('../../emu/machine.js'),
        ]);
        const debug = Boolean((program.opts() as GlobalFlags).debug);
        if (!image && !o.floppy && !o.kernel) throw new VdiskError('E_USAGE', 'boot needs an IMAGE, --floppy IMG or --kernel FILE');
        if (!o.kernel && (o.initrd !== undefined || o.append !== undefined)) throw new VdiskError('E_USAGE', '--initrd and --append need --kernel');
        if (o.kernel && o.restoreState) throw new VdiskError('E_USAGE', '--kernel starts a new machine; a restored state already holds its kernel');
        const linux = o.kernel ? { kernel: readBootFile(o.kernel, 'kernel'), kernelName: o.kernel, initrd: o.initrd ? readBootFile(o.initrd, 'initrd') : undefined, initrdName: o.initrd, cmdline: o.append ?? '' } : undefined;
        if (waitFlag) throw new VdiskError('E_USAGE', '--keys-after must be followed by the --keys it waits for');
        const firmware = o.bios === undefined || o.bios === 'vdisk' ? undefined : readFirmware(o.bios);
        if (o.vgaBios !== undefined && !firmware) throw new VdiskError('E_USAGE', '--vga-bios needs --bios seabios or --bios FILE (our own BIOS has its video services built in)');
        const vgaBios = o.vgaBios !== undefined ? readFirmware(o.vgaBios) : o.bios === 'seabios' ? readFirmware(SEAVGABIOS) : undefined;
        const restore = o.restoreState ? { bytes: readState(o.restoreState), name: o.restoreState } : undefined;
        let memoryMiB = o.memory === undefined ? 16 : Number(o.memory);
        let overlaid = new Set<number>();
        if (restore) {
          const { inspectState } = await import('../../emu/state/machine-state.js');
          const setup = inspectState(restore.bytes, restore.name);
          overlaid = setup.overlayDrives;
          const saved = setup.memoryMiB;
          if (o.memory !== undefined && memoryMiB !== saved) {
            throw new VdiskError('E_MISMATCH', `${restore.name}: the state has ${saved} MiB of memory, not the --memory ${o.memory} asked for`);
          }
          memoryMiB = saved;
        }
        const stop = o.stopAfter === undefined ? {} : stopAfter(o.stopAfter);
        const timeoutS = o.timeout === undefined ? undefined : Number(o.timeout);
        if (timeoutS !== undefined && !(timeoutS > 0)) throw new VdiskError('E_USAGE', `--timeout must be a positive number of seconds, not "${o.timeout}"`);
        const expects = (o.expect ?? []).map((e) => pattern('--expect', e));
        const font = o.screenshot ? loadFont() : null;
        const opened: DiskImage[] = [];
        let held: HeldPool | undefined;
        try {
          // A writable LV is held with its pool, whose control socket lets `pool add` / `lv extend` reach this run.
          // A state saved with --snapshot resumes on an overlay again: its image is only read.
          const readOnly = Boolean(o.snapshot) || overlaid.has(0x80);
          let disk: DiskImage | null = null;
          if (image && isLvAddress(image) && !readOnly) {
            const a = parseLvAddress(image);
            held = await holdPool(a.vg, a.dir);
            disk = held.pool.openLv(a.lv);
          } else if (image) disk = await open(image, { readOnly });
          if (disk) opened.push(disk);
          const floppy = o.floppy ? await open(o.floppy, { readOnly: Boolean(o.snapshot) || overlaid.has(0x00) }) : null;
          if (floppy) opened.push(floppy);
          process.stdout.on('error', () => session.machine.stop()); // a closed pipe ends the run
          let pendingOut = '';
          const flushOut = (): void => {
            if (pendingOut) process.stdout.write(pendingOut, 'latin1');
            pendingOut = '';
          };
          const session = boot(disk, {
            floppy,
            linux,
            memoryMiB,
            expect: expects,
            timeoutMs: timeoutS === undefined ? undefined : timeoutS * 1000,
            keys: keySteps,
            snapshot: o.snapshot,
            stopAfterMs: stop.ms,
            maxInstructions: stop.instructions,
            restoreState: restore,
            firmware,
            vgaBios,
            debug: debug ? (m) => process.stderr.write(`vdisk: debug: ${m}\n`) : undefined,
            onConsole: (t) => {
              // Batched until the run loop next yields (every few ms), not held for a newline.
              if (!pendingOut) setImmediate(flushOut);
              pendingOut += t;
            },
          });
          const onSigint = (): void => session.machine.stop();
          process.once('SIGINT', onSigint);
          const r = await session.result;
          process.off('SIGINT', onSigint);
          flushOut();
          if (o.screenshot && font) writeFileSync(o.screenshot, screenshotPng(session.machine.vga, font, session.machine.mem.ram));
          const resumable = r.outcome === 'expect' || r.outcome === 'stopped' || r.outcome === 'timeout' || r.outcome === 'limit';
          if (o.saveState && resumable) {
            // Written beside the target and renamed, so an interrupted save never leaves half a state.
            const tmp = `${o.saveState}.${process.pid}.tmp`;
            try {
              writeFileSync(tmp, await session.machine.saveState());
              renameSync(tmp, o.saveState);
            } catch (e) {
              throw fromSystemError(e, o.saveState);
            }
            process.stderr.write(`vdisk: saved the machine state to ${o.saveState} (${r.instructions} instructions)\n`);
          } else if (o.saveState) process.stderr.write(`vdisk: not saving the machine state: the run ended (${r.outcome})\n`);
          if (r.outcome === 'expect') return BOOT_EXIT.ok;
          if (r.outcome === 'limit' && stop.instructions !== undefined) {
            process.stderr.write(`vdisk: ${r.message}\n`);
            return BOOT_EXIT.ok;
          }
          if (r.outcome === 'no-boot') {
            process.stderr.write(`vdisk: ${r.message}\n`);
            return BOOT_EXIT.guest;
          }
          if (r.outcome === 'stopped' || ((r.outcome === 'timeout' || r.outcome === 'limit') && !expects.length)) {
            process.stderr.write(`vdisk: ${r.message}\n`);
            return BOOT_EXIT.ok;
          }
          const missing = session.machine.pendingExpect;
          const why = missing !== undefined ? `"${patternText(missing)}" did not appear: ${r.message}` : r.message;
          process.stderr.write(`vdisk: ${why}\nlast screen:\n${frame(r.screen)}\n`);
          return BOOT_EXIT.guest;
        } finally {
          try {
            for (const d of opened) await d.close();
          } finally {
            await held?.close();
          }
        }
      },
      BOOT_EXIT.usage,
    ),
  );
}
