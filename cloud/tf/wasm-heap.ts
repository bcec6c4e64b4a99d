import type { TensorInfo } from '@tensorflow/tfjs';

/**
 * The parts of the tfjs wasm backend our kernels use (its class is not exported in a typed way).
 *
 * Kernels read their inputs and write their outputs straight in the wasm heap through
 * `typedArrayFromHeap` views, instead of `readSync` (a copy out of the heap) and `makeOutput(…, values)`
 * (a JS array, then a copy into the heap). Per training step of cnn:8,16/32 at batch 128 those copies,
 * and the garbage collections their megabyte-sized arrays cause, cost more than the loops themselves.
 *
 * A view is only valid until the heap grows, and every allocation (`makeOutput`) may grow it: allocate
 * all outputs and temporaries first, then take the views (`views` below does both in that order).
 */
export interface WasmBackend {
  makeOutput(shape: number[], dtype: 'float32', memoryOffset?: number, values?: Float32Array): TensorInfo;
  disposeData(dataId: object): void;
  typedArrayFromHeap(t: TensorInfo): Float32Array;
}

/** A float32 tensor's data in the wasm heap, as a view (no copy). */
export function heapF32(backend: WasmBackend, t: TensorInfo): Float32Array {
  if (t.dtype !== 'float32') throw new Error(`wasm kernel: expected a float32 tensor, got ${t.dtype}`);
  return backend.typedArrayFromHeap(t);
}

/** Heap views of several tensors, taken together after every allocation. */
export function views(backend: WasmBackend, ...ts: TensorInfo[]): Float32Array[] {
  return ts.map((t) => heapF32(backend, t));
}
