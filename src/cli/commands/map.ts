import type { Command } from 'commander';
import { open } from '../../formats/registry.js';
import { renderMapSvg, writeMapJson } from '../../ops/map.js';
import { writeMapHuman } from '../human.js';
import { partitionSpans, readPartitions } from '../../partitions/index.js';
import { action, collect, outputMode } from '../common.js';

/** `vdisk map`: where the data of an image (and its chain) sits. */
export function register(program: Command): void {
  const cmd = program
    .command('map')
    .description('show which ranges of the disk hold data, zeros or nothing (json as qemu-img map; svg draws a picture with the partitions over it)')
    .argument('<image>', 'image file')
    .option('-f, --format <fmt>', 'image format (detected by magic when absent)')
    .option('--output <mode>', 'human, json or svg', 'human')
    .option('--max-cells <n>', 'svg: most cells in the picture', '4096')
    .option('--allow-path <dir>', 'let references inside the image lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(cmd, async (image: string, o: { format?: string; output?: string; maxCells: string; allowPath: string[] }) => {
      const mode = outputMode(o.output, ['human', 'json', 'svg'] as const, 'human');
      const maxCells = Number.parseInt(o.maxCells, 10);
      const img = await open(image, { format: o.format, readOnly: true, allowPaths: o.allowPath });
      try {
        const write = (s: string): void => {
          process.stdout.write(s);
        };
        if (mode === 'json') await writeMapJson(img, write);
        else if (mode === 'human') await writeMapHuman(img, write);
        else {
          // Partition problems are check's business; the picture draws whatever table could be read.
          const table = await readPartitions(img);
          const scheme = table.scheme === 'none' ? undefined : table.scheme.toUpperCase();
          const cells = Number.isSafeInteger(maxCells) && maxCells > 0 ? Math.min(maxCells, 65536) : 4096;
          write(await renderMapSvg(img, { maxCells: cells, partitions: partitionSpans(table), ...(scheme ? { partitionScheme: scheme } : {}) }));
        }
      } finally {
        await img.close();
      }
    }),
  );
}
