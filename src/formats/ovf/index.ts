/** OVF/OVA packaging: descriptor, manifest and packages. */
export {
  CONTROLLERS,
  MAX_DESCRIPTOR_BYTES,
  OVF_NAMESPACE,
  RASD_NAMESPACE,
  RESOURCE_TYPE,
  STREAM_OPTIMIZED_FORMAT,
  buildDescriptor as buildOvfDescriptor,
  parseDescriptor as parseOvfDescriptor,
  unitBytes,
  type ControllerKind,
  type OvfDisk,
  type OvfEnvelope,
  type OvfFile,
  type OvfItem,
  type OvfSpec,
  type OvfVirtualSystem,
} from './descriptor.js';
export { VMDK_ADAPTER_TYPE, defaultDiskWriter, type DiskWriter, type DiskWriterOptions, type DiskWriterResult } from './disk-writer.js';
export { MANIFEST_ALGORITHMS, buildManifest, digestStorage, parseManifest, type ManifestAlgorithm, type ManifestEntry } from './manifest.js';
export {
  createOva,
  describePackage,
  extractPackage,
  formatPackageInfoHuman,
  openPackage,
  verifyPackage,
  type CreateOvaOptions,
  type CreateOvaResult,
  type ExtractOptions,
  type OvfPackage,
  type PackageInfo,
  type PackageProgress,
  type VerifyLine,
  type VerifyResult,
} from './package.js';
