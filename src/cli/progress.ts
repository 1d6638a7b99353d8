import cliProgress from 'cli-progress';

/** A progress reporter for `-p`: a bar on a terminal, percentage lines otherwise. */
export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

/** Make a reporter for `label`; a no-op one when `enabled` is false. */
export function progress(label: string, enabled: boolean): Progress {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(done, total) {
        const d = Math.floor(done / 2 ** 20);
        const t = Math.max(1, Math.ceil(total / 2 ** 20));
        if (!started) {
          bar.start(t, d);
          started = true;
        } else bar.update(d);
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  let last = -1;
  return {
    update(done, total) {
      const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
      if (pct !== last) {
        last = pct;
        process.stderr.write(`${label}: ${pct}%\n`);
      }
    },
    stop() {
      if (last !== 100) process.stderr.write(`${label}: 100%\n`);
    },
  };
}
