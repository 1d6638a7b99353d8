/**
 * VHDX (Hyper-V's Virtual Hard Disk v2, from Microsoft's [MS-VHDX]): the driver
 * table. Structures in layout.ts, the log in log.ts, open and the device in
 * image.ts, creation in create.ts, check in check.ts.
 */
import { findParentRef } from '../parent.js';
import type { DiskImage } from '../../device/block-device.js';
import type { CheckResult, DriverCheckOptions } from '../../device/check.js';
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverCreateOptions, DriverOpenOptions, FormatDriver } from '../driver.js';
import { checkVhdx } from './check.js';
import { CREATE_OPTIONS, createSpec, writeNewVhdx } from './create.js';
import { VhdxImage, probeVhdx, readVhdxMeta, type VhdxMeta, type VhdxParentInfo } from './image.js';
import { VHDX_PARENT_LOCATOR_TYPE } from './layout.js';

export { VhdxImage } from './image.js';

/** Locator keys naming the parent's file, most specific first (2.6.2.6.1). */
const PATH_KEYS = ['relative_path', 'volume_path', 'absolute_win32_path'] as const;

/** Normalise a GUID as a locator writes it (`{...}`) for comparison. */
const bareGuid = (s: string): string => s.replace(/[{}]/g, '').toUpperCase();

/** Find and open the parent of a differencing VHDX, confined like every reference; E_PATH/E_CHAIN when it cannot. */
async function openParent(storage: Storage, location: ImageLocation, meta: VhdxMeta, opts: DriverOpenOptions): Promise<{ parent?: DiskImage; info: VhdxParentInfo }> {
  const name = storage.name;
  const loc = meta.params.parentLocator!;
  if (loc.locatorType !== VHDX_PARENT_LOCATOR_TYPE) throw new VdiskError('E_UNSUPPORTED', `${name}: parent locator type ${loc.locatorType} is not the VHDX one`);
  const linkage = loc.entries.parent_linkage;
  if (linkage === undefined) throw new VdiskError('E_CORRUPT', `${name}: the parent locator has no parent_linkage`);
  // A volume path (\\?\Volume{...}\dir\file) names no file we can open.
  const refs = PATH_KEYS.filter((k) => loc.entries[k] !== undefined).map((k) => ({ key: k, ref: loc.entries[k]! }));
  const { found, pathError } = await findParentRef(location, refs.filter((r) => !/^\\\\\?\\/.test(r.ref)));
  const info: VhdxParentInfo = found ? { ref: found.ref, resolved: found.resolved, key: found.key } : refs[0] ? { ref: refs[0].ref, key: refs[0].key } : {};
  if (opts.noBacking) return { info };
  if (!found) {
    if (pathError) throw pathError;
    throw new VdiskError('E_CHAIN', `${name}: parent of this differencing VHDX not found (tried ${refs.map((r) => `${r.key} "${r.ref}"`).join(', ') || 'no path in the parent locator'})`);
  }
  const parent = await opts.openParent(found.resolved);
  if (!(parent instanceof VhdxImage)) {
    await parent.close().catch(() => undefined);
    throw new VdiskError('E_CHAIN', `${name}: parent ${found.resolved} is a ${parent.format} image, not a VHDX`);
  }
  const ids = [linkage, loc.entries.parent_linkage2].filter((x): x is string => x !== undefined).map(bareGuid);
  if (!ids.includes(bareGuid(parent.dataWriteGuid))) {
    await parent.close().catch(() => undefined);
    throw new VdiskError('E_CHAIN', `${name}: parent ${found.resolved} has DataWriteGuid ${parent.dataWriteGuid}, but the parent locator's parent_linkage is ${linkage}`);
  }
  return { parent, info };
}

/** Open a VHDX: replay its log, validate everything, open its parent. */
async function openVhdx(storage: Storage, location: ImageLocation, opts: DriverOpenOptions): Promise<VhdxImage> {
  const readOnly = opts.readOnly || storage.readOnly;
  const meta = await readVhdxMeta(storage, !readOnly);
  if (!meta.params.hasParent) return new VhdxImage(meta, { readOnly });
  if (opts.parent) return new VhdxImage(meta, { readOnly, parent: opts.parent, ownsParent: false, parentInfo: { ref: opts.parent.filename, resolved: opts.parent.filename } });
  const { parent, info } = await openParent(storage, location, meta, opts);
  return new VhdxImage(meta, { readOnly, parent, ownsParent: true, parentInfo: info });
}

/** The VHDX format driver. */
export const vhdxDriver: FormatDriver = {
  name: 'vhdx',
  createOptions: CREATE_OPTIONS,
  probe: probeVhdx,
  open: openVhdx,

  async create(location: ImageLocation, opts: DriverCreateOptions): Promise<DiskImage> {
    const spec = createSpec(location.name, opts);
    if (opts.parent) {
      if (!(opts.parent instanceof VhdxImage)) throw new VdiskError('E_UNSUPPORTED', `${location.name}: a VHDX's parent must be a VHDX, not ${opts.parent.format}`);
      const ref = opts.parentRef ?? opts.parent.filename;
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ref)) throw new VdiskError('E_USAGE', `${location.name}: parent "${ref}" looks like a URL; give a file name`);
      spec.logicalSectorSize = opts.parent.sectorSize;
      spec.parentLocator = {
        locatorType: VHDX_PARENT_LOCATOR_TYPE,
        // Windows spelling, as Hyper-V writes it: the parent beside or below the child.
        entries: { parent_linkage: `{${opts.parent.dataWriteGuid}}`, relative_path: ref.startsWith('/') ? ref : `.\\${ref.replace(/\//g, '\\')}` },
      };
    }
    const storage = await location.create(location.name);
    try {
      await writeNewVhdx(storage, spec);
      const meta = await readVhdxMeta(storage, true);
      if (opts.parent) return new VhdxImage(meta, { readOnly: false, parent: opts.parent, ownsParent: true, parentInfo: { ref: spec.parentLocator!.entries.relative_path, resolved: opts.parent.filename } });
      return new VhdxImage(meta, { readOnly: false });
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  },

  check(storage: Storage, _location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
    return checkVhdx(storage, opts);
  },
};
