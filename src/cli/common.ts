import type { Command } from 'commander';
import { VdiskError, isVdiskError } from '../errors.js';

/** Global flags every command can see. */
export interface GlobalFlags {
  debug?: boolean;
}

/** Collect a repeatable option into an array (commander helper). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Print an error the CLI way: `vdisk: <message>`, with the stack only under --debug;
 * with `json`, one line `{"error": {code, message, file?, field?, offset?, value?}}`
 * instead (an error that is not a VdiskError has code `E_INTERNAL`).
 */
export function reportError(err: unknown, debug: boolean, json = false): void {
  if (json) {
    const error = isVdiskError(err) ? err.toJSON() : { name: 'Error', code: 'E_INTERNAL', message: err instanceof Error ? err.message : String(err) };
    process.stderr.write(`${JSON.stringify({ error })}\n`);
  } else if (isVdiskError(err)) {
    process.stderr.write(`vdisk: ${err.message}\n`);
  } else if (err instanceof Error) {
    process.stderr.write(`vdisk: internal error: ${err.message}\n`);
  } else {
    process.stderr.write(`vdisk: ${String(err)}\n`);
  }
  if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
}

/**
 * Wrap a command action: errors become `vdisk: …` (JSON under `--output json`) and exit code 1 (or `errorExit`),
 * and a number returned by the action becomes the exit code.
 */
export function action<A extends unknown[]>(
  cmd: Command,
  fn: (...args: A) => Promise<number | void>,
  errorExit = 1,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      const code = await fn(...args);
      if (typeof code === 'number') process.exitCode = code;
    } catch (err) {
      const root = cmd.parent ?? cmd;
      // A command asked for JSON output reports its errors as JSON too.
      const json = (cmd.opts() as { output?: unknown }).output === 'json';
      reportError(err, Boolean((root.opts() as GlobalFlags).debug), json);
      process.exitCode = errorExit;
    }
  };
}

/** Check `--output` against the allowed values. */
export function outputMode<T extends string>(value: string | undefined, allowed: readonly T[], fallback: T): T {
  const v = (value ?? fallback) as T;
  if (!allowed.includes(v)) throw new VdiskError('E_USAGE', `--output must be one of ${allowed.join(', ')}, not "${value}"`);
  return v;
}
