/**
 * Mirrors the two console streams of a guest (INT 10h teletype and COM1) to the
 * terminal as they arrive, a character at a time, printing a line once when both
 * streams carry it (guests often print to both, in step or one behind the other).
 *
 * One stream owns the terminal's current line and is shown live; the other is taken
 * as an echo while its text is a prefix of what is shown (or of a line already
 * printed, when it lags by whole lines). A stream that pulls ahead of the owner with
 * the same text takes over; one whose text differs is printed as a line of its own
 * once the terminal's line is finished.
 */
import { VdiskError } from '../errors.js';
import type { StateReader, StateWriter, Stateful } from './state/codec.js';

export type ConsoleStream = 'tty' | 'serial';

/** Lines remembered per stream for the other stream to echo. */
const MAX_OWED = 50;

export class ConsoleMirror implements Stateful {
  private readonly partial = { tty: '', serial: '' };
  private readonly cr = { tty: false, serial: false };
  /** Lines the other stream printed that this stream has not echoed yet. */
  private readonly owed = { tty: [] as string[], serial: [] as string[] };
  /** The stream whose text is on the terminal's current line, and that text. */
  private live: ConsoleStream | null = null;
  private shown = '';
  /** Finished lines of a diverging stream, waiting for the terminal's line to end. */
  private readonly held: string[] = [];
  /** This stream ended, as an echo, the line the other stream is still showing. */
  private readonly echoEnded = { tty: false, serial: false };

  constructor(private readonly out: (text: string) => void) {}

  /** Where each stream is in its line, so a resumed run's console carries on as if never stopped. */
  saveState(w: StateWriter): void {
    for (const k of ['tty', 'serial'] as const) {
      w.str(this.partial[k]).bool(this.cr[k]).strs(this.owed[k]).bool(this.echoEnded[k]);
    }
    w.u8(this.live === null ? 0 : this.live === 'tty' ? 1 : 2).str(this.shown).strs(this.held);
  }
  loadState(r: StateReader): void {
    for (const k of ['tty', 'serial'] as const) {
      this.partial[k] = r.str(`${k} partial line`);
      this.cr[k] = r.bool(`${k} carriage return`);
      this.owed[k].splice(0, this.owed[k].length, ...r.strs(`${k} owed lines`, MAX_OWED));
      this.echoEnded[k] = r.bool(`${k} echo ended`);
    }
    const live = r.u8('live stream');
    if (live > 2) throw new VdiskError('E_CORRUPT', `${r.what}: live stream ${live} is not 0-2`);
    this.live = live === 0 ? null : live === 1 ? 'tty' : 'serial';
    this.shown = r.str('shown line');
    // Counts are bounded by the section's length: each string costs at least its 4-byte length.
    this.held.length = 0;
    for (const l of r.strs('held lines', 1 << 24)) this.held.push(l);
  }

  /** Feed characters the guest sent on `kind`. */
  write(kind: ConsoleStream, text: string): void {
    for (const ch of text) {
      if (this.cr[kind] && ch !== '\n' && ch !== '\r') this.setPartial(kind, '');
      this.cr[kind] = ch === '\r';
      if (ch === '\n') this.endLine(kind);
      else if (ch === '\b') this.setPartial(kind, this.partial[kind].slice(0, -1));
      else if (ch >= ' ' || ch === '\t') this.setPartial(kind, this.partial[kind] + ch);
    }
  }

  private other(kind: ConsoleStream): ConsoleStream {
    return kind === 'tty' ? 'serial' : 'tty';
  }

  private setPartial(kind: ConsoleStream, text: string): void {
    this.partial[kind] = text;
    // Echoing a line the other stream already finished.
    if (this.owed[kind].some((l) => l.startsWith(text))) return;
    if (this.live === this.other(kind)) {
      if (this.shown.startsWith(text)) return; // in step with the owner, or just behind
      if (!text.startsWith(this.shown)) return; // different text: printed at its newline
    }
    if (text === '' && this.live !== kind) return;
    this.live = kind;
    this.show(text);
  }

  /** Bring the terminal's current line from `shown` to `text`. */
  private show(text: string): void {
    if (text.startsWith(this.shown)) this.out(text.slice(this.shown.length));
    else if (this.shown.startsWith(text)) this.out('\b \b'.repeat(this.shown.length - text.length));
    else this.out(`\r${text}${' '.repeat(Math.max(0, this.shown.length - text.length))}\r${text}`);
    this.shown = text;
  }

  private endLine(kind: ConsoleStream): void {
    const text = this.partial[kind];
    this.partial[kind] = '';
    const other = this.other(kind);
    // The same line, or (when not blank) the start of it: one stream may carry more of a
    // line than the other, such as typed input a guest echoes to COM1 only.
    const owed = this.owed[kind].findIndex((l) => l === text || (text !== '' && l.startsWith(text)));
    if (owed >= 0) {
      this.owed[kind].splice(0, owed + 1);
      return;
    }
    if (this.live !== null && this.shown === text) {
      // This stream finishes the line on the terminal (as owner, or as the echo that got there first).
      this.out('\n');
      this.live = null;
      this.shown = '';
      if (this.echoEnded[other]) this.echoEnded[other] = false;
      else this.remember(other, text);
      this.release();
      return;
    }
    if (this.live === other && text !== '' && this.shown.startsWith(text)) {
      // An echo that ends its line while the owner carries on with more of it.
      this.echoEnded[kind] = true;
      return;
    }
    if (this.live !== null) {
      this.held.push(text);
      this.remember(other, text);
      return;
    }
    this.out(`${text}\n`);
    this.remember(other, text);
  }

  private remember(kind: ConsoleStream, line: string): void {
    this.owed[kind].push(line);
    if (this.owed[kind].length > MAX_OWED) this.owed[kind].shift();
  }

  private release(): void {
    for (const l of this.held.splice(0)) this.out(`${l}\n`);
  }

  /** End the terminal's line if something is on it (a prompt), and print held lines and unfinished ones. */
  flush(): void {
    let line = this.live !== null ? this.shown : null;
    if (line !== null) this.out('\n');
    this.live = null;
    this.shown = '';
    this.release();
    for (const kind of ['tty', 'serial'] as const) {
      const t = this.partial[kind];
      this.partial[kind] = '';
      if (!t || (line !== null && line.startsWith(t)) || this.owed[kind].some((l) => l.startsWith(t))) continue;
      this.out(`${t}\n`);
      line = t;
    }
  }
}
