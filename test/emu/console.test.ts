/** ConsoleMirror: live output of the screen and COM1 streams, each line once. */
import { describe, expect, it } from 'vitest';
import { ConsoleMirror, type ConsoleStream } from '../../src/emu/console.js';

function mirror() {
  let out = '';
  const m = new ConsoleMirror((t) => (out += t));
  return { m, out: () => out };
}
/** Feed both streams a character at a time, tty first, as print.inc does. */
function interleave(m: ConsoleMirror, tty: string, serial: string): void {
  for (let i = 0; i < Math.max(tty.length, serial.length); i++) {
    if (i < tty.length) m.write('tty', tty[i]!);
    if (i < serial.length) m.write('serial', serial[i]!);
  }
}

describe('ConsoleMirror', () => {
  it('shows a partial line at once', () => {
    const { m, out } = mirror();
    m.write('tty', 'Loading');
    expect(out()).toBe('Loading');
    m.write('tty', '...');
    expect(out()).toBe('Loading...');
  });

  it('prints a line carried by both streams once, in step', () => {
    const { m, out } = mirror();
    interleave(m, 'Hello\r\nLoading..', 'Hello\r\nLoading..');
    expect(out()).toBe('Hello\nLoading..');
    m.flush();
    expect(out()).toBe('Hello\nLoading..\n');
  });

  it('prints once when COM1 lags by whole lines, or runs ahead mid-line', () => {
    const lag = mirror();
    lag.m.write('tty', 'one\r\ntwo\r\nthr');
    lag.m.write('serial', 'one\r\ntwo\r\nthree\r\n');
    lag.m.write('tty', 'ee\r\n');
    expect(lag.out()).toBe('one\ntwo\nthree\n');
    const ahead = mirror();
    ahead.m.write('tty', 'Lo');
    ahead.m.write('serial', 'Loading');
    ahead.m.write('tty', 'ading\r\n');
    ahead.m.write('serial', '\r\n');
    expect(ahead.out()).toBe('Loading\n');
  });

  it('prints different text on each stream, neither lost', () => {
    const { m, out } = mirror();
    m.write('tty', 'screen');
    m.write('serial', 'serial line\r\n');
    m.write('tty', ' text\r\n');
    expect(out()).toBe('screen text\nserial line\n');
  });

  it('follows backspace and carriage-return overwrites on the live line', () => {
    const { m, out } = mirror();
    m.write('tty', 'ab\bc');
    expect(out()).toBe('ab\b \bc');
    m.write('tty', '\r10%\r20%');
    m.flush();
    expect(out().endsWith('20%\n')).toBe(true);
  });

  it('prints a line that only one stream carried', () => {
    for (const s of ['tty', 'serial'] as ConsoleStream[]) {
      const { m, out } = mirror();
      m.write(s, 'only\r\nprompt> ');
      m.flush();
      expect(out()).toBe('only\nprompt> \n');
    }
  });

  it('takes a line one stream carries further (input echoed to COM1 only) as the same line', () => {
    const { m, out } = mirror();
    interleave(m, 'first> ', 'first> ');
    m.write('serial', 'one');
    interleave(m, '\r\n', '\r\n');
    m.write('tty', '\r\n');
    m.write('serial', '\r\n');
    expect(out()).toBe('first> one\n\n');
  });
});
