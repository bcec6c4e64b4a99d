import { createBackoff, type BackoffOptions } from '../../edge/outbox/backoff.js';
import type { Logger } from '../../shared/log/index.js';

/** SQLite result codes that say "not now" (a lock, a full or failing disk), not "never". */
const TRANSIENT = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|READONLY|CANTOPEN|PROTOCOL)/;
/**
 * PostgreSQL SQLSTATEs and socket errors that say "not now": a lost or refused connection (class 08,
 * server shutting down 57P01-57P03, too many connections 53300, disk full 53100), a serialization failure or
 * deadlock that outlasted the registry's own retries (40001, 40P01).
 */
const TRANSIENT_PG = /^(08...|57P0[123]|53[13]00|40001|40P01|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE)$/;

/** True when `err` or one of its causes (drizzle wraps the driver's error) has a code `re` matches. */
function hasCode(err: unknown, re: RegExp): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | null | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (re.test(String(e.code ?? ''))) return true;
  }
  return false;
}

/** True for an error a later attempt may not meet: the database was locked, full or unwritable. */
export function isTransientDbError(err: unknown): boolean {
  return err instanceof TransientError || hasCode(err, TRANSIENT) || hasCode(err, TRANSIENT_PG);
}

/** The PostgreSQL part of isTransientDbError: the server unreachable, shutting down, out of connections, or contended past the retries. */
export function isTransientPgError(err: unknown): boolean {
  return hasCode(err, TRANSIENT_PG);
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
   * Queues `job` (synchronous or async); resolves with its result once it ran without a transient error.
   * With nothing queued the first attempt starts now, synchronously (on SQLite, callers may read its
   * effect at once).
   */
  run<T>(job: () => T | PromiseLike<T>): Promise<T> {
    const first = this.queued === 0 && !this.stopped;
    this.queued++;
    const p = first ? this.attempt(job) : this.tail.then(() => this.attempt(job));
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

  private attempt<T>(job: () => T | PromiseLike<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const later = (ms: number): void => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          go();
        }, ms);
        this.timers.add(t);
      };
      const failed = (err: unknown): void => {
        if (!isTransientDbError(err)) return reject(err as Error);
        later(this.failed(err));
      };
      const go = (): void => {
        if (this.stopped) return; // never settles: not acknowledged, the broker redelivers after a restart
        let out: T | PromiseLike<T>;
        try {
          out = job();
        } catch (err) {
          return failed(err);
        }
        Promise.resolve(out).then((v) => {
          this.backoff.reset();
          resolve(v);
        }, failed);
      };
      go();
    });
  }
}
