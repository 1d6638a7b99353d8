/**
 * One physical volume on a BlockDevice: finding its label, reading the committed
 * metadata text from its metadata area (following the circular buffer's wrap), and
 * the three steps of an LVM2 commit — text, precommit slot, commit slot.
 */
import type { BlockDevice } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import {
  decodeLabel,
  decodeMdaHeader,
  encodeLabel,
  encodeMdaHeader,
  hasLabelId,
  LABEL_SCAN_SECTORS,
  LABEL_SECTOR,
  lvmCrc,
  MDA_HEADER_SIZE,
  type MdaHeader,
  type PvLabel,
  type RawLocn,
  SECTOR,
} from './layout.js';
import { MAX_METADATA_TEXT, parseVg, type VgMeta } from './metadata.js';

/** The label of `dev`, or undefined when none of the first four sectors holds one. */
export async function findLabel(dev: BlockDevice, what: string): Promise<PvLabel | undefined> {
  if (dev.size < LABEL_SCAN_SECTORS * SECTOR) return undefined;
  const head = Buffer.alloc(LABEL_SCAN_SECTORS * SECTOR);
  await dev.read(head, 0);
  for (let s = 0; s < LABEL_SCAN_SECTORS; s++) {
    const sector = head.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (hasLabelId(sector)) return decodeLabel(sector, s, what);
  }
  return undefined;
}

/** A metadata area as read: its header and the committed text, or why it could not be used. */
export interface MdaState {
  header: MdaHeader;
  /** The committed slot, when it holds text. */
  committed?: RawLocn;
  text?: string;
  vg?: VgMeta;
  /** Why the text is unusable (checksum mismatch, parse error). */
  problem?: string;
}

/** Read the mda header at `start` and its committed text. Header damage throws; text damage is reported in `problem`. */
export async function readMda(dev: BlockDevice, start: number, size: number, what: string): Promise<MdaState> {
  if (start < SECTOR * LABEL_SCAN_SECTORS || size < MDA_HEADER_SIZE * 2 || start + size > dev.size) {
    throw new VdiskError('E_CORRUPT', `${what}: metadata area ${start}+${size} does not fit the ${dev.size}-byte device`);
  }
  const hb = Buffer.alloc(MDA_HEADER_SIZE);
  await dev.read(hb, start);
  const header = decodeMdaHeader(hb, start, what);
  if (header.size !== size) throw new VdiskError('E_CORRUPT', `${what}: metadata area header says ${header.size} bytes, the label ${size}`);
  const c = header.locns[0];
  if (!c || (c.offset === 0 && c.size === 0)) return { header };
  const st: MdaState = { header, committed: c };
  try {
    st.text = await readText(dev, header, c, what);
    st.vg = parseVg(st.text, what);
  } catch (e) {
    if (!(e instanceof VdiskError)) throw e;
    st.problem = e.message;
    delete st.vg;
  }
  return st;
}

/** The text a raw_locn points at, checksum checked, trailing NULs dropped. */
async function readText(dev: BlockDevice, h: MdaHeader, l: RawLocn, what: string): Promise<string> {
  const ring = h.size - MDA_HEADER_SIZE;
  if (l.offset < MDA_HEADER_SIZE || l.offset >= h.size) throw new VdiskError('E_CORRUPT', `${what}: metadata text offset ${l.offset} lies outside its area`);
  if (l.size === 0 || l.size > ring || l.size > MAX_METADATA_TEXT) throw new VdiskError('E_CORRUPT', `${what}: metadata text of ${l.size} bytes does not fit its ${ring}-byte area`);
  const buf = Buffer.alloc(l.size);
  const first = Math.min(l.size, h.size - l.offset);
  await dev.read(buf.subarray(0, first), h.start + l.offset);
  if (first < l.size) await dev.read(buf.subarray(first), h.start + MDA_HEADER_SIZE);
  if (lvmCrc(buf) !== l.checksum) throw new VdiskError('E_CORRUPT', `${what}: metadata text checksum mismatch`);
  let end = buf.length;
  while (end > 0 && buf[end - 1] === 0) end--;
  return buf.subarray(0, end).toString('utf8');
}

/**
 * Where the next text goes: after the committed one, on a 512-byte boundary, wrapping
 * to the start of the ring; E_NOSPC when it would overlap the committed text (which
 * must survive until the new one is committed).
 */
export function nextLocn(h: MdaHeader, text: Buffer, what: string): RawLocn {
  const ring = h.size - MDA_HEADER_SIZE;
  const c = h.locns[0];
  const old = c && c.size > 0 ? c : undefined;
  if (text.length + (old?.size ?? 0) > ring) {
    throw new VdiskError('E_NOSPC', `${what}: metadata text of ${text.length} bytes does not fit the ${ring}-byte metadata area beside the current one (nothing changed)`);
  }
  let start = 0;
  let room = ring;
  if (old) {
    const oldRel = old.offset - MDA_HEADER_SIZE;
    start = Math.ceil((oldRel + old.size) / SECTOR) * SECTOR;
    start = start >= ring ? start - ring : start;
    if (start >= ring || start % SECTOR !== 0) start = 0;
    // Room runs from the new start forward (round the ring) to where the old text begins.
    room = (oldRel - start + ring) % ring;
  }
  if (text.length > room) {
    throw new VdiskError('E_NOSPC', `${what}: metadata text of ${text.length} bytes does not fit the ${ring}-byte metadata area beside the current one (nothing changed)`);
  }
  const offset = MDA_HEADER_SIZE + start;
  return { offset, size: text.length, checksum: lvmCrc(text), flags: 0 };
}

/** Write `text` where `l` says (both parts when it wraps). */
export async function writeText(dev: BlockDevice, h: MdaHeader, l: RawLocn, text: Buffer): Promise<void> {
  const first = Math.min(text.length, h.size - l.offset);
  await dev.write(text.subarray(0, first), h.start + l.offset);
  if (first < text.length) await dev.write(text.subarray(first), h.start + MDA_HEADER_SIZE);
}

/** Write an mda header. */
export async function writeMdaHeader(dev: BlockDevice, h: MdaHeader): Promise<void> {
  await dev.write(encodeMdaHeader(h), h.start);
}

/** Write a label into its sector. */
export async function writeLabel(dev: BlockDevice, l: PvLabel): Promise<void> {
  await dev.write(encodeLabel(l), l.sector * SECTOR);
}

export { LABEL_SECTOR };
