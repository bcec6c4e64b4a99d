import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';

/**
 * Kernel-level fix for the tfjs wasm backend's slow transposed matMul.
 *
 * The wasm backend hands `transposeA`/`transposeB` straight to XNNPACK's batch-matmul path, which is
 * about 10x slower than a plain product (measured here: 128x1200 by 128x1200 with transposeA took
 * 155 ms; an explicit Transpose kernel followed by a plain matMul took 15 ms). Dense-layer gradients
 * are exactly `dW = x^T · dy` and `dx = dy · W^T`, so every model trained on wasm pays this.
 *
 * We re-register `BatchMatMul` and `_FusedMatMul` for the wasm backend: when an operand is marked
 * transposed we materialise the transpose with the backend's own Transpose kernel and call the original
 * kernel with the flag cleared. Nothing here is model-specific; every op that reaches these kernels
 * (layers, custom loops, gradients) benefits. Hand-written because no package provides it.
 */
const KERNELS = ['BatchMatMul', '_FusedMatMul'] as const;
const PATCHED = Symbol.for('apprentice.wasmMatMulPatched');

type Backend = { disposeData(dataId: object): void };

function transposeLast2(x: TensorInfo, backend: Backend, transposeKernel: KernelFunc): TensorInfo {
  const rank = x.shape.length;
  const perm = [...Array(rank).keys()];
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return transposeKernel({ inputs: { x }, backend: backend as never, attrs: { perm } }) as TensorInfo;
}

function wrap(original: KernelConfig, transposeKernel: KernelFunc): KernelConfig {
  const kernelFunc: KernelFunc = (args) => {
    const attrs = args.attrs as NamedAttrMap & { transposeA?: boolean; transposeB?: boolean };
    const { transposeA, transposeB } = attrs;
    if (!transposeA && !transposeB) return original.kernelFunc(args);
    const backend = args.backend as unknown as Backend;
    const inputs = { ...args.inputs } as Record<string, TensorInfo>;
    const temps: TensorInfo[] = [];
    // A rank-2 operand with a leading dimension of 1 is a vector: transposing it is a reshape, but the
    // copy is tiny anyway, so the general path is kept for clarity.
    if (transposeA && inputs.a) {
      const t = transposeLast2(inputs.a, backend, transposeKernel);
      temps.push(t);
      inputs.a = t;
    }
    if (transposeB && inputs.b) {
      const t = transposeLast2(inputs.b, backend, transposeKernel);
      temps.push(t);
      inputs.b = t;
    }
    try {
      return original.kernelFunc({ ...args, inputs, attrs: { ...attrs, transposeA: false, transposeB: false } });
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  };
  return { ...original, kernelFunc };
}

/** Installs the override once per process. Returns true when it was (or already is) installed. */
export function installWasmMatMulOverride(): boolean {
  const g = globalThis as Record<symbol, unknown>;
  if (g[PATCHED]) return true;
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!transpose) return false;
  for (const name of KERNELS) {
    const original = tf.getKernel(name, 'wasm');
    if (!original) continue;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(wrap(original, transpose.kernelFunc));
  }
  g[PATCHED] = true;
  return true;
}
