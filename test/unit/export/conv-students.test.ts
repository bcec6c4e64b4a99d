import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportToOnnx, inspectOnnx, quantizeInt8 } from '../../../cloud/export/index.js';
import { buildModel } from '../../../cloud/models/build.js';
import { parseArch } from '../../../cloud/models/spec.js';
import { argmaxRows, maxAbsDiff, predict, rand, randomizeWeights, runOrt, setup } from './helpers.js';

beforeAll(setup);

const TOL = 1e-4;

describe('conv students: ORT output of the exported file equals tfjs', () => {
  it.each([
    ['cnn:4,8/16', [8, 8, 1], ['Reshape', 'Transpose', 'Conv', 'Relu', 'MaxPool', 'Conv', 'Relu', 'MaxPool', 'Transpose', 'Flatten', 'Gemm', 'Relu', 'Gemm']],
    ['dscnn:4,8', [8, 8, 1], ['Reshape', 'Transpose', 'Conv', 'Conv', 'Relu', 'MaxPool', 'Conv', 'Conv', 'Relu', 'MaxPool', 'Transpose', 'Flatten', 'Gemm']],
    ['dscnn:6/8', [6, 10, 3], ['Reshape', 'Transpose', 'Conv', 'Conv', 'Relu', 'MaxPool', 'Transpose', 'Flatten', 'Gemm', 'Relu', 'Gemm']],
  ] as const)('%s on %j', async (spec, shape, ops) => {
    const size = shape[0] * shape[1] * shape[2];
    const model = buildModel(parseArch(spec), { inputSize: size, classes: 3, imageShape: [...shape], seed: 3 });
    randomizeWeights(model, 5);
    const x = rand(5 * size, 9, 0, 1);
    const bytes = exportToOnnx(model);
    const want = predict(model, x, [5, size]);
    expect(maxAbsDiff(await runOrt(bytes, x, [5, size]), want)).toBeLessThanOrEqual(TOL);
    const info = inspectOnnx(bytes);
    expect(info.nodeOps).toEqual(ops);
    expect(info.inputs[0]?.shape).toEqual(['N', size]);
    // Weights only: the same parameter count as tfjs (depthwise kernels are stored once, not per group).
    expect(info.initializerBytes - 8 * 2).toBeGreaterThanOrEqual(model.countParams() * 4);
    // int8 weights keep the decisions of the fp32 model on these inputs.
    const q = await runOrt(quantizeInt8(bytes), x, [5, size]);
    expect(maxAbsDiff(q, want)).toBeLessThan(0.1 * Math.max(...want.map(Math.abs)));
    expect(argmaxRows(q, 3).filter((v, i) => v === argmaxRows(want, 3)[i]).length).toBeGreaterThanOrEqual(4);
    // Default: convs stay fp32 (measured fastest), dense layers int8; weight-only dequantizes conv weights.
    const convInputs = (b: Uint8Array) => inspectOnnx(b).nodeOps.filter((op) => op === 'DequantizeLinear').length;
    expect(convInputs(quantizeInt8(bytes))).toBe(0);
    const wo = quantizeInt8(bytes, { convForm: 'weight-only' });
    expect(convInputs(wo)).toBeGreaterThanOrEqual(spec.startsWith('dscnn') ? 2 : 1);
    expect(maxAbsDiff(await runOrt(wo, x, [5, size]), want)).toBeLessThan(0.1 * Math.max(...want.map(Math.abs)));
    // ConvInteger form: int8 compute in ORT, same tolerance.
    const qi = quantizeInt8(bytes, { convForm: 'integer' });
    expect(inspectOnnx(qi).nodeOps).toContain('ConvInteger');
    const gotI = await runOrt(qi, x, [5, size]);
    expect(maxAbsDiff(gotI, want)).toBeLessThan(0.1 * Math.max(...want.map(Math.abs)));
    model.dispose();
  });

  it('rejects an unknown conv quantization form', () => {
    const model = buildModel(parseArch('cnn:2'), { inputSize: 16, classes: 2, seed: 1 });
    expect(() => quantizeInt8(exportToOnnx(model), { convForm: 'qlinear' as never })).toThrow(/unknown conv quantization form "qlinear"/);
    model.dispose();
  });

  it('DepthwiseConv2D with a depth multiplier, stride 2 and a bias becomes one grouped Conv', async () => {
    const model = tf.sequential({
      layers: [tf.layers.depthwiseConv2d({ inputShape: [7, 7, 3], kernelSize: 3, depthMultiplier: 2, strides: 2, padding: 'same', activation: 'relu' }), tf.layers.flatten()],
    });
    randomizeWeights(model, 8);
    const x = rand(2 * 147, 4, -1, 1);
    const bytes = exportToOnnx(model);
    expect(maxAbsDiff(await runOrt(bytes, x, [2, 7, 7, 3]), predict(model, x, [2, 7, 7, 3]))).toBeLessThanOrEqual(TOL);
    expect(inspectOnnx(bytes).nodeOps).toEqual(['Transpose', 'Conv', 'Relu', 'Transpose', 'Flatten']);
    model.dispose();
  });
});
