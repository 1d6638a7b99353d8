// CPU benchmark: the same nasm loop (bench/loop.asm) booted under vdisk's
// emulator and under the npm v86 package (interpreter only: disable_jit), both
// headless in this Node process. Prints MIPS of each and the ratio.
// Usage: node bench/emu.mjs [ITERATIONS] (npm run bench runs it too)   (needs nasm; v86 uses Debian's SeaBIOS)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const iterations = Number(process.argv[2] ?? 20_000_000);
const BODY = 10; // instructions per loop iteration in loop.asm
const here = fileURLToPath(new URL('.', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'vdisk-bench-'));
const bin = join(dir, 'loop.bin');
execFileSync('nasm', ['-f', 'bin', `-DITER=${iterations}`, '-o', bin, join(here, 'loop.asm')]);
const disk = new Uint8Array(1024 * 1024);
disk.set(readFileSync(bin));
const img = join(dir, 'loop.img');
writeFileSync(img, disk);
const instructions = iterations * BODY;

/** Process CPU time in ms (steadier than wall time on a shared machine). */
function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Wall and CPU time between the guest's 'S' and 'E' on COM1. */
function timer() {
  let start = 0;
  let end = 0;
  let cpuStart = 0;
  let cpuEnd = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  return {
    byte(b) {
      if (b === 0x53) {
        start = performance.now();
        cpuStart = cpuMs();
      }
      if (b === 0x45) {
        end = performance.now();
        cpuEnd = cpuMs();
        done();
      }
    },
    finished,
    mips: () => ({ wall: instructions / ((end - start) * 1000), cpu: instructions / ((cpuEnd - cpuStart) * 1000) }),
  };
}

async function vdisk() {
  const { boot, open } = await import('../dist/index.js');
  const dev = await open(img, { readOnly: true });
  const t = timer();
  const s = boot(dev, { timeoutMs: 600_000, onSerial: (ch) => t.byte(ch.charCodeAt(0)) });
  await s.result;
  await dev.close();
  rmSync(dir, { recursive: true, force: true });
  return t.mips();
}

async function v86() {
  const require = createRequire(import.meta.url);
  const { V86 } = await import('v86');
  const t = timer();
  const emulator = new V86({
    wasm_path: require.resolve('v86/build/v86.wasm'),
    bios: { buffer: readFileSync('/usr/share/seabios/bios.bin').buffer },
    vga_bios: { buffer: readFileSync('/usr/share/seabios/vgabios-stdvga.bin').buffer },
    hda: { buffer: disk.buffer.slice(0) },
    boot_order: 0x132,
    memory_size: 32 * 1024 * 1024,
    autostart: true,
    disable_jit: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  emulator.add_listener('serial0-output-byte', (b) => t.byte(b));
  await t.finished;
  emulator.destroy();
  return t.mips();
}

const ours = await vdisk();
console.log(`vdisk: ${ours.wall.toFixed(1)} MIPS wall, ${ours.cpu.toFixed(1)} MIPS per CPU second (${instructions} instructions)`);
const theirs = await v86();
console.log(`v86 (interpreter, disable_jit): ${theirs.wall.toFixed(1)} MIPS wall, ${theirs.cpu.toFixed(1)} MIPS per CPU second`);
console.log(`ratio vdisk/v86: ${(ours.wall / theirs.wall).toFixed(2)}x wall, ${(ours.cpu / theirs.cpu).toFixed(2)}x CPU time`);
process.exit(0);
