import type { Statement } from 'better-sqlite3';
import type { Counter } from 'prom-client';
import { createBackoff, type BackoffOptions } from '../../edge/outbox/backoff.js';
import type { Logger } from '../../shared/log/index.js';
import type { Registry } from '../registry/db.js';

/**
 * One example row as bound to INSERT_EXAMPLE: id, device, model, release, input, output, reason, label,
 * captured_at, source image and its format (or nulls), ingested_at (last, filled in at commit).
 */
export type ExampleRowValues = [string, string, string | null, number | null, Buffer, string, string, number | null, string, Buffer | null, 'png' | 'jpeg' | null, string];
const INGESTED_AT = 11;

const INSERT_EXAMPLE = `INSERT INTO examples (id, device_id, model, release_seq, input, student_output, reason, label, captured_at, source_image, source_format, ingested_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`;

export interface CommitStats {
  inserted: number;
  /** Rows whose UUID was already stored (redelivered or resent batches). */
  duplicates: number;
  /** Of `duplicates`, those found stored before queueing (no transaction spent on them). */
  duplicatesSkipped: number;
  /** Successful transactions. */
  flushes: number;
  /** Failed transactions; their rows stay pending and are retried. */
  failedCommits: number;
  /** Times a batch had to wait because `maxPendingRows` rows were already uncommitted. */
  backpressureWaits: number;
}

export interface ExampleCommitterDeps {
  registry: Registry;
  log: Logger;
  now: () => Date;
  /** Per-result counter (`inserted`, `duplicate`, `commit_failed`, `backpressure`). */
  counter: Counter<'result'>;
  /** 0 (default): commit on the next turn of the event loop; batches added in the same turn share it. */
  flushMs: number;
  maxPendingRows: number;
  retry?: BackoffOptions;
  /** Fault drills: runs before each commit attempt (rows received, nothing on disk yet). */
  beforeCommit?: () => void;
  /** Fault drills: runs after each commit, before anyone is told (the ack window). */
  afterCommit?: () => void;
}

interface Waiter {
  rows: number;
  resolve: () => void;
}

/**
 * Group commit of example rows with a promise per batch that settles only after its rows are on disk
 * (issue 9: "acknowledged only after stored"). A failed transaction keeps its rows and is retried with
 * exponential backoff and jitter, forever: nothing is counted as dropped, and nobody is told "stored"
 * until it is. At most `maxPendingRows` rows wait uncommitted; a batch that would exceed it waits for
 * the next commit before it is queued (the caller's promise waits, so MQTT stops consuming).
 */
export class ExampleCommitter {
  private pending: ExampleRowValues[] = [];
  private waiters: Waiter[] = [];
  /** Batches waiting for room under maxPendingRows. */
  private blocked: { rows: ExampleRowValues[]; resolve: () => void }[] = [];
  /** Cancels the scheduled flush (a timeout or an immediate). */
  private cancelFlush: (() => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failing = false;
  private readonly backoff: ReturnType<typeof createBackoff>;
  private readonly insert: Statement<ExampleRowValues>;
  private readonly storedAmong: Statement<[string], string>;
  private readonly s: CommitStats = { inserted: 0, duplicates: 0, duplicatesSkipped: 0, flushes: 0, failedCommits: 0, backpressureWaits: 0 };

  constructor(private readonly deps: ExampleCommitterDeps) {
    this.backoff = createBackoff({ initialMs: 100, maxMs: 5_000, ...deps.retry });
    // Hot path: one prepared statement, not a query builder per row.
    this.insert = deps.registry.sqlite.prepare<ExampleRowValues>(INSERT_EXAMPLE);
    this.storedAmong = deps.registry.sqlite.prepare<[string], string>('SELECT id FROM examples WHERE id IN (SELECT value FROM json_each(?))').pluck();
  }

  stats(): CommitStats {
    return { ...this.s };
  }

  /** Rows accepted but not yet committed (pending + waiting for room). */
  uncommitted(): number {
    return this.pending.length + this.blocked.reduce((a, b) => a + b.rows.length, 0);
  }

  /**
   * Queues the rows; resolves once they are committed (never rejects: failed commits are retried).
   * Rows already stored (a resend whose receipt was late or lost) are counted as duplicates and not
   * queued; when none is left it resolves at once, without a transaction or an fsync.
   */
  add(all: ExampleRowValues[]): Promise<void> {
    const rows = this.withoutStored(all);
    if (rows.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      if (this.pending.length > 0 && this.pending.length + rows.length > this.deps.maxPendingRows) {
        this.s.backpressureWaits++;
        this.deps.counter.inc({ result: 'backpressure' });
        this.blocked.push({ rows, resolve });
        return;
      }
      this.enqueue(rows, resolve);
    });
  }

  /**
   * Commits the pending rows in one transaction now. Returns false when the commit failed (the rows
   * stay pending and a retry is scheduled). Synchronous (better-sqlite3).
   */
  flush(): boolean {
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const rows = this.pending;
    if (rows.length === 0) return true;
    this.deps.beforeCommit?.();
    const insert = this.insert;
    const ingestedAt = this.deps.now().toISOString();
    let inserted: number;
    try {
      inserted = this.deps.registry.sqlite.transaction(() => {
        let n = 0;
        for (const r of rows) {
          r[INGESTED_AT] = ingestedAt;
          n += insert.run(...r).changes;
        }
        return n;
      })();
    } catch (err) {
      this.s.failedCommits++;
      this.deps.counter.inc({ result: 'commit_failed' });
      const delay = this.backoff.next();
      // Every failure is logged: a streak of them means the registry is unwritable, which an operator must see.
      this.deps.log.error({ err, rows: rows.length, attempt: this.backoff.attempts, retryInMs: delay }, 'ingest/commit-failed');
      this.failing = true;
      this.retryTimer = setTimeout(() => this.flush(), delay);
      return false;
    }
    if (this.failing) this.deps.log.warn({ rows: rows.length, attempts: this.backoff.attempts }, 'ingest/commit-recovered');
    this.failing = false;
    this.backoff.reset();
    this.pending = [];
    this.s.flushes++;
    this.s.inserted += inserted;
    this.s.duplicates += rows.length - inserted;
    this.deps.counter.inc({ result: 'inserted' }, inserted);
    if (rows.length > inserted) this.deps.counter.inc({ result: 'duplicate' }, rows.length - inserted);
    this.deps.afterCommit?.();
    const done = this.waiters;
    this.waiters = [];
    for (const w of done) w.resolve();
    this.admitBlocked();
    return true;
  }

  /** Commits what it can; rows that still fail stay uncommitted (their senders were never told "stored"). */
  stop(): void {
    this.flush();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const left = this.uncommitted();
    if (left > 0) this.deps.log.warn({ rows: left }, 'ingest/stopped-uncommitted (not acknowledged: the devices send them again)');
  }

  /**
   * One indexed read, no write. A failed read keeps every row: the insert's ON CONFLICT DO NOTHING
   * dedupes them as well, only dearer. Rows still pending (uncommitted) are not found here; the
   * insert dedupes those.
   */
  private withoutStored(rows: ExampleRowValues[]): ExampleRowValues[] {
    let stored: Set<string>;
    try {
      stored = new Set(this.storedAmong.all(JSON.stringify(rows.map((r) => r[0]))));
    } catch (err) {
      this.deps.log.warn({ err }, 'ingest/duplicate-check-failed: queueing every row');
      return rows;
    }
    if (stored.size === 0) return rows;
    this.s.duplicates += stored.size;
    this.s.duplicatesSkipped += stored.size;
    this.deps.counter.inc({ result: 'duplicate' }, stored.size);
    return rows.filter((r) => !stored.has(r[0]));
  }

  private enqueue(rows: ExampleRowValues[], resolve: () => void): void {
    for (const r of rows) this.pending.push(r);
    this.waiters.push({ rows: rows.length, resolve });
    if (this.failing) return; // the retry timer commits them
    if (this.pending.length >= this.deps.maxPendingRows) {
      this.flush();
      return;
    }
    if (this.cancelFlush) return;
    if (this.deps.flushMs > 0) {
      const t = setTimeout(() => this.flush(), this.deps.flushMs);
      this.cancelFlush = () => clearTimeout(t);
    } else {
      const i = setImmediate(() => this.flush());
      this.cancelFlush = () => clearImmediate(i);
    }
  }

  private admitBlocked(): void {
    while (this.blocked.length > 0) {
      const next = this.blocked[0]!;
      if (this.pending.length > 0 && this.pending.length + next.rows.length > this.deps.maxPendingRows) return;
      this.blocked.shift();
      this.enqueue(next.rows, next.resolve);
    }
  }
}
