/**
 * lseek(SEEK_DATA / SEEK_HOLE) for local files, which Node lacks: a small Node-API
 * addon (native/seek.c) shipped prebuilt as prebuilds/<platform>-<arch>/vdisk-seek.node
 * and loaded by path. Where it cannot load (another platform, a stripped package) or
 * `VDISK_NO_NATIVE=1` is set, {@link nativeSeek} is undefined and callers find zeros
 * by reading, as before.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The addon's exports (see native/seek.c). */
export interface NativeSeek {
  /** lseek(fd, offset, whence): the offset found, or -1 for ENXIO (no data at or after offset). */
  seek(fd: number, offset: number, whence: number): number;
  readonly SEEK_DATA: number;
  readonly SEEK_HOLE: number;
}

let loaded: NativeSeek | null | undefined;

/**
 * The addon, or undefined where it cannot load or `VDISK_NO_NATIVE=1`. Loaded once,
 * at first use; set `VDISK_NATIVE_DEBUG=1` to hear why a load failed.
 */
export function nativeSeek(): NativeSeek | undefined {
  if (process.env.VDISK_NO_NATIVE === '1') return undefined;
  if (loaded === undefined) loaded = load();
  return loaded ?? undefined;
}

function load(): NativeSeek | null {
  // Every module that imports this one sits two folders below the package root
  // (src/storage, dist/storage, dist/cli for the bundled CLI). The name is built at
  // run time so the CLI bundler leaves the binary where it is.
  const name = ['..', '..', 'prebuilds', `${process.platform}-${process.arch}`, 'vdisk-seek.node'].join('/');
  try {
    const addon = createRequire(import.meta.url)(fileURLToPath(new URL(name, import.meta.url))) as NativeSeek;
    if (typeof addon.seek !== 'function' || typeof addon.SEEK_DATA !== 'number' || typeof addon.SEEK_HOLE !== 'number') return null;
    return addon;
  } catch (err) {
    if (process.env.VDISK_NATIVE_DEBUG === '1') process.stderr.write(`vdisk: native seek not loaded: ${(err as Error).message}\n`);
    return null;
  }
}
