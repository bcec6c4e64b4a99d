import { silentLogger, type Logger } from '../../shared/log/index.js';
import type { Example } from '../../shared/protocol/index.js';
import { OutboxError, type AddResult, type Outbox, type OutboxStats } from './store.js';

export interface OutboxWriterOptions {
  outbox: Outbox;
  /** A queued example is committed at most this long after it was queued; default 100 ms. */
  flushMs?: number;
  /** Commit as soon as this many examples are queued (one transaction, one fsync); default 64. */
  batchRows?: number;
  /** Queued, uncommitted examples kept at most; past it `enqueue` refuses (counted, logged). Default 512. */
  maxPending?: number;
  log?: Logger;
}

/** What became of one queued example: the outbox's answer, or why it never reached the outbox. */
export type WriteResult = AddResult | { status: 'dropped'; cause: 'queue_full' | 'write_failed' | 'invalid' | 'stopped' };

export interface WriterStats {
  /** Queued, not yet committed. */
  pending: number;
  /** Transactions committed. */
  batches: number;
  /** Examples handed to the outbox in committed transactions (added, duplicate or dropped by the outbox). */
  written: number;
  /** Refused by `enqueue` because `maxPending` were already queued. */
  queueFull: number;
  /** Lost because their transaction failed (disk full, read-only file system, I/O error). */
  writeFailed: number;
  /** Commits that failed. */
  failedBatches: number;
  /** Refused by the outbox's schema check (a bug upstream, never expected). */
  invalid: number;
  /**
   * Lost examples (queueFull + writeFailed + invalid) not yet recorded in the outbox's persisted
   * counters: the disk refused that write too. Recorded after the next commit that succeeds.
   */
  unrecorded: number;
}

interface Pending {
  example: Example;
  done: ((r: WriteResult) => void) | undefined;
}

/**
 * Takes outbox writes off the request path (issue 9, item 5). The predict handler only queues an
 * example in memory; the writer commits the queue in one transaction every `flushMs`, or as soon as
 * `batchRows` are queued, so many selected examples share one fsync (the outbox runs
 * synchronous=FULL) instead of each request paying for its own.
 *
 * Durability: an example is on disk once its batch committed; `write()` resolves only then. Power
 * loss can lose the examples queued since the last commit (at most `flushMs` worth, at most
 * `batchRows` + what arrived during the commit), and nothing was acknowledged for those: no receipt
 * can exist for a row that was never stored, and the feedback route answers `stored` only after the
 * commit.
 *
 * better-sqlite3 commits on the event loop: the fsync of a batch still blocks it, but once per batch
 * rather than once per selected example (the edge bench measures the predict p99 both ways).
 */
export class OutboxWriter {
  private readonly outbox: Outbox;
  private readonly flushMs: number;
  private readonly batchRows: number;
  private readonly maxPending: number;
  private readonly log: Logger;
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private stopped = false;
  private readonly counts = { batches: 0, written: 0, queueFull: 0, writeFailed: 0, failedBatches: 0, invalid: 0, unrecorded: 0 };

  constructor({ outbox, flushMs = 100, batchRows = 64, maxPending = 512, log = silentLogger }: OutboxWriterOptions) {
    if (!(flushMs >= 0)) throw new RangeError(`flushMs must be >= 0, got ${flushMs}`);
    if (!Number.isSafeInteger(batchRows) || batchRows < 1) throw new RangeError(`batchRows must be a positive integer, got ${batchRows}`);
    if (!Number.isSafeInteger(maxPending) || maxPending < batchRows) throw new RangeError(`maxPending must be an integer >= batchRows, got ${maxPending}`);
    this.outbox = outbox;
    this.flushMs = flushMs;
    this.batchRows = batchRows;
    this.maxPending = maxPending;
    this.log = log;
  }

  /**
   * Queues an example and returns at once; `done` (optional) hears the outcome after the commit.
   * Returns false, after counting and logging it, when the queue is full or the writer is stopped.
   */
  enqueue(example: Example, done?: (r: WriteResult) => void): boolean {
    if (this.stopped || this.queue.length >= this.maxPending) {
      const cause = this.stopped ? 'stopped' : 'queue_full';
      if (cause === 'queue_full') {
        this.counts.queueFull++;
        this.counts.unrecorded++;
      }
      this.log.warn({ id: example.id, reason: example.reason, cause, pending: this.queue.length }, 'outbox/writer refused example');
      done?.({ status: 'dropped', cause });
      return false;
    }
    this.queue.push({ example, done });
    if (this.queue.length >= this.batchRows) {
      // Commit after the current turn, so the request that filled the batch still answers first.
      this.immediate ??= setImmediate(() => this.flush());
    } else {
      this.timer ??= setTimeout(() => this.flush(), this.flushMs);
    }
    return true;
  }

  /** Queues an example and resolves after its batch committed (or with why it was not stored). Never rejects. */
  write(example: Example): Promise<WriteResult> {
    return new Promise((resolve) => this.enqueue(example, resolve));
  }

  /** Commits everything queued now, in transactions of at most `batchRows`. */
  flush(): void {
    this.clearTimers();
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.batchRows);
      this.commit(batch);
    }
    this.recordLost();
  }

  /**
   * The outbox's counters with the examples this writer lost and could not record yet (the disk still
   * refuses writes) added to `selected` and `dropped`: what telemetry reports, so a full or read-only
   * disk shows up at the cloud while it lasts.
   */
  outboxStats(): OutboxStats {
    const s = this.outbox.stats();
    const n = this.counts.unrecorded;
    return n === 0 ? s : { ...s, selected: s.selected + n, dropped: s.dropped + n, lost: s.lost + n };
  }

  /** Commits what is queued and refuses anything later. Idempotent; call before the outbox is disposed. */
  stop(): void {
    if (this.stopped) return;
    this.flush();
    this.stopped = true;
  }

  stats(): WriterStats {
    return { pending: this.queue.length, ...this.counts };
  }

  private commit(batch: Pending[]): void {
    let results: WriteResult[];
    try {
      results = this.outbox.addBatch(batch.map((p) => p.example));
      this.counts.batches++;
      this.counts.written += batch.length;
    } catch (err) {
      // One invalid example (OutboxError, thrown before anything is written) must not sink the others.
      results = err instanceof OutboxError && !this.outbox.closed ? batch.map((p) => this.commitOne(p.example)) : this.failed(batch.length, err);
    }
    batch.forEach((p, i) => {
      if (!p.done) return;
      try {
        p.done(results[i]!);
      } catch (err) {
        this.log.error({ err }, 'outbox/writer done callback failed');
      }
    });
  }

  private commitOne(example: Example): WriteResult {
    try {
      const [r] = this.outbox.addBatch([example]);
      this.counts.batches++;
      this.counts.written++;
      return r!;
    } catch (err) {
      if (err instanceof OutboxError) {
        this.log.error({ id: example.id, err: err.message }, 'outbox/writer refused invalid example');
        this.counts.invalid++;
        this.counts.unrecorded++;
        return { status: 'dropped', cause: 'invalid' };
      }
      return this.failed(1, err)[0]!;
    }
  }

  /**
   * Nothing of the transaction is stored. Not retried here: a full or read-only disk would fail again
   * at once, and holding the rows would only grow memory; they are counted and logged instead.
   */
  private failed(n: number, err: unknown): WriteResult[] {
    this.counts.failedBatches++;
    this.counts.writeFailed += n;
    this.counts.unrecorded += n;
    const e = err as NodeJS.ErrnoException;
    this.log.error({ err: e.message, code: e.code, examples: n }, 'outbox/writer commit failed');
    return Array.from({ length: n }, () => ({ status: 'dropped', cause: 'write_failed' }));
  }

  /** Moves the unrecorded count into the outbox's persisted counters; kept for later if the disk still refuses. */
  private recordLost(): void {
    const n = this.counts.unrecorded;
    if (n === 0 || this.outbox.closed) return;
    try {
      this.outbox.recordLost(n);
      this.counts.unrecorded -= n;
      this.log.warn({ lost: n }, 'outbox/writer recorded examples lost to failed writes');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.log.debug({ err: e.message, code: e.code, unrecorded: n }, 'outbox/writer could not record lost examples yet');
    }
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }
}
