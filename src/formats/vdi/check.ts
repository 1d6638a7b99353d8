/** Checking a VDI: the block map against cBlocks, the file and itself. */
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import { blockStride, readBlockMap, scanBlockMap, VdiField, VdiImageType } from './layout.js';
import { VdiImage, loadHeader } from './image.js';

/**
 * Check a VDI image: map entries past cBlocks or the file's end, data blocks named
 * twice (corrupt); a cBlocksAllocated above the map's count (an interrupted
 * allocation or release: a leak) or below it (a warning: no VDI writer leaves that,
 * and the map is authoritative); data blocks no entry names (leaks). `repair` compacts leaks and
 * fixes the count when nothing is corrupt.
 */
export async function checkVdi(storage: Storage, _location: ImageLocation, opts: DriverCheckOptions & Partial<DriverOpenOptions>): Promise<CheckResult> {
  const { header, raw } = await loadHeader(storage);
  const map = await readBlockMap(storage, header);
  const scan = scanBlockMap(header, map, storage.size, storage.name);
  const problems: CheckProblem[] = [...scan.pointsNowhere, ...scan.duplicates];
  const corrupt = problems.length > 0;
  const repairable: CheckProblem[] = [];
  if (header.cBlocksAllocated !== scan.mapped) {
    repairable.push({
      // Counted but unmapped blocks are leaked; a count behind the map is worse
      // (qemu and VirtualBox would allocate over a block in use) but the map is
      // authoritative and vdisk recounts on open.
      severity: header.cBlocksAllocated > scan.mapped ? 'leak' : 'warning',
      offset: VdiField.cBlocksAllocated,
      message: `${storage.name}: cBlocksAllocated is ${header.cBlocksAllocated} but the block map uses ${scan.mapped} blocks`,
    });
  }
  const stride = blockStride(header);
  let leaked = 0;
  const used = Math.min(scan.slotsInFile, header.cBlocks);
  for (let n = 0; n < used; n++) if (scan.owner[n]! < 0) leaked++;
  const tail = storage.size - (header.offData + used * stride);
  if (leaked > 0 || (tail > 0 && header.type !== VdiImageType.FIXED)) {
    repairable.push({
      severity: 'leak',
      offset: header.offData,
      message: `${storage.name}: ${leaked} data blocks${tail > 0 ? ` and ${tail} bytes at the end` : ''} are not named by any block map entry`,
    });
  }
  if (opts.repair && repairable.length > 0 && !corrupt) {
    const image = new VdiImage({ storage, header, headerRaw: raw, map, owner: scan.owner, nextSlot: scan.nextSlot, readOnly: false, ownsParent: false, warnings: [] });
    await image.settle();
    await storage.flush();
    for (const p of repairable) p.repaired = true;
  }
  problems.push(...repairable);
  return { problems, allocatedClusters: scan.mapped, totalClusters: header.cBlocks };
}
