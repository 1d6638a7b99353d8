// Read a whole image through the BlockDevice interface, sequentially, in
// BENCH_CHUNK-byte requests (128 KiB by default: the size that stays in the CPU
// cache, as cat's buffer does). Prints the seconds spent reading (process start-up
// and module loading excluded, so the figure is the read path's own throughput).
import { open } from '../dist/index.js';

const img = await open(process.argv[2], { readOnly: true });
const CHUNK = Number(process.env.BENCH_CHUNK ?? 128 * 1024);
const buf = Buffer.allocUnsafe(CHUNK);
const t0 = process.hrtime.bigint();
for (let off = 0; off < img.size; off += CHUNK) {
  await img.read(buf.subarray(0, Math.min(CHUNK, img.size - off)), off);
}
const t1 = process.hrtime.bigint();
await img.close();
process.stdout.write(`${Number(t1 - t0) / 1e9}\n`);
