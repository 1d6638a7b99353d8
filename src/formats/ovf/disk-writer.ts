/**
 * How `ova create` turns a disk into the streamOptimized VMDK an OVA carries. The
 * VMDK driver provides the real writer; this is the one place that names it.
 */
import type { BlockDevice } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';

/** What a disk writer reports. */
export interface DiskWriterResult {
  /** Bytes of VMDK written into the storage. */
  bytes: number;
  /** Bytes of the source that hold data (DiskSection populatedSize), when the writer counted them. */
  populatedSize?: number;
}

/**
 * Write all of `src` as a VMware-layout streamOptimized VMDK into the empty storage
 * `out`, front to back; `onProgress` gets source bytes done.
 */
export type DiskWriter = (src: BlockDevice, out: Storage, onProgress?: (done: number, total: number) => void) => Promise<DiskWriterResult>;

/**
 * The writer `ova create` uses unless told otherwise.
 * MERGE NOTE: once the vmdk branch lands, replace the body with a call to its
 * streamOptimized writer (the only call site of DiskWriter in ova creation).
 */
export const defaultDiskWriter: DiskWriter = async () => {
  throw new VdiskError('E_UNSUPPORTED', 'writing a streamOptimized VMDK needs the vmdk driver, which is not part of this build yet');
};
