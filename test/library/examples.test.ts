/**
 * Every `@example` in the doc comments of the public surface runs, as written, against
 * the library: the examples are taken from the source (so the page and the test cannot
 * drift apart), `import … from 'vdisk'` is bound to src/index.ts, each runs in a fresh
 * folder, and what it prints must be what its `// …` comments after `console.log` say.
 */
import { spawnSync } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { format } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import * as vdisk from '../../src/index.js';
import { tempDir } from '../helpers/tmp.js';

const root = new URL('../..', import.meta.url).pathname;
const src = join(root, 'src');

interface Example {
  /** `file: function` the example documents. */
  where: string;
  code: string;
}

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** The ```ts blocks under `@example` tags in doc comments of `file`, each with the name it documents. */
function examplesIn(file: string, text: string): Example[] {
  const out: Example[] = [];
  for (const m of text.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*?)\*\/\s*export\s+(?:async\s+)?(?:function\*?\s*|class\s+|const\s+)(\w+)/g)) {
    const lines = m[1].split('\n').map((l) => l.replace(/^\s*\* ?/, ''));
    const at = lines.findIndex((l) => l.startsWith('@example'));
    if (at < 0) continue;
    const start = lines.indexOf('```ts', at);
    const end = lines.indexOf('```', start + 1);
    if (start < 0 || end < 0) throw new Error(`${file}: ${m[2]}: @example without a \`\`\`ts block`);
    out.push({ where: `${relative(root, file)}: ${m[2]}`, code: lines.slice(start + 1, end).join('\n') });
  }
  return out;
}

/** What the example says it prints: the comment after each console.log, and comment lines right after it. */
function expectedOutput(code: string): string[] {
  const out: string[] = [];
  let afterLog = false;
  for (const line of code.split('\n')) {
    const own = /^\s*\/\/ ?(.*)$/.exec(line);
    if (own && afterLog) {
      out.push(own[1]);
      continue;
    }
    afterLog = false;
    if (!line.includes('console.log(')) continue;
    const tail = /\); \/\/ ?(.*)$/.exec(line);
    if (tail) out.push(tail[1]);
    afterLog = true;
  }
  return out;
}

/** Run `code` with its `import { … } from 'vdisk'` lines bound to the library; what it printed. */
async function run(code: string): Promise<string[]> {
  const printed: string[] = [];
  const body = code.replace(/^import \{([^}]*)\} from 'vdisk';$/gm, (_all, names: string) => {
    for (const n of names.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (!(n in vdisk)) throw new Error(`the example imports ${n}, which 'vdisk' does not export`);
    }
    return `const {${names}} = vdisk;`;
  });
  if (/^import /m.test(body)) throw new Error('an example imports from somewhere other than vdisk');
  const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (...args: string[]) => (...a: unknown[]) => Promise<void>;
  await new AsyncFunction('vdisk', 'console', body)(vdisk, { log: (...args: unknown[]) => printed.push(...format(...args).split('\n')) });
  return printed;
}

const all: Example[] = [];
for (const file of await sources(src)) all.push(...examplesIn(file, await readFile(file, 'utf8')));

const home = process.cwd();
afterAll(() => process.chdir(home));

describe('the examples in the API docs', () => {
  it('every operation of the public surface has one', () => {
    const documented = new Set(all.map((e) => e.where.split(': ')[1]));
    for (const op of ['open', 'create', 'convert', 'check', 'commit', 'compare', 'resize', 'compact', 'rebase', 'info', 'map', 'createOva', 'extractPackage', 'readPartitions']) {
      expect(documented, op).toContain(op);
    }
  });

  it('type-check against the published types (strict, as a consumer compiles them)', async () => {
    const dir = await tempDir('vdisk-example-types-');
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          typeRoots: [join(root, 'node_modules', '@types')],
          types: ['node'],
          paths: { vdisk: [join(src, 'index.ts')] },
        },
        include: ['*.ts'],
      }),
    );
    await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    // Each example is a module of its own (top-level await, its own names).
    for (const [i, ex] of all.entries()) await writeFile(join(dir, `example${i}.ts`), `// ${ex.where}\n${ex.code}\nexport {};\n`);
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
    expect(r.stdout + r.stderr, 'tsc').toBe('');
    expect(r.status).toBe(0);
  }, 180_000);

  for (const ex of all) {
    it(`${ex.where} runs and prints what it says`, async () => {
      process.chdir(await tempDir('vdisk-example-'));
      try {
        expect(await run(ex.code)).toEqual(expectedOutput(ex.code));
      } finally {
        process.chdir(home);
      }
    });
  }
});
