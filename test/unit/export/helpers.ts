import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../../../cloud/tf/backend.js';
import { mulberry32 } from '../../../shared/util/random.js';

export async function setup(): Promise<void> {
  await initBackend();
}

/** Deterministic pseudo-random floats in [lo, hi) (mulberry32), so failures reproduce. */
export function rand(n: number, seed = 1, lo = -1, hi = 1): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

export async function runOrt(bytes: Uint8Array, x: Float32Array, shape: number[], opts: ort.InferenceSession.SessionOptions = {}): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(Buffer.from(bytes), opts);
  try {
    const inputName = session.inputNames[0] as string;
    const out = await session.run({ [inputName]: new ort.Tensor('float32', x, shape) });
    return (out[session.outputNames[0] as string] as ort.Tensor).data as Float32Array;
  } finally {
    await session.release();
  }
}

export function predict(model: tf.LayersModel, x: Float32Array, shape: number[]): Float32Array {
  return tf.tidy(() => (model.predict(tf.tensor(x, shape)) as tf.Tensor).dataSync() as Float32Array);
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

/** Replaces every weight with seeded random values in [lo, hi); BN variances are kept positive. */
export function randomizeWeights(model: tf.LayersModel, seed = 7, lo = -0.5, hi = 0.5): void {
  let s = seed;
  for (const layer of model.layers) {
    const ws = layer.weights;
    if (ws.length === 0) continue;
    layer.setWeights(ws.map((w) => {
      const n = (w.shape as number[]).reduce((a: number, d: number) => a * d, 1);
      const variance = w.originalName.endsWith('moving_variance');
      return tf.tensor(rand(n, s++, variance ? 0.2 : lo, variance ? 2 : hi), w.shape as number[]);
    }));
  }
}

export function argmaxRows(a: Float32Array, cols: number): Int32Array {
  const rows = a.length / cols;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if ((a[r * cols + c] as number) > (a[r * cols + best] as number)) best = c;
    out[r] = best;
  }
  return out;
}
