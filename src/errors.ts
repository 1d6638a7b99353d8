/**
 * Errors raised by vdisk. Every failure a caller can act on is a {@link VdiskError}
 * with a stable {@link VdiskErrorCode}; messages name the file and the field.
 */

/** Stable error codes; callers may switch on these. */
export type VdiskErrorCode =
  /** Not the format asked for, or no known format. */
  | 'E_FORMAT'
  /** The image is damaged: a field is out of range or inconsistent. */
  | 'E_CORRUPT'
  /** An offset or length lies outside the device or container. */
  | 'E_BOUNDS'
  /** A valid feature that vdisk does not implement. */
  | 'E_UNSUPPORTED'
  /** A path inside an image leads outside the allowed folders. */
  | 'E_PATH'
  /** The operating system refused an I/O call. */
  | 'E_IO'
  /** Another process holds the image open for writing. */
  | 'E_LOCKED'
  /** The target exists and would be overwritten. */
  | 'E_EXISTS'
  /** The caller asked for something malformed (bad option, size, argument). */
  | 'E_USAGE'
  /** The file does not exist. */
  | 'E_NOENT'
  /** Write to a read-only device. */
  | 'E_READONLY'
  /** A differencing chain is broken: missing parent, wrong id, loop, too deep. */
  | 'E_CHAIN'
  /** The device was closed. */
  | 'E_CLOSED'
  /** The disk is full. */
  | 'E_NOSPC'
  /** A saved machine state belongs to another image, or to a machine set up differently. */
  | 'E_MISMATCH';

/** The one error class vdisk throws for anything a caller can act on. */
export class VdiskError extends Error {
  readonly code: VdiskErrorCode;

  constructor(code: VdiskErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VdiskError';
    this.code = code;
  }
}

/** True when `err` is a VdiskError (optionally with the given code). */
export function isVdiskError(err: unknown, code?: VdiskErrorCode): err is VdiskError {
  return err instanceof VdiskError && (code === undefined || err.code === code);
}

/** Translate a Node.js system error into a VdiskError naming `what` (usually a path). */
export function fromSystemError(err: unknown, what: string): VdiskError {
  if (err instanceof VdiskError) return err;
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return new VdiskError('E_NOENT', `${what}: no such file`, { cause: err });
    case 'EEXIST':
      return new VdiskError('E_EXISTS', `${what}: already exists`, { cause: err });
    case 'EISDIR':
      return new VdiskError('E_USAGE', `${what}: is a folder, not an image`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new VdiskError('E_IO', `${what}: permission denied`, { cause: err });
    case 'ENOSPC':
      return new VdiskError('E_NOSPC', `${what}: no space left on device`, { cause: err });
    case 'EROFS':
      return new VdiskError('E_READONLY', `${what}: read-only file system`, { cause: err });
    default:
      return new VdiskError('E_IO', `${what}: ${e?.message ?? String(err)}`, { cause: err });
  }
}
