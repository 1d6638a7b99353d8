import type { Command } from 'commander';
import { VdiskError } from '../../errors.js';
import { ChecksUnsupportedError, check } from '../../ops/check.js';
import { checkExitCode, formatCheckHuman } from '../human.js';
import { action, collect, outputMode } from '../common.js';

/** Exit code for a format without checks: the one qemu-img uses (63). */
export const EXIT_CHECK_UNSUPPORTED = 63;

/** `vdisk check`: consistency check of the image and the partition table inside (exit 0 clean, 1 error, 2 corrupt, 3 leaks or partition warnings only, 63 nothing to check). */
export function register(program: Command): void {
  const cmd = program
    .command('check')
    .description('check an image for consistency and the partition table on the disk (exit 0 clean, 1 error, 2 corrupt, 3 only leaked space or partition-table warnings, 63 no check for the format and no partition table)')
    .argument('<image>', 'image file')
    .option('-f, --format <fmt>', 'image format (detected by magic when absent)')
    .option('-r, --repair <what>', 'repair what is safe: leaks, or all (also rebuilds a damaged or misplaced GPT copy from the intact one)')
    .option('--output <mode>', 'human or json', 'human')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(cmd, async (image: string, o: { format?: string; repair?: string; output?: string; allowPath: string[] }) => {
      const mode = outputMode(o.output, ['human', 'json'] as const, 'human');
      if (o.repair !== undefined && o.repair !== 'leaks' && o.repair !== 'all') {
        throw new VdiskError('E_USAGE', `-r must be leaks or all, not "${o.repair}"`);
      }
      try {
        const report = await check(image, { format: o.format, repair: o.repair, allowPaths: o.allowPath });
        process.stdout.write(mode === 'json' ? `${JSON.stringify(report, null, 4)}\n` : `${formatCheckHuman(report)}\n`);
        return checkExitCode(report);
      } catch (err) {
        if (!(err instanceof ChecksUnsupportedError)) throw err;
        process.stderr.write(`vdisk: ${err.message}\n`);
        return EXIT_CHECK_UNSUPPORTED;
      }
    }),
  );
}
