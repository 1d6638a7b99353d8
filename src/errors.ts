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

/** What a {@link VdiskError} can say beyond its message, for callers that act on it (and `--output json`). */
export interface VdiskErrorData {
  /** The file (or address) the error is about. */
  file?: string;
  /** The header field or reference at fault, in the spec's words (`cbDisk`, `extent file`). */
  field?: string;
  /** Byte offset in the file, when the error has a place. */
  offset?: number;
  /** The offending value, as read or given. */
  value?: string | number | boolean;
}

/** Options for {@link VdiskError}'s constructor: the cause and the data. */
export interface VdiskErrorOptions extends VdiskErrorData {
  cause?: unknown;
}

/** What {@link VdiskError.toJSON} gives: the code, the message and whichever data the error carries. */
export interface VdiskErrorJson extends VdiskErrorData {
  name: 'VdiskError';
  code: VdiskErrorCode;
  message: string;
}

/** The one error class vdisk throws for anything a caller can act on. */
export class VdiskError extends Error {
  readonly code: VdiskErrorCode;
  /** The file (or address) the error is about, when known. */
  readonly file?: string;
  /** The field or reference at fault, when the error names one. */
  readonly field?: string;
  /** Byte offset in the file, when the error has a place. */
  readonly offset?: number;
  /** The offending value, when there is one. */
  readonly value?: string | number | boolean;

  constructor(code: VdiskErrorCode, message: string, options?: VdiskErrorOptions) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'VdiskError';
    this.code = code;
    if (options?.file !== undefined) this.file = options.file;
    if (options?.field !== undefined) this.field = options.field;
    if (options?.offset !== undefined) this.offset = options.offset;
    if (options?.value !== undefined) this.value = options.value;
  }

  /** The error as plain data: `{ name, code, message, file?, field?, offset?, value? }` (what `--output json` prints). */
  toJSON(): VdiskErrorJson {
    const out: VdiskErrorJson = { name: 'VdiskError', code: this.code, message: this.message };
    if (this.file !== undefined) out.file = this.file;
    if (this.field !== undefined) out.field = this.field;
    if (this.offset !== undefined) out.offset = this.offset;
    if (this.value !== undefined) out.value = this.value;
    return out;
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
      return new VdiskError('E_NOENT', `${what}: no such file`, { cause: err, file: what });
    case 'EEXIST':
      return new VdiskError('E_EXISTS', `${what}: already exists`, { cause: err, file: what });
    case 'EISDIR':
      return new VdiskError('E_USAGE', `${what}: is a folder, not an image`, { cause: err, file: what });
    case 'EACCES':
    case 'EPERM':
      return new VdiskError('E_IO', `${what}: permission denied`, { cause: err, file: what });
    case 'ENOSPC':
      return new VdiskError('E_NOSPC', `${what}: no space left on device`, { cause: err, file: what });
    case 'EROFS':
      return new VdiskError('E_READONLY', `${what}: read-only file system`, { cause: err, file: what });
    default:
      return new VdiskError('E_IO', `${what}: ${e?.message ?? String(err)}`, { cause: err, file: what });
  }
}
