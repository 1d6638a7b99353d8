/** Finding a differencing image's parent among the names its header records. */
import { VdiskError, isVdiskError } from '../errors.js';
import type { ImageLocation } from '../storage/location.js';

/**
 * The first of `refs` (in the order the format says to try them) that resolves inside
 * the location's confinement and exists. A ref the confinement refuses is skipped, and
 * the first such refusal is returned, so a caller with no parent found can report it
 * rather than a plain "not found".
 */
export async function findParentRef<R extends { ref: string }>(location: ImageLocation, refs: readonly R[]): Promise<{ found?: R & { resolved: string }; pathError?: VdiskError }> {
  let pathError: VdiskError | undefined;
  for (const r of refs) {
    let resolved: string;
    try {
      resolved = location.resolve(r.ref);
    } catch (err) {
      if (isVdiskError(err, 'E_PATH')) {
        pathError ??= err;
        continue;
      }
      throw err;
    }
    if (await location.exists(resolved)) return { found: { ...r, resolved }, pathError };
  }
  return { pathError };
}
