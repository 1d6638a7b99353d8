// Side-by-side timing: run our command and the peer's on the same input,
// alternating, several times; print medians and the ratio.
import { spawnSync } from 'node:child_process';

/**
 * The environment timed commands run in: ours minus NODE_EXTRA_CA_CERTS. Node parses
 * that certificate bundle before running any script (50 ms per start on the machine
 * this was measured on: `node -e 0` 0.07 s with it, 0.02 s without); no vdisk command
 * opens a TLS connection, and the peers (qemu-img, cp) never read it.
 */
export function benchEnv() {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

/** Wall time in seconds of one run of `cmd` (array) through the shell-less spawn. */
export function timeOnce(cmd, { selfTimed = false } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0], cmd.slice(1), { stdio: ['ignore', selfTimed ? 'pipe' : 'ignore', 'inherit'], encoding: 'utf8', env: benchEnv() });
  const t1 = process.hrtime.bigint();
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} exited ${r.status}`);
  // A self-timed command prints the seconds of its measured part as its last line.
  return selfTimed ? Number(r.stdout.trim().split('\n').pop()) : Number(t1 - t0) / 1e9;
}

/** `xs` in a uniformly random order (Fisher-Yates, in place); returns `xs`. */
export function shuffle(xs) {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Time `ours` and `peer` alternately `repeat` times (after one warm-up each).
 * `before` runs before every timed command (e.g. remove the output). With
 * `selfTimed`, our command reports its own seconds (start-up excluded).
 * Returns {ours, peer, ratio} with ratio = ours/peer wall time (lower is better).
 */
export function sideBySide(name, ours, peer, { repeat = 5, before, bytes, selfTimed = false } = {}) {
  const a = [];
  const b = [];
  before?.();
  timeOnce(ours, { selfTimed });
  before?.();
  timeOnce(peer);
  for (let i = 0; i < repeat; i++) {
    before?.();
    a.push(timeOnce(ours, { selfTimed }));
    before?.();
    b.push(timeOnce(peer));
  }
  const mo = median(a);
  const mp = median(b);
  const fmt = (s) => `${s.toFixed(3)} s${bytes ? ` (${(bytes / s / 2 ** 20).toFixed(0)} MiB/s)` : ''}`;
  console.log(`${name}\n  vdisk: ${fmt(mo)}\n  peer:  ${fmt(mp)}\n  time ratio vdisk/peer: ${(mo / mp).toFixed(2)}  (throughput ${(mp / mo).toFixed(2)}x the peer)`);
  return { ours: mo, peer: mp, ratio: mo / mp };
}
