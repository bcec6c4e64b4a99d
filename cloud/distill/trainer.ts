import * as tf from '@tensorflow/tfjs';
import type { EpochProgress } from '../../shared/cli/epoch-bars.js';
import { mulberry32, permutation } from '../../shared/util/random.js';
import { augmentInto, type Augment } from './augment.js';
import { distillationLoss } from './loss.js';

/** Training examples in flat typed arrays: what both the teacher trainer and distillation consume. */
export interface TrainSet {
  features: Float32Array;
  inputSize: number;
  count: number;
  classes: number;
  /** Integer labels; -1 marks an unlabeled example. Absent = all unlabeled. */
  labels?: Int32Array;
  /** Cached teacher logits [count × classes]; absent = train on labels only. */
  teacherLogits?: Float32Array;
}

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Cosine decay to 0 over the run (default) or a constant rate. */
  schedule?: 'cosine' | 'constant';
  temperature?: number;
  alpha?: number;
  seed?: number;
  /** Random translation of up to this many pixels (square images only), as Hinton's teacher used. */
  jitter?: number;
  /**
   * Random affine augmentation per example (square images only; augment.ts), instead of `jitter`. With
   * `teacher` the teacher scores the augmented view (function matching); else the cached logits of the
   * un-augmented example are its target.
   */
  augment?: Augment;
  /** Called after every `progressEvery` batches and at the end of each epoch. */
  onProgress?: (p: TrainProgress) => void;
  progressEvery?: number;
  /** Checked between batches; when it returns true training stops early. */
  shouldStop?: () => boolean;
  /**
   * Labelled examples scored after every epoch (never the test set). The weights of the best epoch
   * are kept, and with `patience` training stops after that many epochs without improvement.
   */
  validation?: { features: Float32Array; labels: Int32Array };
  patience?: number;
  /**
   * Function matching (Beyer et al. 2022): teacher logits for exactly the (augmented) batch the
   * student sees, computed on the fly, instead of the cached logits of the un-augmented examples.
   */
  teacher?: (batch: Float32Array, n: number) => Promise<Float32Array>;
}

/** What `onProgress` reports: the shape the CLI's epoch bars draw. */
export type TrainProgress = EpochProgress;

export interface TrainResult {
  epochs: number;
  steps: number;
  samples: number;
  seconds: number;
  samplesPerSec: number;
  finalLoss: number;
  lossHistory: number[];
  /** With `validation`: errors after each epoch, and the epoch (1-based) whose weights were kept. */
  validation?: { errors: number[]; bestEpoch: number; bestErrors: number; count: number; stoppedEarly: boolean };
}

/** Validation errors of the model as it is now. */
function validationErrors(model: tf.LayersModel, v: { features: Float32Array; labels: Int32Array }, inputSize: number, classes: number): number {
  const logits = predictLogits(model, v.features, inputSize);
  let errors = 0;
  for (let i = 0; i < v.labels.length; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    if (best !== v.labels[i]) errors++;
  }
  return errors;
}

/** Shifts a square image by (dx, dy) pixels, filling with the image's minimum (the background). */
function jitterInto(src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number, side: number, dx: number, dy: number): void {
  let bg = Infinity;
  for (let i = 0; i < side * side; i++) bg = Math.min(bg, src[srcOff + i]!);
  for (let y = 0; y < side; y++) {
    const sy = y - dy;
    for (let x = 0; x < side; x++) {
      const sx = x - dx;
      dst[dstOff + y * side + x] = sy >= 0 && sy < side && sx >= 0 && sx < side ? src[srcOff + sy * side + sx]! : bg;
    }
  }
}

/**
 * Custom training loop (no `model.fit`): batches are assembled straight from typed arrays, the
 * teacher logits are looked up from the cache instead of recomputed, and the loss is only read back
 * every `progressEvery` batches, so the backend spends its time in matMuls.
 */
export async function trainModel(model: tf.LayersModel, data: TrainSet, opts: TrainOptions): Promise<TrainResult> {
  const { epochs, batchSize, learningRate, schedule = 'cosine', temperature = 1, alpha = 0, seed = 1, jitter = 0, progressEvery = 20 } = opts;
  const { inputSize, count, classes } = data;
  if (count === 0) throw new Error('training set is empty');
  if (data.features.length !== count * inputSize) throw new Error(`features length ${data.features.length} != count ${count} × inputSize ${inputSize}`);
  if (data.teacherLogits && data.teacherLogits.length !== count * classes) throw new Error('teacher logits do not match the training set');
  const useTeacher = (!!data.teacherLogits || !!opts.teacher) && alpha > 0;
  const useLabels = !!data.labels && (!useTeacher || alpha < 1);
  if (!useTeacher && !useLabels) throw new Error('nothing to learn from: no labels and no teacher logits (or alpha excludes them)');
  const side = Math.round(Math.sqrt(inputSize));
  if (jitter > 0 && side * side !== inputSize) throw new Error(`--jitter needs square images; input size ${inputSize} is not a square`);
  const augment = opts.augment;
  if (augment && side * side !== inputSize) throw new Error(`augment needs square images; input size ${inputSize} is not a square`);
  if (augment && jitter > 0) throw new Error('augment and jitter are exclusive: use augment.shift for translation');

  const rand = mulberry32(seed);
  const optimizer = tf.train.adam(learningRate);
  const batchesPerEpoch = Math.ceil(count / batchSize);
  const totalSteps = epochs * batchesPerEpoch;
  const xBuf = new Float32Array(batchSize * inputSize);
  const tBuf = new Float32Array(batchSize * classes);
  const yBuf = new Int32Array(batchSize);
  const mBuf = new Float32Array(batchSize);
  const lossHistory: number[] = [];
  let step = 0;
  let samples = 0;
  let lastLoss = NaN;
  const t0 = performance.now();
  let stopped = false;
  const val = opts.validation ? { errors: [] as number[], bestEpoch: 0, bestErrors: Infinity, count: opts.validation.labels.length, stoppedEarly: false } : undefined;
  let bestWeights: tf.Tensor[] | undefined;
  let validationMs = 0;

  for (let epoch = 0; epoch < epochs && !stopped; epoch++) {
    const order = permutation(count, rand);
    const e0 = performance.now();
    let epochLoss = 0;
    let lossReads = 0;
    for (let b = 0; b < batchesPerEpoch; b++) {
      if (opts.shouldStop?.()) {
        stopped = true;
        break;
      }
      const start = b * batchSize;
      const n = Math.min(batchSize, count - start);
      for (let i = 0; i < n; i++) {
        const idx = order[start + i]!;
        if (augment) {
          augmentInto(augment, data.features, idx * inputSize, xBuf, i * inputSize, side, rand);
        } else if (jitter > 0) {
          const dx = Math.floor(rand() * (2 * jitter + 1)) - jitter;
          const dy = Math.floor(rand() * (2 * jitter + 1)) - jitter;
          jitterInto(data.features, idx * inputSize, xBuf, i * inputSize, side, dx, dy);
        } else {
          xBuf.set(data.features.subarray(idx * inputSize, (idx + 1) * inputSize), i * inputSize);
        }
        if (useTeacher && !opts.teacher) tBuf.set(data.teacherLogits!.subarray(idx * classes, (idx + 1) * classes), i * classes);
        if (useLabels) {
          const y = data.labels![idx]!;
          yBuf[i] = y >= 0 ? y : 0;
          mBuf[i] = y >= 0 ? 1 : 0;
        }
      }
      if (schedule === 'cosine') {
        // AdamOptimizer reads `learningRate` on every step, so the schedule is a field update.
        (optimizer as unknown as { learningRate: number }).learningRate = (learningRate * (1 + Math.cos((Math.PI * step) / totalSteps))) / 2;
      }
      if (useTeacher && opts.teacher) tBuf.set(await opts.teacher(xBuf.subarray(0, n * inputSize), n));
      const readLoss = (b + 1) % progressEvery === 0 || b === batchesPerEpoch - 1;
      const x = tf.tensor2d(xBuf.subarray(0, n * inputSize), [n, inputSize]);
      const t = useTeacher ? tf.tensor2d(tBuf.subarray(0, n * classes), [n, classes]) : null;
      const y = useLabels ? tf.tidy(() => tf.oneHot(tf.tensor1d(yBuf.subarray(0, n), 'int32'), classes).toFloat() as tf.Tensor2D) : null;
      const m = useLabels ? tf.tensor1d(mBuf.subarray(0, n)) : null;
      const lossT = optimizer.minimize(() => {
        const z = model.apply(x, { training: true }) as tf.Tensor2D;
        return distillationLoss(z, t, y, m, { temperature, alpha: useTeacher ? alpha : 0 });
      }, readLoss);
      for (const v of [x, t, y, m]) v?.dispose();
      step++;
      samples += n;
      if (lossT) {
        lastLoss = (lossT.dataSync() as Float32Array)[0]!;
        lossT.dispose();
        epochLoss += lastLoss;
        lossReads++;
        const elapsed = (performance.now() - e0) / 1000;
        opts.onProgress?.({ epoch: epoch + 1, epochs, batch: b + 1, batches: batchesPerEpoch, loss: lastLoss, samplesPerSec: (start + n) / Math.max(elapsed, 1e-9), epochDone: false });
      }
    }
    const eSec = (performance.now() - e0) / 1000;
    lossHistory.push(lossReads ? epochLoss / lossReads : lastLoss);
    opts.onProgress?.({ epoch: epoch + 1, epochs, batch: batchesPerEpoch, batches: batchesPerEpoch, loss: lossHistory.at(-1)!, samplesPerSec: count / eSec, epochDone: true });
    if (val && !stopped) {
      const v0 = performance.now();
      const errors = validationErrors(model, opts.validation!, inputSize, classes);
      validationMs += performance.now() - v0;
      val.errors.push(errors);
      if (errors < val.bestErrors) {
        val.bestErrors = errors;
        val.bestEpoch = epoch + 1;
        tf.dispose(bestWeights);
        bestWeights = model.getWeights().map((w) => w.clone());
      } else if (opts.patience !== undefined && epoch + 1 - val.bestEpoch >= opts.patience) {
        val.stoppedEarly = epoch + 1 < epochs;
        stopped = true;
      }
    }
  }
  optimizer.dispose();
  if (bestWeights) {
    // Keep the best epoch on validation, not the last one.
    if (val!.bestEpoch !== val!.errors.length) model.setWeights(bestWeights);
    tf.dispose(bestWeights);
  }
  // The rate is the training rate over the whole run; validation passes are not training work.
  const seconds = (performance.now() - t0 - validationMs) / 1000;
  return { epochs: lossHistory.length, steps: step, samples, seconds, samplesPerSec: samples / seconds, finalLoss: lossHistory.at(-1) ?? NaN, lossHistory, validation: val };
}

/** Runs the model in inference mode over a feature matrix, in batches; returns logits [count × classes]. */
export function predictLogits(model: tf.LayersModel, features: Float32Array, inputSize: number, batchSize = 1024): Float32Array {
  const count = features.length / inputSize;
  const classes = (model.outputs[0]!.shape.at(-1) as number) ?? 0;
  const out = new Float32Array(count * classes);
  for (let s = 0; s < count; s += batchSize) {
    const n = Math.min(batchSize, count - s);
    const z = tf.tidy(() => model.predict(tf.tensor2d(features.subarray(s * inputSize, (s + n) * inputSize), [n, inputSize])) as tf.Tensor);
    out.set(z.dataSync() as Float32Array, s * classes);
    z.dispose();
  }
  return out;
}
