import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportToOnnx, inspectOnnx } from '../../../cloud/export/index.js';
import { maxAbsDiff, predict, rand, randomizeWeights, runOrt, setup } from './helpers.js';

const BATCH = 5;
const TOL = 1e-4;

beforeAll(setup);

/** Exports `layers` as a Sequential, runs ORT and tfjs on the same random batch, returns ops + diff. */
async function parity(layers: tf.layers.Layer[], opts: { randomize?: boolean; seed?: number } = {}): Promise<{ ops: string[]; diff: number }> {
  const model = tf.sequential({ layers });
  if (opts.randomize) randomizeWeights(model, opts.seed ?? 3);
  const inShape = model.inputs[0]!.shape.slice(1) as number[];
  const shape = [BATCH, ...inShape];
  const x = rand(shape.reduce((a, d) => a * d, 1), opts.seed ?? 11);
  const bytes = exportToOnnx(model);
  const ours = await runOrt(bytes, x, shape);
  const theirs = predict(model, x, shape);
  const info = inspectOnnx(bytes);
  model.dispose();
  return { ops: info.nodeOps, diff: maxAbsDiff(ours, theirs) };
}

describe('exportToOnnx per-layer parity with tfjs (max abs diff <= 1e-4)', () => {
  for (const activation of ['linear', 'relu', 'softmax', 'sigmoid', 'tanh'] as const) {
    it(`Dense ${activation}`, async () => {
      const { ops, diff } = await parity([tf.layers.dense({ inputShape: [16], units: 8, activation })]);
      expect(diff).toBeLessThanOrEqual(TOL);
      expect(ops[0]).toBe('Gemm');
    });
  }

  it('Dense without bias, Activation/ReLU(maxValue)/Softmax layers', async () => {
    const { ops, diff } = await parity([
      tf.layers.dense({ inputShape: [12], units: 10, useBias: false }),
      tf.layers.activation({ activation: 'relu' }),
      tf.layers.dense({ units: 9 }),
      tf.layers.reLU({ maxValue: 0.3 }),
      tf.layers.dense({ units: 7 }),
      tf.layers.reLU({}),
      tf.layers.activation({ activation: 'linear' }),
      tf.layers.dense({ units: 6 }),
      tf.layers.softmax({}),
      tf.layers.activation({ activation: 'softmax' }),
    ], { randomize: true });
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Gemm', 'Relu', 'Gemm', 'Clip', 'Gemm', 'Relu', 'Gemm', 'Softmax', 'Softmax']);
  });

  it('Dropout is removed', async () => {
    const { ops, diff } = await parity([
      tf.layers.dense({ inputShape: [10], units: 8, activation: 'relu' }),
      tf.layers.dropout({ rate: 0.5 }),
      tf.layers.dense({ units: 4 }),
    ]);
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Gemm', 'Relu', 'Gemm']);
  });

  it('Reshape, Dense on a rank-3 tensor (MatMul+Add), Flatten', async () => {
    const { ops, diff } = await parity([
      tf.layers.reshape({ inputShape: [12], targetShape: [3, 4] }),
      tf.layers.dense({ units: 5, activation: 'relu' }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 3 }),
    ]);
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Reshape', 'MatMul', 'Add', 'Relu', 'Flatten', 'Gemm']);
  });

  it('BatchNormalization after Dense is folded into the Gemm', async () => {
    const { ops, diff } = await parity([
      tf.layers.dense({ inputShape: [10], units: 8 }),
      tf.layers.batchNormalization({}),
      tf.layers.activation({ activation: 'relu' }),
      tf.layers.dense({ units: 4 }),
    ], { randomize: true });
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Gemm', 'Relu', 'Gemm']);
  });

  it('BatchNormalization after an activation stays as Mul+Add (2-D and NCHW)', async () => {
    const { ops, diff } = await parity([
      tf.layers.conv2d({ inputShape: [6, 6, 2], filters: 3, kernelSize: 3, activation: 'relu' }),
      tf.layers.batchNormalization({ center: false }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 8, activation: 'relu' }),
      tf.layers.batchNormalization({ scale: false }),
    ], { randomize: true });
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Transpose', 'Conv', 'Relu', 'Mul', 'Add', 'Transpose', 'Flatten', 'Gemm', 'Relu', 'Mul', 'Add']);
  });

  it('BatchNormalization after Conv2D is folded into the Conv', async () => {
    const { ops, diff } = await parity([
      tf.layers.conv2d({ inputShape: [7, 7, 3], filters: 4, kernelSize: 3, padding: 'same' }),
      tf.layers.batchNormalization({ epsilon: 0.01 }),
      tf.layers.activation({ activation: 'relu' }),
      tf.layers.flatten(),
    ], { randomize: true });
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Transpose', 'Conv', 'Relu', 'Transpose', 'Flatten']);
  });

  const convCases: [string, Parameters<typeof tf.layers.conv2d>[0]][] = [
    ['valid', { filters: 4, kernelSize: 3, padding: 'valid' }],
    ['same', { filters: 4, kernelSize: 3, padding: 'same' }],
    ['same, stride 2 on odd size (asymmetric pad)', { filters: 3, kernelSize: 4, strides: 2, padding: 'same' }],
    ['valid, strides [2,1], kernel [3,2], no bias, relu', { filters: 5, kernelSize: [3, 2], strides: [2, 1], useBias: false, activation: 'relu' }],
  ];
  for (const [label, cfg] of convCases) {
    it(`Conv2D ${label}`, async () => {
      const { ops, diff } = await parity([tf.layers.conv2d({ inputShape: [9, 9, 2], ...cfg })], { randomize: true });
      expect(diff).toBeLessThanOrEqual(TOL);
      expect(ops.filter((o) => o === 'Conv')).toHaveLength(1);
    });
  }

  it('MaxPooling2D valid/same and AveragePooling2D same keep NCHW between spatial ops', async () => {
    const { ops, diff } = await parity([
      tf.layers.conv2d({ inputShape: [9, 9, 2], filters: 3, kernelSize: 2 }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }),
      tf.layers.averagePooling2d({ poolSize: 2, padding: 'same' }),
      tf.layers.flatten(),
    ], { randomize: true });
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Transpose', 'Conv', 'MaxPool', 'MaxPool', 'AveragePool', 'Transpose', 'Flatten']);
  });

  it('MaxPooling2D directly on the input, softmax over channels of a 4-D tensor', async () => {
    const { ops, diff } = await parity([
      tf.layers.maxPooling2d({ inputShape: [8, 8, 3], poolSize: 2 }),
      tf.layers.activation({ activation: 'softmax' }),
    ]);
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Transpose', 'MaxPool', 'Transpose', 'Softmax']);
  });

  it('a functional chain model (tf.model) exports like a Sequential', async () => {
    const input = tf.input({ shape: [6] });
    const h = tf.layers.dense({ units: 5, activation: 'tanh' }).apply(input) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 3, activation: 'sigmoid' }).apply(h) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    const x = rand(4 * 6, 5);
    const bytes = exportToOnnx(model, { inputName: 'x', outputName: 'y' });
    expect(maxAbsDiff(await runOrt(bytes, x, [4, 6]), predict(model, x, [4, 6]))).toBeLessThanOrEqual(TOL);
    const info = inspectOnnx(bytes);
    expect(info.inputs).toEqual([{ name: 'x', shape: ['N', 6], elemType: 'FLOAT' }]);
    expect(info.outputs).toEqual([{ name: 'y', shape: ['N', 3], elemType: 'FLOAT' }]);
  });

  it('a Sequential nested as the first layer (inlined by tfjs) exports correctly', async () => {
    const inner = tf.sequential({ layers: [tf.layers.dense({ inputShape: [6], units: 5, activation: 'relu' })] });
    const { ops, diff } = await parity([inner as unknown as tf.layers.Layer, tf.layers.dense({ units: 3 })]);
    expect(diff).toBeLessThanOrEqual(TOL);
    expect(ops).toEqual(['Gemm', 'Relu', 'Gemm']);
  });
});
