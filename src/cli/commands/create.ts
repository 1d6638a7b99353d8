import type { Command } from 'commander';
import { create } from '../../ops/create.js';
import { parseKeyValues } from '../../util/options.js';
import { formatSize } from '../../util/size.js';
import { action, collect } from '../common.js';

/** `vdisk create`: make a new image. */
export function register(program: Command): void {
  const cmd = program
    .command('create')
    .description('create a new image (sizes: 512, 64K, 10M, 2G, 1T)')
    .argument('<image>', 'file to create')
    .argument('[size]', 'virtual size (defaults to the backing file\'s size)')
    .requiredOption('-f, --format <fmt>', 'raw, vhd (vpc), vhdx, vdi, vmdk or qcow2')
    .option('-o, --options <k=v,...>', 'format options, e.g. subformat=fixed (repeatable)', collect, [])
    .option('-b, --backing <parent>', 'parent image: create a differencing child')
    .option('-F, --backing-format <fmt>', 'format of the parent (detected when absent)')
    .option('--force', 'replace an existing file')
    .option('-q, --quiet', 'print nothing on success')
    .option('--allow-path <dir>', 'let the backing reference lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(
      cmd,
      async (
        image: string,
        size: string | undefined,
        o: { format: string; options: string[]; backing?: string; backingFormat?: string; force?: boolean; quiet?: boolean; allowPath: string[] },
      ) => {
        const img = await create(image, {
          format: o.format,
          size,
          options: parseKeyValues(o.options),
          backing: o.backing,
          backingFormat: o.backingFormat,
          force: o.force,
          allowPaths: o.allowPath,
        });
        const bytes = img.size;
        await img.close();
        if (!o.quiet) process.stdout.write(`Formatting '${image}', fmt=${img.format} size=${bytes} (${formatSize(bytes)})\n`);
      },
    ),
  );
}
