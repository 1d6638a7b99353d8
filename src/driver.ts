/**
 * Writing a format driver or a device filter (`vdisk/driver`): the storage and
 * device contracts with the base class and helpers every built-in format uses, the
 * driver table and registry, the address resolver and locations, the containers
 * (tar, zip, entry windows), the built-in drivers with their on-disk structures, and
 * the copy engine.
 *
 * @module vdisk/driver
 */
// storage: the container contract, files, filters, locations and addresses
export { IO_CHUNK, type Storage, type StorageExtent, type StorageOpenOptions } from './storage/storage.js';
export { FileStorage, type FileOpenOptions } from './storage/file.js';
export { filterStorage, type StorageCalls } from './storage/filter.js';
export { FileLocation, type ImageLocation, type NamespaceWatcher } from './storage/location.js';
export { isNbdAddress, locate, resolveAddress, type AddressOptions, type ResolvedAddress } from './storage/address.js';
export { removeLeftovers, type Leftover } from './storage/lock.js';

// containers
export { FolderArchive, isArchive, openArchive, openArchiveChain, type Archive, type ArchiveMember, type ArchiveOptions } from './storage/containers/archive.js';
export { ArchiveLocation, archiveMemberLocation } from './storage/containers/location.js';
export { TAR_BLOCK, TarWriter, decodeTarHeader, encodeTarHeader, isTar, readTarEntries, type TarEntry, type TarHeader } from './storage/containers/tar.js';
export { WindowStorage } from './storage/containers/window.js';
export { DEFAULT_ZIP_LIMITS, ZipArchive, isZip, type ZipLimits, type ZipMember } from './storage/containers/zip.js';

// devices: the base class, block arithmetic, zero detection, filters, the copy engine
export type { BlockDevice, CompactOptions, CompactResult, DiskImage, Extent, ExtentKind, ImageInfo, ResizeImageOptions } from './device/block-device.js';
export { BlockDeviceBase, checkDeviceRange, coalesceExtents, listExtents } from './device/base.js';
export { blockPieces, type BlockPiece } from './device/blocks.js';
export { isZero, forEachZeroRun } from './device/zero.js';
export { copyDevice, type CopyOptions } from './device/copy.js';
export { OVERLAY_CHUNK, OverlayDevice } from './device/overlay.js';
export type { CheckProblem, CheckResult, DriverCheckOptions } from './device/check.js';

// the driver table and the registry
export { driverCapabilities, type DriverCreateOptions, type DriverOpenOptions, type FormatCapability, type FormatDriver } from './formats/driver.js';
export { MAX_CHAIN_DEPTH, driverOf, findDriver, formatDrivers, openLocation, probeFormat, type OpenOptions } from './formats/registry.js';

// the built-in formats
export { Qcow2Image, checkQcow2, qcow2Driver, type Qcow2Header } from './formats/qcow2/index.js';
export type { FeatureName, Qcow2ImageParts, Qcow2Snapshot, Refcounts } from './formats/qcow2/index.js';
export { RawImage, rawDriver } from './formats/raw/index.js';
export { VdiImage, checkVdi, vdiDriver, type VdiHeader } from './formats/vdi/index.js';
export type { VdiGeometry, VdiImageParts } from './formats/vdi/index.js';
export { VhdImage, vhdDriver } from './formats/vhd/index.js';
export type { VhdMeta, VhdFooter, DynamicHeader, ParentLocator, MetaRegion } from './formats/vhd/layout.js';
export { vhdxDriver } from './formats/vhdx/index.js';
export { VmdkImage, vmdkDriver, writeStreamOptimized, type WriteStreamOptimizedOptions } from './formats/vmdk/index.js';
export type { Descriptor, ExtentLine } from './formats/vmdk/descriptor.js';
export type { VmdkExtent, ExtentRun, ReadBelow } from './formats/vmdk/extent.js';
export * from './formats/ovf/index.js';
export { VMDK_ADAPTER_TYPE, defaultDiskWriter, type DiskWriter, type DiskWriterOptions, type DiskWriterResult } from './ops/ova-disk-writer.js';

// partition-table primitives (check with repair and resize use them)
export { minimumDiskSize, repairBackupGpt, repairPrimaryGpt, updateProtectiveMbr, type GptRewrite } from './partitions/index.js';

// sizes and option lists as the CLI spells them
export { formatSize, parseSize } from './util/size.js';
export { parseKeyValues } from './util/options.js';
