import { and, asc, count, desc, eq, inArray, lt, ne, notExists, sql } from 'drizzle-orm';
import type { StoreRegistry } from './open.js';
import { q, type Tables, type TxDb } from './tx.js';

/**
 * Example retention (issue 9, item 9): the store functions. Per model, examples are deleted when
 * older than `maxAgeDays` (by ingest time) and, past that, the oldest beyond the newest `maxRows`.
 *
 * Never deleted:
 * - any row of a model while one of its rounds is `queued` or `running`: the round reads its
 *   transfer set (the newest `hardExampleWindow` rows) at its start and writes teacher logits back
 *   to those rows later, so the whole model is left alone until the round ends (rounds have a
 *   wall-clock limit) and the skip is counted;
 * - `feedback` rows: labels a user typed in, which may still await review. They are not counted
 *   against `maxRows` either.
 *
 * Deletes run in transactions of at most `batchRows`, so ingest never waits long for the write lock.
 */

export interface RetentionLimits {
  /** Rows kept per model (feedback rows not counted); null = no row limit. */
  maxRows: number | null;
  /** Rows ingested longer ago than this are deleted; null = no age limit. */
  maxAgeDays: number | null;
}

export interface RetentionOutcome {
  model: string;
  deletedByAge: number;
  deletedByRows: number;
  /** True when the model was left alone because a round of it was queued or running. */
  skippedForRound: boolean;
}

export interface RetentionCounts {
  deletedByAge: number;
  deletedByRows: number;
  skippedForRound: number;
  lastRunAt: string | null;
}

const PROTECTED_REASON = 'feedback';

/** Every model that has examples (including rows whose model is unknown to the registry). */
export async function modelsWithExamples(registry: StoreRegistry): Promise<string[]> {
  const { examples } = registry.t;
  const rows = await registry.q.selectDistinct({ model: examples.model }).from(examples);
  return rows.map((r) => r.model).filter((m): m is string => m !== null);
}

/** Applies `limits` to `model`'s examples now; records what it deleted (or that it skipped). */
export async function enforceRetention(registry: StoreRegistry, model: string, limits: RetentionLimits, { now = new Date(), batchRows = 1000 }: { now?: Date; batchRows?: number } = {}): Promise<RetentionOutcome> {
  const { examples, rounds } = registry.t;
  const [busy] = await registry.q.select({ id: rounds.id }).from(rounds).where(roundBusy(registry.t, model)).limit(1);
  if (busy) {
    await registry.tx((tx, t) => recordSteps(tx, t, model, { skippedForRound: 1 }, now));
    return { model, deletedByAge: 0, deletedByRows: 0, skippedForRound: true };
  }
  const deletable = and(eq(examples.model, model), ne(examples.reason, PROTECTED_REASON));
  let deletedByAge = 0;
  if (limits.maxAgeDays !== null) {
    const cutoff = new Date(now.getTime() - limits.maxAgeDays * 86_400_000).toISOString();
    for (;;) {
      const ids = await registry.q.select({ id: examples.id }).from(examples).where(and(deletable, lt(examples.ingestedAt, cutoff))).orderBy(asc(examples.ingestedAt), asc(examples.id)).limit(batchRows);
      if (ids.length === 0) break;
      const d = await deleteIds(registry, model, ids.map((r) => r.id), 'deletedByAge', now);
      deletedByAge += d;
      if (d === 0) break; // a round started meanwhile
      await yieldToLoop();
    }
  }
  let deletedByRows = 0;
  if (limits.maxRows !== null) {
    // The newest maxRows stay; everything older goes, oldest first, a batch at a time.
    for (;;) {
      const [c] = await registry.q.select({ n: count() }).from(examples).where(deletable);
      const excess = (c?.n ?? 0) - limits.maxRows;
      if (excess <= 0) break;
      const ids = await registry.q.select({ id: examples.id }).from(examples).where(deletable).orderBy(asc(examples.ingestedAt), asc(examples.id)).limit(Math.min(excess, batchRows));
      if (ids.length === 0) break;
      const d = await deleteIds(registry, model, ids.map((r) => r.id), 'deletedByRows', now);
      deletedByRows += d;
      if (d === 0) break; // a round started meanwhile
      await yieldToLoop();
    }
  }
  if (deletedByAge === 0 && deletedByRows === 0) await registry.tx((tx, t) => recordSteps(tx, t, model, {}, now));
  return { model, deletedByAge, deletedByRows, skippedForRound: false };
}

/** Lifetime retention counts per model (all models, or one). */
export async function retentionCounts(registry: StoreRegistry, model?: string): Promise<Record<string, RetentionCounts>> {
  const { exampleRetention } = registry.t;
  const rows = await registry.q
    .select()
    .from(exampleRetention)
    .where(model === undefined ? undefined : eq(exampleRetention.model, model))
    .orderBy(desc(exampleRetention.model));
  return Object.fromEntries(rows.map((r) => [r.model, { deletedByAge: r.deletedByAge, deletedByRows: r.deletedByRows, skippedForRound: r.skippedForRound, lastRunAt: r.lastRunAt }]));
}

/** A round of the model is queued or running. */
function roundBusy(t: Tables, model: string) {
  return and(eq(t.rounds.model, model), inArray(t.rounds.state, ['queued', 'running']));
}

/**
 * Deletes `ids` and bumps the model's count in one transaction; a round that started meanwhile stops it.
 * The round check is part of the DELETE itself (NOT EXISTS), so the transaction's first statement is a
 * write: SQLite takes the write lock at once (as BEGIN IMMEDIATE did), and the check and the delete see
 * the same state on both dialects.
 */
function deleteIds(registry: StoreRegistry, model: string, ids: string[], counter: 'deletedByAge' | 'deletedByRows', now: Date): Promise<number> {
  return registry.tx(function* (tx, t) {
    const busy = tx.select({ id: t.rounds.id }).from(t.rounds).where(roundBusy(t, model));
    const deleted = yield* q(tx.delete(t.examples).where(and(inArray(t.examples.id, ids), notExists(busy))).returning({ id: t.examples.id }));
    if (deleted.length > 0) yield* recordSteps(tx, t, model, { [counter]: deleted.length }, now);
    return deleted.length;
  });
}

function* recordSteps(tx: TxDb, t: Tables, model: string, add: Partial<Record<'deletedByAge' | 'deletedByRows' | 'skippedForRound', number>>, now: Date) {
  const { exampleRetention } = t;
  const v = { deletedByAge: add.deletedByAge ?? 0, deletedByRows: add.deletedByRows ?? 0, skippedForRound: add.skippedForRound ?? 0 };
  yield* q(
    tx
      .insert(exampleRetention)
      .values({ model, ...v, lastRunAt: now.toISOString() })
      .onConflictDoUpdate({
        target: exampleRetention.model,
        set: {
          deletedByAge: sql`${exampleRetention.deletedByAge} + ${v.deletedByAge}`,
          deletedByRows: sql`${exampleRetention.deletedByRows} + ${v.deletedByRows}`,
          skippedForRound: sql`${exampleRetention.skippedForRound} + ${v.skippedForRound}`,
          lastRunAt: now.toISOString(),
        },
      }),
  );
}

function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
