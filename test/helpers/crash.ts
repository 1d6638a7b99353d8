/**
 * Crash sweeps: run a workload once to count its writes, then once per write with a
 * fault at that write, and check what survives. Formats use it to prove their write
 * ordering (DESIGN.md: data, then map entry, then header/footer).
 */
import { FaultPlan, FaultStorage } from '../../src/storage/fault.js';
import { MemoryLocation, type NamespaceWatcher } from '../../src/storage/location.js';
import type { Storage } from '../../src/storage/storage.js';

/** What the workload reports as it goes: how many of its steps were flushed. */
export interface CrashProgress {
  /** Number of workload steps known durable (set after each successful flush). */
  flushedSteps: number;
}

/** Options for {@link crashSweep}. */
export interface CrashSweepOptions {
  /** Files present before the workload (name → bytes); they count as durable. */
  initial: Map<string, Buffer>;
  /** Main image name inside the memory folder. */
  name: string;
  /** The workload: writes through `location`, calls flush, updates `progress`. */
  workload: (location: MemoryLocation, progress: CrashProgress) => Promise<void>;
  /**
   * Check the files that survive a crash at write `at` (1-based): must open and hold
   * every step up to `flushedSteps`. Throw to fail.
   */
  verify: (files: Map<string, Buffer>, progress: CrashProgress, at: number, mode: 'ordered' | 'power-loss') => Promise<void>;
  /** Survival models to check (default both). */
  modes?: ReadonlyArray<'ordered' | 'power-loss'>;
  /** Also tear the failing write in half (default true). */
  tear?: boolean;
  /**
   * Also crash at each flush (before it makes anything durable), so a power loss
   * between a workload's last write and the flush that should follow is tried too
   * (default false).
   */
  flushes?: boolean;
}

/**
 * A memory folder whose files fail by `plan`, and whose names are crash-visible too:
 * creating, renaming and removing a file each count as one write point. `durable`
 * holds the folder's names as a power loss leaves them: every name change up to the
 * last flush of any file (a journalling file system commits its metadata in order,
 * and an fsync commits all of it so far) or the last rename (FileLocation.rename
 * syncs the folder).
 */
function folder(initial: Map<string, Buffer>, plan: FaultPlan, name: string): { loc: MemoryLocation; durable: () => Map<string, FaultStorage> } {
  const files = new Map<string, FaultStorage>();
  for (const [n, bytes] of initial) files.set(n, new FaultStorage(bytes, plan, n));
  let durable = new Map(files);
  const live = files as Map<string, Storage>;
  const commit = (): void => {
    durable = new Map(files);
  };
  plan.onFlush = commit;
  const watch: NamespaceWatcher = {
    before: (op, n, to) => plan.step(`${op} ${n}${to ? ` -> ${to}` : ''}`),
    after: (op) => {
      if (op === 'rename') commit();
    },
  };
  const loc = new MemoryLocation(name, live, (n) => new FaultStorage(Buffer.alloc(0), plan, n), watch);
  return { loc, durable: () => durable };
}

/**
 * Run the sweep; returns the number of write points the workload has (the crash
 * points tried): storage writes and truncates, and file creations, renames and
 * removals. One more point is checked: a crash just after the workload returns.
 */
export async function crashSweep(opts: CrashSweepOptions): Promise<number> {
  const dry = new FaultPlan(0);
  dry.countFlushes = opts.flushes === true;
  const { loc } = folder(opts.initial, dry, opts.name);
  const progress: CrashProgress = { flushedSteps: 0 };
  await opts.workload(loc, progress);
  const total = dry.writes;
  const modes = opts.modes ?? ['ordered', 'power-loss'];
  for (const tear of opts.tear === false ? (['none'] as const) : (['none', 'half'] as const)) {
    // Point total + 1: the workload finishes, then the power goes (what it left unflushed is lost).
    for (let at = 1; at <= total + (tear === 'none' ? 1 : 0); at++) {
      const plan = new FaultPlan(at, tear);
      plan.countFlushes = opts.flushes === true;
      const run = folder(opts.initial, plan, opts.name);
      const p: CrashProgress = { flushedSteps: 0 };
      await opts.workload(run.loc, p).then(
        () => {
          if (!plan.crashed && at <= total) throw new Error(`crash sweep: write ${at} was never reached on the second run (workload not deterministic)`);
        },
        (err: unknown) => {
          if (!plan.crashed) throw err;
        },
      );
      for (const mode of modes) {
        // In order: the folder as the workload left it. Power loss: the names as last
        // made durable (a file made or renamed since is gone), each with its flushed bytes.
        const names = mode === 'ordered' ? (run.loc.files as Map<string, FaultStorage>) : run.durable();
        const files = new Map<string, Buffer>();
        for (const [n, s] of names) files.set(n, s.afterCrash(mode));
        try {
          await opts.verify(files, { ...p }, at, mode);
        } catch (err) {
          const msg = err instanceof Error ? err.message : String(err);
          throw new Error(`crash at write ${at}/${total} (${mode}, tear=${tear}): ${msg}`, { cause: err });
        }
      }
    }
  }
  return total;
}
