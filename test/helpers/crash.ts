/**
 * Crash sweeps: run a workload once to count its writes, then once per write with a
 * fault at that write, and check what survives. Formats use it to prove their write
 * ordering (DESIGN.md: data, then map entry, then header/footer).
 */
import { FaultPlan, FaultStorage } from '../../src/storage/fault.js';
import { MemoryLocation } from '../../src/storage/location.js';

/** What the workload reports as it goes: how many of its steps were flushed. */
export interface CrashProgress {
  /** Number of workload steps known durable (set after each successful flush). */
  flushedSteps: number;
}

/** Options for {@link crashSweep}. */
export interface CrashSweepOptions {
  /** Files present before the workload (name → bytes). */
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
}

function folder(initial: Map<string, Buffer>, plan: FaultPlan, name: string): { loc: MemoryLocation; stores: Map<string, FaultStorage> } {
  const stores = new Map<string, FaultStorage>();
  const make = (n: string): FaultStorage => {
    const s = new FaultStorage(Buffer.alloc(0), plan, n);
    stores.set(n, s);
    return s;
  };
  const files = new Map<string, FaultStorage>();
  for (const [n, bytes] of initial) {
    const s = new FaultStorage(bytes, plan, n);
    stores.set(n, s);
    files.set(n, s);
  }
  return { loc: new MemoryLocation(name, files, make), stores };
}

/** Run the sweep; returns the number of writes the workload makes (the crash points tried). */
export async function crashSweep(opts: CrashSweepOptions): Promise<number> {
  const dry = new FaultPlan(0);
  const { loc } = folder(opts.initial, dry, opts.name);
  const progress: CrashProgress = { flushedSteps: 0 };
  await opts.workload(loc, progress);
  const total = dry.writes;
  const modes = opts.modes ?? ['ordered', 'power-loss'];
  for (const tear of opts.tear === false ? (['none'] as const) : (['none', 'half'] as const)) {
    for (let at = 1; at <= total; at++) {
      const plan = new FaultPlan(at, tear);
      const run = folder(opts.initial, plan, opts.name);
      const p: CrashProgress = { flushedSteps: 0 };
      await opts.workload(run.loc, p).then(
        () => {
          if (!plan.crashed) throw new Error(`crash sweep: write ${at} was never reached on the second run (workload not deterministic)`);
        },
        (err: unknown) => {
          if (!plan.crashed) throw err;
        },
      );
      for (const mode of modes) {
        const files = new Map<string, Buffer>();
        for (const [n, s] of run.stores) {
          // A file the workload made after the last flush is gone after a power loss.
          if (run.loc.files.has(n)) files.set(n, s.afterCrash(mode));
        }
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
