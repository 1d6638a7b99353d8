/**
 * The saved-state file of `vdisk boot --save-state`: a header with magic and version,
 * then tagged sections, each with its length and CRC-32, one per part of the machine
 * (the CPU, memory, every device, the BIOS, the console, the drives and their overlays).
 *
 * ```
 * header (32 bytes, little-endian)
 *   0  magic          8  "VDISKEMU"
 *   8  version        u16   STATE_VERSION; a newer one is refused (E_UNSUPPORTED)
 *  10  header size    u16   32
 *  12  section count  u32   at most MAX_SECTIONS
 *  16  saved at       f64   ms since the epoch (wall clock, informational)
 *  24  header CRC-32  u32   of bytes 0-23
 *  28  reserved       u32   0
 * section (repeated)
 *   0  tag            4     ASCII, e.g. "CPU ", "MEM ", "PIT "
 *   4  length         u32   payload bytes, at most what is left of the file
 *   8  CRC-32         u32   of the payload
 *  12  payload
 * ```
 *
 * The drives section records each drive's identity — size and a SHA-256 over its
 * non-zero 64 KiB blocks — so a state is only ever resumed on the disk it was saved
 * with (E_MISMATCH otherwise).
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { BlockDevice } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import { StateReader, StateWriter } from './codec.js';

export const STATE_MAGIC = 'VDISKEMU';
/**
 * Bumped whenever a section's layout changes (3: the CPU section ends with protected-mode
 * state; 4: a machine running real firmware adds the FIRM section, and the CPU section
 * ends with the TSC offset and the FPU). Older versions load: what they lack stays at power-on.
 */
export const STATE_VERSION = 4;
const HEADER_SIZE = 32;
/** More sections than any version writes means a damaged file. */
export const MAX_SECTIONS = 64;
/** A state file larger than this is refused before it is read (1 GiB of RAM, overlays, slack). */
export const MAX_STATE_FILE = 4 * 1024 * 1024 * 1024 - 1;

/** Section tags, in the order they are written. */
export const SECTIONS = ['MACH', 'DRIV', 'CPU ', 'MEM ', 'PIC ', 'PIT ', 'CMOS', 'UART', 'KBC ', 'VGA ', 'BIOS', 'CONS', 'PCI ', 'IDE ', 'FIRM', 'OVLY'] as const;
/** Sections only some machines have: FIRM (real firmware and the chips it drives, `--bios`). */
export const OPTIONAL_SECTIONS: readonly string[] = ['FIRM'];
/** Sections a version-1 file (before PCI and IDE) does not have; such a file loads with those devices as at power-on. */
export const SINCE_V2: readonly string[] = ['PCI ', 'IDE '];
export type SectionTag = (typeof SECTIONS)[number];

/** Assemble the header and sections into a state file. */
export function encodeStateFile(sections: ReadonlyMap<SectionTag, Uint8Array>, savedAt = Date.now()): Uint8Array {
  const head = new Uint8Array(HEADER_SIZE);
  const dv = new DataView(head.buffer);
  head.set(new TextEncoder().encode(STATE_MAGIC), 0);
  dv.setUint16(8, STATE_VERSION, true);
  dv.setUint16(10, HEADER_SIZE, true);
  dv.setUint32(12, sections.size, true);
  dv.setFloat64(16, savedAt, true);
  dv.setUint32(24, crc32(head.subarray(0, 24)), true);
  const w = new StateWriter().raw(head);
  for (const [tag, payload] of sections) {
    w.raw(new TextEncoder().encode(tag)).u32(payload.length).u32(crc32(payload)).raw(payload);
  }
  return w.finish();
}

/** A decoded state file: its sections by tag (every one of {@link SECTIONS} present). */
export interface StateFile {
  version: number;
  savedAt: number;
  sections: Map<SectionTag, Uint8Array>;
}

/** Check and split a state file; `what` names it in errors (usually its path). */
export function decodeStateFile(buf: Uint8Array, what: string): StateFile {
  if (buf.length < 8 || new TextDecoder('latin1').decode(buf.subarray(0, 8)) !== STATE_MAGIC) {
    throw new VdiskError('E_FORMAT', `${what}: not a vdisk machine state (no "${STATE_MAGIC}" magic)`);
  }
  if (buf.length < HEADER_SIZE) throw new VdiskError('E_CORRUPT', `${what}: truncated header (${buf.length} of ${HEADER_SIZE} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = dv.getUint16(8, true);
  if (dv.getUint32(24, true) !== crc32(buf.subarray(0, 24))) throw new VdiskError('E_CORRUPT', `${what}: header CRC-32 does not match`);
  if (version > STATE_VERSION) {
    throw new VdiskError('E_UNSUPPORTED', `${what}: state version ${version} was written by a newer vdisk; this one reads version ${STATE_VERSION}`);
  }
  if (version < 1) throw new VdiskError('E_CORRUPT', `${what}: state version ${version} is not valid`);
  if (dv.getUint16(10, true) !== HEADER_SIZE) throw new VdiskError('E_CORRUPT', `${what}: header size ${dv.getUint16(10, true)} is not ${HEADER_SIZE}`);
  const count = dv.getUint32(12, true);
  if (count > MAX_SECTIONS) throw new VdiskError('E_CORRUPT', `${what}: section count ${count} exceeds ${MAX_SECTIONS}`);
  const sections = new Map<SectionTag, Uint8Array>();
  const r = new StateReader(buf.subarray(HEADER_SIZE), what);
  for (let i = 0; i < count; i++) {
    const tag = new TextDecoder('latin1').decode(r.raw(4, `section ${i} tag`));
    if (!(SECTIONS as readonly string[]).includes(tag)) throw new VdiskError('E_CORRUPT', `${what}: unknown section "${tag}"`);
    if (sections.has(tag as SectionTag)) throw new VdiskError('E_CORRUPT', `${what}: section "${tag}" appears twice`);
    const len = r.u32(`section "${tag}" length`);
    const crc = r.u32(`section "${tag}" CRC-32`);
    if (len > r.left) throw new VdiskError('E_CORRUPT', `${what}: section "${tag}" length ${len} runs past the end of the file (${r.left} bytes left)`);
    const payload = r.raw(len, `section "${tag}"`);
    if (crc32(payload) !== crc) throw new VdiskError('E_CORRUPT', `${what}: section "${tag}" CRC-32 does not match (the file is damaged)`);
    sections.set(tag as SectionTag, payload);
  }
  r.end();
  for (const tag of SECTIONS) if (!sections.has(tag) && !OPTIONAL_SECTIONS.includes(tag) && !(version < 2 && SINCE_V2.includes(tag))) throw new VdiskError('E_CORRUPT', `${what}: section "${tag}" is missing`);
  return { version, savedAt: dv.getFloat64(16, true), sections };
}

/** A reader over one section, naming it in errors. */
export function sectionReader(f: StateFile, tag: SectionTag, what: string): StateReader {
  return new StateReader(f.sections.get(tag)!, `${what}: section "${tag.trim()}"`);
}

/** A writer's bytes for one section. */
export function section(fill: (w: StateWriter) => void): Uint8Array {
  const w = new StateWriter();
  fill(w);
  return w.finish();
}

const FINGERPRINT_BLOCK = 64 * 1024;
const FINGERPRINT_READ = 1024 * 1024;

function allZero(b: Uint8Array): boolean {
  const words = new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  for (let i = words.length * 4; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * A SHA-256 of what the device reads: its size, then each 64 KiB block that is not all
 * zeros with its offset. It depends on content only (not on format or allocation), and
 * skips holes without reading them.
 */
export async function deviceFingerprint(dev: BlockDevice): Promise<Uint8Array> {
  const h = createHash('sha256');
  const head = new DataView(new ArrayBuffer(8));
  head.setFloat64(0, dev.size, true);
  h.update(new Uint8Array(head.buffer));
  const buf = new Uint8Array(FINGERPRINT_READ);
  const hashRange = async (offset: number, length: number): Promise<void> => {
    // Keep block boundaries on absolute 64 KiB multiples, so extents that split differently hash alike.
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const n = Math.min(FINGERPRINT_READ - (pos % FINGERPRINT_BLOCK), end - pos);
      const b = buf.subarray(0, n);
      await dev.read(b, pos);
      for (let at = 0; at < n; ) {
        const blockEnd = Math.min(n, at + FINGERPRINT_BLOCK - ((pos + at) % FINGERPRINT_BLOCK));
        const piece = b.subarray(at, blockEnd);
        if (!allZero(piece)) {
          const o = new DataView(new ArrayBuffer(8));
          o.setFloat64(0, pos + at, true);
          h.update(new Uint8Array(o.buffer));
          h.update(piece);
        }
        at = blockEnd;
      }
      pos += n;
    }
  };
  if (dev.extentsReadContent) await hashRange(0, dev.size);
  else for await (const e of dev.extents(0, dev.size)) if (e.kind === 'data') await hashRange(e.offset, e.length);
  return new Uint8Array(h.digest());
}
