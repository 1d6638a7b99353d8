// Times writeStreamOptimized against `qemu-img convert -O vmdk -o subformat=streamOptimized`
// on the same generated input (a mix of random, text-like, zero and low-entropy MiBs) and
// prints the ratio. Usage: node bench/vmdk-stream.mjs [MiB=256] [level=6]  (after npm run build)
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, writeSync, closeSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from '../dist/index.js';
import { FileStorage, writeStreamOptimized } from '../dist/driver.js';

const mib = Number(process.argv[2] ?? 256);
const level = Number(process.argv[3] ?? 6);
const dir = mkdtempSync(join(tmpdir(), 'vdisk-bench-vmdk-'));
try {
  const src = join(dir, 'src.raw');
  const fd = openSync(src, 'w');
  const words = Buffer.from('alpha beta gamma delta disk sector vmware grain table directory ');
  for (let i = 0; i < mib; i++) {
    let chunk;
    if (i % 4 === 0) chunk = randomBytes(1 << 20);
    else if (i % 4 === 1) chunk = Buffer.alloc(1 << 20).fill(words.subarray(i % 7));
    else if (i % 4 === 2) chunk = null;
    else chunk = Buffer.from(randomBytes(1 << 20).map((b) => b & 7));
    if (chunk) writeSync(fd, chunk, 0, chunk.length, i << 20);
  }
  closeSync(fd);
  execFileSync('truncate', ['-s', `${mib}M`, src]);

  let t = performance.now();
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, join(dir, 'q.vmdk')]);
  const qemu = (performance.now() - t) / 1000;

  t = performance.now();
  const dev = await open(src, { format: 'raw', readOnly: true });
  const out = await FileStorage.open(join(dir, 'v.vmdk'), { create: 'new' });
  const bytes = await writeStreamOptimized(dev, out, { compressionLevel: level });
  await out.close();
  await dev.close();
  const ours = (performance.now() - t) / 1000;

  execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, join(dir, 'v.vmdk')]);
  const qsize = statSync(join(dir, 'q.vmdk')).size;
  console.log(`vmdk streamOptimized, ${mib} MiB: qemu-img ${qemu.toFixed(2)}s (${qsize} bytes), vdisk ${ours.toFixed(2)}s (${bytes} bytes), ratio ${(ours / qemu).toFixed(2)}x`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
