import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

// Folders made by tempDir in this test file. The hook that removes them is registered
// here, while the file is collected: a hook registered from inside beforeAll or a test
// (where most callers make their folder) never ran, and each run left its folders in
// the system's temporary folder (66 GB of them on one developer machine).
const made: string[] = [];
afterAll(async () => {
  for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** A fresh temporary folder removed after the test file finishes. */
export async function tempDir(prefix = 'vdisk-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** The built CLI entry point (npm test builds dist/ first). */
export const VDISK_BIN = new URL('../../bin/vdisk.js', import.meta.url).pathname;

/** Deterministic pseudo-random bytes (xorshift32) so tests need no fixtures for data. */
export function patternBytes(length: number, seed = 1): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i + 4 <= length) out.writeUInt32LE(x, i);
    else for (let j = i; j < length; j++) out[j] = (x >>> ((j - i) * 8)) & 0xff;
  }
  return out;
}
