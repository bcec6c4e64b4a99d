import { tuneLearningRate, type TuneResult } from '../distill/tune.js';
import type { TrainSet } from '../distill/trainer.js';
import type { ArchSpec, ImageShape } from '../models/spec.js';
import { mulberry32, permutation } from '../../shared/util/random.js';
import type { DistillSettings } from './settings.js';

/**
 * A seeded 90/10 split of the labelled base examples (with their teacher logits): what lr tuning and
 * the recipe search score on. Never the gate holdout, which would make the gate's number optimistic.
 */
export function splitLabelledBase(
  base: { features: Float32Array; count: number; labels?: Int32Array; teacherLogits: Float32Array },
  seed: number,
  { inputSize, classes }: { inputSize: number; classes: number },
): { fit: TrainSet; validation: { features: Float32Array; labels: Int32Array } } {
  const k = Math.round(base.count * 0.1);
  const perm = permutation(base.count, mulberry32(seed ^ 0x5eed));
  const pick = (idx: Uint32Array): TrainSet => {
    const features = new Float32Array(idx.length * inputSize);
    const teacherLogits = new Float32Array(idx.length * classes);
    const labels = new Int32Array(idx.length);
    idx.forEach((i, j) => {
      features.set(base.features.subarray(i * inputSize, (i + 1) * inputSize), j * inputSize);
      teacherLogits.set(base.teacherLogits.subarray(i * classes, (i + 1) * classes), j * classes);
      labels[j] = base.labels![i]!;
    });
    return { features, inputSize, count: idx.length, classes, labels, teacherLogits };
  };
  const holdout = pick(perm.slice(0, k));
  return { fit: pick(perm.slice(k)), validation: { features: holdout.features, labels: holdout.labels! } };
}

/**
 * The learning rate of a round: the fixed `lr`, or for `lr: 'auto'` the best of `lrCandidates` after
 * a short from-scratch run each (cloud/distill/tune.ts), scored on 10% of the labelled base examples.
 * Never on the gate holdout: tuning on it would make the gate's number optimistic. Without labels
 * there is nothing to score, so the middle candidate is used and the round says so.
 */
export async function chooseLearningRate(
  arch: ArchSpec,
  base: { features: Float32Array; count: number; labels?: Int32Array; teacherLogits: Float32Array },
  s: DistillSettings,
  { inputSize, classes, imageShape }: { inputSize: number; classes: number; imageShape?: ImageShape },
): Promise<{ learningRate: number; tuning?: TuneResult; note?: string }> {
  if (s.lr !== 'auto') return { learningRate: s.lr };
  const fallback = s.lrCandidates[Math.floor(s.lrCandidates.length / 2)]!;
  const k = Math.round(base.count * 0.1);
  if (!base.labels || k < 10 || base.count - k < 10) return { learningRate: fallback, note: `lr auto: no labelled base data to tune on, used ${fallback}` };
  const { fit, validation } = splitLabelledBase(base, s.seed, { inputSize, classes });
  const tuning = await tuneLearningRate(arch, fit, validation, s.lrCandidates, {
    epochs: s.tuneEpochs ?? Math.min(s.epochs, 2),
    batchSize: s.batchSize,
    temperature: s.temperature,
    alpha: s.alpha,
    seed: s.seed,
    jitter: s.jitter,
    imageShape,
  });
  return { learningRate: tuning.chosen, tuning };
}
