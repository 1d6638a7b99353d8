/**
 * Progress accounting for long in-place operations: a running total that only moves
 * forward and always ends with one call at done = total.
 */

/** Counts work done against a total and reports it to an optional callback. */
export class ProgressMeter {
  private done = 0;

  /**
   * @param total bytes (or other units) of work expected; may grow with {@link more}
   * @param cb    called after each step with (done, total)
   */
  constructor(
    private total: number,
    private readonly cb?: (done: number, total: number) => void,
  ) {}

  /** Add `n` units of work to the total (work found while going). */
  more(n: number): void {
    this.total += n;
  }

  /** Record `n` units done (never past the total). */
  add(n: number): void {
    if (n <= 0) return;
    this.done = Math.min(this.total, this.done + n);
    this.cb?.(this.done, this.total);
  }

  /** The last call: everything done. */
  finish(): void {
    this.done = this.total;
    this.cb?.(this.done, this.total);
  }
}
