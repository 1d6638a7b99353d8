/** Shared helpers for the VHD tests: small images in memory and field surgery with checksums kept right. */
import { openLocation } from '../../../src/formats/registry.js';
import { vhdDriver } from '../../../src/formats/vhd/index.js';
import { FOOTER_FIELDS, HEADER_FIELDS, decodeDynamicHeader, decodeFooter, encodeDynamicHeader, encodeFooter, vhdChecksum, type DynamicHeader, type VhdFooter } from '../../../src/formats/vhd/layout.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';
import { patternBytes } from '../../helpers/tmp.js';

/** A memory folder holding `files`. */
export function folder(files: Map<string, Buffer>, name = 'img.vhd'): MemoryLocation {
  const m = new Map<string, MemoryStorage>();
  for (const [n, b] of files) m.set(n, new MemoryStorage(b, { name: n }));
  return new MemoryLocation(name, m);
}

/** The bytes of every file in a memory folder. */
export function snapshot(loc: MemoryLocation): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [n, s] of loc.files) out.set(n, (s as MemoryStorage).snapshot());
  return out;
}

/** A small image made by vdisk in memory, with some data written. */
export async function smallImage(kind: 'dynamic' | 'fixed' | 'differencing', size = 64 * 1024): Promise<Map<string, Buffer>> {
  const loc = new MemoryLocation('img.vhd');
  const opts: Record<string, string> = kind === 'fixed' ? { subformat: 'fixed' } : { block_size: '4K' };
  if (kind === 'differencing') {
    const base = await vhdDriver.create(loc.at('base.vhd'), { size, options: opts });
    await base.write(patternBytes(size / 2, 3), 0);
    await base.close();
    const parent = await openLocation(loc.at('base.vhd'), { readOnly: true });
    const child = await vhdDriver.create(loc.at('img.vhd'), { size, options: opts, parent, parentRef: 'base.vhd' });
    await child.write(patternBytes(1024, 4), 4096 + 512);
    await child.write(patternBytes(8192, 5), 16384);
    await child.close();
  } else {
    const img = await vhdDriver.create(loc.at('img.vhd'), { size, options: opts });
    await img.write(patternBytes(4096, 1), 0);
    await img.write(patternBytes(512, 2), 12288 + 1024);
    await img.write(patternBytes(6000, 6), 30000);
    await img.close();
  }
  return snapshot(loc);
}

/** Change the footer (both the trailing one and, for dynamic disks, the copy at 0), keeping checksums right. */
export function editFooter(bytes: Buffer, fn: (f: VhdFooter) => void, which: 'both' | 'trailing' | 'copy' = 'both'): Buffer {
  const out = Buffer.from(bytes);
  const at = out.length - 512;
  const { footer } = decodeFooter(out.subarray(at));
  fn(footer);
  const enc = encodeFooter(footer);
  if (which !== 'copy') enc.copy(out, at);
  if (which !== 'trailing' && footer.dataOffset >= 0) enc.copy(out, 0);
  return out;
}

/** Change the dynamic header at offset 512, keeping its checksum right. */
export function editHeader(bytes: Buffer, fn: (h: DynamicHeader) => void): Buffer {
  const out = Buffer.from(bytes);
  const { header } = decodeDynamicHeader(out.subarray(512, 1536));
  fn(header);
  encodeDynamicHeader(header).copy(out, 512);
  return out;
}

/** Recompute the checksums of both footers and the header after raw byte surgery (if their cookies survive). */
export function fixChecksums(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  if (out.length < 512) return out;
  for (const at of [0, out.length - 512]) {
    const f = out.subarray(at, at + 512);
    if (f.toString('latin1', 0, 8) === 'conectix') f.writeUInt32BE(vhdChecksum(f, FOOTER_FIELDS.checksum), FOOTER_FIELDS.checksum);
  }
  if (out.length >= 1536 && out.toString('latin1', 512, 520) === 'cxsparse') {
    const h = out.subarray(512, 1536);
    h.writeUInt32BE(vhdChecksum(h, HEADER_FIELDS.checksum), HEADER_FIELDS.checksum);
  }
  return out;
}

/**
 * The layout other writers use (Hyper-V, and vdisk before): the BAT right after the
 * header, the parent locator data after the BAT. Made from a vdisk differencing image
 * (locators between the header and the BAT) by swapping the two regions; blocks stay.
 */
export function locatorsAfterBat(bytes: Buffer): Buffer {
  const { header } = decodeDynamicHeader(bytes.subarray(512, 1536));
  const batLen = Math.ceil((header.maxTableEntries * 4) / 512) * 512;
  const out = Buffer.from(bytes);
  bytes.copy(out, 1536, header.tableOffset, header.tableOffset + batLen);
  bytes.copy(out, 1536 + batLen, 1536, header.tableOffset);
  return editHeader(out, (h) => {
    h.tableOffset = 1536;
    for (const l of h.parentLocators) if (l.platformCode !== 0) l.platformDataOffset += batLen;
  });
}

/** Parent locator data that lies past the BAT's end, where qemu would append a new block over it (descriptions). */
export function locatorsPastBat(bytes: Buffer): string[] {
  const { footer } = decodeFooter(bytes.subarray(bytes.length - 512));
  const { header } = decodeDynamicHeader(bytes.subarray(footer.dataOffset, footer.dataOffset + 1024));
  const batEnd = Math.ceil((header.tableOffset + header.maxTableEntries * 4) / 512) * 512;
  const out: string[] = [];
  if (footer.dataOffset + 1024 > batEnd) out.push(`dynamic header at ${footer.dataOffset}`);
  header.parentLocators.forEach((l, i) => {
    if (l.platformCode !== 0 && l.platformDataLength > 0 && l.platformDataOffset + l.platformDataLength > batEnd) out.push(`locator ${i} at ${l.platformDataOffset}`);
  });
  return out;
}
