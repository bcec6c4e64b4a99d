import { sql } from 'drizzle-orm';
import type { Counter } from 'prom-client';
import { createBackoff, type BackoffOptions } from '../../edge/outbox/backoff.js';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';
import { storedExampleIds } from './ingest-counts.js';

/**
 * One example row: id, device, model, release, input, output (JSON text), reason, label, captured_at,
 * source image and its format (or nulls), ingested_at (last; filled in at commit).
 */
export type ExampleRowValues = [string, string, string | null, number | null, Buffer, string, string, number | null, string, Buffer | null, 'png' | 'jpeg' | null, string];

/** Rows per INSERT: 12 parameters each stays under SQLite's 32,766 bound parameters (PostgreSQL: 65,535). */
const ROWS_PER_INSERT = 2_000;

/**
 * Inserts the rows as a transaction body's steps (cloud/registry/tx.ts), a multi-row INSERT ... ON CONFLICT
 * (id) DO NOTHING per ROWS_PER_INSERT, and returns how many were new (from RETURNING, the same on both dialects).
 */
export function* insertExampleSteps(tx: TxDb, t: Tables, rows: readonly ExampleRowValues[], ingestedAt: string) {
  let inserted = 0;
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const values = rows.slice(i, i + ROWS_PER_INSERT).map((r) => ({
      id: r[0],
      deviceId: r[1],
      model: r[2],
      releaseSeq: r[3],
      input: r[4],
      // Already JSON text (the batch parser wrote it): bound as is, not encoded a second time by the json column.
      studentOutput: sql`${r[5]}`,
      reason: r[6],
      label: r[7],
      capturedAt: r[8],
      sourceImage: r[9],
      sourceFormat: r[10],
      ingestedAt,
    }));
    const out = yield* q(tx.insert(t.examples).values(values).onConflictDoNothing({ target: t.examples.id }).returning({ id: t.examples.id }));
    inserted += out.length;
  }
  return inserted;
}

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
  registry: StoreRegistry;
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
  /** Rows of the commit in flight (PostgreSQL commits asynchronously; SQLite's is done before it returns). */
  private inflight = 0;
  /** The commit in flight: one at a time, so rows commit in the order they were queued. */
  private committing: Promise<boolean> | undefined;
  /** Cancels the scheduled flush (a timeout or an immediate). */
  private cancelFlush: (() => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failing = false;
  private stopped = false;
  private readonly backoff: ReturnType<typeof createBackoff>;
  private readonly s: CommitStats = { inserted: 0, duplicates: 0, duplicatesSkipped: 0, flushes: 0, failedCommits: 0, backpressureWaits: 0 };

  constructor(private readonly deps: ExampleCommitterDeps) {
    this.backoff = createBackoff({ initialMs: 100, maxMs: 5_000, ...deps.retry });
  }

  stats(): CommitStats {
    return { ...this.s };
  }

  /** Rows accepted but not yet committed (pending, in flight and waiting for room). */
  uncommitted(): number {
    return this.queued() + this.blocked.reduce((a, b) => a + b.rows.length, 0);
  }

  /** Rows queued for a commit or in one. */
  private queued(): number {
    return this.pending.length + this.inflight;
  }

  /**
   * Of these rows, those not stored yet (a resend whose receipt was late or lost has its rows counted as
   * duplicates). One indexed read, no write. A failed read keeps every row: the insert's ON CONFLICT DO
   * NOTHING dedupes them as well, only dearer. Rows still pending (uncommitted) are not found here; the
   * insert dedupes those.
   */
  async unstored(rows: ExampleRowValues[]): Promise<ExampleRowValues[]> {
    let stored: Set<string>;
    try {
      stored = await storedExampleIds(this.deps.registry, rows.map((r) => r[0]));
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

  /**
   * Queues the rows now (pass them through `unstored` first); resolves once they are committed (never
   * rejects: failed commits are retried). With no rows it resolves without a transaction or an fsync.
   */
  add(rows: ExampleRowValues[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      if (this.queued() > 0 && this.queued() + rows.length > this.deps.maxPendingRows) {
        this.s.backpressureWaits++;
        this.deps.counter.inc({ result: 'backpressure' });
        this.blocked.push({ rows, resolve });
        return;
      }
      this.enqueue(rows, resolve);
    });
  }

  /**
   * Commits the pending rows in one transaction now. Resolves false when the commit failed (the rows
   * stay pending and a retry is scheduled). On SQLite the transaction is done before this returns.
   */
  flush(): Promise<boolean> {
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    // One commit at a time: rows queued meanwhile go in the next one.
    if (this.committing) return this.committing.then((ok) => (ok ? this.flush() : false));
    if (this.pending.length === 0) return Promise.resolve(true);
    this.committing = this.commit().finally(() => (this.committing = undefined));
    return this.committing;
  }

  private async commit(): Promise<boolean> {
    const rows = this.pending;
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    this.inflight = rows.length;
    let inserted: number;
    try {
      this.deps.beforeCommit?.();
      const ingestedAt = this.deps.now().toISOString();
      inserted = await this.deps.registry.tx((tx, t) => insertExampleSteps(tx, t, rows, ingestedAt));
    } catch (err) {
      // The rows go back in front of those queued meanwhile, their senders still waiting.
      this.pending = rows.concat(this.pending);
      this.waiters = waiters.concat(this.waiters);
      this.inflight = 0;
      this.s.failedCommits++;
      this.deps.counter.inc({ result: 'commit_failed' });
      const delay = this.backoff.next();
      // Every failure is logged: a streak of them means the registry is unwritable, which an operator must see.
      this.deps.log.error({ err, rows: rows.length, attempt: this.backoff.attempts, retryInMs: delay }, 'ingest/commit-failed');
      this.failing = true;
      if (!this.stopped) this.retryTimer = setTimeout(() => void this.flush(), delay);
      return false;
    }
    this.inflight = 0;
    if (this.failing) this.deps.log.warn({ rows: rows.length, attempts: this.backoff.attempts }, 'ingest/commit-recovered');
    this.failing = false;
    this.backoff.reset();
    this.s.flushes++;
    this.s.inserted += inserted;
    this.s.duplicates += rows.length - inserted;
    this.deps.counter.inc({ result: 'inserted' }, inserted);
    if (rows.length > inserted) this.deps.counter.inc({ result: 'duplicate' }, rows.length - inserted);
    this.deps.afterCommit?.();
    for (const w of waiters) w.resolve();
    this.admitBlocked();
    return true;
  }

  /** Commits what it can; rows that still fail stay uncommitted (their senders were never told "stored"). */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const left = this.uncommitted();
    if (left > 0) this.deps.log.warn({ rows: left }, 'ingest/stopped-uncommitted (not acknowledged: the devices send them again)');
  }

  private enqueue(rows: ExampleRowValues[], resolve: () => void): void {
    for (const r of rows) this.pending.push(r);
    this.waiters.push({ rows: rows.length, resolve });
    if (this.failing) return; // the retry timer commits them
    if (this.queued() >= this.deps.maxPendingRows) {
      void this.flush();
      return;
    }
    if (this.cancelFlush) return;
    if (this.deps.flushMs > 0) {
      const t = setTimeout(() => void this.flush(), this.deps.flushMs);
      this.cancelFlush = () => clearTimeout(t);
    } else {
      const i = setImmediate(() => void this.flush());
      this.cancelFlush = () => clearImmediate(i);
    }
  }

  private admitBlocked(): void {
    while (this.blocked.length > 0) {
      const next = this.blocked[0]!;
      if (this.queued() > 0 && this.queued() + next.rows.length > this.deps.maxPendingRows) return;
      this.blocked.shift();
      this.enqueue(next.rows, next.resolve);
    }
  }
}
