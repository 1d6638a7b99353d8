/** OVF: the descriptor and manifest of an appliance, and the package read in place. */
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
export { MANIFEST_ALGORITHMS, buildManifest, digestStorage, parseManifest, type ManifestAlgorithm, type ManifestEntry } from './manifest.js';
export { openPackage, type OvfPackage } from './package.js';
