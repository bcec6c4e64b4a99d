/**
 * The round runner's recovery (runner.ts): what to do with the rounds a previous process, or a previous
 * leader of the cluster, left `queued` or `running`, and with its orphaned model claims.
 */
import { and, asc, eq, inArray, isNull } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { RoundRow } from '../registry/schema.js';
import type { RoundFencing } from './fencing.js';
import { nowIso } from './worker-process.js';

/** What recovery needs of the runner. */
export interface RecoveryHost {
  registry: StoreRegistry;
  /** The epoch this runner leads under: the failures, retries and claim releases are fenced on it. */
  fencing: RoundFencing;
  maxAttempts: number;
  log: Logger;
  /** A round left `queued`: queue it again here. */
  requeue(id: string): void;
  /** A round left `running` whose worker stored its release: finish steps 8–9 here (not awaited). */
  resumePublish(row: RoundRow, seq: number): void;
  /** Writes the round row (fenced on `fencing`). */
  update(id: string, set: Partial<RoundRow>): Promise<void>;
  /** Queues the retry of an interrupted round, its attempts carried over. */
  retry(model: string, attempts: number): Promise<{ id: string }>;
}

/**
 * Rounds a previous process (or leader) left behind. `running` with a release row: the worker finished,
 * the cloud died before publishing, so finish steps 8–9. Other `running`: failed ("cloud restarted during
 * round", or on a cluster "leader changed (epoch N→M) during round", N from the model's orphaned claim)
 * and retried as a new round while attempts < maxAttempts. `queued`: queued again. Claims of older
 * epochs whose round is not queued again are freed (a retry claims the model anew).
 */
export async function recoverRounds(h: RecoveryHost): Promise<void> {
  const { q: db, t } = h.registry;
  const { releases, rounds } = t;
  const fencing = h.fencing;
  const orphans = await fencing.orphanClaims();
  const left = await db.select().from(rounds).where(inArray(rounds.state, ['queued', 'running'])).orderBy(asc(rounds.createdAt));
  const retries: { model: string; attempts: number; from: string; why: string }[] = [];
  const requeued = new Set<string>();
  for (const r of left) {
    if (r.state === 'queued') {
      requeued.add(r.id);
      h.requeue(r.id);
      continue;
    }
    const [rel] = await db.select({ seq: releases.seq }).from(releases).where(and(eq(releases.roundId, r.id), isNull(releases.cohort))).limit(1);
    if (rel) {
      h.resumePublish(r, rel.seq);
      requeued.add(r.id);
      continue;
    }
    const retry = r.attempts < h.maxAttempts;
    const why = fencing.interruption(orphans.get(r.id));
    await h.update(r.id, { state: 'failed', error: `${why}${retry ? '; retrying' : `; not retried after ${r.attempts} attempts`}`, finishedAt: nowIso() });
    h.log.warn({ round: r.id, model: r.model, reason: why, retry }, 'round interrupted; failed');
    if (retry) retries.push({ model: r.model, attempts: r.attempts, from: r.id, why });
  }
  for (const c of orphans.values()) if (!requeued.has(c.roundId)) await fencing.release(c.modelId, c.roundId);
  for (const r of retries) {
    try {
      const { id } = await h.retry(r.model, r.attempts);
      await h.update(r.from, { error: `${r.why}; retried as ${id}` });
    } catch (err) {
      h.log.warn({ err, round: r.from }, 'rounds/retry not started');
    }
  }
}
