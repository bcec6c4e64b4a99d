import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { exampleSchema, formatIssues, type Example } from '../../shared/protocol/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { OutboxError, migrate, prepare } from './schema.js';

export { OutboxError, SCHEMA_VERSION } from './schema.js';

/**
 * Eviction classes, cheapest to lose first. `audit` samples are random traffic (replaceable), `hard`
 * examples were picked by the selector, `feedback` rows carry a label a user typed in (irreplaceable).
 */
export const EXAMPLE_KINDS = ['audit', 'hard', 'feedback'] as const;
export type ExampleKind = (typeof EXAMPLE_KINDS)[number];
const PRIORITY: Record<ExampleKind, number> = { audit: 0, hard: 1, feedback: 2 };

export function kindOf(reason: Example['reason']): ExampleKind {
  return reason === 'audit' || reason === 'feedback' ? reason : 'hard';
}


export interface OutboxOptions {
  /** SQLite file (its directory is created), or `:memory:` for throwaway use. */
  path: string;
  /** Upper bound on stored rows. */
  maxRows: number;
  /** Upper bound on the sum of stored payload bytes (UTF-8 JSON of each example). */
  maxBytes: number;
  log?: Logger;
  /** Wall-clock milliseconds for `created_at`; defaults to `Date.now`. Ordering uses an insertion sequence, not this. */
  now?: () => number;
  /**
   * Largest example JSON (base64 input included) that still fits one MQTT message once the batch
   * envelope and the PUBLISH header are added (`maxExampleBytes()` in example.ts computes it from the
   * broker's maximum packet). A larger one could never be delivered and would block the queue, so `add`
   * refuses it (`dropped`, cause `oversized`). Default: no limit.
   */
  maxExampleBytes?: number;
}

/** Persisted in the `meta` table, so they survive restarts. */
export interface OutboxCounters {
  /** New examples offered to `add` (duplicates of a stored UUID excluded). */
  selected: number;
  /** Rows deleted after their delivery was confirmed: the cloud's `stored` receipt (or, for a cloud without receipts, the broker's PUBACK). */
  published: number;
  /** Rows deleted to make room for newer ones. */
  evicted: number;
  /** Examples refused: larger than `maxBytes` or one MQTT message, no room among rows it may evict, unreadable on read-back, or refused by the cloud. */
  dropped: number;
  /** Of `dropped`: rows the cloud refused for good (a `refused` receipt: malformed, unknown device, oversized). */
  refused: number;
  /**
   * Of `selected` and `dropped`: examples that never reached the store because the writer's commit
   * failed (disk full, read-only file system) or its queue was full. Recorded by `recordLost` once a
   * write succeeds again; until then the writer holds the count (`OutboxWriter.stats().unrecorded`).
   */
  lost: number;
}

/** `telemetrySchema.outbox` plus `refused`. Invariant: selected = depth + published + evicted + dropped. */
export interface OutboxStats extends OutboxCounters {
  depth: number;
  bytes: number;
}

export type AddResult =
  | { status: 'added'; evicted: number }
  | { status: 'duplicate' }
  | { status: 'dropped'; cause: 'too_large' | 'full' | 'oversized' };

export interface OutboxRow {
  id: string;
  kind: ExampleKind;
  bytes: number;
  createdAt: number;
  example: Example;
}

const COUNTER_KEYS = ['selected', 'published', 'evicted', 'dropped', 'refused', 'lost'] as const;

/**
 * Store-and-forward queue of examples in SQLite (WAL, synchronous=FULL: a row that `add` returned
 * for survives power loss). The row on disk is the source of truth; a row leaves only when its delivery
 * is confirmed (`acknowledge`: the cloud's `stored` receipt), the cloud refused it for good (`refuse`),
 * or eviction makes room. A `deferred` receipt keeps the row and holds it back (`defer`).
 *
 * Eviction policy, when an add would exceed `maxRows` or `maxBytes`:
 * - victims are taken in class order audit → hard → feedback, oldest (insertion order) first within
 *   a class, until the new row fits;
 * - a row never evicts a row of a more valuable class than its own (a new audit sample cannot push out
 *   a hard example or a user label), and a user label never evicts a hard example (a flood of feedback
 *   must not replace what the selector chose; issue 10); if it cannot fit otherwise, the new row is
 *   dropped instead and nothing is evicted;
 * - an example larger than `maxBytes` on its own is dropped.
 * Evicted and dropped examples are counted (persisted). A row evicted while in flight may still reach
 * the cloud; it is then counted as evicted, not published.
 */
export class Outbox {
  private rows = 0;
  private totalBytes = 0;
  private readonly cache: OutboxCounters;
  private readonly listeners = new Set<() => void>();
  private disposed = false;
  private readonly sql: ReturnType<typeof prepare>;

  private constructor(
    private readonly db: Database.Database,
    private readonly opts: Required<OutboxOptions>,
  ) {
    this.sql = prepare(db);
    const totals = db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM outbox').get() as { n: number; b: number };
    this.rows = totals.n;
    this.totalBytes = totals.b;
    this.cache = { selected: 0, published: 0, evicted: 0, dropped: 0, refused: 0, lost: 0 };
    this.reloadCounters();
  }

  /**
   * Opens (creating if needed) the outbox file and applies its schema.
   *
   * @example
   * const outbox = await Outbox.create({ path: '/var/lib/apprentice/outbox.db', maxRows: 10_000, maxBytes: 64 << 20 });
   */
  static async create({ path, maxRows, maxBytes, log = silentLogger, now = Date.now, maxExampleBytes = Infinity }: OutboxOptions): Promise<Outbox> {
    if (!Number.isSafeInteger(maxRows) || maxRows < 1) throw new OutboxError(`maxRows must be a positive integer, got ${maxRows}`);
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) throw new OutboxError(`maxBytes must be a positive integer, got ${maxBytes}`);
    if (maxExampleBytes !== Infinity && (!Number.isSafeInteger(maxExampleBytes) || maxExampleBytes < 1)) throw new OutboxError(`maxExampleBytes must be a positive integer, got ${maxExampleBytes}`);
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    try {
      db.pragma('journal_mode = WAL');
      // FULL: the WAL is fsynced on every commit, so an acknowledged add survives power loss (NORMAL would not).
      db.pragma('synchronous = FULL');
      db.pragma('busy_timeout = 5000');
      migrate(db);
    } catch (err) {
      db.close();
      throw err;
    }
    const outbox = new Outbox(db, { path, maxRows, maxBytes, log, now, maxExampleBytes });
    log.info({ path, depth: outbox.rows, bytes: outbox.totalBytes }, 'outbox opened');
    return outbox;
  }

  /**
   * Stores an example (validated against `exampleSchema`; invalid ones throw OutboxError) in its own
   * transaction, fsynced before it returns. Idempotent on the example UUID: a second add of a stored id
   * changes nothing. The daemon's request path does not call this: it goes through `OutboxWriter`,
   * which commits many examples per fsync with `addBatch`.
   */
  add(example: Example): AddResult {
    return this.addBatch([example])[0]!;
  }

  /**
   * Stores several examples in one transaction (one fsync under synchronous=FULL): all of them or, if
   * the commit fails (disk full, read-only file system), none, and the error is thrown. Each example
   * gets its own result, with the same rules as `add`; every example is validated before anything is
   * written, so an invalid one throws OutboxError and stores nothing.
   */
  addBatch(examples: readonly Example[]): AddResult[] {
    this.assertOpen();
    const prepared = examples.map((example) => {
      const parsed = exampleSchema.safeParse(example);
      if (!parsed.success) throw new OutboxError(`invalid example: ${formatIssues(parsed.error)}`);
      const json = JSON.stringify(parsed.data);
      return { ex: parsed.data, json, bytes: Buffer.byteLength(json) };
    });
    const outcome = this.db.transaction(() => {
      let freedRows = 0;
      let freedBytes = 0;
      const res = prepared.map((p) => {
        const r = this.insertOne(p.ex, p.json, p.bytes, freedRows, freedBytes);
        freedRows += r.freedRows;
        freedBytes += r.freedBytes;
        return r.res;
      });
      return { res, freedRows, freedBytes };
    }).immediate();

    // Caches change only after the commit, so a failed transaction cannot leave them wrong.
    this.rows -= outcome.freedRows;
    this.totalBytes -= outcome.freedBytes;
    this.reloadCounters();
    let added = false;
    outcome.res.forEach((res, i) => {
      const { ex, bytes } = prepared[i]!;
      if (res.status === 'dropped') this.opts.log.warn({ id: ex.id, reason: ex.reason, bytes, cause: res.cause, ...(res.cause === 'oversized' ? { maxExampleBytes: this.opts.maxExampleBytes } : {}) }, 'outbox dropped example');
      if (res.status === 'added') {
        added = true;
        if (res.evicted > 0) this.opts.log.debug({ evicted: res.evicted, kind: kindOf(ex.reason) }, 'outbox evicted rows');
      }
    });
    if (added) {
      for (const l of this.listeners) {
        try {
          l();
        } catch (err) {
          this.opts.log.error({ err }, 'outbox/added listener failed');
        }
      }
    }
    return outcome.res;
  }

  /**
   * One example inside the caller's transaction. `pendingRows`/`pendingBytes` are what earlier inserts
   * of the same transaction freed (negative: added), since the caches change only after the commit.
   */
  private insertOne(ex: Example, json: string, bytes: number, pendingRows: number, pendingBytes: number): { res: AddResult; freedRows: number; freedBytes: number } {
    const kind = kindOf(ex.reason);
    const priority = PRIORITY[kind];
    const { maxRows, maxBytes, maxExampleBytes } = this.opts;
    if (this.sql.exists.get(ex.id)) return { res: { status: 'duplicate' }, freedRows: 0, freedBytes: 0 };
    this.bump('selected', 1);
    if (bytes > maxExampleBytes || bytes > maxBytes) {
      this.bump('dropped', 1);
      return { res: { status: 'dropped', cause: bytes > maxExampleBytes ? 'oversized' : 'too_large' }, freedRows: 0, freedBytes: 0 };
    }
    let needRows = this.rows - pendingRows + 1 - maxRows;
    let needBytes = this.totalBytes - pendingBytes + bytes - maxBytes;
    const victims: { id: string; bytes: number }[] = [];
    if (needRows > 0 || needBytes > 0) {
      // Collect first: better-sqlite3 forbids other statements while an iterator is open.
      const candidates = this.sql.victims.iterate(priority, priority) as IterableIterator<{ id: string; bytes: number }>;
      for (const v of candidates) {
        victims.push(v);
        needRows--;
        needBytes -= v.bytes;
        if (needRows <= 0 && needBytes <= 0) break;
      }
      if (needRows > 0 || needBytes > 0) {
        this.bump('dropped', 1);
        return { res: { status: 'dropped', cause: 'full' }, freedRows: 0, freedBytes: 0 };
      }
      for (const v of victims) this.sql.delete.run(v.id);
      this.bump('evicted', victims.length);
    }
    const seq = this.bump('seq', 1);
    this.sql.insert.run(ex.id, seq, ex.reason, kind, priority, bytes, this.opts.now(), json);
    const freedBytes = victims.reduce((a, v) => a + v.bytes, 0);
    return { res: { status: 'added', evicted: victims.length }, freedRows: victims.length - 1, freedBytes: freedBytes - bytes };
  }
  /**
   * The oldest rows, in insertion order: at most `limit`, and at most `maxBytes` of payload (one byte
   * per row added for the separator) — but always at least one row when any exist, so an example
   * bigger than a batch still leaves. A stored row that no longer parses (e.g. after a schema change)
   * is deleted and counted as dropped rather than blocking the queue forever. Rows in `exclude` (in
   * flight) and rows deferred by the cloud until later than now are skipped.
   */
  peek({ limit, maxBytes = Infinity, exclude }: { limit: number; maxBytes?: number; exclude?: ReadonlySet<string> }): OutboxRow[] {
    this.assertOpen();
    const out: OutboxRow[] = [];
    const bad: string[] = [];
    let total = 0;
    const rows = this.sql.oldest.iterate(this.opts.now()) as IterableIterator<{ id: string; kind: ExampleKind; bytes: number; created_at: number; payload: string }>;
    for (const r of rows) {
      if (out.length >= limit) break;
      if (exclude?.has(r.id)) continue;
      if (out.length > 0 && total + r.bytes + 1 > maxBytes) break;
      let example: Example | undefined;
      try {
        const p = exampleSchema.safeParse(JSON.parse(r.payload));
        if (p.success) example = p.data;
      } catch {
        example = undefined;
      }
      if (!example) {
        bad.push(r.id);
        continue;
      }
      total += r.bytes + 1;
      out.push({ id: r.id, kind: r.kind, bytes: r.bytes, createdAt: r.created_at, example });
    }
    if (bad.length > 0) {
      this.opts.log.error({ ids: bad }, 'outbox dropped unreadable rows');
      this.deleteRows(bad, 'dropped');
    }
    return out;
  }

  /** Deletes rows whose delivery is confirmed and counts them as published. Unknown ids are ignored. */
  acknowledge(ids: readonly string[]): number {
    this.assertOpen();
    return this.deleteRows(ids, 'published');
  }

  /** Deletes rows the cloud refused for good; counted as dropped and as refused. Unknown ids are ignored. */
  refuse(ids: readonly string[]): number {
    this.assertOpen();
    return this.deleteRows(ids, 'dropped', 'refused');
  }

  /** Keeps rows the cloud deferred, not to be sent again before `untilMs` (wall clock). Returns rows changed. */
  defer(ids: readonly string[], untilMs: number): number {
    this.assertOpen();
    if (ids.length === 0) return 0;
    return this.db.transaction(() => {
      let n = 0;
      for (const id of new Set(ids)) n += this.sql.defer.run(untilMs, id).changes;
      return n;
    }).immediate();
  }

  /**
   * Persists `n` examples that were selected but never stored (counted as selected, dropped and lost),
   * so the invariant selected = depth + published + evicted + dropped holds for them too. Throws when
   * the write fails (the caller keeps the count and tries again later).
   */
  recordLost(n: number): void {
    this.assertOpen();
    if (!Number.isSafeInteger(n) || n <= 0) return;
    this.db.transaction(() => {
      this.bump('selected', n);
      this.bump('dropped', n);
      this.bump('lost', n);
    }).immediate();
    this.reloadCounters();
  }

  depth(): number {
    return this.rows;
  }

  bytes(): number {
    return this.totalBytes;
  }

  counters(): OutboxCounters {
    return { ...this.cache };
  }

  stats(): OutboxStats {
    return { depth: this.rows, bytes: this.totalBytes, ...this.cache };
  }

  /** Called after each newly stored row (not for duplicates or drops). Returns an unsubscribe function. */
  onAdded(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get closed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.listeners.clear();
    this.db.close();
  }

  /**
   * Deletes settled rows with synchronous=NORMAL for this one transaction: no fsync. A delete lost to
   * power loss only brings the row back, which is sent again and receipted again as a duplicate
   * (the cloud dedupes by id), so it needs no fsync of its own; the next FULL commit (an add) fsyncs
   * the WAL with it. Under a receipt per batch this halves the device's fsyncs.
   */
  private deleteRows(ids: readonly string[], counter: 'published' | 'dropped', also?: 'refused'): number {
    if (ids.length === 0) return 0;
    this.db.pragma('synchronous = NORMAL');
    try {
      return this.deleteRowsTx(ids, counter, also);
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  private deleteRowsTx(ids: readonly string[], counter: 'published' | 'dropped', also?: 'refused'): number {
    const { n, b } = this.db.transaction(() => {
      let count = 0;
      let freed = 0;
      for (const id of new Set(ids)) {
        const row = this.sql.bytesOf.get(id) as { bytes: number } | undefined;
        if (!row) continue;
        this.sql.delete.run(id);
        count++;
        freed += row.bytes;
      }
      if (count > 0) this.bump(counter, count);
      if (count > 0 && also) this.bump(also, count);
      return { n: count, b: freed };
    }).immediate();
    this.rows -= n;
    this.totalBytes -= b;
    this.reloadCounters();
    return n;
  }

  /** Adds to a persisted counter inside the caller's transaction; returns the new value. */
  private bump(key: (typeof COUNTER_KEYS)[number] | 'seq', by: number): number {
    return (this.sql.bump.get(key, by) as { value: number }).value;
  }

  private reloadCounters(): void {
    for (const r of this.sql.meta.all() as { key: string; value: number }[]) {
      if ((COUNTER_KEYS as readonly string[]).includes(r.key)) this.cache[r.key as keyof OutboxCounters] = r.value;
    }
  }

  private assertOpen(): void {
    if (this.disposed) throw new OutboxError('outbox is disposed');
  }
}
