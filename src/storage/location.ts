import { open as openFile, readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { VdiskError, fromSystemError } from '../errors.js';
import { FileStorage } from './file.js';
import { confine, isInside } from './realpath.js';
import { safeMemberName } from './containers/names.js';
import { MemoryStorage } from './memory.js';
import { filterStorage } from './filter.js';
import type { Storage } from './storage.js';

/**
 * Where an image lives, and how to reach the files it refers to (VMDK extents, a VHD
 * or VDI parent). References found inside an image are resolved here and confined
 * to the image's own folder unless the caller allowed more (DESIGN.md).
 */
export interface ImageLocation {
  /** Name of the image itself (a path for files). */
  readonly name: string;
  /**
   * The one confinement rule: resolve `ref` (as stored in an image: relative to the
   * image's folder, or absolute) to a name, E_PATH if it leads outside the allowed
   * folders (the image's own and those of `--allow-path`). `what` names the reference
   * in the message (`extent file`, `parent`); `reference` when absent.
   */
  resolve(ref: string, what?: string): string;
  /** `name` written relative to this image's folder (what to store in a child's header). */
  relativeName(name: string): string;
  /** Open a resolved name. Writable opens lock the file. */
  open(name: string, opts?: { readOnly?: boolean }): Promise<Storage>;
  /** Create a resolved name; E_EXISTS if it is there. */
  create(name: string): Promise<Storage>;
  /** True if a resolved name exists. */
  exists(name: string): Promise<boolean>;
  /** Remove a resolved name (used to clean up after a failed create). */
  remove(name: string): Promise<void>;
  /** Rename one resolved name to another, replacing it; the change is durable when this returns. */
  rename(from: string, to: string): Promise<void>;
  /** Names of the files in the image's folder (for finding a parent by uuid). */
  siblings(): Promise<string[]>;
  /** The location of another image reached from this one, with the same confinement. */
  at(name: string): ImageLocation;
}

/** Images on the local file system. */
export class FileLocation implements ImageLocation {
  readonly name: string;
  private readonly dir: string;
  private readonly allowed: string[];

  private readonly syncRenames: boolean;
  /** The image's own name came from an image (a parent, an extent), not from the user: confine it too. */
  private readonly referenced: boolean;

  /**
   * @param path  the image's path
   * @param allow extra folders that references may lead into (besides the image's own)
   * @param opts  syncRenames: false leaves renames to the caller to make durable (one folder sync after many);
   *              referenced: the path was found inside another image, so opening it is confined as well
   */
  constructor(path: string, allow: readonly string[] = [], opts: { syncRenames?: boolean; referenced?: boolean } = {}) {
    this.syncRenames = opts.syncRenames ?? true;
    this.referenced = opts.referenced ?? false;
    this.name = path;
    this.dir = dirname(resolve(path));
    this.allowed = [this.dir, ...allow.map((a) => resolve(a))];
  }

  resolve(ref: string, what = 'reference'): string {
    if (ref.length === 0 || ref.includes('\0')) throw new VdiskError('E_PATH', `${this.name}: empty or invalid ${what} "${ref.replace(/\0/g, '\\0')}"`, { file: this.name, field: what, value: ref });
    // Windows separators appear in VHD locators and VMDK descriptors written on Windows.
    const norm = ref.replace(/\\/g, '/');
    const target = isAbsolute(norm) ? resolve(norm) : resolve(this.dir, norm);
    if (!this.allowed.some((d) => isInside(d, target))) {
      throw new VdiskError('E_PATH', `${this.name}: ${what} "${ref}" leads outside ${this.allowed.join(', ')} (allow the folder explicitly to follow it)`, {
        file: this.name,
        field: what,
        value: ref,
      });
    }
    confine(this.name, ref, target, this.allowed, what);
    // Keep the caller's relative spelling when the image was given relatively.
    return isAbsolute(this.name) ? target : relative(process.cwd(), target) || basename(target);
  }

  relativeName(name: string): string {
    const rel = relative(this.dir, resolve(name));
    return rel.split(sep).join('/');
  }

  open(name: string, opts: { readOnly?: boolean } = {}): Promise<Storage> {
    const readOnly = opts.readOnly ?? false;
    // The image the user named may be a symlink; a name found inside an image may not lead out.
    if (name === this.name && !this.referenced) return FileStorage.open(name, { readOnly });
    return FileStorage.open(name, { readOnly, confine: (real) => this.confineReal(name, real) });
  }

  create(name: string): Promise<Storage> {
    return FileStorage.open(name, { create: 'new', confine: (real) => this.confineReal(name, real) });
  }

  /** Check a path the kernel says an open file really has (see FileStorage's `confine`). */
  private confineReal(name: string, real: string): void {
    confine(this.name, name, real, this.allowed);
  }

  async exists(name: string): Promise<boolean> {
    try {
      await stat(name);
      return true;
    } catch {
      return false;
    }
  }

  async remove(name: string): Promise<void> {
    await unlink(name).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw fromSystemError(err, name);
    });
  }

  async rename(from: string, to: string): Promise<void> {
    await rename(from, to).catch((err: unknown) => {
      throw fromSystemError(err, from);
    });
    if (this.syncRenames) await syncFolder(dirname(resolve(to)));
  }

  async siblings(): Promise<string[]> {
    const entries = await readdir(this.dir).catch((err: unknown) => {
      throw fromSystemError(err, this.dir);
    });
    const base = isAbsolute(this.name) ? this.dir : relative(process.cwd(), this.dir);
    return entries.map((e) => (base ? `${base}/${e}` : e));
  }

  at(name: string): ImageLocation {
    return new FileLocation(name, this.allowed.slice(1), { syncRenames: this.syncRenames, referenced: true });
  }
}

/** Hears about the changes of a {@link MemoryLocation}'s names (a crash model counts them as write points). */
export interface NamespaceWatcher {
  /** Before a file is created, renamed or removed; throwing stops the change. */
  before(op: 'create' | 'rename' | 'remove', name: string, to?: string): void;
  /** After the change is done. */
  after?(op: 'create' | 'rename' | 'remove', name: string, to?: string): void;
}

/**
 * A folder of images held in memory: names are plain strings relative to one root.
 * Tests use it with a storage factory that injects faults into every file, and a
 * watcher that makes file creation, renames and removals crash points too.
 */
export class MemoryLocation implements ImageLocation {
  constructor(
    readonly name: string,
    readonly files: Map<string, Storage> = new Map(),
    private readonly make: (name: string) => Storage = (n) => new MemoryStorage(undefined, { name: n }),
    private readonly watch?: NamespaceWatcher,
  ) {}

  resolve(ref: string, what = 'reference'): string {
    // A memory folder is flat names under one root: the member-name rule of packages.
    return safeMemberName(this.name, ref.replace(/\\/g, '/'), what);
  }

  relativeName(name: string): string {
    return name;
  }

  async open(name: string): Promise<Storage> {
    const s = this.files.get(name);
    if (!s) throw new VdiskError('E_NOENT', `${name}: no such file`);
    return keepOpen(s);
  }

  async create(name: string): Promise<Storage> {
    if (this.files.has(name)) throw new VdiskError('E_EXISTS', `${name}: already exists`);
    this.watch?.before('create', name);
    const s = this.make(name);
    this.files.set(name, s);
    this.watch?.after?.('create', name);
    return keepOpen(s);
  }

  async exists(name: string): Promise<boolean> {
    return this.files.has(name);
  }

  async remove(name: string): Promise<void> {
    if (!this.files.has(name)) return;
    this.watch?.before('remove', name);
    this.files.delete(name);
    this.watch?.after?.('remove', name);
  }

  async rename(from: string, to: string): Promise<void> {
    const s = this.files.get(from);
    if (!s) throw new VdiskError('E_NOENT', `${from}: no such file`);
    this.watch?.before('rename', from, to);
    this.files.delete(from);
    this.files.set(to, s);
    this.watch?.after?.('rename', from, to);
  }

  async siblings(): Promise<string[]> {
    return [...this.files.keys()];
  }

  at(name: string): ImageLocation {
    return new MemoryLocation(name, this.files, this.make, this.watch);
  }
}

/**
 * fsync a folder, so a rename in it survives a power loss (POSIX keeps directory
 * entries in the directory, which a file's own fsync does not cover). Systems that
 * cannot open or sync a folder (EISDIR, EINVAL, EPERM on some) are left as they are.
 */
export async function syncFolder(dir: string): Promise<void> {
  const fh = await openFile(dir, 'r').catch(() => undefined);
  if (!fh) return;
  try {
    await fh.sync().catch(() => undefined);
  } finally {
    await fh.close();
  }
}

/** A view of `s` whose close() leaves `s` open, so a memory folder's files outlive their users. */
function keepOpen(s: Storage): Storage {
  return filterStorage(s, { close: async () => {}, allocatedSize: async () => (s.allocatedSize ? s.allocatedSize() : s.size) });
}
