import type { Augment } from '../distill/augment.js';
import type { MixPart } from './mix.js';
import type { DistillSettings } from './settings.js';

/** How one cohort line trains: its epochs, the share of its own hard examples, how much base data, and its augmentation. */
export interface CohortTraining {
  epochs: number;
  hardExampleShare: number;
  /** Base examples the cohort student trains on (the first N of the shuffled base set); undefined = all. */
  baseLimit: number | undefined;
  /** Random translation in pixels during training (square images only); 0 when `augment` is set. */
  jitter: number;
  /** Augment with the teacher (function matching on random affine views); undefined = none. */
  augment: Augment | undefined;
}

type CohortLine = NonNullable<DistillSettings['cohorts']>[number];

/**
 * The training settings of one cohort line: the line's own (`cohorts[i].epochs`, `.hardExampleShare`,
 * `.baseLimit`, `.jitter`, `.augment`), else the model's cohort defaults (`cohortEpochs`, `cohortHardExampleShare`,
 * `cohortBaseLimit`, `cohortJitter`, `cohortAugment`), else the base line's (`epochs`, `hardExampleShare`, all base
 * data, `jitter`, no augmentation). An augmentation replaces the translation jitter (it has its own `shift`). With
 * `perGroup` there are no per-line entries, so the model's cohort defaults apply to every line.
 */
export function cohortTrainingOf(s: DistillSettings, cohort: string): CohortTraining {
  const line: Partial<CohortLine> = s.cohorts?.find((c) => c.name === cohort) ?? {};
  const augment = line.augment ?? s.cohortAugment;
  return {
    epochs: line.epochs ?? s.cohortEpochs ?? s.epochs,
    hardExampleShare: line.hardExampleShare ?? s.cohortHardExampleShare ?? s.hardExampleShare,
    baseLimit: line.baseLimit ?? s.cohortBaseLimit,
    jitter: augment ? 0 : (line.jitter ?? s.cohortJitter ?? s.jitter),
    augment,
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
