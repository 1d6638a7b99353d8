/**
 * Where a pool's members live. LVM2 scans /dev; a pool scans a folder. Files on disk
 * are the usual case; a memory folder lets the crash sweep run every pool change
 * over storage that fails on demand.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, join, relative, resolve } from 'node:path';
import type { DiskImage } from '../device/block-device.js';
import { VdiskError } from '../errors.js';
import { findDriver, open, openLocation } from '../formats/registry.js';
import { FileLocation, type MemoryLocation } from '../storage/location.js';
import { NbdStorage } from '../storage/nbd/client.js';
import { isNbdUri } from '../storage/nbd/uri.js';

/** A folder of member images. Names are what `open` takes (absolute paths for files). */
export interface PoolFolder {
  /** The folder, for messages. */
  readonly dir: string;
  /** Candidate member names: regular files, not hidden, not lock files. */
  list(): Promise<string[]>;
  /** The name of `ref` (a member argument or a `device` hint) in this folder, or undefined when it cannot be one. */
  name(ref: string): string | undefined;
  /** How a member is written as the `device` hint: relative to the folder. */
  hint(name: string): string;
  exists(name: string): Promise<boolean>;
  open(name: string, readOnly: boolean): Promise<DiskImage>;
  create(name: string, format: string, size: number): Promise<DiskImage>;
}

/** A folder on the file system. */
export function fileFolder(dirArg = '.'): PoolFolder {
  const dir = resolve(dirArg);
  return {
    dir,
    async list() {
      const entries = await readdir(dir, { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => {
        throw new VdiskError('E_NOENT', `${dir}: cannot scan for pool members (${e.code ?? e.message})`);
      });
      return entries.filter((e) => e.isFile() && !e.name.startsWith('.') && !e.name.endsWith('.lock')).map((e) => join(dir, e.name)).sort();
    },
    name(ref) {
      if (!ref || ref.startsWith('/dev/')) return undefined;
      // A remote member is named by its URI, in arguments and in the device hint alike.
      if (isNbdUri(ref)) return ref;
      return resolve(dir, ref);
    },
    hint(name) {
      if (isNbdUri(name)) return name;
      return relative(dir, name) || basename(name);
    },
    async exists(name) {
      if (isNbdUri(name)) {
        // Reachable is what "exists" means for an export: connect, then hang up.
        return NbdStorage.open(name, { readOnly: true, timeoutMs: 5000 }).then(
          async (s) => {
            await s.close();
            return true;
          },
          () => false,
        );
      }
      return stat(name).then((s) => s.isFile(), () => false);
    },
    open(name, readOnly) {
      return open(name, { readOnly });
    },
    create(name, format, size) {
      if (isNbdUri(name)) throw new VdiskError('E_UNSUPPORTED', `${name}: an NBD export is served, not created; --new makes local members only`);
      return findDriver(format).create(new FileLocation(name), { size, options: {} });
    },
  };
}

/** A memory folder (tests: the crash sweep). */
export function memoryFolder(loc: MemoryLocation): PoolFolder {
  return {
    dir: loc.name,
    async list() {
      return (await loc.siblings()).filter((n) => !n.startsWith('.') && !n.endsWith('.lock')).sort();
    },
    name(ref) {
      try {
        return loc.resolve(ref);
      } catch {
        return undefined;
      }
    },
    hint(name) {
      return name;
    },
    exists(name) {
      return loc.exists(name);
    },
    open(name, readOnly) {
      return openLocation(loc.at(name), { readOnly });
    },
    create(name, format, size) {
      return findDriver(format).create(loc.at(name), { size, options: {} });
    },
  };
}
