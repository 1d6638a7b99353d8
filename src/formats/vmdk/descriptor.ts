/**
 * The VMDK descriptor: the text that names the extents and the disk's identity
 * (spec: "The Descriptor File", sections "Header", "Extent Descriptions" and "The
 * Disk Database"). It lives in its own file or embedded in a sparse extent.
 * Parsing keeps every ddb.* key and every other header key, so a rewrite (a new CID)
 * loses nothing.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { VdiskError } from '../../errors.js';

/** Largest descriptor vdisk reads (the bound; VMware's are a few hundred bytes). */
export const MAX_DESCRIPTOR_BYTES = 1024 * 1024;
/** CID/parentCID meaning "no parent" (spec: parentCID=ffffffff). */
export const CID_NONE = 0xffffffff;
/** Extent access modes (spec: "Extent Descriptions"). */
export const ACCESS_MODES = ['RW', 'RDONLY', 'NOACCESS'] as const;
/** Extent types vdisk knows by name; only SPARSE, FLAT, VMFS and ZERO are readable. */
export const EXTENT_TYPES = ['SPARSE', 'FLAT', 'ZERO', 'VMFS', 'VMFSSPARSE', 'VMFSRDM', 'VMFSRAW', 'SESPARSE'] as const;

/** One access mode. */
export type AccessMode = (typeof ACCESS_MODES)[number];
/** One extent type. */
export type ExtentType = (typeof EXTENT_TYPES)[number];

/** One extent line: `RW 4192256 SPARSE "disk-s001.vmdk"` or `RW 2048 FLAT "disk-flat.vmdk" 0`. */
export interface ExtentLine {
  access: AccessMode;
  /** Size in sectors. */
  sectors: number;
  type: ExtentType;
  /** File name as written (absent for ZERO). */
  file?: string;
  /** Start of the extent inside a FLAT/VMFS file, in sectors. */
  offset: number;
}

/** A parsed descriptor. */
export interface Descriptor {
  version: number;
  /** Content ID: changes whenever the disk's contents change. */
  cid: number;
  /** The parent's CID at the time this delta link was made; CID_NONE without a parent. */
  parentCID: number;
  createType: string;
  parentFileNameHint?: string;
  extents: ExtentLine[];
  /** Other header keys (encoding, isNativeSnapshot, ...) in file order, values unquoted. */
  headerKeys: Map<string, string>;
  /** Every ddb.* key in file order, values unquoted. */
  ddb: Map<string, string>;
}

/** A copy of `d` that can be changed without touching `d`. */
export function copyDescriptor(d: Descriptor): Descriptor {
  return { ...d, extents: d.extents.map((l) => ({ ...l })), headerKeys: new Map(d.headerKeys), ddb: new Map(d.ddb) };
}

const EXTENT_RE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/;
const KV_RE = /^([A-Za-z0-9_.:-]+)\s*=\s*(.*?)\s*$/;

function unquote(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/** A CID field's value as a number; E_CORRUPT naming `field` when it is not hex. */
export function parseCid(v: string, field: string, name: string): number {
  if (!/^[0-9a-fA-F]{1,8}$/.test(v)) throw new VdiskError('E_CORRUPT', `${name}: descriptor ${field} "${v.slice(0, 40)}" is not a hex number`);
  return parseInt(v, 16) >>> 0;
}

/** Parse descriptor text; E_CORRUPT naming the field or line when it is malformed. */
export function parseDescriptor(text: string, name: string): Descriptor {
  if (text.length > MAX_DESCRIPTOR_BYTES) throw new VdiskError('E_CORRUPT', `${name}: descriptor is over ${MAX_DESCRIPTOR_BYTES} bytes`);
  const nul = text.indexOf('\0');
  const body = nul >= 0 ? text.slice(0, nul) : text;
  let version: number | undefined;
  let cid: number | undefined;
  let parentCID = CID_NONE;
  let createType: string | undefined;
  let parentFileNameHint: string | undefined;
  const extents: ExtentLine[] = [];
  const headerKeys = new Map<string, string>();
  const ddb = new Map<string, string>();
  for (const raw of body.split('\n')) {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const ext = EXTENT_RE.exec(line);
    if (ext) {
      const type = ext[3]!.toUpperCase();
      if (!(EXTENT_TYPES as readonly string[]).includes(type)) throw new VdiskError('E_CORRUPT', `${name}: descriptor extent type "${type}" is unknown`);
      const sectors = Number(ext[2]);
      const offset = ext[5] === undefined ? 0 : Number(ext[5]);
      if (!Number.isSafeInteger(sectors) || !Number.isSafeInteger(offset)) throw new VdiskError('E_CORRUPT', `${name}: descriptor extent line "${line.slice(0, 80)}" has a number out of range`);
      const e: ExtentLine = { access: ext[1] as AccessMode, sectors, type: type as ExtentType, offset };
      if (ext[4] !== undefined) e.file = ext[4];
      if (type !== 'ZERO' && e.file === undefined) throw new VdiskError('E_CORRUPT', `${name}: descriptor extent line "${line.slice(0, 80)}" names no file`);
      extents.push(e);
      continue;
    }
    const kv = KV_RE.exec(line);
    if (!kv) throw new VdiskError('E_CORRUPT', `${name}: descriptor line "${line.slice(0, 80)}" is neither key=value nor an extent`);
    const key = kv[1]!;
    const value = unquote(kv[2]!);
    if (key.startsWith('ddb.')) {
      ddb.set(key, value);
      continue;
    }
    switch (key) {
      case 'version':
        version = Number(value);
        if (!Number.isInteger(version)) throw new VdiskError('E_CORRUPT', `${name}: descriptor version "${value.slice(0, 20)}" is not a number`);
        break;
      case 'CID':
        cid = parseCid(value, 'CID', name);
        break;
      case 'parentCID':
        parentCID = parseCid(value, 'parentCID', name);
        break;
      case 'createType':
        createType = value;
        break;
      case 'parentFileNameHint':
        parentFileNameHint = value;
        break;
      default:
        headerKeys.set(key, value);
    }
  }
  if (version === undefined) throw new VdiskError('E_CORRUPT', `${name}: descriptor has no version`);
  if (version < 1 || version > 3) throw new VdiskError('E_UNSUPPORTED', `${name}: descriptor version ${version} is not supported (1 to 3 are)`);
  if (createType === undefined) throw new VdiskError('E_CORRUPT', `${name}: descriptor has no createType`);
  if (extents.length === 0) throw new VdiskError('E_CORRUPT', `${name}: descriptor lists no extents`);
  const d: Descriptor = { version, cid: cid ?? CID_NONE, parentCID, createType, extents, headerKeys, ddb };
  if (parentFileNameHint !== undefined) d.parentFileNameHint = parentFileNameHint;
  return d;
}

function quote(v: string): string {
  return `"${v.replace(/"/g, '')}"`;
}

/** A CID as the descriptor spells it: 8 lowercase hex digits. */
export function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

/** Write a descriptor as VMware lays it out (header, extents, disk database). */
export function formatDescriptor(d: Descriptor): string {
  const out: string[] = ['# Disk DescriptorFile', `version=${d.version}`];
  const encoding = d.headerKeys.get('encoding');
  if (encoding !== undefined) out.push(`encoding=${quote(encoding)}`);
  out.push(`CID=${hex8(d.cid)}`, `parentCID=${hex8(d.parentCID)}`);
  for (const [k, v] of d.headerKeys) if (k !== 'encoding') out.push(`${k}=${quote(v)}`);
  out.push(`createType=${quote(d.createType)}`);
  if (d.parentFileNameHint !== undefined) out.push(`parentFileNameHint=${quote(d.parentFileNameHint)}`);
  out.push('', '# Extent description');
  for (const e of d.extents) {
    let line = `${e.access} ${e.sectors} ${e.type}`;
    if (e.file !== undefined) line += ` ${quote(e.file)}`;
    if (e.type === 'FLAT' || e.type === 'VMFS') line += ` ${e.offset}`;
    out.push(line);
  }
  out.push('', '# The Disk Data Base', '#DDB', '');
  for (const [k, v] of d.ddb) out.push(`${k} = ${quote(v)}`);
  return `${out.join('\n')}\n`;
}

/** True when text looks like a descriptor (for probing a separate descriptor file). */
export function looksLikeDescriptor(head: string): boolean {
  return /^\s*#\s*Disk DescriptorFile/m.test(head) || (/^\s*version\s*=/m.test(head) && /^\s*createType\s*=/m.test(head));
}

/** Adapter types `create` accepts (spec: ddb.adapterType). */
export const ADAPTER_TYPES = ['ide', 'lsilogic', 'buslogic', 'legacyESX'] as const;

/** What a new descriptor needs. */
export interface NewDescriptorOptions {
  createType: string;
  extents: ExtentLine[];
  /** Disk size in sectors (for the geometry). */
  capacity: number;
  adapterType?: string;
  hwVersion?: number;
  parentCID?: number;
  parentFileNameHint?: string;
}

function randomCid(): number {
  return randomInt(0, CID_NONE);
}

/** A random ddb.uuid in VMware's spelling ("60 00 c2 9a ..."). */
function newUuid(): string {
  return [...randomBytes(16)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** A descriptor for a new disk with a fresh CID and VMware's disk database keys. */
export function newDescriptor(o: NewDescriptorOptions): Descriptor {
  const adapter = o.adapterType ?? 'ide';
  const heads = adapter === 'ide' ? 16 : 255;
  const sectors = 63;
  const cylinders = Math.max(1, Math.min(16383, Math.floor(o.capacity / (heads * sectors))));
  const ddb = new Map<string, string>([
    ['ddb.adapterType', adapter],
    ['ddb.geometry.cylinders', String(cylinders)],
    ['ddb.geometry.heads', String(heads)],
    ['ddb.geometry.sectors', String(sectors)],
    ['ddb.uuid', newUuid()],
    ['ddb.virtualHWVersion', String(o.hwVersion ?? 4)],
    ['ddb.toolsVersion', '0'],
  ]);
  const d: Descriptor = {
    version: 1,
    cid: randomCid(),
    parentCID: o.parentCID ?? CID_NONE,
    createType: o.createType,
    extents: o.extents,
    headerKeys: new Map([['encoding', 'UTF-8']]),
    ddb,
  };
  if (o.parentFileNameHint !== undefined) d.parentFileNameHint = o.parentFileNameHint;
  return d;
}
