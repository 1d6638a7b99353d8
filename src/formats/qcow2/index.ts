/**
 * qcow2 driver (qemu's copy-on-write format, versions 2 and 3, from
 * docs/interop/qcow2.txt): header and extensions validated at open, L1/L2 lookups,
 * zero and compressed clusters, and a backing file opened with its recorded
 * backing_fmt (probed by magic only when the image records none).
 */
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverCreateOptions, DriverOpenOptions, FormatDriver } from '../driver.js';
import { QCOW2_MAGIC, decodeHeader, validateHeader, type Qcow2Header } from './header.js';
import { Qcow2Image } from './image.js';

export { Qcow2Image, type Qcow2ImageParts } from './image.js';
export { decodeHeader as decodeQcow2Header, type Qcow2Header } from './header.js';

/** Formats a backing_fmt may name (qemu's names; `vpc` is VHD). */
const BACKING_FORMATS: Record<string, string> = { qcow2: 'qcow2', raw: 'raw', vpc: 'vhd', vhd: 'vhd', vdi: 'vdi', vmdk: 'vmdk' };

/** The header (first cluster) decoded and checked against the file, with the backing name. */
export async function loadHeader(storage: Storage): Promise<Qcow2Header> {
  const first = Buffer.alloc(Math.min(storage.size, 72));
  await storage.read(first, 0);
  const bits = first.length >= 24 ? first.readUInt32BE(20) : 0;
  // The header and its extensions lie in the first cluster; read no more than that.
  const cs = bits >= 9 && bits <= 21 ? 2 ** bits : 512;
  const raw = Buffer.alloc(Math.min(storage.size, cs));
  await storage.read(raw, 0);
  const h = decodeHeader(raw, storage.name);
  validateHeader(h, storage.size, storage.name);
  if (h.backingFileOffset !== 0 && h.backingFileSize > 0) {
    h.backingFile = raw.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString('utf8');
  }
  return h;
}

/** Open the backing file the header names, confined to the image's folder, with its recorded format. */
async function openBacking(storage: Storage, location: ImageLocation, h: Qcow2Header, opts: DriverOpenOptions, warnings: string[]): Promise<DiskImage> {
  const ref = h.backingFile!;
  // qemu reads "json:{...}", "nbd:..." and other protocol strings here; an image never chooses where we read.
  if (/^[a-z][a-z0-9+.-]*:/i.test(ref)) {
    throw new VdiskError('E_PATH', `${storage.name}: backing file "${ref}" is a protocol or pseudo-protocol reference, not a file (vdisk follows only file names)`);
  }
  let format: string | undefined;
  if (h.backingFormat !== undefined) {
    format = BACKING_FORMATS[h.backingFormat];
    if (!format) throw new VdiskError('E_UNSUPPORTED', `${storage.name}: backing_fmt "${h.backingFormat}" is not a format vdisk reads`);
  } else {
    warnings.push(`no backing_fmt recorded: the format of ${ref} was detected by its magic`);
  }
  const name = location.resolve(ref);
  return opts.openParent(name, format);
}

/** Open a validated qcow2 image on `storage`, following its backing file. */
async function openQcow2(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<Qcow2Image> {
  const header = await loadHeader(storage);
  const l1 = Buffer.alloc(header.l1Size * 8);
  if (l1.length > 0) await storage.read(l1, header.l1TableOffset);
  const warnings: string[] = [];
  let parent: DiskImage | undefined;
  let ownsParent = false;
  if (opts.parent) {
    parent = opts.parent;
  } else if (header.backingFile !== undefined && !opts.noBacking) {
    parent = await openBacking(storage, location, header, opts, warnings);
    ownsParent = true;
  }
  // Writing arrives in a later change; until then every open is read-only.
  return new Qcow2Image({ storage, header, l1, readOnly: true, parent, ownsParent, warnings });
}

/** The qcow2 format driver. */
export const qcow2Driver: FormatDriver = {
  name: 'qcow2',
  createOptions: {},

  async probe(storage: Storage): Promise<boolean> {
    if (storage.size < 8) return false;
    const b = Buffer.alloc(4);
    await storage.read(b, 0);
    return b.readUInt32BE(0) === QCOW2_MAGIC;
  },

  open(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<DiskImage> {
    return openQcow2(storage, location, opts);
  },

  async create(location: ImageLocation, _opts: DriverCreateOptions): Promise<DiskImage> {
    throw new VdiskError('E_UNSUPPORTED', `${location.name}: creating qcow2 images is not supported yet`);
  },
};
