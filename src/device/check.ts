/**
 * The vocabulary of `check`: what a format driver or a partition table reports about
 * an image's consistency, and how far it may repair. Both stand on it, so it lives
 * below them, with the device they check.
 */
/** One consistency problem found by `check`. */
export interface CheckProblem {
  /** `corrupt`: data may be wrong; `leak`: space is wasted but content is right. */
  severity: 'corrupt' | 'leak' | 'warning';
  /** What is wrong, naming the field. */
  message: string;
  /** Where in the file, when it has a place. */
  offset?: number;
  /** True if `check -r` fixed it. */
  repaired?: boolean;
}

/** What `check` found. */
export interface CheckResult {
  problems: CheckProblem[];
  /** Allocated clusters/blocks, when the format has them (qemu-img check's allocated-clusters). */
  allocatedClusters?: number;
  totalClusters?: number;
  /** Problems that kept the check from completing (qemu-img's check-errors; exit code 1). */
  checkErrors?: number;
}

/** Options for a driver's check. */
export interface DriverCheckOptions {
  /** Repair what is safe: `leaks` frees leaked space, `all` also rewrites damaged redundant copies. */
  repair?: 'leaks' | 'all';
}
