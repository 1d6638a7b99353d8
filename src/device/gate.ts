/**
 * Runs async tasks one after another, in the order they were handed in: the
 * mutating requests of one device (a write allocates a block, a flush commits a map)
 * never interleave, whoever issues them. An idle gate starts a task at once.
 */
export class Gate {
  private tail: Promise<void> | undefined;

  run<T>(fn: () => Promise<T>): Promise<T> {
    const before = this.tail;
    const result = before ? before.then(fn) : start(fn);
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.tail = settled;
    void settled.then(() => {
      if (this.tail === settled) this.tail = undefined;
    });
    return result;
  }
}

/** Call `fn`, turning a synchronous throw into a rejection. */
function start<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (e) {
    return Promise.reject(e);
  }
}
