/**
 * The OVF descriptor (DMTF DSP0243, OVF 1.0 and 2.0): writing one for an appliance,
 * and reading what an importer needs (References, DiskSection, NetworkSection,
 * VirtualSystem with its VirtualHardwareSection) with fast-xml-parser. A DOCTYPE is
 * refused before parsing (no entity expansion), and so is a descriptor over 16 MiB.
 */
import { XMLParser } from 'fast-xml-parser';
import { VdiskError } from '../../errors.js';
import { safeMemberName } from '../../storage/containers/names.js';

/** Envelope namespaces (DSP0243 1.x §7 / 2.x §7; DSP8023 schemas). */
export const OVF_NAMESPACE = {
  '1.0': 'http://schemas.dmtf.org/ovf/envelope/1',
  '2.0': 'http://schemas.dmtf.org/ovf/envelope/2',
} as const;
/** CIM schema namespaces used by the hardware items (DSP0243 §9.5; DSP8023). */
export const RASD_NAMESPACE = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData';
export const VSSD_NAMESPACE = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData';
export const CIM_NAMESPACE = 'http://schemas.dmtf.org/wbem/wscim/1/common';
export const VMW_NAMESPACE = 'http://www.vmware.com/schema/ovf';
/** DiskSection format URI of a streamOptimized VMDK (DSP0243 §9.1 note; VMware's VMDK spec). */
export const STREAM_OPTIMIZED_FORMAT = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';
/** Largest descriptor vdisk reads. */
export const MAX_DESCRIPTOR_BYTES = 16 * 1024 * 1024;

/**
 * CIM_ResourceAllocationSettingData.ResourceType values used in OVF hardware items
 * (DSP0243 §9.5 refers to CIM_ResourceAllocationSettingData in DSP1041/CIM schema 2.x).
 */
export const RESOURCE_TYPE = {
  other: 1,
  computerSystem: 2,
  processor: 3,
  memory: 4,
  ideController: 5,
  parallelScsiHba: 6,
  ethernetAdapter: 10,
  otherNetworkAdapter: 11,
  floppyDrive: 14,
  cdDrive: 15,
  dvdDrive: 16,
  diskDrive: 17,
  otherStorageDevice: 20,
  usbController: 23,
} as const;

/** Disk controller kinds `ova create` can describe. */
export type ControllerKind = 'ide' | 'scsi' | 'sata';

/** ResourceType, ResourceSubType and disks-per-controller of each controller kind. */
export const CONTROLLERS: Readonly<Record<ControllerKind, { resourceType: number; subType: string; slots: number[]; label: string }>> = {
  ide: { resourceType: RESOURCE_TYPE.ideController, subType: 'PIIX4', slots: [0, 1], label: 'IDE Controller' },
  // unit 7 is the LSI Logic HBA's own SCSI id
  scsi: { resourceType: RESOURCE_TYPE.parallelScsiHba, subType: 'lsilogic', slots: [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15], label: 'SCSI Controller' },
  sata: { resourceType: RESOURCE_TYPE.otherStorageDevice, subType: 'vmware.sata.ahci', slots: Array.from({ length: 30 }, (_, i) => i), label: 'SATA Controller' },
};

/** What a new appliance's descriptor says. */
export interface OvfSpec {
  name: string;
  version: '1.0' | '2.0';
  cpus: number;
  memoryMiB: number;
  /** CIM_OperatingSystem OsType (DSP0243 §9.7): 1 Other, 36 Linux, 101 Linux 64-bit, ... */
  osId: number;
  /** Networks; one E1000 adapter is attached to each. */
  networks: string[];
  controller: ControllerKind;
  /** Disks in References order. */
  disks: Array<{ href: string; fileSize: number; capacity: number; populatedSize: number }>;
}

/** Escape text for an XML attribute or element. */
function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** A rasd Item's children; written in the alphabetical order the CIM schema's sequence demands. */
type ItemFields = Partial<Record<'Address' | 'AddressOnParent' | 'AllocationUnits' | 'AutomaticAllocation' | 'Connection' | 'Description' | 'ElementName' | 'HostResource' | 'InstanceID' | 'Parent' | 'ResourceSubType' | 'ResourceType' | 'VirtualQuantity', string | number | boolean>>;

function item(fields: ItemFields): string {
  const keys = Object.keys(fields).sort() as Array<keyof ItemFields>;
  const body = keys.map((k) => `        <rasd:${k}>${esc(String(fields[k]))}</rasd:${k}>`).join('\n');
  return `      <Item>\n${body}\n      </Item>`;
}

/** Write the OVF descriptor for `spec`. */
export function buildDescriptor(spec: OvfSpec): string {
  const ns = OVF_NAMESPACE[spec.version];
  const ctl = CONTROLLERS[spec.controller];
  const controllersNeeded = Math.ceil(spec.disks.length / ctl.slots.length);
  if (spec.controller === 'ide' && controllersNeeded > 2) throw new VdiskError('E_USAGE', `${spec.name}: IDE holds at most 4 disks (2 controllers), not ${spec.disks.length}`);
  if (controllersNeeded > 4) throw new VdiskError('E_USAGE', `${spec.name}: too many disks (${spec.disks.length}) for ${spec.controller}`);
  const files = spec.disks.map((d, i) => `    <File ovf:href="${esc(d.href)}" ovf:id="file${i + 1}" ovf:size="${d.fileSize}"/>`);
  const disks = spec.disks.map(
    (d, i) =>
      `    <Disk ovf:capacity="${d.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:format="${STREAM_OPTIMIZED_FORMAT}" ovf:populatedSize="${d.populatedSize}"/>`,
  );
  const networks = spec.networks.map((n) => `    <Network ovf:name="${esc(n)}">\n      <Description>The ${esc(n)} network</Description>\n    </Network>`);
  let id = 0;
  const items: string[] = [];
  items.push(
    item({
      AllocationUnits: 'hertz * 10^6',
      Description: 'Number of Virtual CPUs',
      ElementName: `${spec.cpus} virtual CPU(s)`,
      InstanceID: ++id,
      ResourceType: RESOURCE_TYPE.processor,
      VirtualQuantity: spec.cpus,
    }),
  );
  items.push(
    item({
      AllocationUnits: 'byte * 2^20',
      Description: 'Memory Size',
      ElementName: `${spec.memoryMiB}MB of memory`,
      InstanceID: ++id,
      ResourceType: RESOURCE_TYPE.memory,
      VirtualQuantity: spec.memoryMiB,
    }),
  );
  const controllerIds: number[] = [];
  for (let c = 0; c < Math.max(1, controllersNeeded); c++) {
    controllerIds.push(++id);
    items.push(
      item({
        Address: c,
        Description: `${ctl.label} ${c}`,
        ElementName: `${ctl.label.split(' ')[0]!.toLowerCase()}Controller${c}`,
        InstanceID: id,
        ResourceSubType: ctl.subType,
        ResourceType: ctl.resourceType,
      }),
    );
  }
  spec.disks.forEach((_, i) => {
    items.push(
      item({
        AddressOnParent: ctl.slots[i % ctl.slots.length]!,
        ElementName: `disk${i + 1}`,
        HostResource: `ovf:/disk/vmdisk${i + 1}`,
        InstanceID: ++id,
        Parent: controllerIds[Math.floor(i / ctl.slots.length)]!,
        ResourceType: RESOURCE_TYPE.diskDrive,
      }),
    );
  });
  spec.networks.forEach((n, i) => {
    items.push(
      item({
        AddressOnParent: i + 7,
        AutomaticAllocation: true,
        Connection: n,
        Description: `E1000 ethernet adapter on "${n}"`,
        ElementName: `ethernet${i}`,
        InstanceID: ++id,
        ResourceSubType: 'E1000',
        ResourceType: RESOURCE_TYPE.ethernetAdapter,
      }),
    );
  });
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<Envelope ovf:version="${spec.version}" xmlns="${ns}" xmlns:ovf="${ns}" xmlns:cim="${CIM_NAMESPACE}" xmlns:rasd="${RASD_NAMESPACE}" xmlns:vssd="${VSSD_NAMESPACE}" xmlns:vmw="${VMW_NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`,
    '  <References>',
    ...files,
    '  </References>',
    '  <DiskSection>',
    '    <Info>Virtual disk information</Info>',
    ...disks,
    '  </DiskSection>',
    '  <NetworkSection>',
    '    <Info>The list of logical networks</Info>',
    ...networks,
    '  </NetworkSection>',
    `  <VirtualSystem ovf:id="${esc(spec.name)}">`,
    '    <Info>A virtual machine</Info>',
    `    <Name>${esc(spec.name)}</Name>`,
    `    <OperatingSystemSection ovf:id="${spec.osId}">`,
    '      <Info>The kind of installed guest operating system</Info>',
    '    </OperatingSystemSection>',
    '    <VirtualHardwareSection>',
    '      <Info>Virtual hardware requirements</Info>',
    '      <System>',
    '        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>',
    '        <vssd:InstanceID>0</vssd:InstanceID>',
    `        <vssd:VirtualSystemIdentifier>${esc(spec.name)}</vssd:VirtualSystemIdentifier>`,
    '        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>',
    '      </System>',
    ...items,
    '    </VirtualHardwareSection>',
    '  </VirtualSystem>',
    '</Envelope>',
    '',
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------- reading

/** A File in References (DSP0243 §7.1). */
export interface OvfFile {
  id: string;
  /** Member name inside the package (checked: no `..`, not absolute, no URL). */
  href: string;
  size?: number;
  compression?: string;
}

/** A Disk in DiskSection (DSP0243 §9.1). */
export interface OvfDisk {
  diskId: string;
  fileRef?: string;
  /** Capacity in bytes (capacity × capacityAllocationUnits). */
  capacity: number;
  populatedSize?: number;
  format?: string;
}

/** A hardware Item (rasd) of a VirtualHardwareSection. */
export interface OvfItem {
  instanceId: string;
  resourceType: number;
  resourceSubType?: string;
  elementName?: string;
  virtualQuantity?: number;
  allocationUnits?: string;
  parent?: string;
  addressOnParent?: string;
  hostResource?: string;
  connection?: string;
}

/** A VirtualSystem. */
export interface OvfVirtualSystem {
  id: string;
  name?: string;
  osId?: number;
  osDescription?: string;
  /** Sum of the processor items' VirtualQuantity. */
  cpus?: number;
  /** Memory in bytes (VirtualQuantity × AllocationUnits of the memory item). */
  memoryBytes?: number;
  items: OvfItem[];
}

/** What vdisk reads from a descriptor. */
export interface OvfEnvelope {
  version: '1.0' | '2.0';
  files: OvfFile[];
  disks: OvfDisk[];
  networks: Array<{ name: string; description?: string }>;
  virtualSystems: OvfVirtualSystem[];
}

type XmlNode = Record<string, unknown>;

const REPEATED = new Set(['File', 'Disk', 'Network', 'Item', 'StorageItem', 'EthernetPortItem', 'VirtualSystem', 'VirtualSystemCollection', 'VirtualHardwareSection']);

function localName(n: string): string {
  const i = n.indexOf(':');
  return i < 0 ? n : n.slice(i + 1);
}

function isNode(v: unknown): v is XmlNode {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function children(node: XmlNode, name: string): XmlNode[] {
  const v = node[name];
  const list = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return list.map((x) => (isNode(x) ? x : { '#text': String(x) }));
}

function child(node: XmlNode, name: string): XmlNode | undefined {
  return children(node, name)[0];
}

function textOf(node: XmlNode | undefined, name?: string): string | undefined {
  const n = name === undefined ? node : node ? child(node, name) : undefined;
  if (!n) return undefined;
  const t = n['#text'];
  return t === undefined ? (Object.keys(n).some((k) => !k.startsWith('@')) ? undefined : '') : String(t).trim();
}

function attr(node: XmlNode, name: string): string | undefined {
  const v = node[`@${name}`];
  return v === undefined ? undefined : String(v);
}

function integer(where: string, field: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = v.trim();
  if (!/^\d+$/.test(t) || !Number.isSafeInteger(Number(t))) throw new VdiskError('E_CORRUPT', `${where}: ${field} "${v}" is not a whole number`);
  return Number(t);
}

/**
 * Bytes in one unit of a DSP0004 programmatic unit (`byte`, `byte * 2^20`,
 * `byte * 10^3`, `byte * 1024`) or a common name (`KB`, `MB`, `GB`, `MegaBytes`).
 */
export function unitBytes(where: string, field: string, units: string | undefined): number {
  if (units === undefined || units.trim() === '') return 1;
  const u = units.replace(/\s+/g, '').toLowerCase();
  const names: Record<string, number> = { byte: 1, bytes: 1, b: 1, kb: 1024, kilobytes: 1024, mb: 2 ** 20, megabytes: 2 ** 20, gb: 2 ** 30, gigabytes: 2 ** 30, tb: 2 ** 40 };
  if (u in names) return names[u]!;
  const m = /^byte\*(\d+)(?:\^(\d+))?$/.exec(u);
  if (m) {
    const v = Number(m[1]) ** (m[2] === undefined ? 1 : Number(m[2]));
    if (Number.isSafeInteger(v) && v > 0) return v;
  }
  throw new VdiskError('E_UNSUPPORTED', `${where}: ${field} "${units}" is not a unit vdisk knows`);
}

function checkedProduct(where: string, field: string, a: number, b: number): number {
  const v = a * b;
  if (!Number.isSafeInteger(v)) throw new VdiskError('E_CORRUPT', `${where}: ${field} is too large`);
  return v;
}

/**
 * Parse descriptor bytes. E_UNSUPPORTED for a DOCTYPE or a descriptor over 16 MiB,
 * E_CORRUPT for malformed XML, E_FORMAT when it is not an OVF envelope, E_PATH when a
 * File href leads outside the package.
 */
export function parseDescriptor(where: string, bytes: Uint8Array): OvfEnvelope {
  if (bytes.length > MAX_DESCRIPTOR_BYTES) throw new VdiskError('E_UNSUPPORTED', `${where}: descriptor of ${bytes.length} bytes is over the ${MAX_DESCRIPTOR_BYTES}-byte limit`);
  let xml = Buffer.from(bytes).toString('utf8');
  if (xml.charCodeAt(0) === 0xfeff) xml = xml.slice(1);
  // No DTD at all: entity definitions are how "billion laughs" and external-entity attacks start.
  if (/<!DOCTYPE/i.test(xml) || /<!ENTITY/i.test(xml)) throw new VdiskError('E_UNSUPPORTED', `${where}: descriptor has a DOCTYPE; refused (entity expansion)`);
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '@',
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    transformTagName: localName,
    // fast-xml-parser hands over the name with attributeNamePrefix already on it
    transformAttributeName: (n) => {
      const bare = n.startsWith('@') ? n.slice(1) : n;
      return `@${bare.startsWith('xmlns') ? bare : localName(bare)}`;
    },
    isArray: (name) => REPEATED.has(name),
    maxNestedTags: 64,
  });
  let doc: unknown;
  try {
    doc = parser.parse(xml, true);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new VdiskError('E_CORRUPT', `${where}: descriptor is not well-formed XML: ${msg}`, { cause: err });
  }
  if (!isNode(doc) || !isNode(doc.Envelope)) throw new VdiskError('E_FORMAT', `${where}: no OVF Envelope element`);
  const env = doc.Envelope;
  const nsValues = Object.entries(env)
    .filter(([k]) => k.startsWith('@xmlns'))
    .map(([, v]) => String(v));
  const version = nsValues.includes(OVF_NAMESPACE['2.0']) ? '2.0' : nsValues.includes(OVF_NAMESPACE['1.0']) ? '1.0' : undefined;
  if (!version) throw new VdiskError('E_FORMAT', `${where}: Envelope does not declare the OVF 1.x or 2.x namespace`);

  const files: OvfFile[] = [];
  for (const f of children(child(env, 'References') ?? {}, 'File')) {
    const id = attr(f, 'id');
    const href = attr(f, 'href');
    if (!id || !href) throw new VdiskError('E_CORRUPT', `${where}: References/File without ovf:id or ovf:href`);
    if (/^[a-z][a-z0-9+.-]*:/i.test(href)) throw new VdiskError('E_UNSUPPORTED', `${where}: File ${id} href "${href}" is a URL; only files inside the package are read`);
    if (files.some((x) => x.id === id)) throw new VdiskError('E_CORRUPT', `${where}: File id "${id}" appears twice`);
    const file: OvfFile = { id, href: safeMemberName(where, href, `File ${id} href`) };
    const size = integer(where, `File ${id} ovf:size`, attr(f, 'size'));
    if (size !== undefined) file.size = size;
    const compression = attr(f, 'compression');
    if (compression !== undefined && compression !== 'identity') file.compression = compression;
    files.push(file);
  }

  const disks: OvfDisk[] = [];
  for (const d of children(child(env, 'DiskSection') ?? {}, 'Disk')) {
    const diskId = attr(d, 'diskId');
    if (!diskId) throw new VdiskError('E_CORRUPT', `${where}: DiskSection/Disk without ovf:diskId`);
    const field = `Disk ${diskId}`;
    const cap = integer(where, `${field} ovf:capacity`, attr(d, 'capacity'));
    if (cap === undefined) throw new VdiskError('E_CORRUPT', `${where}: ${field} has no ovf:capacity`);
    const disk: OvfDisk = { diskId, capacity: checkedProduct(where, `${field} ovf:capacity`, cap, unitBytes(where, `${field} ovf:capacityAllocationUnits`, attr(d, 'capacityAllocationUnits'))) };
    const fileRef = attr(d, 'fileRef');
    if (fileRef !== undefined) {
      if (!files.some((f) => f.id === fileRef)) throw new VdiskError('E_CORRUPT', `${where}: ${field} ovf:fileRef "${fileRef}" names no File in References`);
      disk.fileRef = fileRef;
    }
    const populated = integer(where, `${field} ovf:populatedSize`, attr(d, 'populatedSize'));
    if (populated !== undefined) disk.populatedSize = populated;
    const format = attr(d, 'format');
    if (format !== undefined) disk.format = format;
    disks.push(disk);
  }

  const networks = children(child(env, 'NetworkSection') ?? {}, 'Network').map((n) => {
    const out: { name: string; description?: string } = { name: attr(n, 'name') ?? '' };
    const desc = textOf(n, 'Description');
    if (desc) out.description = desc;
    return out;
  });

  const systems: XmlNode[] = [...children(env, 'VirtualSystem')];
  for (const coll of children(env, 'VirtualSystemCollection')) systems.push(...children(coll, 'VirtualSystem'));
  const virtualSystems = systems.map((vs) => readVirtualSystem(where, vs));
  return { version, files, disks, networks, virtualSystems };
}

function readVirtualSystem(where: string, vs: XmlNode): OvfVirtualSystem {
  const id = attr(vs, 'id') ?? '';
  const out: OvfVirtualSystem = { id, items: [] };
  const name = textOf(vs, 'Name');
  if (name) out.name = name;
  const os = child(vs, 'OperatingSystemSection');
  if (os) {
    const osId = integer(where, `VirtualSystem ${id} OperatingSystemSection ovf:id`, attr(os, 'id'));
    if (osId !== undefined) out.osId = osId;
    const d = textOf(os, 'Description');
    if (d) out.osDescription = d;
  }
  // Several VirtualHardwareSections may describe alternatives; the first is used.
  const hw = children(vs, 'VirtualHardwareSection')[0];
  if (!hw) return out;
  for (const it of [...children(hw, 'Item'), ...children(hw, 'StorageItem'), ...children(hw, 'EthernetPortItem')]) {
    const instanceId = textOf(it, 'InstanceID') ?? '';
    const rt = integer(where, `Item ${instanceId} ResourceType`, textOf(it, 'ResourceType'));
    if (rt === undefined) throw new VdiskError('E_CORRUPT', `${where}: hardware Item ${instanceId} has no ResourceType`);
    const item: OvfItem = { instanceId, resourceType: rt };
    const set = (k: keyof OvfItem, tag: string): void => {
      const v = textOf(it, tag);
      if (v !== undefined && v !== '') (item as unknown as Record<string, string>)[k] = v;
    };
    set('resourceSubType', 'ResourceSubType');
    set('elementName', 'ElementName');
    set('allocationUnits', 'AllocationUnits');
    set('parent', 'Parent');
    set('addressOnParent', 'AddressOnParent');
    set('hostResource', 'HostResource');
    set('connection', 'Connection');
    const q = integer(where, `Item ${instanceId} VirtualQuantity`, textOf(it, 'VirtualQuantity'));
    if (q !== undefined) item.virtualQuantity = q;
    out.items.push(item);
  }
  const cpus = out.items.filter((i) => i.resourceType === RESOURCE_TYPE.processor);
  if (cpus.length) out.cpus = cpus.reduce((s, i) => s + (i.virtualQuantity ?? 1), 0);
  const mem = out.items.find((i) => i.resourceType === RESOURCE_TYPE.memory);
  if (mem?.virtualQuantity !== undefined) {
    out.memoryBytes = checkedProduct(where, `Item ${mem.instanceId} memory`, mem.virtualQuantity, unitBytes(where, `Item ${mem.instanceId} AllocationUnits`, mem.allocationUnits));
  }
  return out;
}
