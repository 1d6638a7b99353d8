/**
 * The OVF manifest (DSP0243 §5.1): one `ALG(name)= hex` line per file of the package,
 * where ALG is SHA1 (OVF 1.x), SHA256 or SHA512 (OVF 2.x).
 */
import { createHash } from 'node:crypto';
import { VdiskError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { safeMemberName } from '../../storage/containers/names.js';

/** Digest algorithms a manifest may use, with their Node names and hex lengths. */
export const MANIFEST_ALGORITHMS = {
  SHA1: { node: 'sha1', hexLength: 40 },
  SHA256: { node: 'sha256', hexLength: 64 },
  SHA512: { node: 'sha512', hexLength: 128 },
} as const;

/** A manifest algorithm name. */
export type ManifestAlgorithm = keyof typeof MANIFEST_ALGORITHMS;

/** One manifest line. */
export interface ManifestEntry {
  algorithm: ManifestAlgorithm;
  name: string;
  /** Lower-case hex digest. */
  digest: string;
}

/** Largest manifest vdisk reads. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

/** The manifest text for `entries`. */
export function buildManifest(entries: readonly ManifestEntry[]): string {
  return entries.map((e) => `${e.algorithm}(${e.name})= ${e.digest}\n`).join('');
}

/** Parse manifest bytes; E_CORRUPT naming the line when one is malformed. */
export function parseManifest(where: string, bytes: Uint8Array): ManifestEntry[] {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new VdiskError('E_UNSUPPORTED', `${where}: manifest of ${bytes.length} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit`);
  const out: ManifestEntry[] = [];
  const lines = Buffer.from(bytes).toString('utf8').split(/\r?\n/);
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const m = /^\s*(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$/.exec(line);
    if (!m) throw new VdiskError('E_CORRUPT', `${where}: line ${i + 1} is not "ALG(name)= hex": ${JSON.stringify(line.slice(0, 80))}`);
    const algorithm = m[1] as ManifestAlgorithm;
    const digest = m[3]!.toLowerCase();
    if (digest.length !== MANIFEST_ALGORITHMS[algorithm].hexLength) throw new VdiskError('E_CORRUPT', `${where}: line ${i + 1}: ${algorithm} digest has ${digest.length} hex digits`);
    out.push({ algorithm, name: safeMemberName(where, m[2]!, 'manifest name'), digest });
  });
  return out;
}

/** Hex digest of all of `s` with `algorithm`, read in 1 MiB pieces. */
export async function digestStorage(s: Storage, algorithm: ManifestAlgorithm, onBytes?: (n: number) => void): Promise<string> {
  const h = createHash(MANIFEST_ALGORITHMS[algorithm].node);
  const buf = Buffer.alloc(Math.min(Math.max(s.size, 1), 1024 * 1024));
  for (let off = 0; off < s.size; ) {
    const n = Math.min(buf.length, s.size - off);
    const piece = buf.subarray(0, n);
    await s.read(piece, off);
    h.update(piece);
    off += n;
    onBytes?.(n);
  }
  return h.digest('hex');
}

/** Hex digest of bytes in memory. */
export function digestBytes(b: Uint8Array, algorithm: ManifestAlgorithm): string {
  return createHash(MANIFEST_ALGORITHMS[algorithm].node).update(b).digest('hex');
}
