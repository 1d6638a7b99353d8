import type { Command } from 'commander';
import { commit } from '../../ops/commit.js';
import { compact } from '../../ops/compact.js';
import { rebase } from '../../ops/rebase.js';
import { resize } from '../../ops/resize.js';
import { formatSize } from '../../util/size.js';
import { action, collect } from '../common.js';
import { makeProgress, noProgress, type Progress } from '../progress.js';

function progress(label: string, enabled: boolean): Progress {
  return enabled ? makeProgress(label) : noProgress;
}

/** `vdisk resize|compact|commit|rebase`: change images in place. */
export function register(program: Command): void {
  const rs = program
    .command('resize')
    .description('grow or shrink an image in place: SIZE, +SIZE or -SIZE (use "--" before a negative size)')
    .argument('<image>')
    .argument('<size>')
    .option('-f, --format <fmt>', 'image format (detected when absent)')
    .option('--shrink', 'allow making the image smaller (cuts data off the end)')
    .option('-p, --progress', 'show progress')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  rs.action(
    action(rs, async (image: string, size: string, o: { format?: string; shrink?: boolean; progress?: boolean; allowPath: string[] }) => {
      const bar = progress('resize', Boolean(o.progress));
      try {
        const r = await resize(image, size, { format: o.format, shrink: o.shrink, allowPaths: o.allowPath, onProgress: (d, t) => bar.update(d, t) });
        bar.stop();
        process.stdout.write(`Image resized from ${formatSize(r.oldSize)} to ${formatSize(r.newSize)} (${r.newSize} bytes).\n`);
      } finally {
        bar.stop();
      }
    }),
  );

  const cp = program
    .command('compact')
    .description('release blocks that hold only zeros or that nothing uses, and shorten the file')
    .argument('<image>')
    .option('-f, --format <fmt>', 'image format (detected when absent)')
    .option('-p, --progress', 'show progress')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  cp.action(
    action(cp, async (image: string, o: { format?: string; progress?: boolean; allowPath: string[] }) => {
      const bar = progress('compact', Boolean(o.progress));
      try {
        const r = await compact(image, { format: o.format, allowPaths: o.allowPath, onProgress: (d, t) => bar.update(d, t) });
        bar.stop();
        process.stdout.write(`Released ${r.releasedBlocks} blocks; file ${formatSize(r.sizeBefore)} -> ${formatSize(r.sizeAfter)}.\n`);
      } finally {
        bar.stop();
      }
    }),
  );

  const cm = program
    .command('commit')
    .description("merge a differencing image into its parent")
    .argument('<image>')
    .option('-d, --keep', "keep the child's blocks after the merge")
    .option('-p, --progress', 'show progress')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  cm.action(
    action(cm, async (image: string, o: { keep?: boolean; progress?: boolean; allowPath: string[] }) => {
      const bar = progress('commit', Boolean(o.progress));
      try {
        const r = await commit(image, { keepChild: o.keep, allowPaths: o.allowPath, onProgress: (d, t) => bar.update(d, t) });
        bar.stop();
        process.stdout.write(`Image committed (${formatSize(r.bytes)} merged).\n`);
      } finally {
        bar.stop();
      }
    }),
  );

  const rb = program
    .command('rebase')
    .description('point a differencing image at another parent, keeping its content ("-b \'\'" removes the parent)')
    .argument('<image>')
    .requiredOption('-b, --backing <parent>', 'the new parent ("" for none)')
    .option('-F, --backing-format <fmt>', 'format of the new parent (detected when absent)')
    .option('-u, --unsafe', 'change only the link, copy nothing')
    .option('-p, --progress', 'show progress')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  rb.action(
    action(rb, async (image: string, o: { backing: string; backingFormat?: string; unsafe?: boolean; progress?: boolean; allowPath: string[] }) => {
      const bar = progress('rebase', Boolean(o.progress));
      try {
        const r = await rebase(image, o.backing === '' ? undefined : o.backing, {
          unsafe: o.unsafe,
          backingFormat: o.backingFormat,
          allowPaths: o.allowPath,
          onProgress: (d, t) => bar.update(d, t),
        });
        bar.stop();
        process.stdout.write(`Image rebased (${formatSize(r.copied)} copied into it).\n`);
      } finally {
        bar.stop();
      }
    }),
  );
}
