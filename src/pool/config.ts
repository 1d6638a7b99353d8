/**
 * LVM2's config text grammar, as its metadata uses it: sections `name { ... }`,
 * assignments `key = value` where a value is a string, a number or a flat array
 * `[v, v, ...]`, and `#` comments. A tokenizer and a recursive-descent parser with
 * bounded depth, string length and number size, so hostile text fails quickly with
 * a VdiskError; and a writer that lays text out the way LVM2 writes its metadata.
 */
import { VdiskError } from '../errors.js';

/** A scalar or flat array value. */
export type ConfigScalar = string | number;
export type ConfigValue = ConfigScalar | ConfigScalar[];

/** A section: ordered keys to values or subsections. */
export class ConfigSection {
  readonly entries = new Map<string, ConfigValue | ConfigSection>();

  get(key: string): ConfigValue | ConfigSection | undefined {
    return this.entries.get(key);
  }

  section(key: string): ConfigSection | undefined {
    const v = this.entries.get(key);
    return v instanceof ConfigSection ? v : undefined;
  }

  /** Subsections in order, with their names. */
  sections(): Array<[string, ConfigSection]> {
    return [...this.entries].filter((e): e is [string, ConfigSection] => e[1] instanceof ConfigSection);
  }
}

/** Limits that keep parsing bounded. */
export const CONFIG_LIMITS = {
  /** Section nesting (VG metadata needs 4: vg, logical_volumes, lv, segment). */
  maxDepth: 16,
  /** Longest string (LVM2's own names are at most 128 bytes; descriptions and paths more). */
  maxString: 64 * 1024,
  /** Longest array. */
  maxArray: 1 << 16,
} as const;

type Token =
  | { t: '{' | '}' | '[' | ']' | ',' | '=' | 'eof'; at: number }
  | { t: 'id'; v: string; at: number }
  | { t: 'str'; v: string; at: number }
  | { t: 'num'; v: number; at: number };

const ID_CHAR = /[A-Za-z0-9_.+\-/@:]/;

class Lexer {
  private pos = 0;
  constructor(
    private readonly s: string,
    private readonly what: string,
  ) {}

  fail(msg: string, at = this.pos): never {
    const line = this.s.slice(0, at).split('\n').length;
    throw new VdiskError('E_CORRUPT', `${this.what}: metadata text line ${line}: ${msg}`);
  }

  next(): Token {
    const s = this.s;
    for (;;) {
      while (this.pos < s.length && /[ \t\r\n\0]/.test(s[this.pos]!)) this.pos++;
      if (s[this.pos] === '#') {
        const nl = s.indexOf('\n', this.pos);
        this.pos = nl < 0 ? s.length : nl + 1;
        continue;
      }
      break;
    }
    const at = this.pos;
    if (at >= s.length) return { t: 'eof', at };
    const c = s[at]!;
    if ('{}[],='.includes(c)) {
      this.pos++;
      return { t: c as '{', at };
    }
    if (c === '"' || c === "'") {
      let out = '';
      let i = at + 1;
      for (;;) {
        if (i >= s.length) this.fail('unterminated string', at);
        const d = s[i]!;
        if (d === c) break;
        if (d === '\\' && c === '"' && i + 1 < s.length) {
          out += s[i + 1];
          i += 2;
        } else {
          out += d;
          i++;
        }
        if (out.length > CONFIG_LIMITS.maxString) this.fail(`string longer than ${CONFIG_LIMITS.maxString} bytes`, at);
      }
      this.pos = i + 1;
      return { t: 'str', v: out, at };
    }
    if (/[0-9-]/.test(c)) {
      const m = /^-?(0x[0-9a-fA-F]+|[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)/.exec(s.slice(at, at + 64));
      if (m && !ID_CHAR.test(s[at + m[0].length] ?? ' ')) {
        if (m[0].length > 40) this.fail('number too long', at);
        const neg = m[0].startsWith('-');
        const v = (neg ? -1 : 1) * Number(neg ? m[0].slice(1) : m[0]);
        if (!Number.isFinite(v) || (Number.isInteger(v) && !Number.isSafeInteger(v))) this.fail(`number ${m[0]} is too large`, at);
        this.pos = at + m[0].length;
        return { t: 'num', v, at };
      }
    }
    if (ID_CHAR.test(c)) {
      let i = at;
      while (i < s.length && ID_CHAR.test(s[i]!)) i++;
      if (i - at > CONFIG_LIMITS.maxString) this.fail('name too long', at);
      this.pos = i;
      return { t: 'id', v: s.slice(at, i), at };
    }
    this.fail(`unexpected character ${JSON.stringify(c)}`, at);
  }
}

/** Parse LVM2 config text into its top-level section. */
export function parseConfig(text: string, what: string): ConfigSection {
  const lx: Lexer = new Lexer(text, what);
  let tok: Token = lx.next();
  const peek = (): Token => tok;
  const advance = (): Token => {
    const t = tok;
    tok = lx.next();
    return t;
  };

  const value = (): ConfigScalar => {
    const t = advance();
    if (t.t === 'str' || t.t === 'num') return t.v;
    return lx.fail('expected a string or a number', t.at);
  };

  const body = (into: ConfigSection, depth: number, closer: 'eof' | '}'): void => {
    for (;;) {
      if (tok.t === closer) return;
      const key = advance();
      if (key.t !== 'id' && key.t !== 'str') lx.fail(closer === '}' && key.t === 'eof' ? 'a section is not closed' : 'expected a name', key.at);
      const name = key.v;
      if (into.entries.has(name)) lx.fail(`"${name.slice(0, 64)}" appears twice`, key.at);
      if (tok.t === '{') {
        advance();
        if (depth + 1 > CONFIG_LIMITS.maxDepth) lx.fail(`sections nested deeper than ${CONFIG_LIMITS.maxDepth}`, key.at);
        const sub = new ConfigSection();
        body(sub, depth + 1, '}');
        advance();
        into.entries.set(name, sub);
      } else if (tok.t === '=') {
        advance();
        if (peek().t === '[') {
          advance();
          const arr: ConfigScalar[] = [];
          while (peek().t !== ']') {
            arr.push(value());
            if (arr.length > CONFIG_LIMITS.maxArray) lx.fail(`array longer than ${CONFIG_LIMITS.maxArray}`, key.at);
            if (peek().t === ',') advance();
            else if (peek().t !== ']') lx.fail('expected "," or "]"', peek().at);
          }
          advance();
          into.entries.set(name, arr);
        } else {
          into.entries.set(name, value());
        }
      } else {
        lx.fail(`expected "=" or "{" after "${name.slice(0, 64)}"`, tok.at);
      }
    }
  };

  const root = new ConfigSection();
  body(root, 0, 'eof');
  return root;
}

function quote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function scalar(v: ConfigScalar): string {
  return typeof v === 'number' ? String(v) : quote(v);
}

/**
 * One line of LVM2-style metadata: `key = value`. Arrays of strings go on one line
 * (`["READ", "WRITE"]`); LVM2 writes `stripes` one pair per line, which
 * {@link stripesLines} does.
 */
export function assign(key: string, v: ConfigValue): string {
  return Array.isArray(v) ? `${key} = [${v.map(scalar).join(', ')}]\n` : `${key} = ${scalar(v)}\n`;
}

/** The `stripes = [ "pv0", 0, ... ]` block as LVM2 lays it out. */
export function stripesLines(pairs: ReadonlyArray<readonly [string, number]>): string {
  return `stripes = [\n${pairs.map(([pv, pe]) => `${quote(pv)}, ${pe}`).join(',\n')}\n]\n`;
}
