import * as tf from '@tensorflow/tfjs';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { views, type WasmBackend } from './wasm-heap.js';

type ConvInfo = tf.backend_util.Conv2DInfo;

/**
 * Depthwise-conv gradients for the wasm backend, which has neither (dscnn students need both). A
 * depthwise conv does kh·kw multiply-adds per output value, so there is no product to hand to XNNPACK:
 * the filter gradient is a JS loop, tap by tap, with the channel loop innermost so every read is
 * contiguous in NHWC. The input gradient of a stride-1 'same' depthwise conv with multiplier 1 (every
 * dscnn block) is the forward depthwise conv of dy with the filter rotated 180°, so it runs on the
 * backend's native DepthwiseConv2dNative; other shapes take the JS loop. Both read and write the wasm
 * heap in place (wasm-heap.ts). Checked against the cpu backend in test/unit/tf/wasm-conv-grad.test.ts.
 */
function depthwiseInfo(inShape: number[], filterShape: number[], attrs: NamedAttrMap): ConvInfo {
  const a = attrs as NamedAttrMap & { strides: [number, number] | number; dilations?: [number, number] | number; pad: 'same' | 'valid' | number; dimRoundingMode?: 'floor' | 'round' | 'ceil' };
  return tf.backend_util.computeConv2DInfo(inShape as [number, number, number, number], filterShape as [number, number, number, number], a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode, true, 'channelsLast');
}

/** Output columns [ox0, ox1) whose tap kx reads a column inside the image. */
function tapColumns(c: ConvInfo, kx: number): [number, number] {
  const left = c.padInfo.left;
  const sw = c.strideWidth;
  const ox0 = Math.min(c.outWidth, Math.max(0, Math.ceil((left - kx * c.dilationWidth) / sw)));
  const ox1 = Math.max(ox0, Math.min(c.outWidth, Math.floor((c.inWidth - 1 + left - kx * c.dilationWidth) / sw) + 1));
  return [ox0, ox1];
}

/**
 * Calls `row(xo, yo, count, tap)` for every run of output pixels (n, oy, ox0..ox1) whose tap (ky, kx)
 * lands inside the image: `xo`/`yo` are the flat offsets of the run's first input/output pixel at
 * channel 0, consecutive pixels are strideWidth·C apart in x and CO apart in dy. One call per row, not
 * per pixel, so the per-element work stays in the caller's loops.
 */
function forEachTapRow(c: ConvInfo, row: (xo: number, yo: number, count: number, tap: number) => void): void {
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW, filterHeight: KH, filterWidth: KW, outChannels: CO } = c;
  for (let ky = 0; ky < KH; ky++)
    for (let kx = 0; kx < KW; kx++) {
      const [ox0, ox1] = tapColumns(c, kx);
      if (ox1 <= ox0) continue;
      for (let n = 0; n < N; n++)
        for (let oy = 0; oy < OH; oy++) {
          const iy = oy * c.strideHeight + ky * c.dilationHeight - c.padInfo.top;
          if (iy < 0 || iy >= H) continue;
          const ix = ox0 * c.strideWidth + kx * c.dilationWidth - c.padInfo.left;
          row(((n * H + iy) * W + ix) * C, ((n * OH + oy) * OW + ox0) * CO, ox1 - ox0, ky * KW + kx);
        }
    }
}

export const depthwiseBackpropFilter: KernelFunc = (args) => {
  const backend = args.backend as unknown as WasmBackend;
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const filterShape = (args.attrs as { filterShape: number[] }).filterShape;
  const c = depthwiseInfo(x.shape, filterShape, args.attrs!);
  const out = backend.makeOutput([...filterShape], 'float32');
  const [xs, dys, dW] = views(backend, x, dy, out) as [Float32Array, Float32Array, Float32Array];
  const C = c.inChannels;
  const CO = c.outChannels;
  const mult = CO / C;
  const xStep = c.strideWidth * C;
  // Filter layout [kh, kw, cin, mult]: tap·CO + ci·mult + m, the output channel's index within the tap.
  // Sums in float64, one tap's CO sums at a time.
  const acc = new Float64Array(dW.length);
  forEachTapRow(c, (xo, yo, count, tap) => {
    const a = tap * CO;
    for (let p = 0; p < count; p++, xo += xStep, yo += CO) {
      if (mult === 1) for (let ci = 0; ci < C; ci++) acc[a + ci]! += xs[xo + ci]! * dys[yo + ci]!;
      else
        for (let ci = 0; ci < C; ci++) {
          const xv = xs[xo + ci]!;
          for (let m = 0; m < mult; m++) acc[a + ci * mult + m]! += xv * dys[yo + ci * mult + m]!;
        }
    }
  });
  dW.set(acc);
  return out;
};

/** W[ky, kx, c, 0] → W[kh-1-ky, kw-1-kx, c, 0]: the filter of the input-gradient depthwise conv (multiplier 1). */
function rotateDepthwiseFilter(w: Float32Array, kh: number, kw: number, C: number, out: Float32Array): void {
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++) out.set(w.subarray((y * kw + x) * C, (y * kw + x + 1) * C), ((kh - 1 - y) * kw + (kw - 1 - x)) * C);
}

export const depthwiseBackpropInput: KernelFunc = (args) => {
  const backend = args.backend as unknown as WasmBackend;
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const attrs = args.attrs as NamedAttrMap & { inputShape: number[]; pad: unknown };
  const c = depthwiseInfo(attrs.inputShape, filter.shape, attrs);
  const [kh, kw, C, mult] = filter.shape as [number, number, number, number];
  const unit = c.strideHeight === 1 && c.strideWidth === 1 && c.dilationHeight === 1 && c.dilationWidth === 1;
  if (mult === 1 && unit && attrs.pad === 'same' && kh % 2 === 1 && kw % 2 === 1) {
    const rotated = backend.makeOutput([kh, kw, C, 1], 'float32');
    const [w, wr] = views(backend, filter, rotated) as [Float32Array, Float32Array];
    rotateDepthwiseFilter(w, kh, kw, C, wr);
    try {
      const conv = tf.getKernel('DepthwiseConv2dNative', 'wasm')!.kernelFunc;
      return conv({ inputs: { x: dy, filter: rotated }, backend: args.backend, attrs: { strides: 1, pad: 'same', dilations: 1, dataFormat: 'NHWC' } }) as TensorInfo;
    } finally {
      backend.disposeData(rotated.dataId);
    }
  }
  const out = backend.makeOutput([...attrs.inputShape], 'float32');
  const [ws, dys, dx] = views(backend, filter, dy, out) as [Float32Array, Float32Array, Float32Array];
  dx.fill(0);
  const CO = c.outChannels;
  const xStep = c.strideWidth * C;
  forEachTapRow(c, (xo, yo, count, tap) => {
    const wo = tap * CO;
    for (let p = 0; p < count; p++, xo += xStep, yo += CO)
      for (let ci = 0; ci < C; ci++) {
        let a = 0;
        for (let m = 0; m < mult; m++) a += dys[yo + ci * mult + m]! * ws[wo + ci * mult + m]!;
        dx[xo + ci]! += a;
      }
  });
  return out;
};
