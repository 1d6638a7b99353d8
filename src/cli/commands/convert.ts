import type { Command } from 'commander';
import { VdiskError } from '../../errors.js';
import { convert } from '../../ops/convert.js';
import { parseKeyValues } from '../../util/options.js';
import { parseSize } from '../../util/size.js';
import { action, collect } from '../common.js';
import { makeProgress, noProgress } from '../progress.js';

/** `vdisk convert`: copy any image (through its chain) into a new flat image of any format. */
export function register(program: Command): void {
  const cmd = program
    .command('convert')
    .description('convert an image to another format (reads through backing chains; the result is flat)')
    .argument('<src>', 'source image')
    .argument('<dst>', 'new image to write')
    .option('-f, --format <fmt>', 'source format (detected by magic when absent)')
    .requiredOption('-O, --output-format <fmt>', 'output format: raw, vhd (vpc), vhdx, vdi, vmdk, qcow2, or lvm (a new LV, dst lvm:[DIR/]VG/LV; -o stripes=N,stripe_size=S)')
    .option('-o, --options <k=v,...>', 'output format options, e.g. subformat=streamOptimized (repeatable)', collect, [])
    .option('-c, --compress', 'compress the output: qcow2 compressed clusters, or vmdk streamOptimized')
    .option('-S, --sparse-size <size>', 'zero runs at least this long stay unallocated; 0 allocates everything', '4K')
    .option('-t, --cache <mode>', 'writeback (flush before renaming into place) or unsafe (no flush, as qemu-img convert)', 'writeback')
    .option('-p, --progress', 'show progress (a bar on a terminal, percentage lines otherwise)')
    .option('--force', 'replace an existing destination')
    .option('--allow-path <dir>', 'let references inside the source lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(
      cmd,
      async (
        src: string,
        dst: string,
        o: { format?: string; compress?: boolean; cache: string; outputFormat: string; options: string[]; sparseSize: string; progress?: boolean; force?: boolean; allowPath: string[] },
      ) => {
        const sparseSize = parseSize(o.sparseSize, '-S size');
        if (o.cache !== 'writeback' && o.cache !== 'unsafe') throw new VdiskError('E_USAGE', `-t must be writeback or unsafe, not "${o.cache}"`);
        const progress = o.progress ? makeProgress('convert') : noProgress;
        const abort = new AbortController();
        const onSignal = (): void => abort.abort();
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        try {
          const result = await convert(src, dst, {
            sourceFormat: o.format,
            format: o.outputFormat,
            options: parseKeyValues(o.options),
            sparseSize,
            compress: o.compress === true,
            cache: o.cache,
            force: o.force,
            allowPaths: o.allowPath,
            onProgress: (done, total) => progress.update(done, total),
            signal: abort.signal,
          });
          for (const l of result.leftovers) {
            const by = l.pid > 0 ? `process ${l.pid} which is no longer running` : 'an interrupted convert';
            process.stderr.write(`vdisk: removed ${l.path}, left by ${by}\n`);
          }
        } finally {
          progress.stop();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
        if (abort.signal.aborted) throw new VdiskError('E_IO', `${dst}: convert interrupted`);
      },
    ),
  );
}
