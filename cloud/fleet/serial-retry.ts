import { createBackoff, type BackoffOptions } from '../../edge/outbox/backoff.js';
import type { Logger } from '../../shared/log/index.js';

/** SQLite result codes that say "not now" (a lock, a full or failing disk), not "never". */
const TRANSIENT = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|READONLY|CANTOPEN|PROTOCOL)/;

/** True for an error a later attempt may not meet: the database was locked, full or unwritable. */
export function isTransientDbError(err: unknown): boolean {
  return err instanceof TransientError || TRANSIENT.test(String((err as { code?: unknown } | null)?.code ?? ''));
}

/** Thrown by a job to ask for a retry (e.g. a prerequisite write failed and was logged already). */
export class TransientError extends Error {}

/**
 * Runs jobs one at a time, in order, each until it succeeds (issue 9: a device event is acknowledged
 * only once its write is durable). A job failing with a transient database error (isTransientDbError)
 * is retried after an exponential backoff with jitter, and the jobs behind it wait, so the order holds;
 * each failure is logged and counted. Any other error rejects that job's promise: retrying cannot fix it.
 * After `stop()` nothing more runs and unsettled promises never settle (nothing is acknowledged).
 */
export class SerialRetry {
  private tail: Promise<unknown> = Promise.resolve();
  private readonly backoff: ReturnType<typeof createBackoff>;
  private stopped = false;
  /** Jobs run or waiting whose promise has not settled. */
  private queued = 0;
  private timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly deps: { log: Logger; what: string; /** Counts each retry (the owner's metric). */ onRetry?: () => void; retry?: BackoffOptions },
  ) {
    this.backoff = createBackoff({ initialMs: 100, maxMs: 5_000, ...deps.retry });
  }

  /**
   * Queues `job`; resolves with its result once it ran without a transient error. With nothing queued
   * the first attempt runs now, synchronously (callers may read its effect at once).
   */
  run<T>(job: () => T): Promise<T> {
    if (this.queued > 0 || this.stopped) return this.enqueue(job, 0);
    try {
      const out = job();
      this.backoff.reset();
      return Promise.resolve(out);
    } catch (err) {
      if (!isTransientDbError(err)) return Promise.reject(err as Error);
      return this.enqueue(job, this.failed(err));
    }
  }

  private enqueue<T>(job: () => T, firstDelayMs: number): Promise<T> {
    const p = this.tail.then(() => this.attempt(job, firstDelayMs));
    this.queued++;
    const done = (): void => void this.queued--;
    // The next job waits for this one, whatever its outcome.
    this.tail = p.then(done, done);
    return p;
  }

  /** Logs and counts a failed attempt; returns the delay before the next. */
  private failed(err: unknown): number {
    const delay = this.backoff.next();
    this.deps.onRetry?.();
    this.deps.log.error({ err, attempt: this.backoff.attempts, retryInMs: delay }, `${this.deps.what}: write failed, retrying (not acknowledged meanwhile)`);
    return delay;
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private attempt<T>(job: () => T, firstDelayMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const later = (ms: number): void => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          go();
        }, ms);
        this.timers.add(t);
      };
      const go = (): void => {
        if (this.stopped) return; // never settles: not acknowledged, the broker redelivers after a restart
        try {
          const out = job();
          this.backoff.reset();
          resolve(out);
        } catch (err) {
          if (!isTransientDbError(err)) return reject(err as Error);
          later(this.failed(err));
        }
      };
      if (firstDelayMs > 0) later(firstDelayMs);
      else go();
    });
  }
}
