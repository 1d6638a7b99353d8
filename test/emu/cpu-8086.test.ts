/**
 * CPU conformance over the SingleStepTests 8086 suite: every test passes except the
 * documented 8086-vs-386 differences, which are counted per reason.
 */
import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SUITE, flagMasks, known386Difference, loadTests, runTest } from './singlestep.js';

const files = existsSync(SUITE) ? readdirSync(SUITE).filter((f) => f.endsWith('.json.gz')).sort() : [];

describe('8086 single-step conformance', () => {
  it.skipIf(files.length === 0)('finds the suite', () => {
    expect(files.length).toBeGreaterThan(300);
  });
  const masks = files.length ? flagMasks() : new Map<string, number>();
  const skipped = new Map<string, number>();
  for (const file of files) {
    const key = file.replace('.json.gz', '');
    it(key, () => {
      const mask = masks.get(key) ?? masks.get(key.split('.')[0]!) ?? 0xffff;
      const failures: string[] = [];
      for (const t of loadTests(file)) {
        const why = known386Difference(file, t);
        if (why) {
          skipped.set(why, (skipped.get(why) ?? 0) + 1);
          continue;
        }
        const err = runTest(t, mask);
        if (err) failures.push(`${t.name} [${t.bytes.map((b) => b.toString(16).padStart(2, '0')).join(' ')}]: ${err}`);
      }
      expect(failures).toEqual([]);
    });
  }
  it.skipIf(files.length === 0)('lists the skipped 8086-vs-386 differences', () => {
    for (const [why, n] of skipped) process.stdout.write(`skipped ${n} tests: ${why}\n`);
    expect(skipped.size).toBeGreaterThan(0);
  });
});
