import { and, asc, desc, eq, inArray, lt, ne, sql } from 'drizzle-orm';
import type { Registry } from './db.js';
import { exampleRetention, examples, rounds } from './schema.js';

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
export async function modelsWithExamples(registry: Registry): Promise<string[]> {
  const rows = registry.db.selectDistinct({ model: examples.model }).from(examples).all();
  return rows.map((r) => r.model).filter((m): m is string => m !== null);
}

/** Applies `limits` to `model`'s examples now; records what it deleted (or that it skipped). */
export async function enforceRetention(registry: Registry, model: string, limits: RetentionLimits, { now = new Date(), batchRows = 1000 }: { now?: Date; batchRows?: number } = {}): Promise<RetentionOutcome> {
  const { db } = registry;
  const busy = db.select({ id: rounds.id }).from(rounds).where(and(eq(rounds.model, model), inArray(rounds.state, ['queued', 'running']))).get();
  if (busy) {
    record(registry, model, { skippedForRound: 1 }, now);
    return { model, deletedByAge: 0, deletedByRows: 0, skippedForRound: true };
  }
  const deletable = and(eq(examples.model, model), ne(examples.reason, PROTECTED_REASON));
  let deletedByAge = 0;
  if (limits.maxAgeDays !== null) {
    const cutoff = new Date(now.getTime() - limits.maxAgeDays * 86_400_000).toISOString();
    for (;;) {
      const ids = db.select({ id: examples.id }).from(examples).where(and(deletable, lt(examples.ingestedAt, cutoff))).orderBy(asc(examples.ingestedAt), asc(examples.id)).limit(batchRows).all();
      if (ids.length === 0) break;
      const d = deleteIds(registry, model, ids.map((r) => r.id), 'deletedByAge', now);
      deletedByAge += d;
      if (d === 0) break; // a round started meanwhile
      await yieldToLoop();
    }
  }
  let deletedByRows = 0;
  if (limits.maxRows !== null) {
    // The newest maxRows stay; everything older goes, oldest first, a batch at a time.
    for (;;) {
      const n = db.select({ n: sql<number>`count(*)` }).from(examples).where(deletable).get()?.n ?? 0;
      const excess = n - limits.maxRows;
      if (excess <= 0) break;
      const ids = db.select({ id: examples.id }).from(examples).where(deletable).orderBy(asc(examples.ingestedAt), asc(examples.id)).limit(Math.min(excess, batchRows)).all();
      if (ids.length === 0) break;
      const d = deleteIds(registry, model, ids.map((r) => r.id), 'deletedByRows', now);
      deletedByRows += d;
      if (d === 0) break; // a round started meanwhile
      await yieldToLoop();
    }
  }
  if (deletedByAge === 0 && deletedByRows === 0) record(registry, model, {}, now);
  return { model, deletedByAge, deletedByRows, skippedForRound: false };
}

/** Lifetime retention counts per model (all models, or one). */
export async function retentionCounts(registry: Registry, model?: string): Promise<Record<string, RetentionCounts>> {
  const rows = registry.db
    .select()
    .from(exampleRetention)
    .where(model === undefined ? undefined : eq(exampleRetention.model, model))
    .orderBy(desc(exampleRetention.model))
    .all();
  return Object.fromEntries(rows.map((r) => [r.model, { deletedByAge: r.deletedByAge, deletedByRows: r.deletedByRows, skippedForRound: r.skippedForRound, lastRunAt: r.lastRunAt }]));
}

/** Deletes `ids` and bumps the model's count in one transaction; a round that started meanwhile stops it. */
function deleteIds(registry: Registry, model: string, ids: string[], counter: 'deletedByAge' | 'deletedByRows', now: Date): number {
  return registry.sqlite.transaction(() => {
    // Checked again inside the write transaction: a round queued since the scan keeps every row.
    const busy = registry.db.select({ id: rounds.id }).from(rounds).where(and(eq(rounds.model, model), inArray(rounds.state, ['queued', 'running']))).get();
    if (busy) return 0;
    const n = registry.db.delete(examples).where(inArray(examples.id, ids)).run().changes;
    record(registry, model, { [counter]: n }, now);
    return n;
  }).immediate();
}

function record(registry: Registry, model: string, add: Partial<Record<'deletedByAge' | 'deletedByRows' | 'skippedForRound', number>>, now: Date): void {
  const v = { deletedByAge: add.deletedByAge ?? 0, deletedByRows: add.deletedByRows ?? 0, skippedForRound: add.skippedForRound ?? 0 };
  registry.db
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
    })
    .run();
}

function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
