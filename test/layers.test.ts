/**
 * The layer picture of DESIGN.md, enforced: every import in src/ (static, type-only,
 * re-export or dynamic) goes to the file's own layer or one below it, never up and
 * never sideways to a sibling. A new top-level folder under src/ fails here until it
 * is given a place.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = new URL('..', import.meta.url).pathname;
const src = join(root, 'src');

/** Bottom first; a layer imports only layers of a lower rank (siblings of one rank not each other). */
const LAYERS: ReadonlyArray<{ rank: number; layer: string; paths: readonly string[] }> = [
  { rank: 0, layer: 'errors', paths: ['errors.ts'] },
  { rank: 1, layer: 'util', paths: ['util/'] },
  { rank: 2, layer: 'storage', paths: ['storage/'] },
  { rank: 3, layer: 'device', paths: ['device/'] },
  { rank: 4, layer: 'formats', paths: ['formats/'] },
  { rank: 4, layer: 'partitions', paths: ['partitions/'] },
  // a pool is a device made of images, so it stands on formats; operations stand on
  // both (convert -O lvm writes a new LV)
  { rank: 5, layer: 'pool', paths: ['pool/'] },
  { rank: 6, layer: 'ops', paths: ['ops/'] },
  { rank: 6, layer: 'nbd', paths: ['nbd/'] },
  { rank: 6, layer: 'emu', paths: ['emu/'] },
  { rank: 7, layer: 'cli', paths: ['cli/'] },
  // the public library surface (and its vdisk/driver, vdisk/testing subpaths) re-exports every layer; nothing imports it
  { rank: 7, layer: 'api', paths: ['index.ts', 'driver.ts', 'testing.ts'] },
];

/**
 * Imports that break the order today, each with why it stays. Keyed `from -> to`,
 * paths relative to src/.
 */
const ALLOWED: ReadonlyMap<string, string> = new Map([
  // open() is the one resolver of addresses every command goes through; an lvm:VG/LV address loads the pool on demand.
  ['formats/registry.ts -> pool/open.ts', 'lvm: addresses in open()'],
]);

function layerOf(file: string): { rank: number; layer: string } | undefined {
  return LAYERS.find((l) => l.paths.some((p) => (p.endsWith('/') ? file.startsWith(p) : file === p)));
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

interface Edge {
  from: string;
  to: string;
}

/** Every relative import of every file under src/, as paths relative to src/ (`.js` read as `.ts`). */
async function edges(): Promise<{ files: string[]; edges: Edge[] }> {
  const files = (await sources(src)).map((f) => relative(src, f)).sort();
  const out: Edge[] = [];
  for (const from of files) {
    const text = await readFile(join(src, from), 'utf8');
    // readImportFiles + detectJavaScriptImports: static, type-only, `export … from` and `import()`
    for (const ref of ts.preProcessFile(text, true, true).importedFiles) {
      if (!ref.fileName.startsWith('.')) continue;
      const to = relative(src, resolve(src, dirname(from), ref.fileName)).replace(/\.js$/, '.ts');
      out.push({ from, to });
    }
  }
  return { files, edges: out };
}

describe('layers', () => {
  it('every file under src/ belongs to a layer', async () => {
    const { files } = await edges();
    expect(files.filter((f) => !layerOf(f))).toEqual([]);
  });

  it('imports go down the layers (errors ← util ← storage ← device ← formats, partitions ← pool ← ops, nbd, emu ← cli, index), never up or sideways', async () => {
    const { edges: all } = await edges();
    const bad: string[] = [];
    const used = new Set<string>();
    for (const { from, to } of all) {
      const a = layerOf(from);
      const b = layerOf(to);
      if (!a || !b) {
        bad.push(`${from} -> ${to} (outside every layer)`);
        continue;
      }
      if (a.layer === b.layer || b.rank < a.rank) continue;
      const key = `${from} -> ${to}`;
      if (ALLOWED.has(key)) {
        used.add(key);
        continue;
      }
      bad.push(`${key} (${a.layer} imports ${b.rank === a.rank ? 'its sibling' : 'the higher layer'} ${b.layer})`);
    }
    expect(bad).toEqual([]);
    // an exception that no longer happens is removed, so it cannot cover a new one
    expect([...ALLOWED.keys()].filter((k) => !used.has(k))).toEqual([]);
  });

  it('no files of one format folder import each other in a cycle (the rooms: layout ← image ← maintain, create, check ← index)', async () => {
    const { edges: all } = await edges();
    const folderOf = (f: string): string | undefined => /^formats\/[^/]+\//.exec(f)?.[0];
    const next = new Map<string, string[]>();
    for (const { from, to } of all) {
      if (folderOf(from) && folderOf(from) === folderOf(to)) next.set(from, [...(next.get(from) ?? []), to]);
    }
    // Cycles known today, each to be broken (remove the entry when it is).
    const known = new Set<string>([]);
    const cycles: string[] = [];
    for (const [a, tos] of next) {
      for (const b of tos) {
        // a -> b, and b leads back to a within the folder
        const seen = new Set<string>();
        const stack = [b];
        while (stack.length) {
          const x = stack.pop()!;
          if (x === a) {
            const key = [a, b].sort().join(' <-> ');
            if (!known.has(key) && !cycles.includes(key)) cycles.push(key);
            break;
          }
          if (seen.has(x)) continue;
          seen.add(x);
          stack.push(...(next.get(x) ?? []));
        }
      }
    }
    expect(cycles).toEqual([]);
  });

  it('sees the imports it judges (static, type-only, re-export and dynamic)', async () => {
    const { edges: all } = await edges();
    const has = (from: string, to: string): boolean => all.some((e) => e.from === from && e.to === to);
    expect(has('storage/copy.ts', 'storage/storage.ts')).toBe(true); // import { IO_CHUNK, type Storage }
    expect(has('formats/driver.ts', 'device/check.ts')).toBe(true); // import type
    expect(has('driver.ts', 'storage/containers/tar.ts')).toBe(true); // export … from
    expect(has('storage/address.ts', 'storage/containers/location.ts')).toBe(true); // import()
  });
});
