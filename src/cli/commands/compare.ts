import type { Command } from 'commander';
import { open } from '../../formats/registry.js';
import { compare } from '../../ops/compare.js';
import { action, collect } from '../common.js';
import { makeProgress, noProgress } from '../progress.js';

/** `vdisk compare`: do two images (of any formats) hold the same disk? Exit 0 same, 1 different, 2 error. */
export function register(program: Command): void {
  const cmd = program
    .command('compare')
    .description('compare the contents of two images (exit 0 identical, 1 different, 2 error)')
    .argument('<a>', 'first image')
    .argument('<b>', 'second image')
    .option('-f, --format <fmt>', 'format of the first image (detected by magic when absent)')
    .option('-F, --second-format <fmt>', 'format of the second image (detected by magic when absent)')
    .option('-s, --strict', 'strict: different sizes or allocation also count as different')
    .option('-p, --progress', 'show progress')
    .option('-q, --quiet', 'print nothing; only the exit code tells')
    .option('--allow-path <dir>', 'let references inside the images lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(
      cmd,
      async (a: string, b: string, o: { format?: string; secondFormat?: string; strict?: boolean; progress?: boolean; quiet?: boolean; allowPath: string[] }) => {
        const say = (s: string): void => {
          if (!o.quiet) process.stdout.write(`${s}\n`);
        };
        const imgA = await open(a, { format: o.format, readOnly: true, allowPaths: o.allowPath });
        try {
          const imgB = await open(b, { format: o.secondFormat, readOnly: true, allowPaths: o.allowPath });
          const progress = o.progress ? makeProgress('compare') : noProgress;
          try {
            const r = await compare(imgA, imgB, { strict: o.strict, onProgress: (d, t) => progress.update(d, t) });
            progress.stop();
            if (r.sizeMismatch && !o.strict) say('Warning: Image size mismatch!');
            if (r.identical) {
              say('Images are identical.');
              return 0;
            }
            if (r.reason === 'size') say('Strict mode: Image size mismatch!');
            else if (r.reason === 'allocation') say(`Strict mode: Offset ${r.offset} allocation mismatch!`);
            else say(`Content mismatch at offset ${r.offset}!`);
            return 1;
          } finally {
            await imgB.close();
          }
        } finally {
          await imgA.close();
        }
      },
      2,
    ),
  );
}
