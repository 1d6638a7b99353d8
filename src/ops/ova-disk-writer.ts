/**
 * How `ova create` turns a disk into the streamOptimized VMDK an OVA carries. The
 * VMDK driver provides the real writer; this is the one place that names it.
 */
import type { BlockDevice } from '../device/block-device.js';
import type { ControllerKind } from '../formats/ovf/descriptor.js';
import { writeStreamOptimized } from '../formats/vmdk/index.js';
import type { Storage } from '../storage/storage.js';

/** What a disk writer reports. */
export interface DiskWriterResult {
  /** Bytes of VMDK written into the storage. */
  bytes: number;
  /** Bytes of the source that hold data (DiskSection populatedSize), when the writer counted them. */
  populatedSize?: number;
}

/** What a disk writer is told besides the disk. */
export interface DiskWriterOptions {
  /** The controller the disk hangs on in the descriptor (sets the VMDK's ddb.adapterType). */
  controller: ControllerKind;
  /** Source bytes done so far. */
  onProgress?: (done: number, total: number) => void;
}

/** ddb.adapterType for a disk on each controller kind (VMware writes `ide` for SATA disks too). */
export const VMDK_ADAPTER_TYPE: Readonly<Record<ControllerKind, string>> = { ide: 'ide', sata: 'ide', scsi: 'lsilogic' };

/**
 * Write all of `src` as a VMware-layout streamOptimized VMDK into the empty storage
 * `out`, front to back. The VMDK's extent name is `out.name`'s base name, which
 * `ova create` makes equal to the href in the OVA.
 */
export type DiskWriter = (src: BlockDevice, out: Storage, opts?: DiskWriterOptions) => Promise<DiskWriterResult>;

/** The writer `ova create` uses unless told otherwise: the VMDK driver's streamOptimized writer. */
export const defaultDiskWriter: DiskWriter = async (src, out, opts) => ({
  bytes: await writeStreamOptimized(src, out, { adapterType: VMDK_ADAPTER_TYPE[opts?.controller ?? 'scsi'] }),
});
