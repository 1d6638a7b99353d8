/**
 * Storage pools as a library (`vdisk/pool`): LVM2 volume groups whose members are
 * images of any format, and their logical volumes as BlockDevices.
 *
 * @module
 */
export { Pool, DEFAULT_EXTENT_SIZE, DEFAULT_STRIPE_SIZE, freeRanges, type PoolMember, type PoolMemberOptions, type PoolOpenOptions } from './pool.js';
export { LogicalVolume } from './lv.js';
export { openLv } from './open.js';
export { isLvAddress, parseLvAddress, type LvAddress } from '../storage/address.js';
export { poolReport, formatPoolHuman, renderPoolSvg, type PoolReport, type PoolMemberReport, type PoolSegmentReport } from './show.js';
export { MAX_METADATA_TEXT, checkName, extentBytes, lvExtents, parseVg, formatVg, type LvMeta, type PvMeta, type SegmentMeta, type StripeArea, type TextFooter, type VgMeta } from './metadata.js';
export { fileFolder, memoryFolder, type PoolFolder } from './folder.js';
export {
  LABEL_SECTOR,
  MDA_HEADER_SIZE,
  decodeLabel,
  encodeLabel,
  decodeMdaHeader,
  encodeMdaHeader,
  lvmCrc,
  formatId,
  parseId,
  type DiskLocn,
  type MdaHeader,
  type PvLabel,
  type RawLocn,
} from './layout.js';
export type { ConfigScalar, ConfigValue } from './config.js';
export type { LvPiece } from './lv.js';
export {
  CONTROL_TIMEOUT_MS,
  CONTROL_VERSION,
  ControlServer,
  MAX_CONTROL_LINE,
  askHolder,
  changePool,
  controlSocketPath,
  holdPool,
  parseControlRequest,
  runControlOp,
  type ControlOp,
  type ControlRequest,
  type ControlResult,
  type HeldPool,
  type HolderAnswer,
} from './control.js';
