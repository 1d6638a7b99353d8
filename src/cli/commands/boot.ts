import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import { open } from '../../formats/registry.js';
import { action, type GlobalFlags } from '../common.js';
import { ConsoleMirror } from '../console-mirror.js';

interface BootFlags {
  floppy?: string;
  memory: string;
  expect?: string;
  timeout?: string;
  screenshot?: string;
  keys?: string;
  snapshot?: boolean;
}

function frame(lines: string[]): string {
  const bar = `+${'-'.repeat(80)}+`;
  return [bar, ...lines.map((l) => `|${l.padEnd(80)}|`), bar].join('\n');
}

/** `vdisk boot`: start a PC on an image (hard disk and/or floppy) and show what the guest prints. */
export function register(program: Command): void {
  const cmd = program
    .command('boot')
    .description('boot a real-mode guest from an image (our own BIOS); mirror the screen and COM1 to the terminal')
    .argument('[image]', 'hard disk image (any format vdisk opens)')
    .option('--floppy <img>', 'floppy image (booted first when given)')
    .option('--memory <MiB>', 'guest memory in MiB', '16')
    .option('--expect <text>', 'exit 0 as soon as TEXT appears on the screen or COM1; 1 on timeout')
    .option('--timeout <s>', 'stop after S seconds of wall time')
    .option('--screenshot <out.png>', 'write the final screen as a PNG (80x25 text as 640x400, mode 13h as 320x200)')
    .option('--keys <text>', 'type TEXT into the keyboard (\\n for Enter), a key each time the guest waits')
    .option('--snapshot', 'keep the guest\'s writes in memory instead of writing the image(s)');
  cmd.action(
    action(cmd, async (image: string | undefined, o: BootFlags) => {
      // The emulator is loaded only for this command: every other command starts faster.
      const [{ boot }, { loadFont, screenshotPng }] = await Promise.all([import('../../emu/boot.js'), import('../../emu/screenshot.js')]);
      const debug = Boolean((program.opts() as GlobalFlags).debug);
      if (!image && !o.floppy) throw new VdiskError('E_USAGE', 'boot needs an IMAGE or --floppy IMG');
      const memoryMiB = Number(o.memory);
      const timeoutS = o.timeout === undefined ? undefined : Number(o.timeout);
      if (timeoutS !== undefined && !(timeoutS > 0)) throw new VdiskError('E_USAGE', `--timeout must be a positive number of seconds, not "${o.timeout}"`);
      const font = o.screenshot ? loadFont() : null;
      const opened: DiskImage[] = [];
      try {
        const disk = image ? await open(image, { readOnly: Boolean(o.snapshot) }) : null;
        if (disk) opened.push(disk);
        const floppy = o.floppy ? await open(o.floppy, { readOnly: Boolean(o.snapshot) }) : null;
        if (floppy) opened.push(floppy);
        const mirror = new ConsoleMirror((t) => process.stdout.write(t, 'latin1'));
        process.stdout.on('error', () => session.machine.stop()); // a closed pipe ends the run
        const session = boot(disk, {
          floppy,
          memoryMiB,
          expect: o.expect,
          timeoutMs: timeoutS === undefined ? undefined : timeoutS * 1000,
          keys: o.keys,
          snapshot: o.snapshot,
          debug: debug ? (m) => process.stderr.write(`vdisk: debug: ${m}\n`) : undefined,
          onTty: (t) => mirror.write('tty', t),
          onSerial: (t) => mirror.write('serial', t),
        });
        const onSigint = (): void => session.machine.stop();
        process.once('SIGINT', onSigint);
        const r = await session.result;
        process.off('SIGINT', onSigint);
        mirror.flush();
        if (o.screenshot && font) writeFileSync(o.screenshot, screenshotPng(session.machine.vga, font, session.machine.mem.ram));
        if (r.outcome === 'expect') return 0;
        if (r.outcome === 'no-boot') throw new VdiskError('E_FORMAT', r.message);
        if (r.outcome === 'stopped' || (r.outcome === 'timeout' && !o.expect)) {
          process.stderr.write(`vdisk: ${r.message}\n`);
          return 0;
        }
        const why = r.outcome === 'timeout' ? `"${o.expect}" did not appear: ${r.message}` : r.message;
        process.stderr.write(`vdisk: ${why}\nlast screen:\n${frame(r.screen)}\n`);
        return 1;
      } finally {
        for (const d of opened) await d.close();
      }
    }),
  );
}
