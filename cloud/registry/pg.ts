import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import * as pgSchema from './schema-pg.js';
import { runAsync, type RegistryDb, type Tables, type TxBody, type TxDb } from './tx.js';

/** The URL with its password replaced, for errors and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable registry URL>';
  }
}

/** Committed PostgreSQL migrations live beside the schema source; from dist/ we reach back to them. */
function migrationsFolder(): string {
  const candidates = [new URL('./migrations-pg', import.meta.url), new URL('../../../cloud/registry/migrations-pg', import.meta.url)].map((u) => fileURLToPath(u));
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`registry PostgreSQL migrations not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** Serialization failure and deadlock: the transaction did nothing and may simply run again. */
function isRetryable(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (e.code === '40001' || e.code === '40P01') return true;
  }
  return false;
}

/** Attempts of one transaction body when PostgreSQL reports a serialization failure or deadlock. */
export const PG_TX_MAX_ATTEMPTS = 10;

/** Held while one replica applies migrations, so replicas starting together do not race. */
const MIGRATE_LOCK = 0x61707072; // 'appr'

export interface PgRegistryOptions {
  url: string;
  /** Connections in the pool (node-postgres default 10). */
  poolSize?: number;
  log?: Logger;
}

/**
 * The registry on PostgreSQL (issue 15): a pg.Pool, drizzle-orm/node-postgres and the committed
 * migrations-pg applied at open. Same store interface as the SQLite Registry: `t`, `q`, `tx`, `close`.
 */
export class PgRegistry {
  readonly dialect = 'postgres' as const;
  /**
   * The PostgreSQL tables typed as the SQLite schema's: stores are written once against those types, and
   * the twin tables have the same names and give the same JS values at runtime (the drift test checks
   * names; schema-pg.ts says how the types correspond). The one place the dialects are cast together.
   */
  readonly t: Tables = pgSchema as unknown as Tables;
  /** Transactions that ran again after a serialization failure or deadlock, and those that gave up. */
  readonly txStats = { retried: 0, failed: 0 };

  private constructor(
    readonly pool: pg.Pool,
    /** This dialect's own drizzle database, for PostgreSQL-only code (leader election, LISTEN). */
    readonly pg: NodePgDatabase<typeof pgSchema>,
    readonly url: string,
    private readonly log: Logger,
  ) {}

  /** Connects, applies migrations under an advisory lock, and fails naming the (redacted) URL when unreachable. */
  static async open({ url, poolSize, log = silentLogger }: PgRegistryOptions): Promise<PgRegistry> {
    const pool = new pg.Pool({ connectionString: url, max: poolSize, keepAlive: true });
    // An idle client's error (server restart) must not crash the process; the next query reconnects.
    pool.on('error', (err) => log.warn({ err, registry: redactUrl(url) }, 'registry/pg idle connection error'));
    // The pool listens only while a client is idle. A client checked out between two statements (inside a
    // transaction body, say) whose session the server ends emits 'error' with no query to fail; without a
    // listener of its own that would crash the process. Its next statement fails, and the pool drops it.
    pool.on('connect', (client) => {
      client.on('error', (err) => log.warn({ err, registry: redactUrl(url) }, 'registry/pg connection error on a checked-out client'));
    });
    const db = drizzle({ client: pool, schema: pgSchema });
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      await pool.end().catch(() => {});
      throw new Error(`registry: cannot connect to PostgreSQL at ${redactUrl(url)}: ${(err as Error).message}`, { cause: err });
    }
    try {
      await client.query('select pg_advisory_lock($1)', [MIGRATE_LOCK]);
      await migrate(db, { migrationsFolder: migrationsFolder() });
    } catch (err) {
      client.release(true);
      await pool.end().catch(() => {});
      throw new Error(`registry: migrating PostgreSQL at ${redactUrl(url)} failed: ${(err as Error).message}`, { cause: err });
    }
    await client.query('select pg_advisory_unlock($1)', [MIGRATE_LOCK]).finally(() => client.release());
    // SQLite compares text bytewise; a linguistic collation orders ids and names differently (ORDER BY, paging).
    const { rows } = await pool.query<{ c: string }>('select datcollate as c from pg_database where datname = current_database()');
    if (!/^(C|POSIX|C\.utf-?8)$/i.test(rows[0]?.c ?? '')) log.warn({ collation: rows[0]?.c, registry: redactUrl(url) }, 'registry/pg database collation is not C: text sorts differently from SQLite (create the database with LC_COLLATE \'C\')');
    return new PgRegistry(pool, db, url, log);
  }

  /** The query builder for single statements (typed as SQLite's, see `t`); `await` them. */
  get q(): RegistryDb {
    return this.pg as unknown as RegistryDb;
  }

  /**
   * Runs a transaction body (./tx.ts) in one PostgreSQL transaction at SERIALIZABLE, the isolation SQLite's
   * single writer gives, so read-then-write bodies behave the same on both dialects. A serialization
   * failure or deadlock runs the body again after a jittered backoff, up to PG_TX_MAX_ATTEMPTS times (logged
   * and counted in txStats).
   */
  async tx<R>(body: TxBody<R>): Promise<R> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.pg.transaction((tx) => runAsync(tx as unknown as TxDb, this.t, body), { isolationLevel: 'serializable' });
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (attempt >= PG_TX_MAX_ATTEMPTS) {
          this.txStats.failed++;
          this.log.warn({ attempts: attempt }, 'registry/pg transaction refused: serialization failures on every attempt');
          throw new Error(`registry: transaction failed ${attempt} times on serialization conflicts`, { cause: err });
        }
        this.txStats.retried++;
        this.log.debug({ attempt }, 'registry/pg transaction retried after a serialization failure');
        // Jittered exponential backoff, so bodies contending for one row stop colliding in lockstep.
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(250, 5 * 2 ** attempt)));
      }
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
