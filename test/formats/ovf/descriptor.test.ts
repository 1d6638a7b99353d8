import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { isVdiskError } from '../../../src/errors.js';
import { buildDescriptor, parseDescriptor, unitBytes, type ControllerKind, type OvfSpec } from '../../../src/formats/ovf/descriptor.js';
import { itWith } from '../../helpers/oracle.js';
import { pythonExe } from './helpers.js';
import { tempDir } from '../../helpers/tmp.js';

/** CIM_ResourceAllocationSettingData.ResourceType ValueMap as DSP0243 uses it (CIM schema 2.x). */
const DSP0243_RESOURCE_TYPE: Record<number, string> = {
  1: 'Other',
  2: 'Computer System',
  3: 'Processor',
  4: 'Memory',
  5: 'IDE Controller',
  6: 'Parallel SCSI HBA',
  10: 'Ethernet Adapter',
  17: 'Disk Drive',
  20: 'Other Storage Device',
};
const OVF1 = 'http://schemas.dmtf.org/ovf/envelope/1';
const OVF2 = 'http://schemas.dmtf.org/ovf/envelope/2';
const RASD = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData';
const STREAM = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

/** Python's ElementTree reads the descriptor with real namespace handling and reports what it found. */
const DUMP = `
import sys, json, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = root.tag[1:].split('}')[0]
O = '{%s}' % ns
R = '{${RASD}}'
def a(e, n): return e.get(O + n)
items = []
for it in root.iter(O + 'Item'):
    d = {c.tag.split('}')[1]: (c.text or '') for c in it}
    d['_order'] = [c.tag.split('}')[1] for c in it]
    d['_ns'] = sorted({c.tag[1:].split('}')[0] for c in it})
    items.append(d)
print(json.dumps({
  'ns': ns, 'root': root.tag.split('}')[1], 'version': a(root, 'version'),
  'sections': [c.tag.split('}')[1] for c in root],
  'files': [{'href': a(f, 'href'), 'id': a(f, 'id'), 'size': a(f, 'size')} for f in root.find(O + 'References')],
  'disks': [{k: a(d, k) for k in ('capacity', 'capacityAllocationUnits', 'diskId', 'fileRef', 'format', 'populatedSize')} for d in root.find(O + 'DiskSection').findall(O + 'Disk')],
  'networks': [a(n, 'name') for n in root.find(O + 'NetworkSection').findall(O + 'Network')],
  'vs': [{'id': a(v, 'id'), 'name': v.findtext(O + 'Name'), 'os': a(v.find(O + 'OperatingSystemSection'), 'id')} for v in root.findall(O + 'VirtualSystem')],
  'items': items,
}))
`;

interface Dump {
  ns: string;
  root: string;
  version: string;
  sections: string[];
  files: Array<{ href: string; id: string; size: string }>;
  disks: Array<Record<string, string>>;
  networks: string[];
  vs: Array<{ id: string; name: string; os: string }>;
  items: Array<Record<string, string> & { _order: string[]; _ns: string[] }>;
}

function spec(controller: ControllerKind, disks: number, version: '1.0' | '2.0' = '1.0'): OvfSpec {
  return {
    name: 'web & db <1>',
    version,
    cpus: 4,
    memoryMiB: 2048,
    osId: 101,
    networks: ['VM Network', 'backend'],
    controller,
    disks: Array.from({ length: disks }, (_, i) => ({ href: `d${i + 1}.vmdk`, fileSize: 1000 + i, capacity: (i + 1) * 2 ** 30, populatedSize: 4096 * (i + 1) })),
  };
}

describe('OVF descriptor written by vdisk, read by python ElementTree, checked against DSP0243', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('vdisk-ovf-');
  });

  const dump = async (s: OvfSpec): Promise<Dump> => {
    const f = join(dir, `${s.controller}-${s.disks.length}-${s.version}.ovf`);
    await writeFile(f, buildDescriptor(s));
    const r = spawnSync(pythonExe(), ['-c', DUMP, f], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as Dump;
  };

  for (const [controller, rt, sub, n, controllers] of [
    ['scsi', 6, 'lsilogic', 3, 1],
    ['sata', 20, 'vmware.sata.ahci', 3, 1],
    ['ide', 5, 'PIIX4', 3, 2],
  ] as const) {
    itWith(['python3'], `${controller}: Envelope, References, DiskSection, NetworkSection and rasd items`, async () => {
      const d = await dump(spec(controller, n));
      expect(d.ns).toBe(OVF1);
      expect(d.root).toBe('Envelope');
      expect(d.version).toBe('1.0');
      expect(d.sections).toEqual(['References', 'DiskSection', 'NetworkSection', 'VirtualSystem']);
      expect(d.files).toEqual([1, 2, 3].map((i) => ({ href: `d${i}.vmdk`, id: `file${i}`, size: String(999 + i) })));
      expect(d.disks).toEqual(
        [1, 2, 3].map((i) => ({
          capacity: String(i * 2 ** 30),
          capacityAllocationUnits: 'byte',
          diskId: `vmdisk${i}`,
          fileRef: `file${i}`,
          format: STREAM,
          populatedSize: String(4096 * i),
        })),
      );
      expect(d.networks).toEqual(['VM Network', 'backend']);
      expect(d.vs).toEqual([{ id: 'web & db <1>', name: 'web & db <1>', os: '101' }]);
      for (const it of d.items) {
        expect(DSP0243_RESOURCE_TYPE[Number(it.ResourceType)], `ResourceType ${it.ResourceType}`).toBeDefined();
        expect(it._ns).toEqual([RASD]);
        // CIM_ResourceAllocationSettingData's schema is a sequence in alphabetical order
        expect(it._order).toEqual([...it._order].sort());
      }
      const ids = d.items.map((i) => i.InstanceID);
      expect(new Set(ids).size).toBe(ids.length);
      const of = (t: number): Dump['items'] => d.items.filter((i) => Number(i.ResourceType) === t);
      expect(of(3)).toHaveLength(1);
      expect(of(3)[0]!.VirtualQuantity).toBe('4');
      expect(of(4)).toHaveLength(1);
      expect(of(4)[0]).toMatchObject({ VirtualQuantity: '2048', AllocationUnits: 'byte * 2^20' });
      const ctls = of(rt);
      expect(ctls).toHaveLength(controllers);
      for (const c of ctls) expect(c.ResourceSubType).toBe(sub);
      const disks = of(17);
      expect(disks.map((x) => x.HostResource)).toEqual(['ovf:/disk/vmdisk1', 'ovf:/disk/vmdisk2', 'ovf:/disk/vmdisk3']);
      for (const x of disks) expect(ctls.map((c) => c.InstanceID)).toContain(x.Parent);
      // no two disks share a slot on one controller
      const slots = disks.map((x) => `${x.Parent}/${x.AddressOnParent}`);
      expect(new Set(slots).size).toBe(3);
      if (controller === 'ide') for (const x of disks) expect(['0', '1']).toContain(x.AddressOnParent);
      if (controller === 'scsi') for (const x of disks) expect(x.AddressOnParent).not.toBe('7');
      const nics = of(10);
      expect(nics.map((x) => x.Connection)).toEqual(['VM Network', 'backend']);
      for (const x of nics) expect(x.ResourceSubType).toBe('E1000');
    });
  }

  itWith(['python3'], 'OVF 2.0 declares the envelope/2 namespace', async () => {
    const d = await dump(spec('scsi', 1, '2.0'));
    expect(d.ns).toBe(OVF2);
    expect(d.version).toBe('2.0');
  });

  it('IDE holds at most four disks', () => {
    expect(() => buildDescriptor(spec('ide', 5))).toThrow(/IDE holds at most 4/);
  });

  it('parses back what it writes', () => {
    const env = parseDescriptor('t.ovf', Buffer.from(buildDescriptor(spec('sata', 2))));
    expect(env.version).toBe('1.0');
    expect(env.files.map((f) => [f.href, f.size])).toEqual([
      ['d1.vmdk', 1000],
      ['d2.vmdk', 1001],
    ]);
    expect(env.disks.map((d) => [d.capacity, d.populatedSize, d.format])).toEqual([
      [2 ** 30, 4096, STREAM],
      [2 ** 31, 8192, STREAM],
    ]);
    expect(env.virtualSystems[0]).toMatchObject({ name: 'web & db <1>', cpus: 4, memoryBytes: 2048 * 2 ** 20, osId: 101 });
    expect(env.networks.map((n) => n.name)).toEqual(['VM Network', 'backend']);
  });
});

/** Shaped like a VirtualBox 7 export: ovf: prefix only, GiB capacities, MegaBytes memory, vbox extension. */
const VBOX = `<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="${RASD}" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="deb-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="20" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="${STREAM}" vbox:uuid="2d1a"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="deb">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96"><Info>The kind of installed guest operating system</Info><Description>Debian_64</Description><vbox:OSType ovf:required="false">Debian_64</vbox:OSType></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`;

describe('OVF descriptors from elsewhere, and hostile ones', () => {
  const code = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      if (isVdiskError(e)) return `${e.code}: ${e.message}`;
      throw e;
    }
    return 'no error';
  };

  it('reads a VirtualBox-style export', () => {
    const env = parseDescriptor('deb.ovf', Buffer.from(VBOX));
    expect(env.disks[0]).toMatchObject({ capacity: 20 * 2 ** 30, fileRef: 'file1', format: STREAM });
    expect(env.virtualSystems[0]).toMatchObject({ id: 'deb', cpus: 2, memoryBytes: 2048 * 2 ** 20, osId: 96, osDescription: 'Debian_64' });
    expect(env.networks).toEqual([{ name: 'NAT', description: 'Logical network used by this appliance.' }]);
  });

  it('refuses a DOCTYPE before parsing (billion laughs)', () => {
    const lol = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><Envelope xmlns="${OVF1}"><References><File ovf:id="f" ovf:href="&lol3;" xmlns:ovf="${OVF1}"/></References></Envelope>`;
    expect(code(() => parseDescriptor('lol.ovf', Buffer.from(lol)))).toMatch(/^E_UNSUPPORTED: .*DOCTYPE/);
    const xxe = `<?xml version="1.0"?>\n<!doctype Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope xmlns="${OVF1}">&x;</Envelope>`;
    expect(code(() => parseDescriptor('xxe.ovf', Buffer.from(xxe)))).toMatch(/^E_UNSUPPORTED: .*DOCTYPE/);
  });

  it('refuses a descriptor over 16 MiB', () => {
    const big = Buffer.alloc(16 * 1024 * 1024 + 1, 0x20);
    expect(code(() => parseDescriptor('big.ovf', big))).toMatch(/^E_UNSUPPORTED: .*over the 16777216-byte limit/);
  });

  it('names the problem in malformed or foreign descriptors', () => {
    expect(code(() => parseDescriptor('x.ovf', Buffer.from('<Envelope><References></Envelope>')))).toMatch(/^E_CORRUPT: .*well-formed/);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from('<Envelope xmlns="urn:other"/>')))).toMatch(/^E_FORMAT: .*namespace/);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from('<html/>')))).toMatch(/^E_FORMAT: .*Envelope/);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from(VBOX.replace('ovf:fileRef="file1"', 'ovf:fileRef="file9"'))))).toMatch(/^E_CORRUPT: .*fileRef "file9"/);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from(VBOX.replace('ovf:capacity="20"', 'ovf:capacity="${disk.size}"'))))).toMatch(/^E_CORRUPT: .*ovf:capacity/);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from(VBOX.replace('ovf:capacity="20"', 'ovf:capacity="99999999999999"'))))).toMatch(/^E_CORRUPT: .*too large/);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from(VBOX.replace('ovf:href="deb-disk001.vmdk"', 'ovf:href="a/../../etc/passwd"'))))).toMatch(/^E_PATH: /);
    expect(code(() => parseDescriptor('x.ovf', Buffer.from(VBOX.replace('byte * 2^30', 'furlongs'))))).toMatch(/^E_UNSUPPORTED: .*capacityAllocationUnits/);
  });

  it('knows DSP0004 programmatic units', () => {
    expect(unitBytes('x', 'u', 'byte * 2^20')).toBe(2 ** 20);
    expect(unitBytes('x', 'u', 'byte*10^3')).toBe(1000);
    expect(unitBytes('x', 'u', 'byte * 1024')).toBe(1024);
    expect(unitBytes('x', 'u', 'GigaBytes')).toBe(2 ** 30);
    expect(unitBytes('x', 'u', undefined)).toBe(1);
  });
});
