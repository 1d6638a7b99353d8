/**
 * Disks inside packages, opened in place. The address of a member is
 * `ARCHIVE:MEMBER` (`app.ova:disk1.vmdk`), nested archives add one more
 * `:MEMBER` each (`bundle.zip:app.ova:disk1.vmdk`). ARCHIVE must be an existing tar
 * or zip file; a path that exists as a file is never read as an address.
 */
import { stat } from 'node:fs/promises';
import { VdiskError } from '../../errors.js';
import { FileStorage } from '../file.js';
import type { ImageLocation } from '../location.js';
import type { Storage } from '../storage.js';
import { isArchive, openArchive, openArchiveChain, type ArchiveOptions } from './archive.js';
import { memberDir, safeMemberName } from './names.js';

/** An image that is a member of an archive; everything in it is read-only. */
export class ArchiveLocation implements ImageLocation {
  readonly name: string;

  /**
   * @param archivePath the archive file on disk
   * @param chain       member names from the outer archive inward; the last is the image
   */
  constructor(
    readonly archivePath: string,
    readonly chain: readonly string[],
    private readonly opts: ArchiveOptions = {},
  ) {
    if (chain.length === 0) throw new VdiskError('E_USAGE', `${archivePath}: no archive member named`);
    this.name = [archivePath, ...chain].join(':');
  }

  private get member(): string {
    return this.chain[this.chain.length - 1]!;
  }

  private get prefix(): string {
    return [this.archivePath, ...this.chain.slice(0, -1)].join(':');
  }

  resolve(ref: string, what = 'reference'): string {
    const dir = memberDir(this.member);
    const norm = ref.replace(/\\/g, '/');
    // an absolute reference means a file outside the archive: refused, not re-rooted
    if (norm.startsWith('/') || /^[A-Za-z]:/.test(norm)) safeMemberName(this.name, norm, what);
    const member = safeMemberName(this.name, dir ? `${dir}/${norm}` : norm, what);
    return `${this.prefix}:${member}`;
  }

  relativeName(name: string): string {
    const member = this.memberOf(name);
    const dir = memberDir(this.member);
    return dir && member.startsWith(`${dir}/`) ? member.slice(dir.length + 1) : member;
  }

  open(name: string, opts: { readOnly?: boolean } = {}): Promise<Storage> {
    if (opts.readOnly === false) return Promise.reject(this.readOnlyError(name));
    return openArchiveChain(this.archivePath, [...this.chain.slice(0, -1), this.memberOf(name)], this.opts);
  }

  create(name: string): Promise<Storage> {
    return Promise.reject(this.readOnlyError(name));
  }

  async exists(name: string): Promise<boolean> {
    try {
      const s = await this.open(name, { readOnly: true });
      await s.close();
      return true;
    } catch {
      return false;
    }
  }

  remove(name: string): Promise<void> {
    return Promise.reject(this.readOnlyError(name));
  }

  rename(from: string): Promise<void> {
    return Promise.reject(this.readOnlyError(from));
  }

  async siblings(): Promise<string[]> {
    const outer = this.chain.slice(0, -1);
    let storage: Storage = await FileStorage.open(this.archivePath, { readOnly: true });
    if (outer.length > 0) {
      await storage.close();
      storage = await openArchiveChain(this.archivePath, outer, this.opts);
    }
    const archive = await openArchive(storage, this.opts);
    try {
      const dir = memberDir(this.member);
      return archive.members.filter((m) => memberDir(m.name) === dir).map((m) => `${this.prefix}:${m.name}`);
    } finally {
      await archive.close();
    }
  }

  at(name: string): ImageLocation {
    return new ArchiveLocation(this.archivePath, [...this.chain.slice(0, -1), this.memberOf(name)], this.opts);
  }

  /** The member part of a name made by resolve(). */
  private memberOf(name: string): string {
    const p = `${this.prefix}:`;
    if (!name.startsWith(p)) throw new VdiskError('E_PATH', `${this.name}: "${name}" is not in the same archive`);
    return safeMemberName(this.name, name.slice(p.length), 'member');
  }

  private readOnlyError(name: string): VdiskError {
    return new VdiskError('E_READONLY', `${name}: a member of an archive opens read-only (extract it to change it)`);
  }
}

async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * When `path` is an `ARCHIVE:MEMBER[:MEMBER…]` address (it does not exist as a file,
 * and the part before a `:` is a tar or zip file), the location of that member;
 * otherwise undefined. Nested members are split at the first `:` that follows the
 * name of a member of the enclosing archive.
 */
export async function archiveMemberLocation(path: string, opts: ArchiveOptions = {}): Promise<ArchiveLocation | undefined> {
  if (!path.includes(':') || (await isRegularFile(path))) return undefined;
  for (let i = path.indexOf(':'); i > 0; i = path.indexOf(':', i + 1)) {
    const file = path.slice(0, i);
    if (!(await isRegularFile(file))) continue;
    const storage = await FileStorage.open(file, { readOnly: true });
    let archive = false;
    try {
      archive = await isArchive(storage);
    } finally {
      await storage.close();
    }
    if (!archive) return undefined;
    return new ArchiveLocation(file, await splitChain(file, path.slice(i + 1), opts), opts);
  }
  return undefined;
}

/** Split `rest` (after `ARCHIVE:`) into member names, descending into nested archives. */
async function splitChain(file: string, rest: string, opts: ArchiveOptions): Promise<string[]> {
  const chain: string[] = [];
  let storage: Storage = await FileStorage.open(file, { readOnly: true });
  for (let depth = 0; depth < 8; depth++) {
    const archive = await openArchive(storage, opts);
    let next: string | undefined;
    try {
      if (archive.members.some((m) => m.name === rest)) {
        chain.push(rest);
        return chain;
      }
      // the longest member name followed by ':' is the next archive
      const inner = archive.members.filter((m) => rest.startsWith(`${m.name}:`)).sort((a, b) => b.name.length - a.name.length)[0];
      if (!inner) {
        chain.push(safeMemberName(file, rest, 'member'));
        return chain; // opening it will report E_NOENT naming the member
      }
      chain.push(inner.name);
      rest = rest.slice(inner.name.length + 1);
      next = inner.name;
    } finally {
      if (next === undefined) await archive.close();
    }
    const member = await archive.openMember(next);
    // the inner archive owns `member`; the outer one is released when the member closes
    storage = {
      name: member.name,
      get size() {
        return member.size;
      },
      readOnly: true,
      read: (b, o) => member.read(b, o),
      write: (b, o) => member.write(b, o),
      truncate: (n) => member.truncate(n),
      flush: () => member.flush(),
      close: async () => {
        await member.close();
        await archive.close();
      },
    };
  }
  throw new VdiskError('E_UNSUPPORTED', `${file}: archives nested more than 8 deep`);
}
