import type * as tf from '@tensorflow/tfjs';
import { UsageError } from '../../shared/cli/errors.js';
import { type Dataset, exampleSize, splitHoldout } from '../../shared/data/index.js';
import { buildModel } from '../models/build.js';
import type { FlopCount } from '../models/flops.js';
import type { ArchSpec, ImageShape } from '../models/spec.js';
import { cachedTeacherLogits } from '../teacher/logit-cache.js';
import type { Teacher } from '../teacher/ort-teacher.js';
import { baselineCandidates, DEFAULT_RECIPES, recipeCandidates, searchCandidates, trainCandidate, type Candidate, type Recipe, type SearchContext, type SearchResult } from './recipe.js';
import { trainModel, type TrainProgress, type TrainResult, type TrainSet } from './trainer.js';
import { tuneLearningRate, type TuneResult } from './tune.js';

/** How the student and the baseline of one `apprentice distill` are trained (see recipe.ts). */
export interface RunPlan {
  /** `search`: T, α chosen on a validation split (needs labels). `fixed`: the given T, α on all the data. */
  recipe: 'search' | 'fixed';
  temperature: number;
  alpha: number;
  recipes?: Recipe[];
  epochs: number;
  /** Epochs per search trial (default min(epochs, 3)). */
  searchEpochs?: number;
  /** Cap on the student's search, in minutes (default 10). */
  searchMinutes?: number;
  /** Early-stopping patience in epochs on the validation split (search mode; default 3). */
  patience?: number;
  functionMatching?: boolean;
  batchSize: number;
  learningRate: number | 'auto';
  lrCandidates?: number[];
  tuneEpochs?: number;
  seed: number;
  jitter: number;
  cacheDir?: string;
}

export interface TrainingStats {
  learningRate: number;
  tuning?: TuneResult;
  temperature: number;
  alpha: number;
  schedule: 'cosine';
  epochs: number;
  /** Search mode: the epoch whose weights were kept, and the validation errors there. */
  bestEpoch?: number;
  stoppedEarly?: boolean;
  validationErrors?: number;
  validationCount?: number;
  functionMatching: boolean;
  search?: SearchResult;
  seconds: number;
  /** Full-run training rate (validation passes excluded). */
  samplesPerSec: number;
  /** Training FLOP/s over the whole run, from the gradient ops tfjs runs (cloud/models/flops.ts). */
  gflops: number;
  finalLoss: number;
  /** Baseline only: true when it is the student's own run (the search chose labels only at the same rate). */
  sameRunAsStudent?: boolean;
}

export interface RunEvents {
  phase?(name: string, detail?: string): void;
  epoch?(run: string, p: TrainProgress): void;
}

const DEFAULT_LR_CANDIDATES = [3e-4, 1e-3, 3e-3];

function toTrainSet(ds: Dataset, classes: number, teacherLogits?: Float32Array): TrainSet {
  return { features: ds.features, inputSize: exampleSize(ds), count: ds.count, classes, labels: ds.labels, teacherLogits };
}

function stats(r: TrainResult, c: Candidate, flops: FlopCount, extra: Partial<TrainingStats>): TrainingStats {
  const v = r.validation;
  return {
    learningRate: c.learningRate, temperature: c.temperature, alpha: c.alpha, schedule: 'cosine', epochs: r.epochs, functionMatching: false,
    ...(v ? { bestEpoch: v.bestEpoch, stoppedEarly: v.stoppedEarly, validationErrors: v.bestErrors, validationCount: v.count } : {}),
    seconds: r.seconds, samplesPerSec: r.samplesPerSec, gflops: (flops.training * r.samplesPerSec) / 1e9, finalLoss: r.finalLoss, ...extra,
  };
}

/**
 * Trains the distilled student and, with `baseline`, the same student on labels only, under the same
 * procedure: in search mode both get the same validation split, learning-rate tuning, number of
 * search trials, epochs, early stopping and augmentation.
 */
export async function trainRuns(
  p: RunPlan,
  x: { arch: ArchSpec; imageShape?: ImageShape; train: Dataset; teacher: Teacher; teacherLogits: Float32Array; classes: number; flops: FlopCount; baseline: boolean; events?: RunEvents },
): Promise<{ student: { model: tf.LayersModel; stats: TrainingStats }; baseline?: { model: tf.LayersModel; stats: TrainingStats } }> {
  const ev = x.events ?? {};
  const { arch, imageShape, train, classes, flops } = x;
  const size = exampleSize(train);
  const lrCandidates = p.lrCandidates ?? DEFAULT_LR_CANDIDATES;
  if (p.recipe === 'fixed') return trainFixed(p, x);
  if (!train.labels) throw new UsageError('--recipe search chooses T and alpha on a labelled validation split; this transfer set has no labels (use --recipe fixed)');

  const { train: fitDs, holdout: valDs } = splitHoldout(train, 0.1, p.seed);
  const fitLogits = (await cachedTeacherLogits(x.teacher, fitDs.features, size, { dir: p.cacheDir })).logits;
  const teacherFn = p.functionMatching ? async (batch: Float32Array) => (await x.teacher.logits(batch, size)).logits : undefined;
  const ctx: SearchContext = {
    arch, imageShape, fit: toTrainSet(fitDs, classes, fitLogits), validation: { features: valDs.features, labels: valDs.labels! },
    batchSize: p.batchSize, seed: p.seed, jitter: p.jitter, patience: p.patience ?? 3, teacher: teacherFn,
  };
  let lr: number;
  let tuning: TuneResult | undefined;
  if (p.learningRate === 'auto') {
    // Tuned once with labels only and shared: neither run gets a better-tuned optimiser from this step.
    ev.phase?.('tune', `learning rate among ${lrCandidates.join(', ')} (labels only, shared by student and baseline)`);
    tuning = await tuneLearningRate(arch, { ...ctx.fit, teacherLogits: undefined }, ctx.validation, lrCandidates, {
      epochs: p.tuneEpochs ?? Math.min(p.epochs, 2), batchSize: p.batchSize, seed: p.seed, jitter: p.jitter, imageShape,
      onTrial: (c, i) => ev.phase?.('tune', `trial ${i + 1} lr=${c}`),
    });
    lr = tuning.chosen;
  } else {
    lr = p.learningRate;
  }
  const searchEpochs = p.searchEpochs ?? Math.min(p.epochs, 3);
  const budgetSeconds = (p.searchMinutes ?? 10) * 60;
  const fm = !!p.functionMatching;

  const recipes = p.recipes ?? DEFAULT_RECIPES;
  // Label training first (half the budget at most), then distillation at its learning rate.
  const labels = await searchCandidates(ctx, baselineCandidates(lr, Math.max(1, recipes.length)), {
    epochs: searchEpochs, budgetSeconds: budgetSeconds / 2,
    onTrial: (bc, i) => ev.phase?.('search', `labels only, trial ${i + 1}: lr=${bc.learningRate}`),
  });
  const labelsBest = labels.trials.find((t) => t.learningRate === labels.chosen.learningRate)!;
  const search = await searchCandidates(ctx, recipeCandidates(recipes, labels.chosen.learningRate), {
    epochs: searchEpochs, budgetSeconds: Math.max(0, budgetSeconds - labels.seconds), runFirst: false, before: [labelsBest],
    onTrial: (c, i) => ev.phase?.('search', `distillation, trial ${i + 1}: T=${c.temperature} alpha=${c.alpha}`),
  });
  const c = search.chosen;
  ev.phase?.('train', `student: ${arch.text}, T=${c.temperature}, alpha=${c.alpha}, lr=${c.learningRate} (chosen on ${ctx.validation.labels.length} validation examples)`);
  const s = await trainCandidate(ctx, c, p.epochs, (pr) => ev.epoch?.('student', pr));
  const student = { model: s.model, stats: stats(s.result, c, flops, { tuning, search, functionMatching: fm && c.alpha > 0 }) };
  if (!x.baseline) return { student };
  if (c.alpha === 0 && c.learningRate === labels.chosen.learningRate) {
    // The search chose labels only, at the baseline's own learning rate: training the baseline would repeat the
    // student's run (same candidate, data, seed and schedule, so the same weights). The one run is both.
    ev.phase?.('train', `baseline: the student's own run (the search chose labels only at lr=${c.learningRate})`);
    return { student, baseline: { model: s.model, stats: { ...stats(s.result, labels.chosen, flops, { tuning, search: labels }), sameRunAsStudent: true } } };
  }
  ev.phase?.('train', `baseline: ${arch.text}, labels only, lr=${labels.chosen.learningRate}`);
  const b = await trainCandidate(ctx, labels.chosen, p.epochs, (pr) => ev.epoch?.('baseline', pr));
  return { student, baseline: { model: b.model, stats: stats(b.result, labels.chosen, flops, { tuning, search: labels }) } };
}

/** The given T and α on all the training data (unlabelled transfer sets: teacher-only loss). */
async function trainFixed(
  p: RunPlan,
  x: { arch: ArchSpec; imageShape?: ImageShape; train: Dataset; teacher: Teacher; teacherLogits: Float32Array; classes: number; flops: FlopCount; baseline: boolean; events?: RunEvents },
): Promise<{ student: { model: tf.LayersModel; stats: TrainingStats }; baseline?: { model: tf.LayersModel; stats: TrainingStats } }> {
  const ev = x.events ?? {};
  const { arch, imageShape, train, classes } = x;
  const size = exampleSize(train);
  const one = async (run: 'student' | 'baseline') => {
    const distil = run === 'student';
    const alpha = distil ? p.alpha : 0;
    const common = { epochs: p.epochs, batchSize: p.batchSize, temperature: p.temperature, alpha, seed: p.seed, jitter: p.jitter };
    let lr: number;
    let tuning: TuneResult | undefined;
    if (p.learningRate === 'auto') {
      if (!train.labels) throw new UsageError('--lr auto needs a labelled training set to score candidates on a holdout; give a fixed --lr');
      const { train: tr, holdout } = splitHoldout(train, 0.1, p.seed);
      const trLogits = distil ? (await cachedTeacherLogits(x.teacher, tr.features, size, { dir: p.cacheDir })).logits : undefined;
      ev.phase?.('tune', `${run}: learning rate among ${(p.lrCandidates ?? DEFAULT_LR_CANDIDATES).join(', ')}`);
      tuning = await tuneLearningRate(arch, toTrainSet(tr, classes, trLogits), { features: holdout.features, labels: holdout.labels! }, p.lrCandidates ?? DEFAULT_LR_CANDIDATES, {
        ...common, imageShape, epochs: p.tuneEpochs ?? Math.min(p.epochs, 2), onTrial: (lrc, i) => ev.phase?.('tune', `${run}: trial ${i + 1} lr=${lrc}`),
      });
      lr = tuning.chosen;
    } else {
      lr = p.learningRate;
    }
    ev.phase?.('train', `${run}: ${arch.text}, lr=${lr}`);
    const model = buildModel(arch, { inputSize: size, classes, imageShape, seed: p.seed });
    const fm = distil && alpha > 0 && !!p.functionMatching;
    const teacher = fm ? async (batch: Float32Array) => (await x.teacher.logits(batch, size)).logits : undefined;
    const r = await trainModel(model, toTrainSet(train, classes, distil ? x.teacherLogits : undefined), { ...common, learningRate: lr, teacher, onProgress: (pr) => ev.epoch?.(run, pr) });
    return { model, stats: stats(r, { temperature: p.temperature, alpha, learningRate: lr }, x.flops, { tuning, functionMatching: fm }) };
  };
  const student = await one('student');
  return x.baseline ? { student, baseline: await one('baseline') } : { student };
}
