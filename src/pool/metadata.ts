/**
 * The volume group as LVM2's text metadata describes it: a typed model read from a
 * parsed config section with every field checked, and the writer that turns the
 * model back into text laid out as LVM2 2.03 writes it into a metadata area. Sizes
 * stay in LVM2's units (sectors of 512 bytes, extents) so nothing is lost.
 */
import { VdiskError } from '../errors.js';
import { assign, ConfigSection, type ConfigValue, parseConfig, stripesLines } from './config.js';
import { formatId, parseId, SECTOR } from './layout.js';

/** A physical volume entry of the VG. */
export interface PvMeta {
  /** The section name (`pv0`, `pv1`, ...): segments refer to PVs by it. */
  key: string;
  /** The PV uuid (32 characters, no dashes). */
  id: string;
  /** Where the PV was last seen: a hint only (vdisk writes the member's path relative to the pool folder). */
  device: string;
  status: string[];
  flags: string[];
  /** Device size in sectors. */
  devSize: number;
  /** First extent's sector. */
  peStart: number;
  peCount: number;
  /** Other keys, kept and written back as they were. */
  extra: Array<[string, ConfigValue]>;
}

/** One stripe of a segment: a PV and its first extent. */
export interface StripeArea {
  pv: string;
  pe: number;
}

/** A segment of an LV: `extentCount` logical extents from `startExtent`. */
export interface SegmentMeta {
  startExtent: number;
  extentCount: number;
  type: string;
  /** Stripe size in sectors (striped segments with more than one stripe). */
  stripeSize?: number;
  stripes: StripeArea[];
}

/** A logical volume entry. */
export interface LvMeta {
  name: string;
  id: string;
  status: string[];
  flags: string[];
  creationTime?: number;
  creationHost?: string;
  segments: SegmentMeta[];
  extra: Array<[string, ConfigValue]>;
}

/** The whole volume group. */
export interface VgMeta {
  name: string;
  id: string;
  seqno: number;
  format: string;
  status: string[];
  flags: string[];
  /** Extent size in sectors. */
  extentSize: number;
  maxLv: number;
  maxPv: number;
  metadataCopies: number;
  pvs: PvMeta[];
  lvs: LvMeta[];
  extra: Array<[string, ConfigValue]>;
  /** Set when the text holds something vdisk reads but cannot write back (a segment type other than striped, an unknown section). */
  readOnlyReason?: string;
}

/** Largest VG text vdisk reads or writes (LVM2's own areas default to 1 MiB). */
export const MAX_METADATA_TEXT = 64 << 20;

/** LVM2's rules for VG and LV names (lib/misc/lvm-string.c). */
export function checkName(name: string, what: 'VG' | 'LV'): void {
  const bad = (why: string): never => {
    throw new VdiskError('E_USAGE', `${what} name "${name.slice(0, 130)}" ${why}`);
  };
  if (name.length === 0) bad('is empty');
  if (name.length > 127) bad('is longer than 127 characters');
  if (!/^[A-Za-z0-9+_.-]+$/.test(name)) bad('may hold only letters, digits and + _ . -');
  if (name.startsWith('-')) bad('may not start with "-"');
  if (name === '.' || name === '..') bad('may not be "." or ".."');
  if (what === 'LV') {
    if (/^(snapshot|pvmove)/.test(name)) bad('starts with a prefix LVM2 reserves');
    if (/_(cdata|cmeta|corig|cpool|cvol|wcorig|mlog|mimage|pmspare|rimage|rmeta|tdata|tmeta|vorigin|vdata)/.test(name)) bad('holds a suffix LVM2 reserves for hidden volumes');
  }
}

function str(s: ConfigSection, key: string, what: string): string {
  const v = s.get(key);
  if (typeof v !== 'string') throw new VdiskError('E_CORRUPT', `${what}: "${key}" is missing or not a string`);
  return v;
}

function int(s: ConfigSection, key: string, what: string, min = 0): number {
  const v = s.get(key);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new VdiskError('E_CORRUPT', `${what}: "${key}" is missing or not a whole number ≥ ${min}`);
  return v;
}

function optInt(s: ConfigSection, key: string, what: string): number | undefined {
  return s.get(key) === undefined ? undefined : int(s, key, what);
}

function strings(s: ConfigSection, key: string, what: string): string[] {
  const v = s.get(key);
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new VdiskError('E_CORRUPT', `${what}: "${key}" is not a list of strings`);
  return v as string[];
}

/** Keys of `s` not in `known` that are plain values; a subsection among them makes the VG read-only. */
function extras(s: ConfigSection, known: readonly string[], what: string, vg: { readOnlyReason?: string }): Array<[string, ConfigValue]> {
  const out: Array<[string, ConfigValue]> = [];
  for (const [k, v] of s.entries) {
    if (known.includes(k)) continue;
    if (v instanceof ConfigSection) vg.readOnlyReason ??= `${what} has a "${k}" section vdisk does not know`;
    else out.push([k, v]);
  }
  return out;
}

const VG_KEYS = ['id', 'seqno', 'format', 'status', 'flags', 'extent_size', 'max_lv', 'max_pv', 'metadata_copies', 'physical_volumes', 'logical_volumes'];
const PV_KEYS = ['id', 'device', 'status', 'flags', 'dev_size', 'pe_start', 'pe_count'];
const LV_KEYS = ['id', 'status', 'flags', 'creation_time', 'creation_host', 'segment_count'];

/**
 * Read the VG from metadata text. `what` names the source for messages. Every
 * reference is checked: segments in order and contiguous, stripes naming known PVs
 * and lying inside their `pe_count`, no extent used twice.
 */
export function parseVg(text: string, what: string): VgMeta {
  if (text.length > MAX_METADATA_TEXT) throw new VdiskError('E_CORRUPT', `${what}: metadata text of ${text.length} bytes is larger than ${MAX_METADATA_TEXT}`);
  const root = parseConfig(text, what);
  const vgs = root.sections();
  if (vgs.length !== 1) throw new VdiskError('E_CORRUPT', `${what}: metadata text holds ${vgs.length} volume groups, not one`);
  const [name, s] = vgs[0]!;
  const w = `${what}: VG ${name}`;
  try {
    checkName(name, 'VG');
  } catch (e) {
    throw new VdiskError('E_CORRUPT', `${what}: ${(e as Error).message}`);
  }
  const holder: { readOnlyReason?: string } = {};
  const vg: VgMeta = {
    name,
    id: parseId(str(s, 'id', w), w),
    seqno: int(s, 'seqno', w, 1),
    format: typeof s.get('format') === 'string' ? (s.get('format') as string) : 'lvm2',
    status: strings(s, 'status', w),
    flags: strings(s, 'flags', w),
    extentSize: int(s, 'extent_size', w, 1),
    maxLv: optInt(s, 'max_lv', w) ?? 0,
    maxPv: optInt(s, 'max_pv', w) ?? 0,
    metadataCopies: optInt(s, 'metadata_copies', w) ?? 0,
    pvs: [],
    lvs: [],
    extra: extras(s, VG_KEYS, w, holder),
  };
  if (vg.extentSize > 2 ** 32 || vg.extentSize % 2 !== 0) throw new VdiskError('E_CORRUPT', `${w}: extent_size ${vg.extentSize} sectors is not a whole number of KiB up to 2 TiB`);
  for (const [key, p] of s.section('physical_volumes')?.sections() ?? []) {
    const pw = `${w}: PV ${key}`;
    const pv: PvMeta = {
      key,
      id: parseId(str(p, 'id', pw), pw),
      device: typeof p.get('device') === 'string' ? (p.get('device') as string) : '',
      status: strings(p, 'status', pw),
      flags: strings(p, 'flags', pw),
      devSize: int(p, 'dev_size', pw),
      peStart: int(p, 'pe_start', pw),
      peCount: int(p, 'pe_count', pw),
      extra: extras(p, PV_KEYS, pw, holder),
    };
    if ((pv.peStart + pv.peCount * vg.extentSize) > pv.devSize && pv.devSize > 0) {
      throw new VdiskError('E_CORRUPT', `${pw}: ${pv.peCount} extents from sector ${pv.peStart} run past its ${pv.devSize}-sector device`);
    }
    if (vg.pvs.some((x) => x.id === pv.id)) throw new VdiskError('E_CORRUPT', `${pw}: uuid ${formatId(pv.id)} is listed twice`);
    vg.pvs.push(pv);
  }
  const used = new Map<string, Array<[number, number, string]>>();
  for (const [lvName, l] of s.section('logical_volumes')?.sections() ?? []) {
    const lw = `${w}: LV ${lvName}`;
    const lv: LvMeta = {
      name: lvName,
      id: parseId(str(l, 'id', lw), lw),
      status: strings(l, 'status', lw),
      flags: strings(l, 'flags', lw),
      creationTime: optInt(l, 'creation_time', lw),
      creationHost: typeof l.get('creation_host') === 'string' ? (l.get('creation_host') as string) : undefined,
      segments: [],
      extra: [],
    };
    const count = int(l, 'segment_count', lw, 1);
    const segKeys = l.sections().filter(([k]) => /^segment[0-9]+$/.test(k));
    lv.extra = extras(l, [...LV_KEYS, ...segKeys.map(([k]) => k)], lw, holder);
    if (segKeys.length !== count) throw new VdiskError('E_CORRUPT', `${lw}: segment_count ${count} but ${segKeys.length} segments`);
    let next = 0;
    for (let i = 1; i <= count; i++) {
      const g = l.section(`segment${i}`);
      const gw = `${lw}: segment${i}`;
      if (!g) throw new VdiskError('E_CORRUPT', `${gw} is missing`);
      const seg: SegmentMeta = { startExtent: int(g, 'start_extent', gw), extentCount: int(g, 'extent_count', gw, 1), type: str(g, 'type', gw), stripes: [] };
      if (seg.startExtent !== next) throw new VdiskError('E_CORRUPT', `${gw}: starts at extent ${seg.startExtent}, not ${next} where the previous one ended`);
      next = seg.startExtent + seg.extentCount;
      if (seg.type === 'striped') {
        const n = int(g, 'stripe_count', gw, 1);
        if (n > 1) seg.stripeSize = int(g, 'stripe_size', gw, 1);
        if (seg.stripeSize !== undefined && (seg.stripeSize & (seg.stripeSize - 1)) !== 0) throw new VdiskError('E_CORRUPT', `${gw}: stripe_size ${seg.stripeSize} is not a power of two`);
        if (seg.extentCount % n !== 0) throw new VdiskError('E_CORRUPT', `${gw}: ${seg.extentCount} extents do not split into ${n} stripes`);
        const raw = g.get('stripes');
        if (!Array.isArray(raw) || raw.length !== 2 * n) throw new VdiskError('E_CORRUPT', `${gw}: "stripes" must list ${n} PV and extent pairs`);
        const areaLen = seg.extentCount / n;
        for (let k = 0; k < n; k++) {
          const pvKey = raw[2 * k];
          const pe = raw[2 * k + 1];
          const pv = vg.pvs.find((p) => p.key === pvKey);
          if (typeof pvKey !== 'string' || !pv) throw new VdiskError('E_CORRUPT', `${gw}: stripe ${k} names an unknown PV ${JSON.stringify(pvKey)}`);
          if (typeof pe !== 'number' || !Number.isSafeInteger(pe) || pe < 0) throw new VdiskError('E_CORRUPT', `${gw}: stripe ${k} has a bad first extent`);
          if (pe + areaLen > pv.peCount) throw new VdiskError('E_CORRUPT', `${gw}: extents ${pe}-${pe + areaLen - 1} lie past ${pv.key}'s ${pv.peCount} extents`);
          const list = used.get(pvKey) ?? [];
          const clash = list.find(([a, b]) => pe < b && a < pe + areaLen);
          if (clash) throw new VdiskError('E_CORRUPT', `${gw}: extents ${pe}-${pe + areaLen - 1} of ${pvKey} are also used by ${clash[2]}`);
          list.push([pe, pe + areaLen, lvName]);
          used.set(pvKey, list);
          seg.stripes.push({ pv: pvKey, pe });
        }
      } else {
        holder.readOnlyReason ??= `LV ${lvName} has a "${seg.type}" segment (vdisk writes only linear and striped ones)`;
      }
      lv.segments.push(seg);
    }
    vg.lvs.push(lv);
  }
  if (holder.readOnlyReason) vg.readOnlyReason = holder.readOnlyReason;
  return vg;
}

/** Context LVM2 writes after the VG: who wrote it, when, why. */
export interface TextFooter {
  description: string;
  host: string;
  /** Seconds since the epoch. */
  time: number;
  version: string;
}

/** The metadata text of `vg`, laid out as LVM2 writes it into a metadata area (no indentation, NUL-free). */
export function formatVg(vg: VgMeta, footer: TextFooter): string {
  let t = `${vg.name} {\n`;
  t += assign('id', formatId(vg.id));
  t += assign('seqno', vg.seqno);
  t += assign('format', vg.format);
  t += assign('status', vg.status);
  t += assign('flags', vg.flags);
  for (const [k, v] of vg.extra) t += assign(k, v);
  t += assign('extent_size', vg.extentSize);
  t += assign('max_lv', vg.maxLv);
  t += assign('max_pv', vg.maxPv);
  t += assign('metadata_copies', vg.metadataCopies);
  t += '\nphysical_volumes {\n\n';
  t += vg.pvs
    .map((p) => {
      let s = `${p.key} {\n${assign('id', formatId(p.id))}${assign('device', p.device)}\n`;
      s += assign('status', p.status) + assign('flags', p.flags);
      s += assign('dev_size', p.devSize) + assign('pe_start', p.peStart) + assign('pe_count', p.peCount);
      for (const [k, v] of p.extra) s += assign(k, v);
      return `${s}}\n`;
    })
    .join('\n');
  t += '}\n\n';
  if (vg.lvs.length > 0) {
    t += 'logical_volumes {\n\n';
    t += vg.lvs
      .map((l) => {
        let s = `${l.name} {\n${assign('id', formatId(l.id))}${assign('status', l.status)}${assign('flags', l.flags)}`;
        if (l.creationTime !== undefined) s += assign('creation_time', l.creationTime);
        if (l.creationHost !== undefined) s += assign('creation_host', l.creationHost);
        for (const [k, v] of l.extra) s += assign(k, v);
        s += assign('segment_count', l.segments.length);
        l.segments.forEach((g, i) => {
          s += `\nsegment${i + 1} {\n${assign('start_extent', g.startExtent)}${assign('extent_count', g.extentCount)}\n`;
          s += assign('type', g.type) + assign('stripe_count', g.stripes.length);
          if (g.stripes.length > 1) s += assign('stripe_size', g.stripeSize ?? 128);
          s += `\n${stripesLines(g.stripes.map((a) => [a.pv, a.pe] as const))}}\n`;
        });
        return `${s}}\n`;
      })
      .join('\n');
    t += '}\n';
  }
  t += '\n}\n';
  const date = new Date(footer.time * 1000).toUTCString();
  t += `# Generated by ${footer.version}: ${date}\n\n`;
  t += assign('contents', 'Text Format Volume Group') + assign('version', 1) + '\n';
  t += assign('description', footer.description) + '\n';
  t += `${assign('creation_host', footer.host)}${assign('creation_time', footer.time)}\n`;
  return t;
}

/** Byte size of one extent. */
export function extentBytes(vg: VgMeta): number {
  return vg.extentSize * SECTOR;
}

/** An LV's size in extents. */
export function lvExtents(lv: LvMeta): number {
  const last = lv.segments.at(-1);
  return last ? last.startExtent + last.extentCount : 0;
}
