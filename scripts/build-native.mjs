#!/usr/bin/env node
// Builds the native helper (native/seek.c: lseek with SEEK_DATA/SEEK_HOLE) into
// prebuilds/<platform>-<arch>/vdisk-seek.node, the path src/storage/native-seek.ts
// loads. The binary is committed, so installing vdisk compiles nothing; this script
// is for changing the C source and for CI, which checks that it still builds and
// that the committed binary loads and answers.
//
//   node scripts/build-native.mjs            rebuild the committed binary
//   node scripts/build-native.mjs --check    build into a temporary folder, then load
//                                            both that build and the committed one and
//                                            check they find the same holes
//
// One C file needs no node-gyp (whose header download needs nodejs.org): gcc against
// Node-API's headers, taken from the node-api-headers package (a devDependency), else
// from the running Node's own include/node, else /usr/include/node. Node-API is
// ABI-stable, so headers of any Node version >= 12.22 make a binary every later Node loads.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const source = join(root, 'native', 'seek.c');
const platformDir = `${process.platform}-${process.arch}`;
const committed = join(root, 'prebuilds', platformDir, 'vdisk-seek.node');

/** The folder holding node_api.h. */
function headerDir() {
  const candidates = [];
  try {
    const req = createRequire(join(root, 'package.json'));
    candidates.push(join(dirname(req.resolve('node-api-headers/package.json')), 'include'));
  } catch {
    // not installed: try Node's own headers
  }
  candidates.push(join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/include/node');
  const found = candidates.find((d) => existsSync(join(d, 'node_api.h')));
  if (!found) throw new Error(`node_api.h not found in ${candidates.join(', ')}: npm ci (node-api-headers), or install Node's headers`);
  return found;
}

/** Compile native/seek.c into `out`. */
function build(out) {
  mkdirSync(dirname(out), { recursive: true });
  const cc = process.env.CC ?? 'gcc';
  const args = [
    '-O2', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Werror',
    '-DNAPI_VERSION=8', `-I${headerDir()}`,
    // A reproducible binary: no build id, no build paths.
    '-Wl,--build-id=none', `-ffile-prefix-map=${root}=.`, '-s',
    '-o', out, source,
  ];
  execFileSync(cc, args, { stdio: 'inherit' });
}

/** Where the addon at `path` finds data and holes in a small sparse file, as [[start, end], ...]. */
function dataRuns(path) {
  const addon = createRequire(import.meta.url)(path);
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-seek-'));
  try {
    const f = join(dir, 'sparse');
    const fd = openSync(f, 'w+');
    try {
      ftruncateSync(fd, 64 << 20);
      writeSync(fd, Buffer.alloc(8192, 1), 0, 8192, 1 << 20);
      writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 40 << 20);
      const runs = [];
      for (let pos = 0; ; ) {
        const d = addon.seek(fd, pos, addon.SEEK_DATA);
        if (d < 0) break;
        const h = addon.seek(fd, d, addon.SEEK_HOLE);
        runs.push([d, h]);
        pos = h;
      }
      return runs;
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--check')) {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-native-'));
  try {
    const fresh = join(dir, 'vdisk-seek.node');
    build(fresh);
    const a = JSON.stringify(dataRuns(fresh));
    const b = JSON.stringify(dataRuns(committed));
    const want = JSON.stringify([[1 << 20, (1 << 20) + 8192], [40 << 20, (40 << 20) + 4096]]);
    if (a !== b) throw new Error(`fresh build finds ${a}, committed ${committed} finds ${b}`);
    if (a !== want) console.log(`note: this filesystem reports data runs ${a} (not page-exact ${want})`);
    console.log(`native seek: builds with ${headerDir()}; committed ${platformDir} binary loads and agrees`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else {
  build(committed);
  console.log(`built ${committed}: data runs ${JSON.stringify(dataRuns(committed))}`);
}
