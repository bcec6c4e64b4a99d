import { buildModel } from '../models/build.js';
import { type ArchSpec, type ImageShape } from '../models/spec.js';
import { argmaxRows, scorePredictions } from './evaluate.js';
import { predictLogits, trainModel, type TrainOptions, type TrainSet } from './trainer.js';

export interface TuneResult {
  chosen: number;
  trials: { learningRate: number; holdoutErrors: number; holdoutAccuracy: number }[];
  epochs: number;
  holdout: number;
}

/**
 * Picks a learning rate by a short run per candidate, scored on a labelled holdout carved from the
 * training data (never the test set). The same procedure tunes the distilled student and the
 * label-only baseline, so neither gets a better-tuned optimiser than the other.
 */
export async function tuneLearningRate(
  arch: ArchSpec,
  train: TrainSet,
  holdout: { features: Float32Array; labels: Int32Array },
  candidates: number[],
  opts: Omit<TrainOptions, 'learningRate' | 'onProgress'> & { seed: number; imageShape?: ImageShape; onTrial?: (lr: number, i: number) => void },
): Promise<TuneResult> {
  const trials: TuneResult['trials'] = [];
  for (const [i, lr] of candidates.entries()) {
    opts.onTrial?.(lr, i);
    const model = buildModel(arch, { inputSize: train.inputSize, classes: train.classes, imageShape: opts.imageShape, seed: opts.seed });
    await trainModel(model, train, { ...opts, learningRate: lr });
    const logits = predictLogits(model, holdout.features, train.inputSize);
    const s = scorePredictions(argmaxRows(logits, train.classes), holdout.labels);
    trials.push({ learningRate: lr, holdoutErrors: s.errors, holdoutAccuracy: s.accuracy });
    model.dispose();
  }
  // Ties go to the smaller rate: it is the more conservative choice for the full budget.
  const best = [...trials].sort((a, b) => a.holdoutErrors - b.holdoutErrors || a.learningRate - b.learningRate)[0]!;
  return { chosen: best.learningRate, trials, epochs: opts.epochs, holdout: holdout.labels.length };
}
