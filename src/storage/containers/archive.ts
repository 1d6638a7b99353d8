/**
 * A package as a set of named members, whatever holds them: a tar (.ova), a zip, or
 * the folder of a plain .ovf. Members open read-only as Storage, in place where the
 * container allows it.
 */
import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { VdiskError, fromSystemError } from '../../errors.js';
import { FileStorage } from '../file.js';
import { confine } from '../realpath.js';
import type { Storage } from '../storage.js';
import { safeMemberName } from './names.js';
import { isTar, readTarEntries, type TarEntry } from './tar.js';
import { WindowStorage } from './window.js';
import { ZipArchive, isZip, type ZipLimits } from './zip.js';

/** One file in a package. */
export interface ArchiveMember {
  name: string;
  /** Size in bytes (uncompressed). */
  size: number;
}

/** Members of a package and how to open them. */
export interface Archive {
  /** Name for messages. */
  readonly name: string;
  readonly kind: 'tar' | 'zip' | 'folder';
  /** Members in the order the container stores them. */
  readonly members: readonly ArchiveMember[];
  /** Open a member read-only (E_NOENT if absent). Closing it leaves the archive open. */
  openMember(name: string): Promise<Storage>;
  /** Release the archive and the storage under it. */
  close(): Promise<void>;
}

/** Options for opening archives. */
export interface ArchiveOptions {
  /** Zip bomb limits. */
  zipLimits?: Partial<ZipLimits>;
}

class TarArchive implements Archive {
  readonly kind = 'tar';
  constructor(
    readonly name: string,
    private readonly storage: Storage,
    private readonly entries: TarEntry[],
  ) {}

  get members(): ArchiveMember[] {
    return this.entries.map((e) => ({ name: e.name, size: e.size }));
  }

  async openMember(name: string): Promise<Storage> {
    const e = this.entries.find((x) => x.name === name);
    if (!e) throw new VdiskError('E_NOENT', `${this.name}: no member "${name}"`);
    return new WindowStorage(`${this.name}:${name}`, this.storage, e.dataOffset, e.size);
  }

  close(): Promise<void> {
    return this.storage.close();
  }
}

class ZipPackage implements Archive {
  readonly kind = 'zip';
  constructor(
    private readonly zip: ZipArchive,
    private readonly storage: Storage,
  ) {}

  get name(): string {
    return this.zip.name;
  }

  get members(): ArchiveMember[] {
    return this.zip.members.map((m) => ({ name: m.name, size: m.size }));
  }

  openMember(name: string): Promise<Storage> {
    return this.zip.openMember(name);
  }

  async close(): Promise<void> {
    await this.zip.close();
    await this.storage.close();
  }
}

/** True when `storage` holds a tar or zip archive. */
export async function isArchive(storage: Storage): Promise<boolean> {
  return (await isTar(storage)) || (await isZip(storage));
}

/**
 * The archive (tar or zip, by magic) in `storage`; it takes ownership of `storage`
 * (closed with the archive, or on failure). E_FORMAT when it is neither.
 */
export async function openArchive(storage: Storage, opts: ArchiveOptions = {}): Promise<Archive> {
  try {
    if (await isTar(storage)) return new TarArchive(storage.name, storage, await readTarEntries(storage));
    if (await isZip(storage)) return new ZipPackage(await ZipArchive.open(storage, opts.zipLimits), storage);
    throw new VdiskError('E_FORMAT', `${storage.name}: not a tar (.ova) or zip archive`);
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw err;
  }
}

/** How deep, and how many files, a plain .ovf's folder is listed. */
const MAX_FOLDER_DEPTH = 4;
const MAX_FOLDER_FILES = 10_000;

/** The files next to a plain .ovf descriptor, confined to its folder (symlinks out of it are refused). */
export class FolderArchive implements Archive {
  readonly kind = 'folder';
  private constructor(
    readonly name: string,
    private readonly dir: string,
    readonly members: readonly ArchiveMember[],
  ) {}

  /**
   * The folder holding `descriptorPath`: its regular files, and those of its
   * subfolders up to 4 deep (symbolic links are not followed, so not members).
   */
  static async open(descriptorPath: string): Promise<FolderArchive> {
    const dir = dirname(descriptorPath);
    const members: ArchiveMember[] = [];
    const walk = async (rel: string, depth: number): Promise<void> => {
      const here = rel ? join(dir, rel) : dir;
      const names = await readdir(here, { withFileTypes: true }).catch((err: unknown) => {
        throw fromSystemError(err, here);
      });
      for (const d of names) {
        const name = rel ? `${rel}/${d.name}` : d.name;
        if (d.isDirectory() && depth < MAX_FOLDER_DEPTH) await walk(name, depth + 1);
        if (!d.isFile()) continue;
        if (members.length >= MAX_FOLDER_FILES) throw new VdiskError('E_UNSUPPORTED', `${dir}: more than ${MAX_FOLDER_FILES} files next to the descriptor`);
        members.push({ name, size: (await stat(join(dir, name))).size });
      }
    };
    await walk('', 0);
    return new FolderArchive(dir, dir, members);
  }

  async openMember(name: string): Promise<Storage> {
    const path = join(this.dir, safeMemberName(this.name, name, 'file'));
    // The one confinement rule, on the real path: a symlink out of the package folder is refused (also one swapped in before the open).
    return FileStorage.open(path, { readOnly: true, confine: (real) => void confine(this.name, name, real, [this.dir], 'file') });
  }

  async close(): Promise<void> {}
}

/**
 * Open member `chain[last]` of the archive at `path`, going through nested archives
 * (`chain = ['app.ova', 'disk1.vmdk']` inside a zip). The Storage returned closes
 * every archive on the way when it is closed.
 */
export async function openArchiveChain(path: string, chain: readonly string[], opts: ArchiveOptions = {}): Promise<Storage> {
  if (chain.length === 0) throw new VdiskError('E_USAGE', `${path}: no archive member named`);
  const opened: Archive[] = [];
  const closeAll = async (): Promise<void> => {
    for (const a of opened.reverse()) await a.close().catch(() => undefined);
  };
  try {
    let storage: Storage = await FileStorage.open(path, { readOnly: true });
    for (let i = 0; ; i++) {
      const archive = await openArchive(storage, opts);
      opened.push(archive);
      const member = await archive.openMember(chain[i]!);
      if (i === chain.length - 1) {
        const name = [path, ...chain].join(':');
        return new WindowStorage(name, member, 0, member.size, async () => {
          await member.close();
          await closeAll();
        });
      }
      storage = member;
    }
  } catch (err) {
    await closeAll();
    throw err;
  }
}
