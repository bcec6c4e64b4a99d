import { createHash } from 'node:crypto';
import { evaluateOnnx } from '../distill/evaluate.js';
import { fetchRetry, type CloudClient, type Serving } from './cloud-client.js';
import type { LabelledImages } from './pools.js';

/** Sends `features` to a device's local API in batches; returns the predicted class and the serving release per example. */
export async function predictOnDevice(apiUrl: string, features: Float32Array, size: number, batch = 100): Promise<{ pred: Int32Array; releases: Int32Array }> {
  const n = features.length / size;
  const pred = new Int32Array(n);
  const releases = new Int32Array(n);
  for (let s = 0; s < n; s += batch) {
    const k = Math.min(batch, n - s);
    const slice = features.slice(s * size, (s + k) * size);
    const body = { input_b64: Buffer.from(slice.buffer).toString('base64'), encoding: 'float32', count: k, top_k: 1 };
    const res = await fetchRetry(`${apiUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status !== 200) throw new Error(`POST ${apiUrl}/v1/predict: ${res.status} ${await res.text()}`);
    const r = (await res.json()) as { release: number; predictions: { index: number }[] };
    r.predictions.forEach((p, i) => {
      pred[s + i] = p.index;
      releases[s + i] = r.release;
    });
  }
  return { pred, releases };
}

/** Accuracy of one ONNX model on labelled images (ORT, the same runtime as the devices). */
export async function accuracyOf(model: Uint8Array, set: LabelledImages): Promise<number> {
  const size = set.features.length / set.labels.length;
  const r = await evaluateOnnx(model, set.features, size, set.labels);
  return r.accuracy!;
}

/**
 * The artifacts the devices serve, fetched from the cloud API and checked against the sha256 each
 * device reports, so the student measured on the evaluation pool is byte for byte the one serving:
 * evaluating it in-process keeps the evaluation images off the devices, whose selectors would
 * otherwise send them to the cloud as hard examples.
 */
export class ServedArtifacts {
  private readonly cache = new Map<number, Uint8Array>();
  constructor(private readonly api: CloudClient) {}

  /** A release's artifact as the cloud serves it (cohorts: the shared student, which no device serves). */
  async bytesOf(release: number): Promise<Uint8Array> {
    let bytes = this.cache.get(release);
    if (!bytes) {
      bytes = await this.api.bytes(`/v1/releases/${release}/artifact`);
      this.cache.set(release, bytes);
    }
    return bytes;
  }

  async get(served: Serving): Promise<Uint8Array> {
    const bytes = await this.bytesOf(served.release);
    const sha = createHash('sha256').update(bytes).digest('hex');
    if (sha !== served.sha256) throw new Error(`release ${served.release}: the cloud's artifact (sha256 ${sha}) is not what the device serves (${served.sha256})`);
    return bytes;
  }
}
