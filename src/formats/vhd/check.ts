/** Checking a VHD: footers and checksums, BAT entries, leaks, the parent's unique id. */
import type { CheckProblem, CheckResult, DriverCheckOptions } from '../../device/check.js';
import { isVdiskError } from '../../errors.js';
import type { ImageLocation } from '../../storage/location.js';
import type { Storage } from '../../storage/storage.js';
import type { DriverOpenOptions } from '../driver.js';
import { DISK_TYPE_DIFFERENCING, FOOTER_SIZE, findLeaks, metadataAtRisk, readVhdMeta, validateBat, type VhdMeta } from './layout.js';
import { secureMetadata } from './maintain.js';
import { openParent } from './image.js';

/** Check a VHD's consistency: footers and checksums, BAT entries, leaks, the parent's unique id. */
export async function checkVhd(storage: Storage, location: ImageLocation, opts: DriverCheckOptions & DriverOpenOptions): Promise<CheckResult> {
  const problems: CheckProblem[] = [];
  let meta: VhdMeta;
  try {
    meta = await readVhdMeta(storage);
  } catch (err) {
    if (!isVdiskError(err)) throw err;
    return { problems: [{ severity: 'corrupt', message: err.message }] };
  }
  const name = storage.name;
  const writable = !storage.readOnly && !opts.readOnly;
  const { problems: batProblems, dataEnd, allocated } = validateBat(meta, name);
  for (const p of batProblems) problems.push({ severity: 'corrupt', message: p.message, offset: p.offset });

  const footerBytes = meta.footerBytes;
  if (meta.footerSource === 'copy-at-0') {
    const p: CheckProblem = { severity: 'corrupt', message: `${name}: trailing footer: ${meta.trailingProblem} (the copy at offset 0 is intact)`, offset: meta.fileSize - FOOTER_SIZE };
    if (opts.repair === 'all' && writable && batProblems.length === 0) {
      await storage.write(footerBytes, dataEnd);
      await storage.truncate(dataEnd + FOOTER_SIZE);
      p.repaired = true;
    }
    problems.push(p);
  }
  if (meta.copyProblem || meta.copyDiffers) {
    const p: CheckProblem = meta.copyProblem
      ? { severity: 'corrupt', message: `${name}: footer copy at offset 0: ${meta.copyProblem}`, offset: 0 }
      : { severity: 'warning', message: `${name}: footer copy at offset 0 differs from the trailing footer (other readers may use it)`, offset: 0 };
    if (opts.repair === 'all' && writable) {
      await storage.write(footerBytes, 0);
      p.repaired = true;
    }
    problems.push(p);
  }

  for (const o of meta.overwrittenLocators) problems.push({ severity: 'corrupt', message: o.message, offset: meta.header!.parentLocators[o.index]!.platformDataOffset });

  if (meta.bat && batProblems.length === 0) {
    const leaks = findLeaks(meta);
    let total = 0;
    for (const l of leaks) total += l.end - l.start;
    const last = leaks[leaks.length - 1];
    const tailLeak = last !== undefined && meta.footerSource === 'trailing' && last.end === meta.fileSize - FOOTER_SIZE ? last : undefined;
    for (const l of leaks.slice(0, 100)) {
      const p: CheckProblem = { severity: 'leak', message: `${name}: ${l.end - l.start} bytes at ${l.start} belong to no block (leaked)`, offset: l.start };
      if (l === tailLeak && opts.repair && writable) {
        // The footer moves back over the leak first; only then is the file cut.
        await storage.write(footerBytes, l.start);
        await storage.truncate(l.start + FOOTER_SIZE);
        p.repaired = true;
      }
      problems.push(p);
    }
    if (leaks.length > 100) problems.push({ severity: 'leak', message: `${name}: ${leaks.length - 100} more leaked stretches (${total} bytes leaked in all)` });
  }

  if (meta.footer.diskType === DISK_TYPE_DIFFERENCING && !opts.noBacking) {
    try {
      const r = await openParent(storage, location, meta, { ...opts, noBacking: false });
      await r.parent?.close();
    } catch (err) {
      if (!isVdiskError(err)) throw err;
      problems.push({ severity: 'corrupt', message: err.message });
    }
  }
  const risk = batProblems.length === 0 ? metadataAtRisk(meta) : { header: false, locators: [] };
  if (risk.header || risk.locators.length > 0) {
    const what = [...(risk.header ? [`the dynamic header (offset ${meta.footer.dataOffset})`] : []), ...risk.locators.map((i) => `parent locator ${i} (offset ${meta.header!.parentLocators[i]!.platformDataOffset})`)].join(', ');
    const p: CheckProblem = { severity: 'warning', message: `${name}: ${what} lies after the BAT and every block, where qemu appends its next new block over it (check -r all moves it below the BAT)` };
    if (opts.repair === 'all' && writable && meta.footerSource === 'trailing') {
      // Earlier repairs may have changed the file: read it again.
      const fresh = await readVhdMeta(storage);
      await secureMetadata(storage, fresh, metadataAtRisk(fresh).locators);
      p.repaired = true;
    }
    problems.push(p);
  }
  if (opts.repair && writable) await storage.flush();
  const result: CheckResult = { problems };
  if (meta.bat) {
    result.allocatedClusters = allocated;
    result.totalClusters = meta.bat.length;
  }
  return result;
}
