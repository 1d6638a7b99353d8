// The readers `npm run fuzz` attacks: for each, how to make a valid seed (with the
// built library, as a user would) and how to use a damaged copy the way the CLI does.
// A case passes when it works or fails with a VdiskError; anything else is a crash.
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import CRC32 from 'crc-32';
import CRC32C from 'crc-32/crc32c.js';
import { checkPartitions, isVdiskError, readPartitions } from '../dist/index.js';
import { RawImage, findDriver, openLocation } from '../dist/driver.js';
import { MemoryLocation, MemoryStorage } from '../dist/testing.js';
import { createOva } from '../dist/index.js';
import { openArchive, parseManifest } from '../dist/driver.js';
import { parseDescriptor } from '../dist/formats/ovf/descriptor.js';

/** Deterministic bytes (xorshift32), so seeds need no fixtures. */
function pattern(length, seed) {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  return out;
}

/** Every file of a memory location as bytes. */
function snapshot(files) {
  const out = new Map();
  for (const [n, s] of files) out.set(n, s.snapshot());
  return out;
}

/** A small image of `format` with data in a few places (and a parent when `differencing`). */
async function diskSeed(format, { options = {}, differencing = false, ext = format } = {}) {
  const driver = findDriver(format);
  const files = new Map();
  const size = 4 * 1024 * 1024;
  const base = new MemoryLocation(`p.${ext}`, files);
  const p = await driver.create(base, { size, options });
  await p.write(pattern(70_000, 1), 0);
  await p.write(pattern(4096, 2), 2 * 1024 * 1024 + 512);
  await p.close();
  if (!differencing) return { files: snapshot(files), main: `p.${ext}` };
  const parent = await openLocation(base, { readOnly: true });
  const child = await driver.create(new MemoryLocation(`c.${ext}`, files), { size, options: {}, parent, parentRef: `p.${ext}` });
  await child.write(pattern(8192, 3), 1024 * 1024);
  await child.close();
  await parent.close();
  return { files: snapshot(files), main: `c.${ext}` };
}

/** VHD checksums: ones' complement of the byte sum with the field zeroed. */
function vhdSum(b, at) {
  let sum = 0;
  for (let i = 0; i < b.length; i++) if (i < at || i >= at + 4) sum = (sum + b[i]) >>> 0;
  return ~sum >>> 0;
}

/** Recompute VHD footer and dynamic-header checksums, so damage reaches the fields behind them. */
function fixVhd(data) {
  const out = Buffer.from(data);
  if (out.length < 512) return out;
  for (const at of [0, out.length - 512]) {
    const f = out.subarray(at, at + 512);
    if (f.toString('latin1', 0, 8) === 'conectix') f.writeUInt32BE(vhdSum(f, 64), 64);
  }
  if (out.length >= 1536 && out.toString('latin1', 512, 520) === 'cxsparse') {
    const h = out.subarray(512, 1536);
    h.writeUInt32BE(vhdSum(h, 36), 36);
  }
  return out;
}

/** Recompute the primary and backup GPT header and entry-array CRCs. */
function fixGpt(data) {
  const out = Buffer.from(data);
  for (const at of [512, out.length - 512]) {
    if (at < 0 || at + 92 > out.length || out.toString('latin1', at, at + 8) !== 'EFI PART') continue;
    const h = out.subarray(at, at + 512);
    const entriesLba = Number(h.readBigUInt64LE(72));
    const count = h.readUInt32LE(80);
    const size = h.readUInt32LE(84);
    const len = count * size;
    if (len > 0 && len <= 1024 * 1024 && entriesLba * 512 + len <= out.length) {
      h.writeInt32LE(CRC32.buf(out.subarray(entriesLba * 512, entriesLba * 512 + len)), 88);
    }
    const hs = Math.min(Math.max(h.readUInt32LE(12), 92), 512);
    h.writeUInt32LE(0, 16);
    h.writeInt32LE(CRC32.buf(h.subarray(0, hs)), 16);
  }
  return out;
}

/** Read a device the way users do, bounded so a hostile size cannot make a case slow. */
async function exercise(dev, { maxExtents = 2048, maxBytes = 2 * 1024 * 1024 } = {}) {
  let budget = maxBytes;
  const buf = Buffer.alloc(64 * 1024);
  let n = 0;
  for await (const e of dev.extents()) {
    if (++n > maxExtents) break;
    if (e.kind === 'data' && budget > 0) {
      const len = Math.min(buf.length, e.length, budget);
      await dev.read(buf.subarray(0, len), e.offset);
      budget -= len;
    }
  }
  for (const off of [0, Math.floor(dev.size / 2 / 512) * 512, dev.size - 512]) {
    if (off >= 0 && off + 512 <= dev.size) await dev.read(buf.subarray(0, 512), off);
  }
}

function memoryFolder(files, main) {
  const m = new Map();
  for (const [n, b] of files) m.set(n, new MemoryStorage(Buffer.from(b), { name: n }));
  return new MemoryLocation(main, m);
}

/** What `check`, `info`, `map`, `convert` and a write do with an image. */
async function useDisk(format, files, main) {
  const loc = memoryFolder(files, main);
  const driver = findDriver(format);
  const storage = await loc.open(main);
  try {
    const r = await driver.check(storage, loc, { readOnly: true, openParent: (n) => openLocation(loc.at(n), { readOnly: true }) });
    if (!Array.isArray(r.problems)) throw new Error('check returned no problem list');
  } finally {
    await storage.close();
  }
  const img = await openLocation(loc, { format, readOnly: true });
  try {
    await exercise(img);
    await img.info();
  } finally {
    await img.close();
  }
  // Then a write, as resize/commit/qemu-io would make one (refused cleanly where the format is write-once).
  // The reader worked; a write refused with a VdiskError is a fine answer too.
  try {
    const w = await openLocation(loc, { format });
    try {
      if (w.size >= 4096) await w.write(Buffer.alloc(700, 0x5a), Math.floor(w.size / 2 / 512) * 512 + 100);
      await w.flush();
    } finally {
      await w.close();
    }
  } catch (err) {
    if (!isVdiskError(err)) throw err;
    return `write refused (${err.code})`;
  }
  return 'written';
}

/** A folder made for one seed, removed afterwards. */
async function withTemp(fn) {
  const dir = await mkdtemp(join(tmpdir(), 'vdisk-fuzz-seed-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A raw disk partitioned by sfdisk (util-linux), the way users make them. */
async function sfdiskSeed(script) {
  return withTemp(async (dir) => {
    const path = join(dir, 'disk.img');
    await writeFile(path, '');
    await truncate(path, 2 * 1024 * 1024);
    const r = spawnSync('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], { input: script, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`sfdisk (package fdisk) is needed for this seed: ${r.error?.message ?? r.stderr}`);
    return { files: new Map([['disk.img', await readFile(path)]]), main: 'disk.img' };
  });
}

async function usePartitions(files, main) {
  const bytes = files.get(main);
  const dev = new RawImage(new MemoryStorage(Buffer.from(bytes), { name: main }), false);
  const before = await readPartitions(dev);
  await checkPartitions(dev, { repair: 'all' });
  const after = await readPartitions(dev);
  return `${before.scheme}${before.problems.length > 0 ? ' with problems' : ''}${after.problems.length < before.problems.length ? ', repaired' : ''}`;
}

/** A stored (uncompressed) zip of `entries`, written here so the seed needs no zip tool. */
function storedZip(entries) {
  const locals = [];
  const central = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name, 'utf8');
    const crc = CRC32.buf(data) >>> 0;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(n.length, 28);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, n, data);
    central.push(ch, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** An OVA made by `vdisk ova create` from a small disk. */
async function ovaSeed() {
  return withTemp(async (dir) => {
    const disk = Buffer.concat([pattern(256 * 1024, 4), Buffer.alloc(256 * 1024), pattern(64 * 1024, 5)]);
    await writeFile(join(dir, 'a.raw'), disk);
    await createOva(join(dir, 'f.ova'), [join(dir, 'a.raw')], { name: 'f' });
    return await readFile(join(dir, 'f.ova'));
  });
}

/** Open a package the way `ova info` and `ARCHIVE:MEMBER` do: list, parse descriptor and manifest, read and open every member. */
async function usePackage(files, main) {
  const archive = await openArchive(new MemoryStorage(Buffer.from(files.get(main)), { name: main }), { zipLimits: { maxEntryBytes: 64 * 1024 * 1024 } });
  try {
    for (const m of archive.members) {
      const s = await archive.openMember(m.name);
      try {
        const n = Math.min(s.size, 1024 * 1024);
        const b = Buffer.alloc(n);
        await s.read(b, 0);
        if (m.name.endsWith('.ovf')) parseDescriptor(m.name, b);
        if (m.name.endsWith('.mf')) parseManifest(m.name, b);
      } finally {
        await s.close();
      }
    }
  } finally {
    await archive.close();
  }
}

/** Tar header fields of the first three entries (size, type flag, checksum). */
const TAR_FIELDS = [0, 512 * 3, 512 * 6].flatMap((base) => [
  { offset: base + 124, size: 8, name: `size@${base}` },
  { offset: base + 148, size: 8, name: `chksum@${base}` },
  { offset: base + 156, size: 1, name: `typeflag@${base}` },
]);

const VHD_FOOTER = (base) => [
  { offset: base + 16, size: 8, name: 'data_offset' },
  { offset: base + 40, size: 8, name: 'original_size' },
  { offset: base + 48, size: 8, name: 'current_size' },
  { offset: base + 56, size: 2, name: 'cylinders' },
  { offset: base + 58, size: 1, name: 'heads' },
  { offset: base + 59, size: 1, name: 'sectors' },
  { offset: base + 60, size: 4, name: 'disk_type' },
];
const VHD_HEADER = [
  { offset: 512 + 16, size: 8, name: 'table_offset' },
  { offset: 512 + 28, size: 4, name: 'max_table_entries' },
  { offset: 512 + 32, size: 4, name: 'block_size' },
  ...[0, 1].flatMap((i) => [
    { offset: 512 + 576 + 24 * i, size: 4, name: `locator${i}.code` },
    { offset: 512 + 576 + 24 * i + 8, size: 4, name: `locator${i}.length` },
    { offset: 512 + 576 + 24 * i + 16, size: 8, name: `locator${i}.offset` },
  ]),
  ...Array.from({ length: 8 }, (_, i) => ({ offset: 1536 + 4 * i, size: 4, name: `bat[${i}]` })),
];
const VDI_FIELDS = [
  { offset: 0x40, size: 4, name: 'signature' },
  { offset: 0x44, size: 4, name: 'version' },
  { offset: 0x48, size: 4, name: 'cbHeader' },
  { offset: 0x4c, size: 4, name: 'imageType' },
  { offset: 0x154, size: 4, name: 'offBlocks' },
  { offset: 0x158, size: 4, name: 'offData' },
  { offset: 0x170, size: 8, name: 'cbDisk' },
  { offset: 0x178, size: 4, name: 'cbBlock' },
  { offset: 0x180, size: 4, name: 'cBlocks' },
  { offset: 0x184, size: 4, name: 'cBlocksAllocated' },
  ...Array.from({ length: 4 }, (_, i) => ({ offset: 0x200 + 4 * i, size: 4, name: `map[${i}]` })),
];
const VMDK_SPARSE = [
  { offset: 4, size: 4, name: 'version' },
  { offset: 8, size: 4, name: 'flags' },
  { offset: 12, size: 8, name: 'capacity' },
  { offset: 20, size: 8, name: 'grainSize' },
  { offset: 28, size: 8, name: 'descriptorOffset' },
  { offset: 36, size: 8, name: 'descriptorSize' },
  { offset: 44, size: 4, name: 'numGTEsPerGT' },
  { offset: 48, size: 8, name: 'rgdOffset' },
  { offset: 56, size: 8, name: 'gdOffset' },
  { offset: 64, size: 8, name: 'overHead' },
  { offset: 77, size: 2, name: 'compressAlgorithm' },
];
const GPT_FIELDS = [
  { offset: 512 + 12, size: 4, name: 'header_size' },
  { offset: 512 + 24, size: 8, name: 'my_lba' },
  { offset: 512 + 32, size: 8, name: 'alternate_lba' },
  { offset: 512 + 40, size: 8, name: 'first_usable' },
  { offset: 512 + 48, size: 8, name: 'last_usable' },
  { offset: 512 + 72, size: 8, name: 'entries_lba' },
  { offset: 512 + 80, size: 4, name: 'entry_count' },
  { offset: 512 + 84, size: 4, name: 'entry_size' },
  ...[0, 1].flatMap((i) => [
    { offset: 1024 + 128 * i + 32, size: 8, name: `entry${i}.first` },
    { offset: 1024 + 128 * i + 40, size: 8, name: `entry${i}.last` },
  ]),
];
const MBR_FIELDS = [0, 1, 2, 3].flatMap((i) => [
  { offset: 446 + 16 * i + 4, size: 1, name: `p${i}.type` },
  { offset: 446 + 16 * i + 8, size: 4, name: `p${i}.start` },
  { offset: 446 + 16 * i + 12, size: 4, name: `p${i}.sectors` },
]);

/** Recompute the CRC-32C of both VHDX headers and both region tables ([MS-VHDX] 2.2), so damage reaches their fields. */
function fixVhdx(data) {
  const out = Buffer.from(data);
  for (const [at, len] of [[65536, 4096], [131072, 4096], [196608, 65536], [262144, 65536]]) {
    if (at + len > out.length) continue;
    out.writeUInt32LE(0, at + 4);
    out.writeUInt32LE(CRC32C.buf(out.subarray(at, at + len)) >>> 0, at + 4);
  }
  return out;
}
/** Fields of a VHDX as create.ts lays it out: headers, region table 1, metadata table and items (at 2 MiB), BAT (at 3 MiB), log (at 1 MiB). */
const VHDX_FIELDS = [
  ...[65536, 131072].flatMap((h) => [
    { offset: h + 8, size: 8, name: 'seq' },
    { offset: h + 48, size: 4, name: 'logGuid' },
    { offset: h + 68, size: 4, name: 'logLength' },
    { offset: h + 72, size: 8, name: 'logOffset' },
  ]),
  { offset: 196608 + 8, size: 4, name: 'regionCount' },
  ...[0, 1].flatMap((i) => [
    { offset: 196608 + 16 + 32 * i + 16, size: 8, name: `region${i}.offset` },
    { offset: 196608 + 16 + 32 * i + 24, size: 4, name: `region${i}.length` },
  ]),
  { offset: 2097152 + 10, size: 2, name: 'metadataCount' },
  ...[0, 1, 2, 3, 4, 5].flatMap((i) => [
    { offset: 2097152 + 32 + 32 * i + 16, size: 4, name: `item${i}.offset` },
    { offset: 2097152 + 32 + 32 * i + 20, size: 4, name: `item${i}.length` },
  ]),
  ...[0, 4, 8, 16, 32, 40, 48, 60, 68].map((o) => ({ offset: 2097152 + 65536 + o, size: 4, name: `items+${o}` })),
  ...[0, 1, 2].map((i) => ({ offset: 3145728 + 8 * i, size: 8, name: `bat${i}` })),
  { offset: 1048576 + 8, size: 4, name: 'log.entryLength' },
];

/**
 * name → { about, seed(): {files, main, mutate?}, fields, bigEndian, hot, text, fix(data), attempt(files, main) }.
 * `mutate` names the file the damage goes into (default `main`).
 */
export const TARGETS = {
  'vhd-dynamic': { about: 'VHD dynamic: footer, header, BAT', seed: () => diskSeed('vhd'), fields: [...VHD_FOOTER(0), ...VHD_HEADER], bigEndian: true, hot: 3072, fix: fixVhd, attempt: (f, m) => useDisk('vhd', f, m) },
  'vhd-fixed': { about: 'VHD fixed: trailing footer', seed: () => diskSeed('vhd', { options: { subformat: 'fixed' } }), tailFields: VHD_FOOTER, bigEndian: true, tail: 512, fix: fixVhd, attempt: (f, m) => useDisk('vhd', f, m) },
  'vhd-differencing': { about: 'VHD differencing: parent locators and names', seed: () => diskSeed('vhd', { differencing: true }), fields: [...VHD_FOOTER(0), ...VHD_HEADER], bigEndian: true, hot: 8192, fix: fixVhd, attempt: (f, m) => useDisk('vhd', f, m) },
  'vdi-dynamic': { about: 'VDI dynamic: header and block map', seed: () => diskSeed('vdi'), fields: VDI_FIELDS, hot: 4096, attempt: (f, m) => useDisk('vdi', f, m) },
  'vdi-fixed': { about: 'VDI fixed', seed: () => diskSeed('vdi', { options: { subformat: 'fixed' } }), fields: VDI_FIELDS, hot: 4096, attempt: (f, m) => useDisk('vdi', f, m) },
  'vdi-differencing': { about: 'VDI differencing: uuids and the parent search', seed: () => diskSeed('vdi', { differencing: true }), fields: VDI_FIELDS, hot: 4096, attempt: (f, m) => useDisk('vdi', f, m) },
  'vhdx-dynamic': { about: 'VHDX dynamic: headers, region tables, metadata, BAT', seed: () => diskSeed('vhdx', { options: { block_size: '1M' } }), fields: VHDX_FIELDS, hot: 327680, fix: fixVhdx, attempt: (f, m) => useDisk('vhdx', f, m) },
  'vhdx-differencing': { about: 'VHDX differencing: sector bitmaps, parent locator, linkage', seed: () => diskSeed('vhdx', { differencing: true }), fields: VHDX_FIELDS, hot: 327680, fix: fixVhdx, attempt: (f, m) => useDisk('vhdx', f, m) },
  'vmdk-sparse': { about: 'VMDK monolithicSparse: header, embedded descriptor, grain directory and tables', seed: () => diskSeed('vmdk'), fields: VMDK_SPARSE, hot: 65536 * 2, attempt: (f, m) => useDisk('vmdk', f, m) },
  'vmdk-stream': { about: 'VMDK streamOptimized: compressed grains and markers', seed: () => diskSeed('vmdk', { options: { subformat: 'streamOptimized' } }), fields: VMDK_SPARSE, hot: 65536 * 2, attempt: (f, m) => useDisk('vmdk', f, m) },
  'vmdk-descriptor': {
    about: 'VMDK descriptor text (twoGbMaxExtentSparse): extents, types, names, CIDs',
    seed: () => diskSeed('vmdk', { options: { subformat: 'twoGbMaxExtentSparse' } }),
    text: true,
    attempt: (f, m) => useDisk('vmdk', f, m),
  },
  'vmdk-flat-descriptor': {
    about: 'VMDK monolithicFlat descriptor text',
    seed: () => diskSeed('vmdk', { options: { subformat: 'monolithicFlat' } }),
    text: true,
    attempt: (f, m) => useDisk('vmdk', f, m),
  },
  ova: { about: 'OVA (ustar): tar headers, OVF descriptor, manifest', seed: async () => ({ files: new Map([['f.ova', await ovaSeed()]]), main: 'f.ova' }), fields: TAR_FIELDS, hot: 8192, attempt: usePackage },
  'ovf-descriptor': {
    about: 'OVF descriptor XML inside an OVA',
    seed: async () => {
      const ova = await ovaSeed();
      const archive = await openArchive(new MemoryStorage(ova, { name: 'f.ova' }));
      const members = [];
      for (const m of archive.members) {
        const s = await archive.openMember(m.name);
        const b = Buffer.alloc(s.size);
        await s.read(b, 0);
        await s.close();
        members.push([m.name, b]);
      }
      await archive.close();
      return { files: new Map(members), main: 'f.ova', mutate: 'f.ovf', rebuild: (fs) => ({ files: new Map([['f.ova', storedZip([...fs])]]), main: 'f.ova' }) };
    },
    text: true,
    attempt: usePackage,
  },
  zip: {
    about: 'zip packages: local and central headers, sizes, the end record',
    seed: async () => {
      const ova = await ovaSeed();
      const archive = await openArchive(new MemoryStorage(ova, { name: 'f.ova' }));
      const members = [];
      for (const m of archive.members) {
        const s = await archive.openMember(m.name);
        const b = Buffer.alloc(s.size);
        await s.read(b, 0);
        await s.close();
        members.push([m.name, b]);
      }
      await archive.close();
      return { files: new Map([['f.zip', storedZip(members)]]), main: 'f.zip' };
    },
    hot: 1 << 30,
    attempt: usePackage,
  },
  gpt: { about: 'GPT: headers, entry arrays, protective MBR (read, check, repair)', seed: () => sfdiskSeed('label: gpt\n,512K,L\n,256K,S\n,\n'), fields: GPT_FIELDS, hot: 34 * 512, fix: fixGpt, attempt: usePartitions },
  mbr: { about: 'MBR with an extended chain (read, check)', seed: () => sfdiskSeed('label: dos\n,256K,83\n,,5\n,256K,83\n,,82\n'), fields: MBR_FIELDS, hot: 1 << 30, attempt: usePartitions },
  // The harness's own checks, run only when named: a case that crashes, one that hangs, one that eats memory.
  'harness-selftest': {
    about: 'not a reader: proves the harness catches a crash, a hang and a blow-up',
    hidden: true,
    seed: async () => ({ files: new Map([['x.bin', Buffer.alloc(64)]]), main: 'x.bin' }),
    attempt: async (_f, _m, index) => {
      if (index === 3) throw new TypeError('deliberate crash');
      if (index === 5) for (;;);
      if (index === 7) {
        const hog = [];
        for (;;) hog.push(new Array(1e7).fill(index + 0.5));
      }
      if (index === 9) await new Promise(() => undefined);
    },
  },
};
