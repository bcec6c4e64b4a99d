import type { BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import type * as schema from './schema.js';

/**
 * One transaction body for both registry dialects (issue 15).
 *
 * Why hand-written: better-sqlite3 transactions must stay synchronous inside (it refuses a transaction
 * function that returns a promise, and anything after an `await` would run outside it), while node-postgres
 * transactions are asynchronous. drizzle has no construct that serves both, so a body is a generator that
 * yields each statement (`yield* q(tx.select()...)`) to a runner: on SQLite the runner executes every
 * statement synchronously inside better-sqlite3's own transaction, so nothing interleaves; on PostgreSQL it
 * awaits each inside `db.transaction(async tx => ...)`. One body, a real transaction on both.
 *
 * Rules for a body (they make it re-runnable, which the PostgreSQL runner relies on to retry a
 * serialization failure): no side effects but the yielded statements; do not catch a statement's error
 * inside the body (PostgreSQL aborts the whole transaction on an error, SQLite does not; use
 * `onConflictDoNothing()` and friends instead); use `.returning()` when the body needs written rows (the
 * result of a write without it is dialect-specific and must not be read).
 */

/** The tables of the registry, typed as the SQLite schema's (the PostgreSQL twin gives the same JS values). */
export type Tables = typeof schema;
export type RegistryDb = BetterSQLite3Database<Tables>;
/** A transaction of either dialect, typed as SQLite's: build statements on it, never execute them yourself. */
export type TxDb = Parameters<Parameters<RegistryDb['transaction']>[0]>[0];
/** A statement yielded to the runner: a drizzle query builder of the body's transaction. */
export type Statement = PromiseLike<unknown>;
export type TxBody<R> = (tx: TxDb, t: Tables) => Generator<Statement, R, unknown>;

/**
 * Executes one statement of a transaction body and gives back its typed result.
 *
 * @example
 * const [row] = yield* q(tx.select().from(t.meta).where(eq(t.meta.key, 'seq')));
 */
export function* q<T>(statement: PromiseLike<T>): Generator<Statement, T, unknown> {
  return (yield statement) as T;
}

interface SyncPrepared {
  prepare(): { execute(): { sync?: () => unknown } };
}

/** Executes a SQLite (better-sqlite3) statement synchronously, as its `await` would: all rows or the run result. */
function executeSync(statement: unknown): unknown {
  const prepared = (statement as Partial<SyncPrepared> | null)?.prepare?.().execute();
  if (typeof prepared?.sync !== 'function') throw new TypeError('registry tx: a body must yield drizzle statements of its own transaction (yield* q(tx.select()...))');
  return prepared.sync();
}

/**
 * Drives a body synchronously: call inside better-sqlite3's transaction (Registry.tx does), or inside a caller's
 * existing synchronous SQLite transaction to compose a body into it.
 */
export function runSync<R>(tx: TxDb, t: Tables, body: TxBody<R>): R {
  const gen = body(tx, t);
  let step = gen.next();
  while (!step.done) {
    let result: unknown;
    try {
      result = executeSync(step.value);
    } catch (err) {
      step = gen.throw(err);
      continue;
    }
    step = gen.next(result);
  }
  return step.value;
}

/** Drives a body asynchronously, awaiting each statement (PostgreSQL, inside drizzle's async transaction). */
export async function runAsync<R>(tx: TxDb, t: Tables, body: TxBody<R>): Promise<R> {
  const gen = body(tx, t);
  let step = gen.next();
  while (!step.done) {
    let result: unknown;
    try {
      result = await step.value;
    } catch (err) {
      step = gen.throw(err);
      continue;
    }
    step = gen.next(result);
  }
  return step.value;
}
