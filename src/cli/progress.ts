/**
 * `-p` progress for long commands: a cli-progress bar when stderr is a terminal,
 * otherwise one "NN%" line per whole percent (readable in logs and pipes).
 */
import { createRequire } from 'node:module';
import type CliProgress from 'cli-progress';

/** A progress reporter: call `update` often, `stop` once at the end. */
export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

/** A reporter that prints nothing. */
export const noProgress: Progress = { update: () => undefined, stop: () => undefined };

/** Make a reporter for `label` writing to `stream` (a bar on a TTY, percentage lines otherwise). */
export function makeProgress(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (stream.isTTY) {
    // loaded here: only a terminal needs the bar library
    const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof CliProgress;
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream, hideCursor: true, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(done, total) {
        const mib = (n: number): number => Math.round(n / 2 ** 20);
        if (!started) {
          bar.start(mib(total), 0);
          started = true;
        }
        bar.update(mib(done));
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  let last = -1;
  return {
    update(done, total) {
      const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
      if (pct !== last) {
        last = pct;
        stream.write(`${label}: ${pct}%\n`);
      }
    },
    stop() {},
  };
}
