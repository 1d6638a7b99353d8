/** Assertions about the VdiskErrors a call rejects with. */
import { expect } from 'vitest';
import { isVdiskError } from '../../src/errors.js';

/**
 * Expect `p` to reject with a VdiskError of `code` whose message contains `text`
 * (a string) or matches it (a RegExp), when given.
 */
export async function expectCode(p: Promise<unknown>, code: string, text?: string | RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isVdiskError(err), `expected VdiskError ${code}, got ${String(err)}`).toBe(true);
  if (!isVdiskError(err)) return;
  expect(err.code).toBe(code);
  if (typeof text === 'string') expect(err.message).toContain(text);
  else if (text) expect(err.message).toMatch(text);
}
