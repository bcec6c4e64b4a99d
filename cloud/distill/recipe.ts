import type * as tf from '@tensorflow/tfjs';
import { UsageError } from '../../shared/cli/errors.js';
import { buildModel } from '../models/build.js';
import type { ArchSpec, ImageShape } from '../models/spec.js';
import { trainModel, type TrainOptions, type TrainProgress, type TrainResult, type TrainSet } from './trainer.js';

/**
 * Recipe search: choose the distillation temperature T and soft-label weight α (or, for the
 * labels-only baseline, the learning rate) on a validation split carved from the training data,
 * never the test set.
 *
 * What the defaults encode (issue 11):
 *  - Label training (α = 0) is searched first, over the learning rate, with as many trials as there
 *    are recipes; its winner is a candidate of the student's search too, and the distillation recipes
 *    run at its learning rate. So a weak teacher cannot make the shipped student worse on validation
 *    than label training: if it would, label training wins, and the student is the baseline.
 *  - Low temperatures for small students (Hinton et al. 2015 §3 found 2.5–4 best for 30-unit layers),
 *    and the engine's old default T = 20, α = 0.9 for comparison.
 *  - Every trial and the final run use early stopping on the validation split (the best epoch's
 *    weights are kept), so a longer, "patient" schedule costs nothing in quality.
 *  - The baseline is that label-training winner, trained like the student: same epochs, patience,
 *    augmentation and validation split.
 * The search stops starting trials once its time budget is spent; the trials it skipped are recorded.
 */
export interface Recipe {
  temperature: number;
  alpha: number;
}

export const DEFAULT_RECIPES: readonly Recipe[] = [
  { temperature: 1, alpha: 0 },
  { temperature: 2.5, alpha: 0.5 },
  { temperature: 4, alpha: 0.5 },
  { temperature: 4, alpha: 0.9 },
  { temperature: 2.5, alpha: 0.9 },
  { temperature: 20, alpha: 0.9 },
];

export interface Candidate extends Recipe {
  learningRate: number;
}

export interface Trial extends Candidate {
  validationErrors: number;
  bestEpoch: number;
  epochsRun: number;
  seconds: number;
}

export interface SearchResult {
  chosen: Candidate;
  trials: Trial[];
  /** Candidates not tried because the time budget ran out. */
  skipped: Candidate[];
  validationCount: number;
  epochsPerTrial: number;
  patience: number;
  budgetSeconds: number;
  seconds: number;
}

export interface SearchContext {
  arch: ArchSpec;
  imageShape?: ImageShape;
  /** The fit part of the training data, with teacher logits when distilling. */
  fit: TrainSet;
  validation: { features: Float32Array; labels: Int32Array };
  batchSize: number;
  seed: number;
  jitter: number;
  /** Early-stopping patience in epochs, for the trials and the final run. */
  patience: number;
  /** On-the-fly teacher logits (function matching); absent = the cached logits in `fit`. */
  teacher?: TrainOptions['teacher'];
}

/** The training run of one candidate from a fresh, seeded init: the same procedure for trials and the final run. */
export async function trainCandidate(ctx: SearchContext, c: Candidate, epochs: number, onProgress?: (p: TrainProgress) => void): Promise<{ model: tf.LayersModel; result: TrainResult }> {
  const model = buildModel(ctx.arch, { inputSize: ctx.fit.inputSize, classes: ctx.fit.classes, imageShape: ctx.imageShape, seed: ctx.seed });
  const result = await trainModel(model, ctx.fit, {
    epochs,
    batchSize: ctx.batchSize,
    learningRate: c.learningRate,
    temperature: c.temperature,
    alpha: c.alpha,
    seed: ctx.seed,
    jitter: ctx.jitter,
    validation: ctx.validation,
    patience: ctx.patience,
    teacher: c.alpha > 0 ? ctx.teacher : undefined,
    onProgress,
  });
  return { model, result };
}

/** The best trial: fewest validation errors, ties to the earlier one (list conservative candidates first). */
function best(trials: Trial[]): Candidate {
  const b = trials.reduce((a, t) => (t.validationErrors < a.validationErrors ? t : a));
  return { temperature: b.temperature, alpha: b.alpha, learningRate: b.learningRate };
}

/**
 * Tries each candidate for `epochs` epochs (early stopping included) and picks the fewest validation
 * errors. With `runFirst` the first candidate runs even when the budget is already spent (a search
 * that tried nothing has nothing to choose); `before` are trials already run that compete too.
 */
export async function searchCandidates(
  ctx: SearchContext,
  candidates: readonly Candidate[],
  { epochs, budgetSeconds, runFirst = true, before = [], onTrial }: { epochs: number; budgetSeconds: number; runFirst?: boolean; before?: Trial[]; onTrial?: (c: Candidate, i: number) => void },
): Promise<SearchResult> {
  const t0 = performance.now();
  const trials: Trial[] = [...before];
  const skipped: Candidate[] = [];
  for (const [i, c] of candidates.entries()) {
    if (!(i === 0 && runFirst) && (performance.now() - t0) / 1000 >= budgetSeconds) {
      skipped.push(c);
      continue;
    }
    onTrial?.(c, i);
    const s0 = performance.now();
    const { model, result } = await trainCandidate(ctx, c, epochs);
    model.dispose();
    const v = result.validation!;
    trials.push({ ...c, validationErrors: v.bestErrors, bestEpoch: v.bestEpoch, epochsRun: result.epochs, seconds: (performance.now() - s0) / 1000 });
  }
  if (trials.length === 0) throw new Error('recipe search: no trial ran');
  return {
    chosen: best(trials),
    trials,
    skipped,
    validationCount: ctx.validation.labels.length,
    epochsPerTrial: epochs,
    patience: ctx.patience,
    budgetSeconds,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** The distillation candidates (alpha > 0) at the learning rate label training chose. */
export function recipeCandidates(recipes: readonly Recipe[], learningRate: number): Candidate[] {
  return recipes.filter((r) => r.alpha > 0).map((r) => ({ ...r, learningRate }));
}

/**
 * The labels-only candidates: the learning rate scaled by 1, 1/2, 2, 1/4, 4, ... (nearest first),
 * `count` of them (as many as the recipes, so label training gets as many trials as distillation).
 */
export function baselineCandidates(learningRate: number, count: number): Candidate[] {
  const out: Candidate[] = [];
  for (let k = 0; out.length < count; k++) {
    const e = k === 0 ? 0 : k % 2 === 1 ? -Math.ceil(k / 2) : Math.ceil(k / 2);
    out.push({ temperature: 1, alpha: 0, learningRate: learningRate * 2 ** e });
  }
  return out;
}

/** Parses `--recipes T:α,T:α,...` (e.g. `1:0,4:0.5,4:0.9`). */
export function parseRecipes(text: string): Recipe[] {
  return text.split(',').map((part) => {
    const m = /^\s*([0-9.]+)\s*:\s*([0-9.]+)\s*$/.exec(part);
    const temperature = Number(m?.[1]);
    const alpha = Number(m?.[2]);
    if (!m || !(temperature > 0 && temperature <= 1000) || !(alpha >= 0 && alpha <= 1)) {
      throw new UsageError(`--recipes: bad candidate "${part}" (expected T:alpha with T in (0, 1000] and alpha in [0, 1], e.g. 4:0.5)`);
    }
    return { temperature, alpha };
  });
}
