/**
 * vdisk: virtual disk images as a library. Open any image with {@link open}, create
 * one with {@link create}; every image is a {@link BlockDevice}. Each operation
 * ({@link convert}, {@link check}, {@link commit}, {@link compare}, {@link resize},
 * {@link compact}, {@link rebase}, {@link info}, {@link map}, {@link createOva},
 * {@link extractPackage}) takes an address (a path, `ARCHIVE:MEMBER`, `lvm:VG/LV`,
 * `nbd://…`) or an open image, then one object of named options. Failures are
 * {@link VdiskError}s with a stable `code`.
 *
 * Pools and NBD have their own entry points (`vdisk/pool`, `vdisk/nbd`); what a
 * format driver or a filter is written with is in `vdisk/driver`, and test doubles
 * (memory storage, fault injection) in `vdisk/testing`.
 *
 * @module vdisk
 */
// errors
export { VdiskError, isVdiskError, type VdiskErrorCode, type VdiskErrorData, type VdiskErrorJson, type VdiskErrorOptions } from './errors.js';
export { ChecksUnsupportedError } from './ops/check.js';

// devices and images
export type { BlockDevice, CompactOptions, CompactResult, DiskImage, Extent, ExtentKind, ImageInfo, ResizeImageOptions } from './device/block-device.js';
export type { ImageLocation, NamespaceWatcher } from './storage/location.js';
export type { Storage, StorageExtent, StorageOpenOptions } from './storage/storage.js';
export type { Leftover } from './storage/lock.js';

// open and create
export { open, type OpenOptions } from './formats/registry.js';
export { create, type CreateOptions } from './ops/create.js';

// operations
export { convert, DEFAULT_SPARSE_SIZE, MAX_SPARSE_SIZE, type ConvertOptions, type ConvertResult } from './ops/convert.js';
export { check, type CheckOptions, type CheckReport, type ReportProblem } from './ops/check.js';
export type { CheckProblem } from './device/check.js';
export { commit, type CommitOptions } from './ops/commit.js';
export { compare, type CompareOptions, type CompareResult } from './ops/compare.js';
export { resize, type ResizeOptions } from './ops/resize.js';
export { compact, type CompactOpsOptions } from './ops/compact.js';
export { rebase, type RebaseOptions } from './ops/rebase.js';
export { info, formats, type FormatReport, type ImageInfoReport, type InfoOptions } from './ops/info.js';
export type { FormatCapability } from './formats/driver.js';
export { map, type MapEntry, type MapOptions } from './ops/map.js';

// appliances (OVF/OVA)
export {
  createOva,
  describePackage,
  extractPackage,
  verifyPackage,
  type CreateOvaOptions,
  type CreateOvaResult,
  type ExtractOptions,
  type PackageInfo,
  type PackageProgress,
  type VerifyLine,
  type VerifyResult,
} from './ops/ova.js';
export { openPackage, type OvfPackage, type ControllerKind, type ManifestAlgorithm, type ManifestEntry, type OvfEnvelope } from './formats/ovf/index.js';
export type { DiskWriter, DiskWriterOptions, DiskWriterResult } from './ops/ova-disk-writer.js';

// partition tables
export { checkPartitions, moveBackupGptToEnd, partitionSpans, readPartitions } from './partitions/index.js';
export type { Chs, GptHeaderInfo, GptPartition, GptTable, MbrPartition, MbrTable, NoPartitionTable, PartitionSpan, PartitionTable } from './partitions/index.js';
export type { GptRewrite } from './partitions/index.js';
export type { DriverCheckOptions } from './device/check.js';

// booting a guest
export { boot, Machine, type BootOptions, type BootSession, type BootResult, type BootOutcome, type KeyStep, type LinuxImage } from './emu/boot.js';
export { inspectState, type StateSetup } from './emu/state/machine-state.js';
