import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { trainModel } from '../../../cloud/distill/trainer.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import { installWasmConvGradKernels } from '../../../cloud/tf/wasm-conv-grad.js';
import { installWasmMatMulOverride } from '../../../cloud/tf/wasm-matmul.js';
import { mulberry32 } from '../../../shared/util/random.js';

/**
 * End to end through the real training loop: the same conv student, data, seed and jitter trained on
 * the cpu backend (reference kernels) and on wasm (our gradient kernels) must end with the same
 * weights, up to float summation order. Tiny fixture: 8×8 images, 128 examples, 4 steps.
 */
const inputSize = 64;
const classes = 4;
const count = 128;

async function trainOn(backend: string, arch: string): Promise<{ weights: Float32Array[]; loss: number }> {
  await tf.setBackend(backend);
  const r = mulberry32(5);
  const features = Float32Array.from({ length: count * inputSize }, () => r());
  const labels = Int32Array.from({ length: count }, () => Math.floor(r() * classes));
  const teacherLogits = Float32Array.from({ length: count * classes }, () => 4 * r() - 2);
  const model = buildModel(parseArch(arch), { inputSize, classes, imageShape: [8, 8, 1], seed: 3 });
  const t = await trainModel(model, { features, inputSize, count, classes, labels, teacherLogits }, { epochs: 1, batchSize: 32, learningRate: 3e-3, temperature: 4, alpha: 0.5, seed: 2, jitter: 1 });
  const weights = model.getWeights().map((w) => w.dataSync() as Float32Array);
  model.dispose();
  return { weights, loss: t.finalLoss };
}

describe('conv students train alike on wasm and cpu', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
    installWasmMatMulOverride();
    installWasmConvGradKernels();
  });

  for (const arch of ['cnn:4,8/16', 'dscnn:4,8']) {
    it(`${arch}: same weights after 4 Adam steps`, async () => {
      const ref = await trainOn('cpu', arch);
      const got = await trainOn('wasm', arch);
      expect(got.weights.length).toBe(ref.weights.length);
      let worst = 0;
      let moved = 0;
      ref.weights.forEach((w, i) => w.forEach((v, j) => (worst = Math.max(worst, Math.abs(got.weights[i]![j]! - v)))));
      // Adam moves each weight by about lr per step: the weights did change, by far more than they differ.
      const init = buildModel(parseArch(arch), { inputSize, classes, imageShape: [8, 8, 1], seed: 3 });
      init.getWeights().forEach((w, i) => (w.dataSync() as Float32Array).forEach((v, j) => (moved = Math.max(moved, Math.abs(ref.weights[i]![j]! - v)))));
      init.dispose();
      expect(moved).toBeGreaterThan(5e-3);
      expect(worst).toBeLessThan(1e-5);
      expect(Math.abs(got.loss - ref.loss)).toBeLessThan(1e-4);
    });
  }
});
