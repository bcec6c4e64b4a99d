import { and, asc, eq, isNotNull } from 'drizzle-orm';
import { publishRelease, type PublishDeps } from './publish.js';
import type { LineOutcome, RoundPhase } from './types.js';

/**
 * Steps 8–9 for the cohort lines of a round (issue 13): every cohort release the round stored is
 * published, and rolled out to its cohort's group when the schedule says so (publish.ts lineTarget).
 * Read from the registry, not from the worker's report, so a recovered round publishes them too.
 * @returns the problems, each prefixed with its cohort.
 */
export async function publishCohortLines(deps: PublishDeps, roundId: string, onPhase: (phase: RoundPhase, detail: string) => void): Promise<string[]> {
  const { releases } = deps.registry.t;
  const rows = await deps.registry.q
    .select({ seq: releases.seq, cohort: releases.cohort })
    .from(releases)
    .where(and(eq(releases.roundId, roundId), isNotNull(releases.cohort)))
    .orderBy(asc(releases.seq));
  const problems: string[] = [];
  for (const r of rows) {
    try {
      const { problems: p } = await publishRelease(deps, roundId, r.seq, onPhase);
      problems.push(...p.map((x) => `cohort ${r.cohort}: ${x}`));
    } catch (err) {
      problems.push(`cohort ${r.cohort}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** A cohort line's outcome as the round's metrics keep it (`metrics.cohorts[]`): the figures, not the artifact paths. */
export function cohortSummary(o: LineOutcome): Record<string, unknown> {
  const m = o.metrics as Record<string, unknown>;
  const pick = (k: string) => (typeof m[k] === 'number' ? { [k]: m[k] } : {});
  return {
    cohort: o.cohort ?? null,
    state: o.state,
    ...(o.state === 'released' ? { releaseSeq: o.releaseSeq } : { reason: o.reason }),
    exampleCount: o.exampleCount,
    ...pick('holdoutAccuracy'),
    ...pick('parentHoldoutAccuracy'),
    ...pick('hardAgreement'),
    ...pick('parentHardAgreement'),
    ...pick('parentSeq'),
    ...pick('cohortDevices'),
  };
}
