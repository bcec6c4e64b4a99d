import * as ort from 'onnxruntime-node';
import { percentileOfSorted } from '../../shared/util/percentile.js';

export interface OnnxEval {
  count: number;
  /** Top-1 predictions per example. */
  predictions: Int32Array;
  logits: Float32Array;
  classes: number;
  /** Present when labels were given. */
  accuracy?: number;
  errors?: number;
}

export function argmaxRows(logits: Float32Array, classes: number): Int32Array {
  const n = logits.length / classes;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    const o = i * classes;
    for (let c = 1; c < classes; c++) if (logits[o + c]! > logits[o + best]!) best = c;
    out[i] = best;
  }
  return out;
}

export function scorePredictions(pred: Int32Array, labels: Int32Array): { accuracy: number; errors: number } {
  let errors = 0;
  let counted = 0;
  for (let i = 0; i < pred.length; i++) {
    if (labels[i]! < 0) continue;
    counted++;
    if (pred[i] !== labels[i]) errors++;
  }
  return { accuracy: counted ? 1 - errors / counted : NaN, errors };
}

/** Share of examples where two models pick the same top-1 class. */
export function agreement(a: Int32Array, b: Int32Array): number {
  if (a.length !== b.length) throw new Error('agreement: prediction arrays differ in length');
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return a.length ? same / a.length : NaN;
}

async function openSession(model: Uint8Array, threads?: number): Promise<ort.InferenceSession> {
  // ORT rejects an explicit `undefined` thread count, so only set it when given.
  return ort.InferenceSession.create(model, { graphOptimizationLevel: 'all', interOpNumThreads: 1, executionMode: 'sequential', ...(threads ? { intraOpNumThreads: threads } : {}) });
}

function feedDims(session: ort.InferenceSession, exampleSize: number, n: number): number[] {
  const meta = session.inputMetadata[0] as { shape?: ReadonlyArray<number | string> } | undefined;
  const rest = (meta?.shape ?? []).slice(1).map((d) => (typeof d === 'number' ? d : -1));
  if (rest.length === 0) return [n, exampleSize];
  const known = rest.reduce((a, d) => (d > 0 ? a * d : a), 1);
  return [n, ...rest.map((d) => (d > 0 ? d : exampleSize / known))];
}

/** Runs an ONNX model (the artifact that ships) over a dataset with onnxruntime-node. */
export async function evaluateOnnx(model: Uint8Array, features: Float32Array, exampleSize: number, labels?: Int32Array, batchSize = 1000): Promise<OnnxEval> {
  const session = await openSession(model);
  try {
    const count = features.length / exampleSize;
    const inName = session.inputNames[0]!;
    const outName = session.outputNames[0]!;
    let logits: Float32Array | undefined;
    let classes = 0;
    for (let s = 0; s < count; s += batchSize) {
      const n = Math.min(batchSize, count - s);
      const res = await session.run({ [inName]: new ort.Tensor('float32', features.subarray(s * exampleSize, (s + n) * exampleSize), feedDims(session, exampleSize, n)) });
      const data = res[outName]!.data as Float32Array;
      if (!logits) {
        classes = data.length / n;
        logits = new Float32Array(count * classes);
      }
      logits.set(data, s * classes);
    }
    logits ??= new Float32Array(0);
    const predictions = argmaxRows(logits, classes);
    const scored = labels ? scorePredictions(predictions, labels) : undefined;
    return { count, predictions, logits, classes, ...scored };
  } finally {
    await session.release();
  }
}

export interface LatencyStats {
  batch: number;
  threads: number;
  iterations: number;
  meanMs: number;
  p50Ms: number;
  p95Ms: number;
}

/**
 * ORT latency per example at batch 1, the edge's request shape. Single intra-op thread, as on a
 * busy Pi core. Iterations are sized to run for about `budgetMs`.
 */
export async function measureLatency(model: Uint8Array, sample: Float32Array, { threads = 1, budgetMs = 1500, warmup = 20 }: { threads?: number; budgetMs?: number; warmup?: number } = {}): Promise<LatencyStats> {
  const session = await openSession(model, threads);
  try {
    const inName = session.inputNames[0]!;
    const feeds = { [inName]: new ort.Tensor('float32', sample, feedDims(session, sample.length, 1)) };
    for (let i = 0; i < warmup; i++) await session.run(feeds);
    const times: number[] = [];
    const start = performance.now();
    while (performance.now() - start < budgetMs || times.length < 20) {
      const t = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t);
      if (times.length >= 100_000) break;
    }
    times.sort((a, b) => a - b);
    return { batch: 1, threads, iterations: times.length, meanMs: times.reduce((a, b) => a + b, 0) / times.length, p50Ms: percentileOfSorted(times, 50), p95Ms: percentileOfSorted(times, 95) };
  } finally {
    await session.release();
  }
}
