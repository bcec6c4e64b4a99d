import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { distillationLoss, distillationLossReference } from '../../../cloud/distill/loss.js';
import { initBackend } from '../../../cloud/tf/backend.js';

beforeAll(async () => {
  await initBackend();
});

const lossOf = (s: number[][], t: number[][] | null, y: number[] | null, mask: number[] | null, T: number, alpha: number) =>
  tf.tidy(() =>
    distillationLoss(tf.tensor2d(s), t ? tf.tensor2d(t) : null, y ? (tf.oneHot(tf.tensor1d(y, 'int32'), s[0]!.length).toFloat() as tf.Tensor2D) : null, mask ? tf.tensor1d(mask) : null, { temperature: T, alpha }).dataSync()[0]!,
  );

describe('distillation loss', () => {
  it('matches a hand-computed two-class case', () => {
    // Student logits [0, 0], teacher logits [2, 0], T = 2, alpha = 0.5, label 0.
    // Teacher at T=2: softmax([1, 0]) = [e/(e+1), 1/(e+1)] = [0.7310586, 0.2689414].
    // Student at T=2: [0.5, 0.5]. KL = 0.7310586·ln(0.7310586/0.5) + 0.2689414·ln(0.2689414/0.5)
    //   = 0.7310586·0.3798854 + 0.2689414·(−0.6201145) = 0.2777187 − 0.1667771 = 0.1109416.
    // Soft term: 0.5 · 4 · 0.1109416 = 0.2218832. Hard term: 0.5 · −ln(0.5) = 0.3465736.
    const expected = 0.2218832 + 0.3465736;
    expect(lossOf([[0, 0]], [[2, 0]], [0], [1], 2, 0.5)).toBeCloseTo(expected, 4);
    expect(distillationLossReference([0, 0], [2, 0], 0, { temperature: 2, alpha: 0.5 })).toBeCloseTo(expected, 4);
  });

  it('uses only the soft term for unlabeled rows', () => {
    const labelled = lossOf([[0, 0]], [[2, 0]], [0], [1], 2, 0.5);
    const unlabeled = lossOf([[0, 0]], [[2, 0]], [0], [0], 2, 0.5);
    expect(unlabeled).toBeCloseTo(0.2218832, 5);
    expect(labelled - unlabeled).toBeCloseTo(0.3465736, 5);
  });

  it('averages over the batch and agrees with the reference on random 10-class rows', () => {
    const s = [[1.5, -0.3, 0.2, 0, 2, -1, 0.5, 0.1, -0.2, 0.3], [0, 0.1, 3, -2, 0, 0, 1, 0, 0.4, -0.6]];
    const t = [[4, -1, 0, 0.5, 6, -3, 1, 0, 0, 2], [-1, 0, 8, -4, 0.2, 0, 2, 1, 0, -2]];
    const y = [4, 2];
    const got = lossOf(s, t, y, [1, 1], 20, 0.9);
    const ref = (distillationLossReference(s[0]!, t[0]!, 4, { temperature: 20, alpha: 0.9 }) + distillationLossReference(s[1]!, t[1]!, 2, { temperature: 20, alpha: 0.9 })) / 2;
    expect(got).toBeCloseTo(ref, 4);
    expect(got).toBeGreaterThan(0);
  });

  it('is plain cross-entropy without a teacher, and zero KL when student equals teacher', () => {
    expect(lossOf([[1, 0, 0]], null, [0], null, 1, 0)).toBeCloseTo(-Math.log(Math.E / (Math.E + 2)), 5);
    expect(lossOf([[1, 2, 3]], [[1, 2, 3]], null, null, 5, 1)).toBeCloseTo(0, 6);
  });
});
