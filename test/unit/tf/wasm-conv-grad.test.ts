import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { im2colTransposedInto, installWasmConvGradKernels, WASM_CONV_GRAD_KERNELS, WASM_REPLACED_KERNELS } from '../../../cloud/tf/wasm-conv-grad.js';
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
  // dx of stride-1 'same' multiplier-1 depthwise convs runs on the native forward kernel; the others on JS loops.
  { name: 'depthwise 5x5 same on one channel', x: [2, 7, 6, 1], w: [5, 5, 1, 1], f: (x, w) => tf.depthwiseConv2d(x, w, 1, 'same') },
  { name: 'depthwise 3x3 same multiplier 2', x: [2, 5, 6, 3], w: [3, 3, 3, 2], f: (x, w) => tf.depthwiseConv2d(x, w, 1, 'same') },
  { name: 'depthwise 3x3 same stride 2 + relu + 2x2 max-pool', x: [2, 9, 8, 4], w: [3, 3, 4, 1], f: (x, w) => tf.maxPool(tf.relu(tf.depthwiseConv2d(x, w, 2, 'same')), 2, 2, 'valid') },
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

  // Pool inputs with many exactly equal values (not only ReLU's zeros): the gradient must go to the
  // first maximum of each window in (ky, kx) order, as on the cpu backend, on the 2×2 fast path (odd
  // sizes leave a row and a column outside every window) and on the general path.
  const poolCases: Array<{ name: string; x: number[]; f: (x: tf.Tensor4D) => tf.Tensor4D }> = [
    { name: '2x2 stride 2 valid, odd sizes', x: [2, 7, 9, 3], f: (x) => tf.maxPool(x, 2, 2, 'valid') },
    { name: '3x3 stride 2 same', x: [2, 6, 7, 2], f: (x) => tf.maxPool(x, 3, 2, 'same') },
    { name: '2x2 stride 1 valid (overlapping windows)', x: [1, 5, 5, 2], f: (x) => tf.maxPool(x, 2, 1, 'valid') },
  ];
  for (const c of poolCases) {
    it(`max-pool gradient with exact ties, ${c.name}: routes dy like the cpu backend`, async () => {
      const run = async (backend: string) => {
        await tf.setBackend(backend);
        return tf.tidy(() => {
          // Values in {-1, -0.5, 0, 0.5, 1}: most windows hold a repeated maximum.
          const x = tf.tensor4d(rand(c.x.reduce((a, b) => a * b), 21).map((v) => Math.round(2 * v) / 2), c.x as [number, number, number, number]);
          const probe = tf.tensor(rand(c.f(x).size, 22).map((v) => v + 2), c.f(x).shape);
          return tf.grad((a: tf.Tensor) => tf.sum(tf.mul(c.f(a as tf.Tensor4D), probe)))(x).dataSync() as Float32Array;
        });
      };
      const ref = await run('cpu');
      const got = await run('wasm');
      // Overlapping windows sum several dy values into one pixel, in another order than the cpu backend.
      expectClose(got, ref);
      // Routing: the same pixels receive gradient.
      expect(Array.from(got, (v) => v !== 0)).toEqual(Array.from(ref, (v) => v !== 0));
      expect(ref.some((v) => v !== 0)).toBe(true);
    });
  }

  it('im2col writes every element, out-of-image taps included, into uninitialised memory', () => {
    for (const [xShape, stride, pad, dil] of [
      [[2, 5, 6, 3], 1, 'same', 1],
      [[1, 7, 8, 2], 2, 'valid', 1],
      [[2, 6, 6, 2], 1, 'same', 2],
    ] as const) {
      const [N, H, W, C] = xShape;
      const c = tf.backend_util.computeConv2DInfo([...xShape], [3, 3, C, 4], stride, dil, pad, undefined, false, 'channelsLast');
      const x = rand(N * H * W * C, 31);
      const M = N * c.outHeight * c.outWidth;
      const col = new Float32Array(9 * C * M).fill(Number.NaN);
      im2colTransposedInto(x, c, col);
      // Reference: the definition, one element at a time.
      for (let ky = 0; ky < 3; ky++)
        for (let kx = 0; kx < 3; kx++)
          for (let ci = 0; ci < C; ci++)
            for (let n = 0; n < N; n++)
              for (let oy = 0; oy < c.outHeight; oy++)
                for (let ox = 0; ox < c.outWidth; ox++) {
                  const iy = oy * c.strideHeight + ky * c.dilationHeight - c.padInfo.top;
                  const ix = ox * c.strideWidth + kx * c.dilationWidth - c.padInfo.left;
                  const want = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[((n * H + iy) * W + ix) * C + ci]! : 0;
                  const got = col[((ky * 3 + kx) * C + ci) * M + (n * c.outHeight + oy) * c.outWidth + ox];
                  if (got !== want) expect({ xShape, stride, pad, dil, ky, kx, ci, n, oy, ox, got }).toEqual({ xShape, stride, pad, dil, ky, kx, ci, n, oy, ox, got: want });
                }
      expect(col.some(Number.isNaN)).toBe(false);
    }
  });

  it('Identity shares the data: equal values, no new buffer, and it outlives its input', async () => {
    await tf.setBackend('wasm');
    const x = tf.tensor2d(rand(12, 41), [3, 4]);
    const want = Array.from(x.dataSync());
    const buffers = () => (tf.memory() as { numDataBuffers: number }).numDataBuffers;
    const before = buffers();
    const y = tf.clone(x);
    expect(buffers()).toBe(before);
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual(want);
    // Gradients pass through Identity too: d(sum(clone(x)·2))/dx = 2.
    const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.clone(a), 2)))(y);
    expect(Array.from(g.dataSync())).toEqual(want.map(() => 2));
    tf.dispose([y, g]);
    expect(buffers()).toBe(before - 1);
  });

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
