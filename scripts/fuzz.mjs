#!/usr/bin/env node
// Mutation fuzzing of every reader, against the built library:
//
//   npm run fuzz -- --target T --cases N --seed S      (T: a name, a comma list, or all)
//   npm run fuzz -- --target T --seed S --case I       (replay one case)
//   npm run fuzz -- --list
//
// Each case damages a valid seed image (bit flips, truncation, splatted bytes,
// header fields set to extreme values, or, for text, hostile tokens and lines) and
// uses it the way the CLI does. It must work or fail with a VdiskError, within
// --timeout ms and without the worker's heap passing --memory MiB or the process's
// resident size growing by more. Cases run in a worker thread so a hang or a blow-up
// is cut off and the run goes on; every other outcome is a crash, saved with its
// target, seed and case number under --crashes (fuzz/crashes by default). Case I of
// seed S is the same bytes on every run, so a saved crash replays with --case I.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fork } from 'node:child_process';
import { parseArgs } from 'node:util';
import { isVdiskError } from '../dist/index.js';
import { TARGETS } from './fuzz-targets.mjs';

/** mulberry32: small, fast, and the same everywhere. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One random stream per (seed, case), so any case can be replayed alone. */
function caseRandom(seed, index) {
  return rng(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35));
}

const EXTREMES = [0n, 1n, 0x7fn, 0x80n, 0xffn, 0x7fffn, 0xffffn, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn, 0x7fffffffffffffffn, 0xffffffffffffffffn];

function writeField(buf, f, value, bigEndian) {
  if (f.offset < 0 || f.offset + f.size > buf.length) return;
  const v = value & ((1n << BigInt(f.size * 8)) - 1n);
  if (f.size === 8) {
    if (bigEndian) buf.writeBigUInt64BE(v, f.offset);
    else buf.writeBigUInt64LE(v, f.offset);
  } else if (bigEndian) buf.writeUIntBE(Number(v), f.offset, f.size);
  else buf.writeUIntLE(Number(v), f.offset, f.size);
}

/** Damage binary `seed`; returns the bytes and a description of what was done. */
function mutateBinary(seed, target, rand) {
  const data = Buffer.from(seed);
  const hot = Math.min(data.length, target.hot ?? 4096);
  const tailStart = target.tail ? Math.max(0, data.length - target.tail) : 0;
  const fields = target.tailFields ? target.tailFields(data.length - 512) : (target.fields ?? []);
  const where = () => (target.tail && rand() < 0.8 ? tailStart + Math.floor(rand() * (data.length - tailStart)) : rand() < 0.8 ? Math.floor(rand() * hot) : Math.floor(rand() * data.length));
  const kind = rand();
  if (kind < 0.3 || (fields.length === 0 && kind >= 0.6)) {
    const flips = 1 + Math.floor(rand() * 4);
    const at = [];
    for (let k = 0; k < flips; k++) {
      const pos = where();
      data[pos] ^= 1 << Math.floor(rand() * 8);
      at.push(pos);
    }
    return { data, how: `flip@${at.join(',')}` };
  }
  if (kind < 0.45) {
    const len = Math.floor(rand() * data.length);
    return { data: data.subarray(0, len), how: `truncate@${len}` };
  }
  if (kind < 0.6) {
    const pos = where();
    const n = 1 + Math.floor(rand() * 64);
    const fill = rand() < 0.5 ? Math.floor(rand() * 256) : -1;
    for (let i = pos; i < Math.min(data.length, pos + n); i++) data[i] = fill >= 0 ? fill : Math.floor(rand() * 256);
    return { data, how: `splat@${pos}+${n}` };
  }
  const f = fields[Math.floor(rand() * fields.length)];
  const value = rand() < 0.7 ? EXTREMES[Math.floor(rand() * EXTREMES.length)] : BigInt(Math.floor(rand() * 2 ** 32));
  writeField(data, f, value, target.bigEndian ?? false);
  return { data, how: `field ${f.name}=${value}` };
}

const HOSTILE_NUMBERS = ['0', '1', '-1', '4294967295', '4294967296', '9007199254740993', '99999999999999999999', '1e308', '0x10', 'x', ''];
const HOSTILE_NAMES = ['"/etc/passwd"', '"../x.vmdk"', '""', '"nope.vmdk"', '"a\\\\..\\\\..\\\\b"', '"p.vmdk"', '"\u0000"', '"' + 'A'.repeat(5000) + '"'];
const HOSTILE_WORDS = ['SPARSE', 'FLAT', 'ZERO', 'VMFS', 'VMFSSPARSE', 'SESPARSE', 'RW', 'RDONLY', 'NOACCESS', 'monolithicSparse', 'streamOptimized', 'custom', '<', '>', '&amp;', '<!DOCTYPE x [<!ENTITY a "aaaa">]>', '&a;', 'xmlns:x="y"'];

/** Damage text `seed` a token or a line at a time (or, now and then, a byte). */
function mutateText(seed, rand) {
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const text = seed.toString('latin1');
  const lines = text.split('\n');
  const li = Math.floor(rand() * lines.length);
  const kind = rand();
  let how;
  if (kind < 0.25) {
    lines[li] = lines[li].replace(/\d+/g, (m) => (rand() < 0.5 ? pick(HOSTILE_NUMBERS) : m));
    how = `numbers in line ${li}`;
  } else if (kind < 0.4) {
    lines[li] = lines[li].replace(/"[^"]*"/g, (m) => (rand() < 0.6 ? pick(HOSTILE_NAMES) : m));
    how = `names in line ${li}`;
  } else if (kind < 0.55) {
    const words = lines[li].split(/(\s+|=|<|>)/);
    const wi = Math.floor(rand() * words.length);
    words[wi] = pick(HOSTILE_WORDS);
    lines[li] = words.join('');
    how = `word ${wi} of line ${li}`;
  } else if (kind < 0.65) {
    lines.splice(li, 1);
    how = `delete line ${li}`;
  } else if (kind < 0.75) {
    const n = 1 + Math.floor(rand() * (rand() < 0.1 ? 2000 : 3));
    lines.splice(li, 0, ...Array(n).fill(lines[li]));
    how = `repeat line ${li} ×${n}`;
  } else if (kind < 0.85) {
    const lj = Math.floor(rand() * lines.length);
    [lines[li], lines[lj]] = [lines[lj], lines[li]];
    how = `swap lines ${li},${lj}`;
  } else {
    const b = Buffer.from(text, 'latin1');
    const pos = Math.floor(rand() * b.length);
    b[pos] = Math.floor(rand() * 256);
    return { data: b, how: `byte@${pos}` };
  }
  return { data: Buffer.from(lines.join('\n'), 'latin1'), how };
}

/** The files of case `index`: the seed with one file damaged. */
function makeCase(seedSet, target, seed, index) {
  const rand = caseRandom(seed, index);
  const victim = seedSet.mutate ?? seedSet.main;
  const original = seedSet.files.get(victim);
  let { data, how } = target.text ? mutateText(original, rand) : mutateBinary(original, target, rand);
  if (target.fix && rand() < 0.5) {
    data = target.fix(data);
    how += ' (checksums fixed)';
  }
  let files = new Map(seedSet.files);
  files.set(victim, data);
  let main = seedSet.main;
  if (seedSet.rebuild) ({ files, main } = seedSet.rebuild(files));
  return { files, main, how, victim };
}

const post = (m) => process.send(m);

/** Worker: build nothing, take seeds from the parent, run cases from `start`, report each. */
async function workerMain(workerData) {
  const { targetName, seedSet, seed, start, end, memoryMiB } = workerData;
  const target = TARGETS[targetName];
  // Buffers arrive as plain Uint8Arrays.
  seedSet.files = new Map([...seedSet.files].map(([n, b]) => [n, Buffer.from(b.buffer, b.byteOffset, b.byteLength)]));
  if (seedSet.rebuildFor) seedSet.rebuild = (await target.seed()).rebuild;
  const baseRss = process.memoryUsage.rss();
  for (let i = start; i < end; i++) {
    const c = makeCase(seedSet, target, seed, i);
    post({ type: 'start', index: i });
    let outcome;
    try {
      const result = await target.attempt(c.files, c.main, i);
      outcome = { type: 'done', index: i, result: typeof result === 'string' ? result : 'opened' };
    } catch (err) {
      outcome = isVdiskError(err)
        ? { type: 'done', index: i, code: err.code }
        : { type: 'crash', index: i, how: c.how, error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err) };
    }
    const grown = process.memoryUsage.rss() - baseRss;
    if (outcome.type === 'done' && grown > memoryMiB * 1024 * 1024) {
      outcome = { type: 'crash', index: i, how: c.how, error: `resident size grew by ${Math.round(grown / 2 ** 20)} MiB (limit ${memoryMiB})` };
    }
    post(outcome);
  }
  post({ type: 'end' });
}

/** Run cases [start, end) of one target in workers, restarting after a hang or a blow-up. */
async function runTarget(name, opts) {
  const target = TARGETS[name];
  const built = await target.seed();
  const seedSet = { files: built.files, main: built.main, mutate: built.mutate, rebuildFor: Boolean(built.rebuild) };
  const withRebuild = { ...seedSet, rebuild: built.rebuild };
  // opened: cases the reader accepted, by what then happened; rejected: VdiskError codes.
  const stats = { cases: 0, opened: 0, outcomes: {}, rejected: {}, crashes: [] };
  let next = opts.start;
  while (next < opts.end) {
    await new Promise((resolve, reject) => {
      // A process, not a thread: a heap blow-up aborts the whole V8 instance, and only a process boundary survives that.
      const worker = fork(new URL(import.meta.url), ['--worker'], {
        execArgv: [`--max-old-space-size=${opts.memoryMiB}`],
        serialization: 'advanced',
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
      let stderr = '';
      worker.stderr.on('data', (d) => {
        if (stderr.length < 4096) stderr += d;
      });
      worker.send({ targetName: name, seedSet, seed: opts.seed, start: next, end: opts.end, memoryMiB: opts.memoryMiB });
      let current = -1;
      let timer;
      let settled = false;
      const finish = () => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      const crash = async (index, error) => {
        const c = makeCase(withRebuild, target, opts.seed, index);
        stats.crashes.push(await saveCrash(name, opts, index, c, error));
        stats.cases++;
      };
      // Messages and the exit are handled one after another: saving a crash takes a
      // while, and the worker's next messages (or its end) must wait for it.
      let queue = Promise.resolve();
      const inOrder = (fn) => (...args) => {
        queue = queue.then(() => fn(...args)).catch(reject);
      };
      worker.on('message', inOrder(async (m) => {
        if (settled) return; // a late message from a worker already cut off
        if (m.type === 'start') {
          current = m.index;
          clearTimeout(timer);
          timer = setTimeout(() => {
            const index = current;
            current = -1;
            settled = true;
            worker.kill('SIGKILL');
            crash(index, `no answer within ${opts.timeoutMs} ms`).then(() => {
              next = index + 1;
              resolve();
            }, reject);
          }, opts.timeoutMs);
        } else if (m.type === 'done') {
          clearTimeout(timer);
          current = -1;
          stats.cases++;
          if (m.code) stats.rejected[m.code] = (stats.rejected[m.code] ?? 0) + 1;
          else {
            stats.opened++;
            stats.outcomes[m.result] = (stats.outcomes[m.result] ?? 0) + 1;
          }
          next = m.index + 1;
          if (opts.progress && stats.cases % 1000 === 0) process.stderr.write(`  ${name}: ${stats.cases} cases\n`);
        } else if (m.type === 'crash') {
          clearTimeout(timer);
          current = -1;
          next = m.index + 1;
          await crash(m.index, m.error);
        } else if (m.type === 'end') {
          next = opts.end;
          finish();
        }
      }));
      worker.on('exit', inOrder(async (code, signal) => {
        if (settled) return;
        if (current < 0 && next >= opts.end) return finish();
        // Gone in the middle of a case: out of heap (V8 aborts), process.exit, a native crash.
        const index = current >= 0 ? current : next;
        settled = true;
        clearTimeout(timer);
        const why = /heap out of memory/.test(stderr)
          ? 'JavaScript heap out of memory'
          : code === 0 && signal === null
            ? 'the case never settled (the event loop ran dry with its promise pending: a dropped callback)'
            : `exited (${signal ?? `code ${code}`})`;
        await crash(index, `worker died during the case: ${why}${stderr && !/heap out of memory/.test(stderr) ? `\n${stderr}` : ''}`);
        next = index + 1;
        resolve();
      }));
    });
  }
  return stats;
}

/** Save a crashing case as a fixture folder: its files and how to replay it. */
async function saveCrash(name, opts, index, c, error) {
  const dir = join(opts.crashes, `${name}-seed${opts.seed}-case${index}`);
  await mkdir(dir, { recursive: true });
  for (const [n, b] of c.files) await writeFile(join(dir, n.replace(/[/\\]/g, '_')), b);
  const replay = `npm run fuzz -- --target ${name} --seed ${opts.seed} --case ${index}`;
  await writeFile(join(dir, 'case.json'), `${JSON.stringify({ target: name, seed: opts.seed, case: index, mutation: c.how, damaged: c.victim, main: c.main, error, replay }, null, 2)}\n`);
  return { index, error: error.split('\n')[0], fixture: dir, replay };
}

async function main() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: 'all' },
      cases: { type: 'string', default: '1000' },
      seed: { type: 'string', default: '1' },
      case: { type: 'string' },
      timeout: { type: 'string', default: '5000' },
      memory: { type: 'string', default: '512' },
      crashes: { type: 'string', default: 'fuzz/crashes' },
      json: { type: 'boolean', default: false },
      list: { type: 'boolean', default: false },
      progress: { type: 'boolean', default: false },
    },
  });
  if (values.list) {
    for (const [n, t] of Object.entries(TARGETS)) if (!t.hidden) process.stdout.write(`${n.padEnd(22)} ${t.about}\n`);
    return 0;
  }
  const whole = (flag, v) => {
    if (!/^\d+$/.test(v)) throw new Error(`--${flag} must be a whole number, not "${v}"`);
    return Number(v);
  };
  const names = values.target === 'all' ? Object.keys(TARGETS).filter((n) => !TARGETS[n].hidden) : values.target.split(',');
  for (const n of names) if (!TARGETS[n]) throw new Error(`no fuzz target "${n}" (npm run fuzz -- --list)`);
  const seed = whole('seed', values.seed);
  const one = values.case === undefined ? undefined : whole('case', values.case);
  const opts = {
    seed,
    start: one ?? 0,
    end: one === undefined ? whole('cases', values.cases) : one + 1,
    timeoutMs: whole('timeout', values.timeout),
    memoryMiB: whole('memory', values.memory),
    crashes: values.crashes,
    progress: values.progress,
  };
  const report = {};
  let crashed = 0;
  for (const n of names) {
    const t0 = performance.now();
    const s = await runTarget(n, opts);
    s.seconds = Math.round((performance.now() - t0) / 100) / 10;
    report[n] = s;
    crashed += s.crashes.length;
    if (!values.json) {
      const list = (o) => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
      process.stdout.write(`${n.padEnd(22)} ${String(s.cases).padStart(6)} cases  crashes ${s.crashes.length}  ${s.seconds} s\n`);
      process.stdout.write(`${''.padEnd(22)} opened ${s.opened}: ${list(s.outcomes)}\n${''.padEnd(22)} rejected ${s.cases - s.opened - s.crashes.length}: ${list(s.rejected)}\n`);
      for (const c of s.crashes) process.stdout.write(`  CRASH case ${c.index}: ${c.error}\n    saved in ${c.fixture}\n    replay: ${c.replay}\n`);
    }
  }
  if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return crashed === 0 ? 0 : 1;
}

if (process.argv[2] === '--worker') {
  process.once('message', (data) => {
    workerMain(data).then(
      () => process.disconnect(),
      (err) => {
        process.stderr.write(`${err.stack ?? err}\n`);
        process.exit(3);
      },
    );
  });
} else {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`fuzz: ${err.message}\n`);
      process.exitCode = 2;
    },
  );
}
