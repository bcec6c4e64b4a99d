export interface BackoffOptions {
  /** Delay ceiling for the first retry (the delay is in [ceiling/2, ceiling)). */
  initialMs?: number;
  /** Delay ceiling never exceeds this. */
  maxMs?: number;
  factor?: number;
  /** Uniform in [0, 1). */
  random?: () => number;
}

/**
 * Exponential backoff with "equal jitter": with c = min(maxMs, initialMs·factor^attempt), the delay is
 * uniform in [c/2, c). The jitter keeps a fleet that lost its broker at the same moment from retrying
 * in lockstep (AWS Architecture Blog, "Exponential Backoff And Jitter"); the c/2 floor keeps a
 * persistent failure from turning into a hot loop, which full jitter allows.
 *
 * @example
 * const backoff = createBackoff({ initialMs: 1000, maxMs: 60_000 });
 * setTimeout(retry, backoff.next());
 * backoff.reset(); // after a success
 */
export function createBackoff({ initialMs = 1000, maxMs = 60_000, factor = 2, random = Math.random }: BackoffOptions = {}) {
  let attempt = 0;
  return {
    /** The delay before the next retry; each call counts one more failure. */
    next(): number {
      const ceiling = Math.min(maxMs, initialMs * factor ** Math.min(attempt, 52));
      attempt++;
      return Math.floor(ceiling / 2 + (random() * ceiling) / 2);
    },
    reset(): void {
      attempt = 0;
    },
    get attempts(): number {
      return attempt;
    },
  };
}
export type Backoff = ReturnType<typeof createBackoff>;
