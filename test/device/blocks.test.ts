import { describe, expect, it } from 'vitest';
import { blockPieces } from '../../src/device/blocks.js';

describe('blockPieces', () => {
  it('splits a range at block boundaries and covers it exactly', () => {
    expect([...blockPieces(1000, 5000, 2048)]).toEqual([
      { index: 0, within: 1000, done: 0, length: 1048 },
      { index: 1, within: 0, done: 1048, length: 2048 },
      { index: 2, within: 0, done: 3096, length: 1904 },
    ]);
    expect([...blockPieces(4096, 0, 512)]).toEqual([]);
    expect([...blockPieces(2 ** 40, 512, 2 ** 21)]).toEqual([{ index: 2 ** 19, within: 0, done: 0, length: 512 }]);
  });
});
