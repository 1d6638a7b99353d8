/**
 * Saving a whole machine into a state file and loading it back: which part goes into
 * which section, the drives' identity check, and the copy-on-write overlays of guest
 * writes. Each part encodes its own fields (`saveState`/`loadState` in its own file).
 */
import { deflateSync, inflateSync } from 'node:zlib';
import type { BlockDevice } from '../../device/block-device.js';
import { OVERLAY_CHUNK, OverlayDevice } from '../../device/overlay.js';
import { VdiskError } from '../../errors.js';
import type { Drive } from '../bios/disk.js';
import type { StateReader, StateWriter, Stateful } from './codec.js';
import { STATE_VERSION, decodeStateFile, deviceFingerprint, encodeStateFile, section, sectionReader, type SectionTag, type StateFile } from './file.js';

/** The machine's parts, as the state file stores them. */
export interface MachineParts {
  cpu: Stateful;
  mem: Stateful;
  pic: Stateful;
  pit: Stateful;
  cmos: Stateful;
  uart: Stateful;
  kbc: Stateful;
  vga: Stateful;
  bios: Stateful;
  console: Stateful;
  pci: Stateful;
  ide: Stateful;
  /** Real firmware's identity and the chips only it drives (none under our own BIOS). */
  firmware: Stateful | null;
  machine: { saveRunState(w: StateWriter): void; loadRunState(r: StateReader): void };
}

const FINGERPRINT_BYTES = 32;
/** Largest overlay a state may carry once inflated (the overlay lives in memory anyway). */
export const MAX_OVERLAY_STATE = 1024 * 1024 * 1024;

const PART_SECTIONS: [SectionTag, Exclude<keyof MachineParts, 'machine' | 'firmware'>][] = [
  ['CPU ', 'cpu'], ['MEM ', 'mem'], ['PIC ', 'pic'], ['PIT ', 'pit'], ['CMOS', 'cmos'], ['UART', 'uart'], ['KBC ', 'kbc'], ['VGA ', 'vga'], ['BIOS', 'bios'], ['CONS', 'console'], ['PCI ', 'pci'], ['IDE ', 'ide'],
];

/** The disk below a drive's overlay (what its identity is taken from), and the overlay. */
function baseOf(d: Drive): { base: BlockDevice; overlay: OverlayDevice | null } {
  return d.device instanceof OverlayDevice ? { base: d.device.lower, overlay: d.device } : { base: d.device, overlay: null };
}

function driveName(n: number): string {
  return n < 0x80 ? `floppy ${n.toString(16).padStart(2, '0')}h` : `hard disk ${n.toString(16)}h`;
}

/** Encode every part and the drives into a state file. */
export async function saveMachineState(parts: MachineParts, drives: ReadonlyMap<number, Drive>): Promise<Uint8Array> {
  const sections = new Map<SectionTag, Uint8Array>();
  sections.set('MACH', section((w) => parts.machine.saveRunState(w)));
  const ids: { n: number; size: number; fp: Uint8Array; overlay: boolean; name: string }[] = [];
  for (const [n, d] of drives) {
    const { base, overlay } = baseOf(d);
    await base.flush();
    ids.push({ n, size: base.size, fp: await deviceFingerprint(base), overlay: overlay !== null, name: (base as { filename?: string }).filename ?? '' });
  }
  sections.set('DRIV', section((w) => {
    w.u32(ids.length);
    for (const id of ids) w.u8(id.n).f64(id.size).raw(id.fp).bool(id.overlay).str(id.name);
  }));
  for (const [tag, key] of PART_SECTIONS) sections.set(tag, section((w) => parts[key].saveState(w)));
  const firmware = parts.firmware;
  if (firmware) sections.set('FIRM', section((w) => firmware.saveState(w)));
  sections.set('OVLY', section((w) => {
    const overlays = [...drives].flatMap(([n, d]) => (d.device instanceof OverlayDevice ? [[n, d.device] as const] : []));
    w.u32(overlays.length);
    for (const [n, o] of overlays) {
      const held = [...o.heldChunks()].sort((a, b) => a[0] - b[0]);
      const plain = new Uint8Array(held.length * (8 + OVERLAY_CHUNK));
      const dv = new DataView(plain.buffer);
      held.forEach(([idx, c], i) => {
        dv.setFloat64(i * 8, idx, true);
        plain.set(c, held.length * 8 + i * OVERLAY_CHUNK);
      });
      w.u8(n).f64(held.length).bytes(deflateSync(plain));
    }
  }));
  const order = ['MACH', 'DRIV', ...PART_SECTIONS.map(([t]) => t), ...(firmware ? ['FIRM'] : []), 'OVLY'] as SectionTag[];
  return encodeStateFile(new Map(order.map((t) => [t, sections.get(t)!])));
}

/** What a caller must know to set a machine up for a state before loading it. */
export interface StateSetup {
  version: number;
  memoryMiB: number;
  /** Drive numbers whose writes went to a copy-on-write overlay (restore them on one too). */
  overlayDrives: Set<number>;
}

interface DriveId {
  n: number;
  size: number;
  fp: Uint8Array;
  overlay: boolean;
  name: string;
}

function readDrives(f: StateFile, what: string): DriveId[] {
  const r = sectionReader(f, 'DRIV', what);
  const count = r.uint('drive count', 256);
  const out: DriveId[] = [];
  for (let i = 0; i < count; i++) {
    out.push({ n: r.u8('drive number'), size: r.f64('drive size'), fp: r.raw(FINGERPRINT_BYTES, 'drive fingerprint'), overlay: r.bool('drive overlay'), name: r.str('drive name', 4096) });
  }
  r.end();
  return out;
}

/** Check a state file's framing and read how the machine was set up (memory, overlays). */
export function inspectState(file: Uint8Array, what: string): StateSetup {
  const f = decodeStateFile(file, what);
  const memoryMiB = sectionReader(f, 'MACH', what).u16('memory MiB');
  return { version: f.version, memoryMiB, overlayDrives: new Set(readDrives(f, what).filter((d) => d.overlay).map((d) => d.n)) };
}

/**
 * Load a state file into a freshly built machine. The drives must be the ones it was
 * saved with (same set, size and content fingerprint), or E_MISMATCH names the difference.
 */
export async function loadMachineState(parts: MachineParts, drives: ReadonlyMap<number, Drive>, file: Uint8Array, what: string): Promise<void> {
  const f = decodeStateFile(file, what);
  const saved = readDrives(f, what);
  const savedSet = saved.map((d) => d.n).sort((a, b) => a - b).join(',');
  const nowSet = [...drives.keys()].sort((a, b) => a - b).join(',');
  if (savedSet !== nowSet) {
    const list = (ns: number[]): string => ns.map(driveName).join(' and ') || 'no drives';
    throw new VdiskError('E_MISMATCH', `${what}: the state was saved with ${list(saved.map((d) => d.n))}, not ${list([...drives.keys()])}`);
  }
  for (const id of saved) {
    const d = drives.get(id.n)!;
    const { base, overlay } = baseOf(d);
    const label = `${driveName(id.n)} (${(base as { filename?: string }).filename ?? 'device'})`;
    if (base.size !== id.size) {
      throw new VdiskError('E_MISMATCH', `${what}: ${label} is ${base.size} bytes; the state was saved with a ${id.size}-byte disk${id.name ? ` (${id.name})` : ''}`);
    }
    const fp = await deviceFingerprint(base);
    if (Buffer.compare(fp, id.fp) !== 0) {
      throw new VdiskError('E_MISMATCH', `${what}: ${label} is not the disk the state was saved with${id.name ? ` (${id.name})` : ''}: its content differs`);
    }
    if (id.overlay && !overlay) {
      throw new VdiskError('E_MISMATCH', `${what}: the state keeps the guest's writes to ${driveName(id.n)} in an overlay; restore it with --snapshot`);
    }
  }
  if (f.sections.has('FIRM') !== (parts.firmware !== null)) {
    throw new VdiskError('E_MISMATCH', parts.firmware ? `${what}: the state was saved under vdisk's own BIOS; restore it without --bios` : `${what}: the state was saved running real firmware; restore it with the same --bios`);
  }
  const overlays = readOverlays(f, what, drives);
  parts.machine.loadRunState(sectionReader(f, 'MACH', what));
  for (const [tag, key] of PART_SECTIONS) {
    if (!f.sections.has(tag)) continue; // a version-1 file: PCI and IDE stay as at power-on
    const r = sectionReader(f, tag, what);
    parts[key].loadState(r);
    r.end();
  }
  if (parts.firmware) {
    // After memory and PCI: the shadow RAM's hidden part goes with the PAM registers already loaded.
    const r = sectionReader(f, 'FIRM', what);
    parts.firmware.loadState(r);
    r.end();
  }
  for (const [n, chunks] of overlays) (drives.get(n)!.device as OverlayDevice).loadChunks(chunks);
}

function readOverlays(f: StateFile, what: string, drives: ReadonlyMap<number, Drive>): Map<number, Map<number, Uint8Array>> {
  const r = sectionReader(f, 'OVLY', what);
  const count = r.uint('overlay count', 256);
  const out = new Map<number, Map<number, Uint8Array>>();
  for (let i = 0; i < count; i++) {
    const n = r.u8('overlay drive');
    const d = drives.get(n);
    if (!d || out.has(n)) throw new VdiskError('E_CORRUPT', `${r.what}: overlay for ${driveName(n)}, which the state has no (other) drive for`);
    const chunkCount = r.f64('overlay chunk count');
    const maxChunks = Math.min(Math.ceil(d.device.size / OVERLAY_CHUNK), Math.floor(MAX_OVERLAY_STATE / (8 + OVERLAY_CHUNK)));
    if (!Number.isInteger(chunkCount) || chunkCount < 0 || chunkCount > maxChunks) {
      throw new VdiskError('E_CORRUPT', `${r.what}: overlay chunk count ${chunkCount} outside 0..${maxChunks}`);
    }
    const plainSize = chunkCount * (8 + OVERLAY_CHUNK);
    const packed = r.bytes('compressed overlay', plainSize + (plainSize >>> 10) + 1024);
    let plain: Buffer;
    try {
      plain = inflateSync(packed, { maxOutputLength: Math.max(1, plainSize) });
    } catch (e) {
      throw new VdiskError('E_CORRUPT', `${r.what}: compressed overlay does not inflate: ${(e as Error).message}`, { cause: e });
    }
    if (plain.length !== plainSize) throw new VdiskError('E_CORRUPT', `${r.what}: overlay holds ${plain.length} bytes, not ${plainSize}`);
    const dv = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
    const chunks = new Map<number, Uint8Array>();
    let last = -1;
    for (let k = 0; k < chunkCount; k++) {
      const idx = dv.getFloat64(k * 8, true);
      if (!Number.isInteger(idx) || idx <= last || idx * OVERLAY_CHUNK >= d.device.size) {
        throw new VdiskError('E_CORRUPT', `${r.what}: overlay chunk ${idx} out of order or past the end of ${driveName(n)}`);
      }
      last = idx;
      chunks.set(idx, plain.subarray(chunkCount * 8 + k * OVERLAY_CHUNK, chunkCount * 8 + (k + 1) * OVERLAY_CHUNK));
    }
    out.set(n, chunks);
  }
  r.end();
  return out;
}

export { STATE_VERSION };
