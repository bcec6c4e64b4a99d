import * as tf from '@tensorflow/tfjs';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { views, type WasmBackend } from './wasm-heap.js';

type PoolInfo = tf.backend_util.Conv2DInfo;

/**
 * `MaxPoolGrad` for the wasm backend, replacing its own (profiled with tf.profile on cnn:16,32 at batch
 * 128: 153 ms of a 909 ms step). dy goes to the first maximum of each window in (ky, kx) order, as the
 * cpu backend does. Reads x and dy and writes dx in the wasm heap (wasm-heap.ts).
 */
export const maxPoolGrad: KernelFunc = (args) => {
  const backend = args.backend as unknown as WasmBackend;
  const { dy, input } = args.inputs as { dy: TensorInfo; input: TensorInfo };
  const a = args.attrs as NamedAttrMap & { filterSize: [number, number] | number; strides: [number, number] | number; pad: 'same' | 'valid' | number; dimRoundingMode?: 'floor' | 'round' | 'ceil' };
  const c = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], a.filterSize, a.strides, 1, a.pad, a.dimRoundingMode);
  const out = backend.makeOutput([...input.shape], 'float32');
  const [xs, dys, dx] = views(backend, input, dy, out) as [Float32Array, Float32Array, Float32Array];
  // Pixels outside every window (odd sizes with 'valid') get no gradient.
  dx.fill(0);
  const tiled2x2 = c.filterHeight === 2 && c.filterWidth === 2 && c.strideHeight === 2 && c.strideWidth === 2 && c.padInfo.top === 0 && c.padInfo.left === 0;
  if (tiled2x2 && 2 * c.outHeight <= c.inHeight && 2 * c.outWidth <= c.inWidth) maxPoolGrad2x2(xs, dys, dx, c);
  else maxPoolGradGeneral(xs, dys, dx, c);
  return out;
};

/**
 * The pool every student has: 2×2 windows at stride 2 that tile the image, so each input pixel is in
 * at most one window and dx is written, not accumulated. dy is read in memory order.
 */
export function maxPoolGrad2x2(xs: Float32Array, dys: Float32Array, dx: Float32Array, c: PoolInfo): void {
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = c;
  const row = W * C;
  let yo = 0;
  for (let n = 0; n < N; n++)
    for (let oy = 0; oy < OH; oy++) {
      // p00..p11: the window's four pixels at channel 0, in (ky, kx) order.
      let p00 = (n * H + 2 * oy) * row;
      for (let ox = 0; ox < OW; ox++, p00 += 2 * C) {
        const p01 = p00 + C;
        const p10 = p00 + row;
        const p11 = p10 + C;
        for (let ch = 0; ch < C; ch++, yo++) {
          let best = p00 + ch;
          let v = xs[best]!;
          let t = xs[p01 + ch]!;
          if (t > v) {
            v = t;
            best = p01 + ch;
          }
          t = xs[p10 + ch]!;
          if (t > v) {
            v = t;
            best = p10 + ch;
          }
          if (xs[p11 + ch]! > v) best = p11 + ch;
          dx[best] = dys[yo]!;
        }
      }
    }
}

/** Any window, stride and padding: dy accumulates into dx (windows may overlap). The channel loop is innermost. */
function maxPoolGradGeneral(xs: Float32Array, dys: Float32Array, dx: Float32Array, c: PoolInfo): void {
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = c;
  const bestV = new Float32Array(C);
  const bestI = new Int32Array(C);
  for (let n = 0; n < N; n++)
    for (let oy = 0; oy < OH; oy++)
      for (let ox = 0; ox < OW; ox++) {
        bestV.fill(-Infinity);
        bestI.fill(-1);
        for (let ky = 0; ky < c.filterHeight; ky++) {
          const iy = oy * c.strideHeight + ky - c.padInfo.top;
          if (iy < 0 || iy >= H) continue;
          for (let kx = 0; kx < c.filterWidth; kx++) {
            const ix = ox * c.strideWidth + kx - c.padInfo.left;
            if (ix < 0 || ix >= W) continue;
            const at = ((n * H + iy) * W + ix) * C;
            for (let ch = 0; ch < C; ch++) {
              const v = xs[at + ch]!;
              if (v > bestV[ch]! || bestI[ch]! < 0) {
                bestV[ch] = v;
                bestI[ch] = at + ch;
              }
            }
          }
        }
        const yo = ((n * OH + oy) * OW + ox) * C;
        for (let ch = 0; ch < C; ch++) if (bestI[ch]! >= 0) dx[bestI[ch]!]! += dys[yo + ch]!;
      }
}
