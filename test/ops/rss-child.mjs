// Child process for the memory test and bench: runs one convert and prints its peak RSS.
//   node rss-child.mjs synthetic SIZE_GIB DST FORMAT [SUBFORMAT]   convert a synthetic sparse disk (1 MiB of data per GiB)
//   node rss-child.mjs cli ARGS...                     run `vdisk ARGS...`
// Prints one JSON line on stdout: {"maxRssMiB": N, "seconds": S, "code": C}.
import { convert } from '../../dist/index.js';
import { BlockDeviceBase } from '../../dist/driver.js';
import { main } from '../../dist/cli/main.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** A disk of `size` bytes with 1 MiB of data at the start of every GiB, holes elsewhere. */
class SparseSynthetic extends BlockDeviceBase {
  readOnly = true;
  filename = 'synthetic';
  constructor(size) {
    super();
    this.size = size;
  }
  async readAt(buf, offset) {
    // Bytes are a function of their offset, so a reader can check any range.
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    buf.fill(0);
    for (let i = 0; i + 8 <= buf.length; i += 8) {
      const at = offset + i;
      if (at % GiB < MiB) dv.setFloat64(i, at + 1, true);
    }
  }
  async writeAt() {}
  async *extentsIn(offset, length) {
    const end = offset + length;
    for (let g = Math.floor(offset / GiB) * GiB; g < end; g += GiB) {
      const dataEnd = Math.min(g + MiB, end);
      if (dataEnd > Math.max(g, offset)) yield { offset: Math.max(g, offset), length: dataEnd - Math.max(g, offset), kind: 'data', depth: 0 };
      const holeStart = Math.max(g + MiB, offset);
      const holeEnd = Math.min(g + GiB, end);
      if (holeEnd > holeStart) yield { offset: holeStart, length: holeEnd - holeStart, kind: 'hole', depth: 0 };
    }
  }
  async flushAll() {}
  async closeAll() {}
}

const t0 = process.hrtime.bigint();
const [mode, ...rest] = process.argv.slice(2);
let code = 0;
if (mode === 'synthetic') {
  const [sizeGiB, dst, format, subformat] = rest;
  const dev = new SparseSynthetic(Number(sizeGiB) * GiB);
  await convert(dev, dst, { format: format ?? 'raw', options: subformat ? { subformat } : undefined });
} else if (mode === 'cli') {
  await main(['node', 'vdisk', ...rest]);
  code = process.exitCode ?? 0;
} else {
  throw new Error(`unknown mode ${mode}`);
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(`${JSON.stringify({ maxRssMiB: process.resourceUsage().maxRSS / 1024, seconds, code })}\n`);
