import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportToOnnx, inspectOnnx } from '../../../cloud/export/index.js';
import { maxAbsDiff, predict, rand, runOrt, setup } from './helpers.js';

beforeAll(setup);

const TOL = 1e-4;

describe('whole students: onnxruntime-node output equals tfjs model.predict (max abs diff <= 1e-4)', () => {
  it('MLP 784-800-800-10 with dropout (default small random init)', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [784], units: 800, activation: 'relu' }),
        tf.layers.dropout({ rate: 0.2 }),
        tf.layers.dense({ units: 800, activation: 'relu' }),
        tf.layers.dropout({ rate: 0.2 }),
        tf.layers.dense({ units: 10 }),
      ],
    });
    const x = rand(8 * 784, 21, 0, 1);
    const bytes = exportToOnnx(model, { producerName: 'apprentice-test', docString: 'mlp', metadata: { round: '3', teacher: 'abc' } });
    expect(maxAbsDiff(await runOrt(bytes, x, [8, 784]), predict(model, x, [8, 784]))).toBeLessThanOrEqual(TOL);
    const info = inspectOnnx(bytes);
    expect(info).toMatchObject({
      opset: 13, irVersion: 7, producerName: 'apprentice-test', nodeOps: ['Gemm', 'Relu', 'Gemm', 'Relu', 'Gemm'],
      inputs: [{ name: 'input', shape: ['N', 784], elemType: 'FLOAT' }], outputs: [{ name: 'logits', shape: ['N', 10], elemType: 'FLOAT' }],
      metadata: { round: '3', teacher: 'abc' },
    });
    expect(info.initializerBytes).toBe((784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10) * 4);
    // Dynamic batch: the same file serves batch 1.
    const one = x.subarray(0, 784);
    expect(maxAbsDiff(await runOrt(bytes, one, [1, 784]), predict(model, one, [1, 784]))).toBeLessThanOrEqual(TOL);
    model.dispose();
  });

  it('small CNN (conv-BN-relu-pool-conv(same,stride 2)-flatten-dense) on 28x28x1', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 8, kernelSize: 3 }),
        tf.layers.batchNormalization({}),
        tf.layers.activation({ activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.conv2d({ filters: 16, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu' }),
        tf.layers.dropout({ rate: 0.25 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 32, activation: 'relu' }),
        tf.layers.dense({ units: 10 }),
      ],
    });
    // Non-trivial BN statistics so the fold is actually exercised.
    const bn = model.layers[1] as tf.layers.Layer;
    bn.setWeights([tf.tensor(rand(8, 1, 0.5, 1.5)), tf.tensor(rand(8, 2, -0.2, 0.2)), tf.tensor(rand(8, 3, -0.1, 0.1)), tf.tensor(rand(8, 4, 0.05, 0.3))]);
    const x = rand(6 * 784, 22, 0, 1);
    const bytes = exportToOnnx(model, { opset: 17 });
    expect(maxAbsDiff(await runOrt(bytes, x, [6, 28, 28, 1]), predict(model, x, [6, 28, 28, 1]))).toBeLessThanOrEqual(TOL);
    const info = inspectOnnx(bytes);
    expect(info.opset).toBe(17);
    expect(info.nodeOps).toEqual(['Transpose', 'Conv', 'Relu', 'MaxPool', 'Conv', 'Relu', 'Transpose', 'Flatten', 'Gemm', 'Relu', 'Gemm']);
    expect(info.inputs[0]?.shape).toEqual(['N', 28, 28, 1]);
    model.dispose();
  });
});
