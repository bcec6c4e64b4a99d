import type { MixPart } from './mix.js';
import type { DistillSettings } from './settings.js';

/** How one cohort line trains: its epochs, the share of its own hard examples, and how much base data. */
export interface CohortTraining {
  epochs: number;
  hardExampleShare: number;
  /** Base examples the cohort student trains on (the first N of the shuffled base set); undefined = all. */
  baseLimit: number | undefined;
}

type CohortLine = NonNullable<DistillSettings['cohorts']>[number];

/**
 * The training settings of one cohort line: the line's own (`cohorts[i].epochs`, `.hardExampleShare`,
 * `.baseLimit`), else the model's cohort defaults (`cohortEpochs`, `cohortHardExampleShare`,
 * `cohortBaseLimit`), else the base line's (`epochs`, `hardExampleShare`, all base data). With
 * `perGroup` there are no per-line entries, so the model's cohort defaults apply to every line.
 */
export function cohortTrainingOf(s: DistillSettings, cohort: string): CohortTraining {
  const line: Partial<CohortLine> = s.cohorts?.find((c) => c.name === cohort) ?? {};
  return {
    epochs: line.epochs ?? s.cohortEpochs ?? s.epochs,
    hardExampleShare: line.hardExampleShare ?? s.cohortHardExampleShare ?? s.hardExampleShare,
    baseLimit: line.baseLimit ?? s.cohortBaseLimit,
  };
}

/**
 * The first `limit` examples of a base part (the base set is shuffled with the round's seed when loaded,
 * so this is a seeded random subsample), or the part itself when it has no more than that.
 */
export function baseSubset(part: MixPart, limit: number | undefined, inputSize: number, classes: number): MixPart {
  if (limit === undefined || part.count <= limit) return part;
  return {
    features: part.features.subarray(0, limit * inputSize),
    count: limit,
    ...(part.labels ? { labels: part.labels.subarray(0, limit) } : {}),
    teacherLogits: part.teacherLogits.subarray(0, limit * classes),
  };
}
