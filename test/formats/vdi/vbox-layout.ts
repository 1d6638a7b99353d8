/**
 * Builds a VDI the way VirtualBox lays one out (VDICore.h, VDI.cpp vdiInitHeader and
 * vdiImageCreateFile): 64-byte banner, VDIHEADER1PLUS with cbHeader 400 and LCHS
 * geometry, block map at 1 MiB, data at 2 MiB, 1 MiB blocks appended in the order
 * they were first written. Written from the documented layout with literal offsets,
 * independently of src/formats/vdi, so the reader is judged against the spec and not
 * against its own encoder. Used by vbox-layout.test.ts (see fixtures/README.md).
 */

const MiB = 1024 * 1024;

/** What the generated image holds. */
export interface VboxLayoutImage {
  file: Buffer;
  /** The disk's contents as a raw image. */
  contents: Buffer;
}

function uuidBytes(seed: number): Buffer {
  const b = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) b[i] = (seed * 37 + i * 11) & 0xff;
  b[7] = (b[7]! & 0x0f) | 0x40; // version 4 in RTUUID's little-endian time_hi field
  b[8] = (b[8]! & 0x3f) | 0x80;
  return b;
}

/**
 * A VirtualBox-layout image of `disk` bytes. `written` lists virtual blocks in the
 * order the guest first wrote them (each gets the next data block), `zero` the
 * blocks marked VDI_IMAGE_BLOCK_ZERO; `fixed` preallocates every block in order.
 */
export function vboxLayoutImage(opts: { disk: number; written?: number[]; zero?: number[]; fixed?: boolean }): VboxLayoutImage {
  const cBlocks = Math.ceil(opts.disk / MiB);
  const offBlocks = MiB; // RT_ALIGN_32(sizeof(VDIPREHEADER) + sizeof(VDIHEADER1PLUS), VDI_DATA_ALIGN)
  const offData = Math.ceil((offBlocks + cBlocks * 4) / MiB) * MiB;
  const order = opts.fixed ? [...Array(cBlocks).keys()] : (opts.written ?? []);
  const file = Buffer.alloc(offData + order.length * MiB);
  file.write('<<< Oracle VM VirtualBox Disk Image >>>\n', 0, 'latin1'); // szFileInfo[64]
  file.writeUInt32LE(0xbeda107f, 0x40); // u32Signature
  file.writeUInt32LE(0x00010001, 0x44); // u32Version 1.1
  file.writeUInt32LE(400, 0x48); // cbHeader = sizeof(VDIHEADER1PLUS)
  file.writeUInt32LE(opts.fixed ? 2 : 1, 0x4c); // u32Type NORMAL / FIXED
  file.writeUInt32LE(0, 0x50); // fFlags
  file.write('made from the documented layout', 0x54, 'utf8'); // szComment[256]
  file.writeUInt32LE(offBlocks, 0x154);
  file.writeUInt32LE(offData, 0x158);
  file.writeUInt32LE(512, 0x15c + 12); // LegacyGeometry.cbSector (C/H/S left 0: "not calculated")
  file.writeUInt32LE(0, 0x16c); // u32Dummy
  file.writeBigUInt64LE(BigInt(opts.disk), 0x170); // cbDisk
  file.writeUInt32LE(MiB, 0x178); // cbBlock
  file.writeUInt32LE(0, 0x17c); // cbBlockExtra
  file.writeUInt32LE(cBlocks, 0x180);
  file.writeUInt32LE(order.length, 0x184); // cBlocksAllocated
  uuidBytes(1).copy(file, 0x188); // uuidCreate
  uuidBytes(2).copy(file, 0x198); // uuidModify
  // uuidLinkage (0x1a8) and uuidParentModify (0x1b8) stay null: a base image.
  file.writeUInt32LE(Math.min(16383, Math.floor(opts.disk / 512 / 16 / 63)), 0x1c8); // LCHSGeometry.cCylinders
  file.writeUInt32LE(16, 0x1cc); // cHeads
  file.writeUInt32LE(63, 0x1d0); // cSectors
  file.writeUInt32LE(512, 0x1d4); // cbSector
  const contents = Buffer.alloc(opts.disk);
  for (let i = 0; i < cBlocks; i++) file.writeUInt32LE(0xffffffff, offBlocks + i * 4); // VDI_IMAGE_BLOCK_FREE
  for (const z of opts.zero ?? []) file.writeUInt32LE(0xfffffffe, offBlocks + z * 4); // VDI_IMAGE_BLOCK_ZERO
  order.forEach((block, slot) => {
    file.writeUInt32LE(slot, offBlocks + block * 4);
    const data = file.subarray(offData + slot * MiB, offData + (slot + 1) * MiB);
    for (let k = 0; k < MiB; k += 512) data.writeUInt32LE((block << 16) ^ (k >>> 9) ^ 0x5a5a0000, k);
    const visible = Math.min(MiB, opts.disk - block * MiB);
    data.copy(contents, block * MiB, 0, visible);
  });
  return { file, contents };
}
