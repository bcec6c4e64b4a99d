import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { views, type WasmBackend } from './wasm-heap.js';
import { depthwiseBackpropFilter, depthwiseBackpropInput } from './wasm-depthwise-grad.js';
import { maxPoolGrad } from './wasm-pool-grad.js';

/**
 * Gradient kernels the tfjs wasm backend (4.22) does not register, added at kernel level so every
 * model that reaches them (layers, custom loops, `tf.grad`) trains on wasm:
 *
 *  - `Conv2DBackpropFilter` (dW of a 2-D conv): im2col in JS, then one product on the backend's own
 *    XNNPACK `BatchMatMul`. The column matrix is built already transposed ([kh·kw·cin, N·OH·OW]) so the
 *    product needs no transpose flag (see wasm-matmul.ts for why those are slow). The product is where
 *    the FLOPs are; the JS part is a strided copy.
 *  - `Conv2DBackpropInput` (dx), replacing the backend's own kernel for stride-1 'same' convs with an
 *    odd kernel (every conv our students have): dx is then the forward conv of dy with the filter
 *    rotated 180° and its channel axes swapped, so it runs on XNNPACK's Conv2D. Measured on a
 *    [128,14,14,16]→32 3×3 layer here: the backend's loop kernel took 269 ms per step, this ~45 ms.
 *    Other shapes go to the original kernel.
 *  - `DepthwiseConv2dNativeBackpropFilter` / `...BackpropInput`: in wasm-depthwise-grad.ts.
 *
 * Only channels-last (NHWC), the only layout tfjs layers produce. The cpu backend's kernels are the
 * reference: test/unit/tf/wasm-conv-grad.test.ts compares both on small shapes. Every kernel here reads
 * and writes the wasm heap in place (wasm-heap.ts); `MaxPoolGrad` is in wasm-pool-grad.ts. Each of
 * them, and what it gained, is measured by test/bench/train-throughput-conv.bench.ts.
 */
const PATCHED = Symbol.for('apprentice.wasmConvGradPatched');

type ConvInfo = tf.backend_util.Conv2DInfo;

function channelsLast(dataFormat: unknown, kernel: string): void {
  if (dataFormat !== undefined && dataFormat !== 'NHWC' && dataFormat !== 'channelsLast') {
    throw new Error(`${kernel} on wasm: only NHWC is supported, got ${String(dataFormat)}`);
  }
}

/**
 * colT[k][m] with k = (ky·kw + kx)·cin + ci (the HWIO row order of dW) and m = (n·OH + oy)·OW + ox,
 * written into `col` (length K·M), every element including the zeros of out-of-image taps, so `col`
 * may be uninitialised heap memory.
 */
export function im2colTransposedInto(x: Float32Array, c: ConvInfo, col: Float32Array): void {
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW, filterHeight: KH, filterWidth: KW } = c;
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = c;
  const top = c.padInfo.top;
  const left = c.padInfo.left;
  const M = N * OH * OW;
  const step = sw * C;
  // Row by row, so the writes are contiguous (the reads stride by sw·C).
  for (let ky = 0; ky < KH; ky++)
    for (let kx = 0; kx < KW; kx++) {
      // The output columns whose tap (ky, kx) falls inside the image: ox in [ox0, ox1).
      const ox0 = Math.min(OW, Math.max(0, Math.ceil((left - kx * dw) / sw)));
      const ox1 = Math.max(ox0, Math.min(OW, Math.floor((W - 1 + left - kx * dw) / sw) + 1));
      for (let ci = 0; ci < C; ci++) {
        let dst = ((ky * KW + kx) * C + ci) * M;
        for (let n = 0; n < N; n++)
          for (let oy = 0; oy < OH; oy++, dst += OW) {
            const iy = oy * sh + ky * dh - top;
            if (iy < 0 || iy >= H) {
              col.fill(0, dst, dst + OW);
              continue;
            }
            for (let ox = 0; ox < ox0; ox++) col[dst + ox] = 0;
            let src = ((n * H + iy) * W + ox0 * sw + kx * dw - left) * C + ci;
            for (let ox = ox0; ox < ox1; ox++, src += step) col[dst + ox] = x[src]!;
            for (let ox = ox1; ox < OW; ox++) col[dst + ox] = 0;
          }
      }
    }
}

function conv2DBackpropFilter(matMul: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
    const attrs = args.attrs as NamedAttrMap & { strides: [number, number] | number; pad: 'same' | 'valid' | number; dataFormat?: string; dimRoundingMode?: 'floor' | 'round' | 'ceil'; filterShape: [number, number, number, number] };
    channelsLast(attrs.dataFormat, 'Conv2DBackpropFilter');
    const c = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
    const K = c.filterHeight * c.filterWidth * c.inChannels;
    const M = c.batchSize * c.outHeight * c.outWidth;
    const colT = backend.makeOutput([1, K, M], 'float32');
    const [xs, col] = views(backend, x, colT) as [Float32Array, Float32Array];
    im2colTransposedInto(xs, c, col);
    try {
      // dy is [N, OH, OW, cout] in memory, i.e. already [M, cout]: a view with another shape, no copy.
      const dyView: TensorInfo = { dataId: dy.dataId, shape: [1, M, c.outChannels], dtype: dy.dtype };
      const out = matMul({ inputs: { a: colT, b: dyView }, backend: args.backend, attrs: { transposeA: false, transposeB: false } }) as TensorInfo;
      return { ...out, shape: [...attrs.filterShape] };
    } finally {
      backend.disposeData(colT.dataId);
    }
  };
}

/** W[ky,kx,ci,co] → W'[kh-1-ky, kw-1-kx, co, ci]: the filter of the transposed (input-gradient) conv. */
export function flipFilterInto(w: Float32Array, [kh, kw, ci, co]: number[], out: Float32Array): void {
  for (let y = 0; y < kh!; y++)
    for (let x = 0; x < kw!; x++)
      for (let i = 0; i < ci!; i++)
        for (let o = 0; o < co!; o++) out[(((kh! - 1 - y) * kw! + (kw! - 1 - x)) * co! + o) * ci! + i] = w[((y * kw! + x) * ci! + i) * co! + o]!;
}

function conv2DBackpropInput(original: KernelFunc): KernelFunc {
  return (args) => {
    const attrs = args.attrs as NamedAttrMap & { strides: number | number[]; pad: unknown; dataFormat?: string; dimRoundingMode?: string };
    const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
    const [kh, kw] = filter.shape as [number, number];
    const unitStride = (Array.isArray(attrs.strides) ? attrs.strides : [attrs.strides, attrs.strides]).every((v) => v === 1);
    const channelsLastFmt = attrs.dataFormat === undefined || attrs.dataFormat === 'NHWC';
    if (!(unitStride && attrs.pad === 'same' && kh % 2 === 1 && kw % 2 === 1 && channelsLastFmt)) return original(args);
    const backend = args.backend as unknown as WasmBackend;
    const flipped = backend.makeOutput([kh, kw, filter.shape[3]!, filter.shape[2]!], 'float32');
    const [w, wFlipped] = views(backend, filter, flipped) as [Float32Array, Float32Array];
    flipFilterInto(w, filter.shape, wFlipped);
    try {
      const conv = tf.getKernel('Conv2D', 'wasm')!.kernelFunc;
      return conv({ inputs: { x: dy, filter: flipped }, backend: args.backend, attrs: { strides: 1, pad: 'same', dataFormat: 'NHWC', dilations: 1 } }) as TensorInfo;
    } finally {
      backend.disposeData(flipped.dataId);
    }
  };
}

/** The kernels this module adds, by name. */
export const WASM_CONV_GRAD_KERNELS = ['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput'] as const;
/**
 * `Identity` without the copy: the output shares the input's data (reference-counted), as the cpu
 * backend's Identity and the wasm backend's own Reshape do. Tensors are immutable, so nothing can tell
 * the difference, except the time: a cnn:8,16/32 step sent ~2 MB through 56 Identity copies.
 * Strings keep the original kernel.
 */
function sharedIdentity(original: KernelFunc): KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (x.dtype === 'string') return original(args);
    (args.backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  };
}

/**
 * Kernels the backend has whose loops were the bottleneck of a CNN training step (profiled with
 * tf.profile on cnn:16,32, batch 128: MaxPoolGrad 153 ms, Conv2DBackpropInput 269 ms of a 909 ms step),
 * and Identity (above).
 */
export const WASM_REPLACED_KERNELS = ['Conv2DBackpropInput', 'MaxPoolGrad', 'Identity'] as const;

/**
 * Registers the missing kernels once per process, leaving any the backend already has (a later tfjs
 * may ship its own), and replaces the two slow ones. Returns the names it registered.
 */
export function installWasmConvGradKernels(): string[] {
  const g = globalThis as Record<symbol, unknown>;
  if (g[PATCHED]) return g[PATCHED] as string[];
  const matMul = tf.getKernel('BatchMatMul', 'wasm');
  if (!matMul) return [];
  const impl: Record<(typeof WASM_CONV_GRAD_KERNELS)[number], KernelFunc> = {
    Conv2DBackpropFilter: conv2DBackpropFilter(matMul.kernelFunc),
    DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter,
    DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput,
  };
  const added: string[] = [];
  for (const name of WASM_CONV_GRAD_KERNELS) {
    if (tf.getKernel(name, 'wasm')) continue;
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: impl[name] } satisfies KernelConfig);
    added.push(name);
  }
  const replacements = { Conv2DBackpropInput: (o: KernelFunc) => conv2DBackpropInput(o), MaxPoolGrad: () => maxPoolGrad, Identity: sharedIdentity };
  for (const name of WASM_REPLACED_KERNELS) {
    const original = tf.getKernel(name, 'wasm');
    if (!original) continue;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ ...original, kernelFunc: replacements[name](original.kernelFunc) });
    added.push(name);
  }
  g[PATCHED] = added;
  return added;
}
