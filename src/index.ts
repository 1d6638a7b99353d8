/**
 * vdisk: virtual disk images as a library. Open any image with {@link open}, create
 * one with {@link create}; every image is a {@link BlockDevice}.
 *
 * @packageDocumentation
 */
export { VdiskError, isVdiskError, type VdiskErrorCode, type VdiskErrorData, type VdiskErrorJson, type VdiskErrorOptions } from './errors.js';
export { IO_CHUNK, type Storage, type StorageExtent, type StorageOpenOptions } from './storage/storage.js';
export { FileStorage, type FileOpenOptions } from './storage/file.js';
export { removeLeftovers, type Leftover } from './storage/lock.js';
export { MemoryStorage } from './storage/memory.js';
export { FaultPlan, FaultStorage } from './storage/fault.js';
export { FileLocation, MemoryLocation, type ImageLocation } from './storage/location.js';
export { isNbdAddress, locate, resolveAddress, type AddressOptions, type ResolvedAddress } from './storage/address.js';
export type { NamespaceWatcher } from './storage/location.js';
export { filterStorage, type StorageCalls } from './storage/filter.js';
export { FolderArchive, isArchive, openArchive, openArchiveChain, type Archive, type ArchiveMember, type ArchiveOptions } from './storage/containers/archive.js';
export { ArchiveLocation, archiveMemberLocation } from './storage/containers/location.js';
export { TAR_BLOCK, TarWriter, decodeTarHeader, encodeTarHeader, isTar, readTarEntries, type TarEntry, type TarHeader } from './storage/containers/tar.js';
export { WindowStorage } from './storage/containers/window.js';
export { DEFAULT_ZIP_LIMITS, ZipArchive, isZip, type ZipLimits, type ZipMember } from './storage/containers/zip.js';
export type { BlockDevice, CompactOptions, CompactResult, DiskImage, Extent, ExtentKind, ImageInfo } from './device/block-device.js';
export type { ResizeImageOptions } from './device/block-device.js';
export { BlockDeviceBase, checkDeviceRange, coalesceExtents, listExtents } from './device/base.js';
export { copyDevice, type CopyOptions } from './device/copy.js';
export { blockPieces, type BlockPiece } from './device/blocks.js';
export { isZero, forEachZeroRun } from './device/zero.js';
export { driverCapabilities, type DriverCreateOptions, type DriverOpenOptions, type FormatCapability, type FormatDriver } from './formats/driver.js';
export type { CheckProblem, CheckResult, DriverCheckOptions } from './device/check.js';
export { MAX_CHAIN_DEPTH, driverOf, findDriver, formatDrivers, open, openLocation, probeFormat, type OpenOptions } from './formats/registry.js';
export { Qcow2Image, checkQcow2, qcow2Driver, type Qcow2Header } from './formats/qcow2/index.js';
export type { FeatureName, Qcow2ImageParts, Qcow2Snapshot, Refcounts } from './formats/qcow2/index.js';
export { RawImage, rawDriver } from './formats/raw/index.js';
export { VdiImage, checkVdi, vdiDriver, type VdiHeader } from './formats/vdi/index.js';
export type { VdiGeometry, VdiImageParts } from './formats/vdi/index.js';
export { VhdImage, vhdDriver } from './formats/vhd/index.js';
export { VmdkImage, vmdkDriver, writeStreamOptimized, type WriteStreamOptimizedOptions } from './formats/vmdk/index.js';
export { create, type CreateOptions } from './ops/create.js';
export { describeImage, formatFormatsHuman, formatInfoHuman, formats, info, type FormatReport, type ImageInfoReport } from './ops/info.js';
export { formatSize, parseSize } from './util/size.js';
export { parseKeyValues } from './util/options.js';
export { resize, resizeImage, resolveNewSize, usedSize, type ResizeOptions } from './ops/resize.js';
export { commit, type CommitOptions } from './ops/commit.js';
export { commitImage, type CommitImageOptions } from './ops/commit.js';
export { rebase, type RebaseOptions } from './ops/rebase.js';
export { compact, type CompactOpsOptions } from './ops/compact.js';
export {
  checkPartitions,
  formatPartitionsHuman,
  minimumDiskSize,
  moveBackupGptToEnd,
  partitionSpans,
  readPartitions,
  repairBackupGpt,
  repairPrimaryGpt,
  updateProtectiveMbr,
  type GptHeaderInfo,
  type GptPartition,
  type GptRewrite,
  type GptTable,
  type MbrPartition,
  type MbrTable,
  type NoPartitionTable,
  type PartitionSpan,
  type PartitionTable,
} from './partitions/index.js';
export type { VhdMeta } from './formats/vhd/layout.js';
export type { Descriptor, ExtentLine } from './formats/vmdk/descriptor.js';
export type { VmdkExtent } from './formats/vmdk/extent.js';
export type { Chs } from './partitions/types.js';
export type { VhdFooter, DynamicHeader, ParentLocator } from './formats/vhd/layout.js';
export type { MetaRegion } from './formats/vhd/layout.js';
export type { ExtentRun, ReadBelow } from './formats/vmdk/extent.js';
export * from './formats/ovf/index.js';
export {
  createOva,
  describePackage,
  extractPackage,
  formatPackageInfoHuman,
  verifyPackage,
  type CreateOvaOptions,
  type CreateOvaResult,
  type ExtractOptions,
  type PackageInfo,
  type PackageProgress,
  type VerifyLine,
  type VerifyResult,
} from './ops/ova.js';
export { VMDK_ADAPTER_TYPE, defaultDiskWriter, type DiskWriter, type DiskWriterOptions, type DiskWriterResult } from './ops/ova-disk-writer.js';
export { convert, convertImage, DEFAULT_SPARSE_SIZE, MAX_SPARSE_SIZE, type ConvertOptions, type ConvertFileOptions, type ConvertResult } from './ops/convert.js';
export { mapImage, mapEntry, writeMapJson, writeMapHuman, renderMapSvg, cellSizeFor, type MapEntry, type MapSvgOptions } from './ops/map.js';
export { compare, type CompareOptions, type CompareResult } from './ops/compare.js';
export { check, checkLocation, checkExitCode, summariseCheck, formatCheckHuman, ChecksUnsupportedError, type CheckOptions, type CheckReport, type ReportProblem } from './ops/check.js';
export { boot, Machine, type BootOptions, type BootSession, type BootResult, type BootOutcome, type KeyStep } from './emu/boot.js';
export { MAX_SECTIONS, SECTIONS, STATE_MAGIC, STATE_VERSION, decodeStateFile, type StateFile } from './emu/state/file.js';
export { StateReader, StateWriter } from './emu/state/codec.js';
export { inspectState, type StateSetup } from './emu/state/machine-state.js';
export { OVERLAY_CHUNK, OverlayDevice } from './device/overlay.js';
export * from './pool/index.js';
export * from './nbd/index.js';
