/**
 * How a VDI grows in place: where the block map for more blocks goes and which data
 * blocks move out of its way, decided before anything is written (image.ts carries
 * the plan out, data first and the header switch last). The strategies, in order:
 *   1. the new entries fit after the old ones, before offData: nothing moves;
 *   2. the whole new map fits between the header and the old map: nothing moves;
 *   3. the map moves after the old one into the space of the first data blocks,
 *      which are copied to the end first (they need free data block numbers);
 *   4. as 3, with the map first extended into its slack for more block numbers
 *      (cBlocks above what the size needs, which VirtualBox and qemu accept).
 * When none fits, the image is rewritten with room for the map (image.ts relayout).
 */
import { VDI_MAP_ENTRY_SIZE, VDI_MAX_BLOCKS, VDI_PREHEADER_SIZE, VDI_SECTOR_SIZE, alignUp, blockStride, type VdiHeader } from './layout.js';

/** Where a grown block map goes and what moves for it. */
export interface GrowthPlan {
  /** File offset of the new map (offBlocks after the switch). */
  mapAt: number;
  /** Data blocks the data area moves up by (their numbers drop by as much). */
  shift: number;
  /** Allocated data blocks in the new map's way, to copy to the end first. */
  toMove: number;
  /** The first data block number they are copied to. */
  firstDest: number;
  /** The data block number a new tail block gets (a partial last block over a bigger parent). */
  tailSlot: number;
  /** True when the plan has the data block numbers it needs. */
  fits: boolean;
  /** cBlocks while moving (above the old count in strategy 4). */
  count: number;
}

/**
 * The plan for growing `h` to `blocks` blocks, given which data block numbers are in
 * use (`owner[n] >= 0`, below `nextSlot`) and whether the old last block needs a
 * block of its own (`tailBlock`); `fits` is false when only a relayout makes room.
 */
export function planGrowth(h: VdiHeader, blocks: number, used: { owner: Int32Array; nextSlot: number }, tailBlock: boolean): GrowthPlan {
  const oldBlocks = h.cBlocks;
  const stride = blockStride(h);
  const mapBytes = blocks * VDI_MAP_ENTRY_SIZE;
  const headerEnd = VDI_PREHEADER_SIZE + h.cbHeader;
  /** The move plan when `count` data block numbers (cBlocks) are usable while moving. */
  const planFor = (count: number, mapAt: number): GrowthPlan => {
    const shift = Math.max(0, Math.ceil((mapAt + mapBytes - h.offData) / stride));
    let toMove = 0;
    for (let n = 0; n < Math.min(shift, used.nextSlot); n++) if (used.owner[n]! >= 0) toMove++;
    const firstDest = Math.max(used.nextSlot, shift);
    const tailSlot = Math.max(toMove > 0 ? firstDest + toMove : used.nextSlot, shift);
    const fits = (toMove === 0 || firstDest + toMove <= count) && (!tailBlock || tailSlot < count);
    return { mapAt, shift, toMove, firstDest, tailSlot, fits, count };
  };
  // 1. In place.
  let plan = planFor(oldBlocks, h.offBlocks);
  if (h.offBlocks + mapBytes > h.offData) {
    const before = alignUp(headerEnd, VDI_SECTOR_SIZE);
    if (before + mapBytes <= h.offBlocks) {
      // 2. Before the old map.
      plan = { ...planFor(oldBlocks, before), shift: 0 };
    } else {
      // 3. After the old map, over the first data blocks.
      plan = planFor(oldBlocks, alignUp(h.offBlocks + oldBlocks * VDI_MAP_ENTRY_SIZE, VDI_SECTOR_SIZE));
      if (!plan.fits) {
        // 4. More data block numbers: extend the map into its slack with the size unchanged.
        const room = Math.min(VDI_MAX_BLOCKS, Math.floor((h.offData - h.offBlocks) / VDI_MAP_ENTRY_SIZE));
        if (room > oldBlocks) plan = planFor(room, alignUp(h.offBlocks + room * VDI_MAP_ENTRY_SIZE, VDI_SECTOR_SIZE));
      }
    }
  }
  return plan;
}
