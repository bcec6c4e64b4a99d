import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { trainModel, type TrainSet } from '../../../cloud/distill/trainer.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import { mulberry32 } from '../../../shared/util/random.js';

/** 4×4 single-pixel images: the class is which quadrant the bright pixel is in. */
function quadrants(n: number, seed: number): TrainSet {
  const r = mulberry32(seed);
  const features = new Float32Array(n * 16);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const y = Math.floor(r() * 4);
    const x = Math.floor(r() * 4);
    features[i * 16 + y * 4 + x] = 1;
    labels[i] = (y >> 1) * 2 + (x >> 1);
  }
  return { features, inputSize: 16, count: n, classes: 4, labels };
}

describe('trainModel', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('function matching: the teacher sees exactly the augmented batch the student trains on', async () => {
    const data = quadrants(40, 1);
    const seen: Float32Array[] = [];
    const model = buildModel(parseArch('mlp:4'), { inputSize: 16, classes: 4, seed: 1 });
    const r = await trainModel(model, data, {
      epochs: 1, batchSize: 16, learningRate: 1e-2, temperature: 2, alpha: 1, jitter: 1, seed: 3,
      teacher: async (batch, n) => {
        expect(batch.length).toBe(n * 16);
        seen.push(batch.slice());
        return new Float32Array(n * 4);
      },
    });
    expect(r.steps).toBe(3);
    expect(seen.map((b) => b.length / 16)).toEqual([16, 16, 8]);
    // Jitter moved pixels: the batches are not all copies of original examples.
    const originals = new Set(Array.from({ length: 40 }, (_, i) => data.features.subarray(i * 16, (i + 1) * 16).join()));
    const rows = seen.flatMap((b) => Array.from({ length: b.length / 16 }, (_, i) => b.subarray(i * 16, (i + 1) * 16).join()));
    expect(rows.some((row) => !originals.has(row))).toBe(true);
    model.dispose();
  });

  it('early stopping: scores validation each epoch, stops after `patience` epochs without a gain and keeps the best weights', async () => {
    const data = quadrants(200, 2);
    const val = quadrants(60, 3);
    const model = buildModel(parseArch('mlp:8'), { inputSize: 16, classes: 4, seed: 2 });
    // Validation errors cannot fall below their best forever (they bottom out at 0), so 30 epochs always stop early.
    const r = await trainModel(model, data, { epochs: 30, batchSize: 20, learningRate: 0.05, schedule: 'constant', seed: 1, validation: { features: val.features, labels: val.labels! }, patience: 2 });
    const v = r.validation!;
    expect(v.errors).toHaveLength(r.epochs);
    expect(v.bestErrors).toBe(Math.min(...v.errors));
    expect(v.errors[v.bestEpoch - 1]).toBe(v.bestErrors);
    expect(v.stoppedEarly).toBe(true);
    expect(r.epochs - v.bestEpoch).toBe(2);
    // The model holds the best epoch's weights: scoring it again gives the best count.
    const logits = model.predict(tf.tensor2d(val.features, [60, 16])) as tf.Tensor2D;
    const pred = logits.argMax(1).dataSync();
    const errors = Array.from(pred).filter((p, i) => p !== val.labels![i]).length;
    expect(errors).toBe(v.bestErrors);
    tf.dispose(logits);
    model.dispose();
  });
});
