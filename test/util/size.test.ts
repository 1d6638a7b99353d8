import { describe, expect, it } from 'vitest';
import { parseKeyValues, checkOptionKeys } from '../../src/util/options.js';
import { formatSize, parseSize } from '../../src/util/size.js';

describe('parseSize', () => {
  it.each([
    ['512', 512],
    ['64K', 65536],
    ['10M', 10 * 2 ** 20],
    ['2G', 2 * 2 ** 30],
    ['1T', 2 ** 40],
    ['1.5G', 1.5 * 2 ** 30],
    ['64KiB', 65536],
    ['100b', 100],
  ])('%s = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'abc', '12Q', '-5M', '1.5', '0x10', '99999999999999999999T'])('rejects %j with E_USAGE', (text) => {
    expect(() => parseSize(text)).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });

  it('prints sizes like qemu-img', () => {
    expect(formatSize(67108864)).toBe('64 MiB');
    expect(formatSize(512)).toBe('512 B');
    expect(formatSize(1.5 * 2 ** 30)).toBe('1.5 GiB');
  });
});

describe('-o options', () => {
  it('parses key=value lists, bare keys and escaped commas', () => {
    expect(parseKeyValues(['subformat=fixed,azure', 'name=a,,b'])).toEqual({ subformat: 'fixed', azure: 'on', name: 'a,b' });
  });

  it('names the valid keys when one is unknown', () => {
    expect(() => checkOptionKeys({ bogus: '1' }, { subformat: '', block_size: '' }, 'format vhd')).toThrow(/bogus.*subformat, block_size/);
  });
});
