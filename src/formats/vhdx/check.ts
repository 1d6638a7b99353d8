/**
 * Checking a VHDX: what open validates (headers, region tables, metadata, every BAT
 * entry), reported as problems instead of thrown, plus what open does not look at:
 * payload blocks that overlap each other, damaged redundant copies, and a log
 * waiting to be replayed.
 *
 * The log as qemu-img check treats it: without `-r` qemu refuses to open an image
 * whose log needs replaying (exit 1, check not completed), so we report it as a check
 * error after reading through the log in memory; any `-r` opens the file writable,
 * replays it and counts that as one corruption repaired (exit 0).
 */
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { isVdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT, REGION_ALIGNMENT, SB_BLOCK_PRESENT, SECTOR_BITMAP_BLOCK_SIZE, bitmapEntryIndex, decodeBatEntry, payloadEntryIndex } from './layout.js';
import { readVhdxMeta, type VhdxMeta } from './image.js';

/** Check a VHDX image's consistency as `qemu-img check` does, and a little more. */
export async function checkVhdx(storage: Storage, opts: DriverCheckOptions & { readOnly?: boolean }): Promise<CheckResult> {
  const name = storage.name;
  const problems: CheckProblem[] = [];
  const writable = !storage.readOnly && !opts.readOnly && opts.repair !== undefined;
  let meta: VhdxMeta;
  try {
    meta = await readVhdxMeta(storage, writable);
  } catch (err) {
    if (!isVdiskError(err)) throw err;
    return { problems: [{ severity: 'corrupt', message: err.message }] };
  }
  let checkErrors = 0;
  for (const w of meta.warnings) {
    if (meta.replay && !meta.replay.inMemory && w.startsWith('replayed')) {
      problems.push({ severity: 'corrupt', message: `${name}: ${w}`, repaired: true });
    } else if (meta.replay?.inMemory && w.startsWith('the log holds')) {
      checkErrors++;
      problems.push({ severity: 'warning', message: `${name}: ${w}; qemu-img opens it for check only with -r (vdisk check -r leaks|all replays it)` });
    } else {
      problems.push({ severity: /unusable|does not replay/.test(w) ? 'corrupt' : 'warning', message: `${name}: ${w}` });
    }
  }
  // Blocks that share file space: a write to one would change the other.
  const g = meta.geometry;
  const spans: Array<[number, number, string]> = [];
  let allocated = 0;
  for (let n = 0; n < g.payloadBlocks; n++) {
    const { state, offset } = decodeBatEntry(meta.batTable, payloadEntryIndex(n, g.chunkRatio) * 8);
    if (state !== PAYLOAD_BLOCK_FULLY_PRESENT && state !== PAYLOAD_BLOCK_PARTIALLY_PRESENT) continue;
    allocated++;
    const len = Math.ceil(Math.min(meta.params.blockSize, meta.params.virtualDiskSize - n * meta.params.blockSize) / REGION_ALIGNMENT) * REGION_ALIGNMENT;
    spans.push([offset, offset + len, `payload block ${n}`]);
  }
  for (let c = 0; c < g.sectorBitmapBlocks; c++) {
    const i = bitmapEntryIndex(c, g.chunkRatio);
    if (i >= g.totalEntries) break;
    const { state, offset } = decodeBatEntry(meta.batTable, i * 8);
    if (state === SB_BLOCK_PRESENT) spans.push([offset, offset + SECTOR_BITMAP_BLOCK_SIZE, `sector bitmap block ${c}`]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  let reported = 0;
  for (let k = 1; k < spans.length && reported < 100; k++) {
    const [a, , what] = spans[k]!;
    const prev = spans[k - 1]!;
    if (a < prev[1]) {
      problems.push({ severity: 'corrupt', message: `${name}: ${what} at ${a} overlaps ${prev[2]} at ${prev[0]}`, offset: a });
      reported++;
    }
  }
  return { problems, allocatedClusters: allocated, totalClusters: g.payloadBlocks, ...(checkErrors ? { checkErrors } : {}) };
}
