import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { installWasmConvGradKernels, WASM_CONV_GRAD_KERNELS, WASM_REPLACED_KERNELS } from '../../../cloud/tf/wasm-conv-grad.js';
import { installWasmMatMulOverride } from '../../../cloud/tf/wasm-matmul.js';
import { mulberry32 } from '../../../shared/util/random.js';

function rand(n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

/** Gradients of sum(f(x, w) * probe) w.r.t. x and w on the given backend, as plain arrays. */
async function grads(backend: string, f: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D, xShape: number[], wShape: number[]): Promise<{ dx: Float32Array; dw: Float32Array; y: Float32Array }> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const x = tf.tensor4d(rand(xShape.reduce((a, b) => a * b), 11), xShape as [number, number, number, number]);
    const w = tf.tensor4d(rand(wShape.reduce((a, b) => a * b), 12), wShape as [number, number, number, number]);
    const y = f(x, w);
    // A random probe makes every output element matter with a different weight.
    const probe = tf.tensor(rand(y.size, 13), y.shape);
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D), probe)));
    const [dx, dw] = g([x, w]);
    return { dx: dx!.dataSync() as Float32Array, dw: dw!.dataSync() as Float32Array, y: y.dataSync() as Float32Array };
  });
}

function expectClose(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!)));
  expect(worst).toBeLessThan(1e-4);
}

type Case = { name: string; x: number[]; w: number[]; f: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D };
const cases: Case[] = [
  { name: 'conv2d 3x3 same', x: [2, 6, 5, 3], w: [3, 3, 3, 4], f: (x, w) => tf.conv2d(x, w, 1, 'same') },
  { name: 'conv2d 3x3 valid stride 2', x: [2, 7, 8, 2], w: [3, 3, 2, 5], f: (x, w) => tf.conv2d(x, w, 2, 'valid') },
  { name: 'conv2d 1x1 (pointwise)', x: [3, 4, 4, 6], w: [1, 1, 6, 2], f: (x, w) => tf.conv2d(x, w, 1, 'same') },
  { name: 'conv2d 2x3 same stride 2', x: [1, 5, 7, 2], w: [2, 3, 2, 3], f: (x, w) => tf.conv2d(x, w, [2, 2], 'same') },
  { name: 'conv2d 5x5 same + 2x2 max-pool', x: [2, 6, 6, 2], w: [5, 5, 2, 3], f: (x, w) => tf.maxPool(tf.conv2d(x, w, 1, 'same'), 2, 2, 'valid') },
  { name: 'conv2d + 3x3 stride-2 same max-pool on odd sizes', x: [2, 7, 5, 2], w: [3, 3, 2, 3], f: (x, w) => tf.maxPool(tf.conv2d(x, w, 1, 'same'), 3, 2, 'same') },
  // ReLU makes ties (zeros) in the pool windows; odd sizes leave a row and a column outside every window.
  { name: 'conv2d 3x3 same + relu + 2x2 max-pool on odd sizes', x: [2, 7, 9, 3], w: [3, 3, 3, 4], f: (x, w) => tf.maxPool(tf.relu(tf.conv2d(x, w, 1, 'same')), 2, 2, 'valid') },
  { name: 'conv2d 3x3 valid stride (2, 3)', x: [2, 8, 10, 2], w: [3, 3, 2, 3], f: (x, w) => tf.conv2d(x, w, [2, 3], 'valid') },
  { name: 'depthwise 3x3 same', x: [2, 6, 5, 3], w: [3, 3, 3, 1], f: (x, w) => tf.depthwiseConv2d(x, w, 1, 'same') },
  { name: 'depthwise multiplier 2, stride 2 valid', x: [2, 7, 6, 2], w: [3, 3, 2, 2], f: (x, w) => tf.depthwiseConv2d(x, w, 2, 'valid') },
];

describe('wasm conv gradient kernels', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
    installWasmMatMulOverride();
    const added = installWasmConvGradKernels();
    // The wasm backend of tfjs 4.22 lacks all three; if a later version ships one, ours steps aside.
    for (const k of WASM_CONV_GRAD_KERNELS) expect(tf.getKernel(k, 'wasm')).toBeDefined();
    expect(added).toEqual(expect.arrayContaining([...WASM_REPLACED_KERNELS]));
  });

  for (const c of cases) {
    it(`${c.name}: matches the cpu backend's gradients`, async () => {
      const ref = await grads('cpu', c.f, c.x, c.w);
      const got = await grads('wasm', c.f, c.x, c.w);
      expectClose(got.y, ref.y);
      expectClose(got.dw, ref.dw);
      expectClose(got.dx, ref.dx);
      // Non-trivial gradients: a kernel returning zeros would match an all-zero reference only.
      expect(Math.max(...ref.dw.map(Math.abs))).toBeGreaterThan(0.1);
    });
  }

  it('installing twice registers nothing new and keeps the kernels', async () => {
    const again = installWasmConvGradKernels();
    expect(again).toEqual(installWasmConvGradKernels());
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
  });

  it('frees its temporary column matrix (no tensor leak on the wasm backend)', async () => {
    await tf.setBackend('wasm');
    const x = tf.tensor4d(rand(2 * 6 * 6 * 2, 1), [2, 6, 6, 2]);
    const w = tf.tensor4d(rand(3 * 3 * 2 * 3, 2), [3, 3, 2, 3]);
    const before = tf.memory().numBytes;
    const dw = tf.grad((ww: tf.Tensor) => tf.sum(tf.conv2d(x, ww as tf.Tensor4D, 1, 'same')))(w);
    expect(tf.memory().numBytes - before).toBe(dw.size * 4);
    tf.dispose([x, w, dw]);
  });
});
