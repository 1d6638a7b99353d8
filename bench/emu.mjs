// CPU benchmark suite: real-mode guests (bench/loop.asm and bench/guests/*.asm,
// each printing 'S' on COM1 before its timed loop and 'E' after it), plus FreeDOS
// to its A:\> prompt, each booted under vdisk's emulator, the npm v86 interpreter
// (disable_jit) and the v86 JIT. Every run is a child process of its own on the same
// image; the order of the three engines rotates from one round to the next; the
// table gives the median wall time from 'S' to 'E' and vdisk's speed relative to
// each v86 (above 1 means vdisk is faster).
//
// Usage: node bench/emu.mjs [--guests loop,mixed,...] [--repeat N] [--scale X]
//   --guests  which rows to run (default: all); --repeat rounds (default 3);
//   --scale   multiplies every guest's iteration count (default 1).
// Needs nasm and Debian's SeaBIOS (for v86); npm run build first (vdisk runs from dist/).
// FreeDOS comes from ../shared/guests/freedos722.img (VDISK_SHARED_DIR overrides);
// without it that row is skipped with a note. FreeDOS is timed from power-on to the
// prompt, so it includes each engine's BIOS: vdisk's own, SeaBIOS for v86.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchEnv, median } from './lib.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const SHARED_DIR = process.env.VDISK_SHARED_DIR ?? join(here, '..', '..', 'shared');
const FREEDOS = join(SHARED_DIR, 'guests', 'freedos722.img');
const PROMPT = 'A:\\>';

/** The suite: name, nasm source, default iterations, what it exercises. */
const GUESTS = [
  { name: 'loop', src: join(here, 'loop.asm'), iter: 9_000_000, what: 'bench/loop.asm: 32-bit ALU, shl, [di] load/store, dec/jnz' },
  { name: 'mixed', src: join(here, 'guests', 'mixed.asm'), iter: 9_000_000, what: "issue 18's loop: [si] load/store, and, rol, 32-bit add/xor" },
  { name: 'addr16', src: join(here, 'guests', 'addr16.asm'), iter: 6_000_000, what: '16-bit [bx+si+d] [bp+d] [bp+di] [si] loads/stores/RMW' },
  { name: 'alu32', src: join(here, 'guests', 'alu32.asm'), iter: 6_000_000, what: '32-bit ALU, 66h prefixes, imm8/imm32, adc/sbb' },
  { name: 'shifts', src: join(here, 'guests', 'shifts.asm'), iter: 5_000_000, what: 'rol ror shl shr sar rcl rcr by 1/cl/imm' },
  { name: 'string', src: join(here, 'guests', 'string.asm'), iter: 150_000, what: 'rep movsb/movsw/stosw, repe cmpsb, movsw/stosw/lodsb' },
  { name: 'calls', src: join(here, 'guests', 'calls.asm'), iter: 3_000_000, what: 'near/far call and ret (rel, reg, mem), ret imm' },
  { name: 'segov', src: join(here, 'guests', 'segov.asm'), iter: 4_000_000, what: 'es:/ds:/ss:/cs: overrides, les/lds, mov sreg' },
  { name: 'freedos', floppy: FREEDOS, what: 'FreeDOS 720 KiB floppy from power-on to the A:\\> prompt' },
];
const ENGINES = ['vdisk', 'v86-interp', 'v86-jit'];

// ------------------------------------------------------------------ child: one timed run

/** Process CPU time in ms. */
function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Times the stretch between COM1 'S' and 'E' (or from `startNow()` to `end()`). */
function timer() {
  let start = 0;
  let cpuStart = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  const t = {
    finished,
    startNow() {
      start = performance.now();
      cpuStart = cpuMs();
    },
    end() {
      done({ ms: performance.now() - start, cpuMs: cpuMs() - cpuStart });
    },
    byte(b) {
      if (b === 0x53) t.startNow();
      else if (b === 0x45) t.end();
    },
  };
  return t;
}

/** Watches 80x25 text written by v86's VGA for `text`. */
function screenWatcher(text, onFound) {
  const rows = Array.from({ length: 25 }, () => new Array(80).fill(' '));
  const last = text.charCodeAt(text.length - 1);
  return ([row, col, ch]) => {
    if (row >= 25 || col >= 80) return;
    rows[row][col] = String.fromCharCode(ch);
    if (ch === last && rows[row].join('').includes(text)) onFound();
  };
}

async function runVdisk(image, floppy) {
  const { boot, open } = await import('../dist/index.js');
  const dev = await open(image, { readOnly: true });
  const t = timer();
  let s;
  if (floppy) {
    t.startNow();
    s = boot(null, { floppy: dev, snapshot: true, expect: PROMPT, timeoutMs: 600_000 });
  } else s = boot(dev, { snapshot: true, timeoutMs: 600_000, onSerial: (ch) => t.byte(ch.charCodeAt(0)) });
  const r = await s.result;
  if (floppy) {
    if (r.outcome !== 'expect') throw new Error(`vdisk: FreeDOS ended with ${r.outcome}: ${r.message}`);
    t.end();
  }
  await dev.close();
  return { ...(await t.finished), instructions: r.instructions };
}

async function runV86(image, floppy, jit) {
  const require = createRequire(import.meta.url);
  const { V86 } = await import('v86');
  const t = timer();
  const buffer = new Uint8Array(readFileSync(image)).buffer;
  if (floppy) t.startNow();
  const emulator = new V86({
    wasm_path: require.resolve('v86/build/v86.wasm'),
    bios: { buffer: new Uint8Array(readFileSync('/usr/share/seabios/bios.bin')).buffer },
    vga_bios: { buffer: new Uint8Array(readFileSync('/usr/share/seabios/vgabios-stdvga.bin')).buffer },
    ...(floppy ? { fda: { buffer } } : { hda: { buffer }, boot_order: 0x132 }),
    memory_size: 32 * 1024 * 1024,
    autostart: true,
    disable_jit: !jit,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  if (floppy) emulator.add_listener('screen-put-char', screenWatcher(PROMPT, () => t.end()));
  else emulator.add_listener('serial0-output-byte', (b) => t.byte(b));
  const r = await t.finished;
  emulator.destroy();
  return r;
}

async function child(engine, image, floppy) {
  const r = engine === 'vdisk' ? await runVdisk(image, floppy) : await runV86(image, floppy, engine === 'v86-jit');
  console.log(JSON.stringify(r));
  process.exit(0);
}

// ------------------------------------------------------------------ parent: the table

function parseArgs(argv) {
  const o = { guests: GUESTS.map((g) => g.name), repeat: 3, scale: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--guests') o.guests = argv[++i].split(',').filter(Boolean);
    else if (a === '--repeat') o.repeat = Number(argv[++i]);
    else if (a === '--scale') o.scale = Number(argv[++i]);
    else throw new Error(`bench/emu.mjs: unknown argument ${a} (use --guests a,b --repeat N --scale X)`);
  }
  const unknown = o.guests.filter((g) => !GUESTS.some((x) => x.name === g));
  if (unknown.length) throw new Error(`bench/emu.mjs: no guest ${unknown.join(', ')} (have ${GUESTS.map((g) => g.name).join(', ')})`);
  if (!(Number.isInteger(o.repeat) && o.repeat >= 1)) throw new Error('--repeat needs a whole number >= 1');
  if (!(o.scale > 0)) throw new Error('--scale needs a positive number');
  return o;
}

/** One run of `engine` on `image` in a fresh process; returns {ms, cpuMs}. */
function runChild(engine, image, floppy) {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', engine, image, floppy ? 'floppy' : 'disk'], {
    encoding: 'utf8',
    env: benchEnv(),
    timeout: 900_000,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`${engine} on ${image} exited ${r.status ?? r.signal}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

/** Assemble guest `g` into a 1 MiB disk image in `dir`. */
function guestImage(dir, g, scale) {
  const bin = join(dir, `${g.name}.bin`);
  execFileSync('nasm', ['-f', 'bin', '-I', join(here, 'guests') + '/', `-DITER=${Math.max(1, Math.round(g.iter * scale))}`, '-o', bin, g.src]);
  const disk = new Uint8Array(1024 * 1024);
  disk.set(readFileSync(bin));
  const img = join(dir, `${g.name}.img`);
  writeFileSync(img, disk);
  return img;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-bench-emu-'));
  const rows = [];
  const notes = [];
  try {
    for (const name of opts.guests) {
      const g = GUESTS.find((x) => x.name === name);
      if (g.floppy && !existsSync(g.floppy)) {
        notes.push(`${g.name}: skipped, no image at ${g.floppy}`);
        continue;
      }
      const image = g.floppy ?? guestImage(dir, g, opts.scale);
      const times = Object.fromEntries(ENGINES.map((e) => [e, []]));
      for (let round = 0; round < opts.repeat; round++) {
        // Rotate the order so no engine always runs first (or right after another).
        const order = ENGINES.map((_, i) => ENGINES[(i + round) % ENGINES.length]);
        if (round % 2) order.reverse();
        for (const e of order) times[e].push(runChild(e, image, !!g.floppy).ms);
      }
      const med = Object.fromEntries(ENGINES.map((e) => [e, median(times[e])]));
      const row = { name: g.name, what: g.what, ...med, all: times };
      rows.push(row);
      process.stderr.write(`${g.name}: ${ENGINES.map((e) => `${e} [${times[e].map((t) => t.toFixed(0)).join(' ')}] ms`).join(', ')}\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const head = `${'guest'.padEnd(8)} ${'vdisk ms'.padStart(9)} ${'v86-int ms'.padStart(10)} ${'v86-jit ms'.padStart(10)} ${'vs interp'.padStart(9)} ${'vs JIT'.padStart(7)}`;
  console.log(`median wall time from COM1 'S' to 'E' (FreeDOS: power-on to ${PROMPT}), ${opts.repeat} rounds, scale ${opts.scale}; speed ratio = v86 time / vdisk time`);
  console.log(head);
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(8)} ${r.vdisk.toFixed(0).padStart(9)} ${r['v86-interp'].toFixed(0).padStart(10)} ${r['v86-jit'].toFixed(0).padStart(10)} ${`${(r['v86-interp'] / r.vdisk).toFixed(2)}x`.padStart(9)} ${`${(r['v86-jit'] / r.vdisk).toFixed(2)}x`.padStart(7)}   ${r.what}`,
    );
  }
  for (const n of notes) console.log(`note: ${n}`);
}

if (process.argv[2] === '--child') await child(process.argv[3], process.argv[4], process.argv[5] === 'floppy');
else await main();
