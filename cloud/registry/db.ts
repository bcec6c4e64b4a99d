import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import * as schema from './schema.js';
import { runSync, type RegistryDb, type Tables, type TxBody } from './tx.js';

export type { RegistryDb, TxDb } from './tx.js';

/**
 * The cloud server's busy timeout (issue 9): a locked registry blocks the event loop (MQTT keep-alives,
 * the API) at most this long per statement. Ingest, device state and device events retry their writes
 * asynchronously with backoff; an API request that meets the lock is answered 503 with Retry-After.
 */
export const REGISTRY_BUSY_TIMEOUT_MS = 200;

/** True for SQLite's "database is locked" (SQLITE_BUSY*) after the busy timeout ran out. */
export function isRegistryBusy(err: unknown): boolean {
  return /^SQLITE_BUSY/.test(String((err as { code?: unknown } | null)?.code ?? ''));
}

/** Committed migrations live beside the schema source; from dist/ we reach back to them. */
function migrationsFolder(): string {
  const candidates = [new URL('./migrations', import.meta.url), new URL('../../../cloud/registry/migrations', import.meta.url)].map((u) => fileURLToPath(u));
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`registry migrations not found (looked in ${candidates.join(', ')})`);
  return found;
}

/**
 * The registry database: a real SQLite file (WAL) with the committed migrations applied at open.
 * Native handle, so it is a class with an explicit dispose().
 *
 * Stores written for both dialects (issue 15) take a `StoreRegistry` (./open.ts) and use only `t`, `q` and
 * `tx`; `db` and `sqlite` are this dialect's own, for the callers not converted yet.
 */
export class Registry {
  readonly dialect = 'sqlite' as const;
  /** The tables, for stores that serve both dialects. */
  readonly t: Tables = schema;
  private constructor(
    readonly sqlite: Database.Database,
    readonly db: RegistryDb,
  ) {}

  /** The query builder for single statements; `await` them (never `.all()/.get()/.run()`, SQLite-only). */
  get q(): RegistryDb {
    return this.db;
  }

  /**
   * Runs a transaction body (./tx.ts) synchronously inside one better-sqlite3 transaction, taken with
   * BEGIN IMMEDIATE: a body reads then writes, and two processes on the same file (the cloud and its round
   * worker) must serialise on the write lock up front, not fail at the write when the other committed
   * after this one's read (SQLITE_BUSY_SNAPSHOT). Inside a caller's transaction it becomes a savepoint.
   */
  async tx<R>(body: TxBody<R>): Promise<R> {
    return this.db.transaction((tx) => runSync(tx, this.t, body), { behavior: 'immediate' });
  }

  async close(): Promise<void> {
    this.dispose();
  }

  /**
   * `busyTimeoutMs`: how long a statement waits for another connection's write lock, blocking the event
   * loop meanwhile (better-sqlite3 is synchronous). The cloud server passes REGISTRY_BUSY_TIMEOUT_MS
   * (its writers retry asynchronously); one-shot tools keep the default 5 s.
   */
  static open(path: string, { busyTimeoutMs = 5000 }: { busyTimeoutMs?: number } = {}): Registry {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const sqlite = new Database(path);
    sqlite.pragma('journal_mode = WAL');
    // FULL: every commit fsyncs the WAL, so what ingest acknowledged (PUBACK, receipt) survives power loss;
    // NORMAL may lose the last transactions (issue 9). The cost is measured in bench:cloud.
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    const db = drizzle(sqlite, { schema });
    migrate(db, { migrationsFolder: migrationsFolder() });
    return new Registry(sqlite, db);
  }

  dispose(): void {
    if (this.sqlite.open) this.sqlite.close();
  }
}
