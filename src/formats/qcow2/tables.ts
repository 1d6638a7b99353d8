/**
 * qcow2 table entries (qcow2.txt, "Cluster mapping" and "Host cluster management"):
 * L1 and L2 entries, compressed cluster descriptors and refcount entries of any width.
 * 64-bit entries are handled as two 32-bit halves so offsets stay plain numbers.
 */

/** L1/L2 entry bit 63: the cluster's refcount is exactly one (no copy-on-write needed). */
export const QCOW_OFLAG_COPIED_HI = 0x80000000;
/** L2 entry bit 62: the cluster is compressed. */
export const QCOW_OFLAG_COMPRESSED_HI = 0x40000000;
/** L2 entry bit 0 (version 3): the cluster reads as zeros. */
export const QCOW_OFLAG_ZERO = 1;
/** Bits 9-55 of an L1 or standard L2 entry hold a host offset. */
const OFFSET_HI_MASK = 0x00ffffff;
const OFFSET_LO_MASK = 0xfffffe00;

/** The high and low 32 bits of the 64-bit entry at `at`. */
export function entryHalves(buf: Buffer, at: number): [number, number] {
  return [buf.readUInt32BE(at), buf.readUInt32BE(at + 4)];
}

/** Host offset (bits 9-55) of an L1 entry or a standard L2 entry. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & OFFSET_HI_MASK) * 2 ** 32 + ((lo & OFFSET_LO_MASK) >>> 0);
}

/** Write a 64-bit entry: `offset` with the given high flag bits and low bits. */
export function writeEntry(buf: Buffer, at: number, offset: number, hiFlags: number, loFlags = 0): void {
  const hi = Math.floor(offset / 2 ** 32);
  const lo = offset % 2 ** 32;
  buf.writeUInt32BE(((hi & OFFSET_HI_MASK) | hiFlags) >>> 0, at);
  buf.writeUInt32BE(((lo & OFFSET_LO_MASK) | loFlags) >>> 0, at + 4);
}

/** What one guest cluster is, from its L2 entry. */
export type L2Mapping =
  | { kind: 'unallocated' }
  | { kind: 'zero'; offset: number }
  | { kind: 'normal'; offset: number; copied: boolean }
  | { kind: 'compressed'; offset: number; length: number };

/**
 * Decode an L2 entry. Compressed descriptors (qcow2.txt, "Compressed Clusters
 * Descriptor"): x = 62 - (cluster_bits - 8); bits 0..x-1 are the host byte offset,
 * bits x..61 the number of 512-byte sectors after the first one.
 */
export function decodeL2(hi: number, lo: number, clusterBits: number, version: number): L2Mapping {
  if (hi & QCOW_OFLAG_COMPRESSED_HI) {
    const x = 62 - (clusterBits - 8);
    const v = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
    const offset = Number(v & ((1n << BigInt(x)) - 1n));
    const sectors = Number((v >> BigInt(x)) & ((1n << BigInt(62 - x)) - 1n));
    return { kind: 'compressed', offset, length: (sectors + 1) * 512 - (offset % 512) };
  }
  const offset = entryOffset(hi, lo);
  if (version >= 3 && lo & QCOW_OFLAG_ZERO) return { kind: 'zero', offset };
  if (offset === 0) return { kind: 'unallocated' };
  return { kind: 'normal', offset, copied: (hi & QCOW_OFLAG_COPIED_HI) !== 0 };
}

/** Refcount of entry `index` in a refcount block of `bits`-wide entries (sub-byte entries are LSB first, as qemu packs them). */
export function getRefcount(block: Buffer, index: number, bits: number): number {
  switch (bits) {
    case 64:
      return block.readUInt32BE(index * 8) * 2 ** 32 + block.readUInt32BE(index * 8 + 4);
    case 32:
      return block.readUInt32BE(index * 4);
    case 16:
      return block.readUInt16BE(index * 2);
    case 8:
      return block[index]!;
    default: {
      const perByte = 8 / bits;
      const shift = (index % perByte) * bits;
      return (block[Math.floor(index / perByte)]! >> shift) & ((1 << bits) - 1);
    }
  }
}

/** Set refcount `index`; returns the byte range of `block` that changed. */
export function setRefcount(block: Buffer, index: number, bits: number, value: number): [number, number] {
  switch (bits) {
    case 64:
      block.writeUInt32BE(Math.floor(value / 2 ** 32), index * 8);
      block.writeUInt32BE(value % 2 ** 32, index * 8 + 4);
      return [index * 8, index * 8 + 8];
    case 32:
      block.writeUInt32BE(value, index * 4);
      return [index * 4, index * 4 + 4];
    case 16:
      block.writeUInt16BE(value, index * 2);
      return [index * 2, index * 2 + 2];
    case 8:
      block[index] = value;
      return [index, index + 1];
    default: {
      const perByte = 8 / bits;
      const shift = (index % perByte) * bits;
      const at = Math.floor(index / perByte);
      const mask = ((1 << bits) - 1) << shift;
      block[at] = (block[at]! & ~mask) | ((value << shift) & mask);
      return [at, at + 1];
    }
  }
}
