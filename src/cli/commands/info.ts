import type { Command } from 'commander';
import { open } from '../../formats/registry.js';
import { VdiskError } from '../../errors.js';
import { formats, info } from '../../ops/info.js';
import { formatFormatsHuman, formatInfoHuman } from '../human.js';
import { action, collect, outputMode } from '../common.js';

/** `vdisk info`: header facts of an image (and its chain). */
export function register(program: Command): void {
  const cmd = program
    .command('info')
    .description('show facts about an image: format, sizes, chain, format-specific header fields')
    .argument('[image]', 'image file')
    .option('--formats', 'list the formats vdisk knows and what each can do (create, check, resize, compact, differencing, commit, relink)')
    .option('-f, --format <fmt>', 'image format (detected by magic when absent)')
    .option('--output <mode>', 'human or json', 'human')
    .option('--backing-chain', 'also describe every image in the backing chain')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(cmd, async (image: string | undefined, o: { format?: string; output?: string; backingChain?: boolean; allowPath: string[]; formats?: boolean }) => {
      const mode = outputMode(o.output, ['human', 'json'] as const, 'human');
      if (o.formats) {
        if (image !== undefined) throw new VdiskError('E_USAGE', 'info --formats takes no image');
        const list = formats();
        process.stdout.write(mode === 'json' ? `${JSON.stringify(list, null, 4)}\n` : `${formatFormatsHuman(list)}\n`);
        return;
      }
      if (image === undefined) throw new VdiskError('E_USAGE', "info needs an image (or --formats)");
      const img = await open(image, { format: o.format, readOnly: true, allowPaths: o.allowPath });
      try {
        const reports = await info(img, { backingChain: o.backingChain });
        if (mode === 'json') {
          process.stdout.write(`${JSON.stringify(o.backingChain ? reports : reports[0], null, 4)}\n`);
        } else {
          process.stdout.write(`${reports.map(formatInfoHuman).join('\n\n')}\n`);
        }
      } finally {
        await img.close();
      }
    }),
  );
}
