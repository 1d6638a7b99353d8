import type { Storage } from './storage.js';

/** The calls a filter may replace. */
export type StorageCalls = Pick<Storage, 'read' | 'write' | 'truncate' | 'flush' | 'close' | 'allocatedSize'>;

/**
 * A Storage that passes every call to `inner` except the ones `overrides` replaces:
 * a filter in nbdkit's sense (no durability, no close, fault injection, ...).
 * `name` renames it (a file renamed while open).
 */
export function filterStorage(inner: Storage, overrides: Partial<StorageCalls>, name: string = inner.name): Storage {
  return {
    name,
    get size() {
      return inner.size;
    },
    readOnly: inner.readOnly,
    read: overrides.read ?? ((b, o) => inner.read(b, o)),
    write: overrides.write ?? ((b, o) => inner.write(b, o)),
    truncate: overrides.truncate ?? ((n) => inner.truncate(n)),
    flush: overrides.flush ?? (() => inner.flush()),
    close: overrides.close ?? (() => inner.close()),
    allocatedSize: overrides.allocatedSize ?? (inner.allocatedSize ? () => inner.allocatedSize!() : undefined),
    // What the container holds is the inner one's business: a filter over a sparse file still knows its holes.
    extents: inner.extents ? (o, n) => inner.extents!(o, n) : undefined,
  };
}
