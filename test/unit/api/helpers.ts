import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createLocalApi, type LocalApiDeps } from '../../../edge/api/app.js';
import type { FeedbackEvent, PredictionEvent } from '../../../edge/api/context.js';
import { ModelHost } from '../../../edge/runtime/host.js';
import type { Manifest } from '../../../shared/protocol/index.js';
import { denseModel, makeManifest, writeModel, type TinyModel } from '../../fixtures/onnx-models.js';

export interface Harness {
  app: ReturnType<typeof createLocalApi>;
  host: ModelHost;
  model: TinyModel;
  manifest: Manifest;
  path: string;
  registry: Registry;
  predictions: PredictionEvent[];
  feedback: FeedbackEvent[];
  close(): Promise<void>;
}

/** A real ORT-backed API: 784→10 logits model, scaling 1/255, labels digit_0..digit_9. */
export async function harness(opts: { load?: boolean } & Partial<LocalApiDeps> = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'apprentice-api-'));
  const model = denseModel({ seed: 51 });
  const manifest = makeManifest(model, { release: 4, scaling: { scale: 1 / 255, offset: 0 } });
  const path = await writeModel(dir, model);
  const host = new ModelHost();
  if (opts.load !== false) await host.activate(path, manifest);
  const registry = new Registry();
  const predictions: PredictionEvent[] = [];
  const feedback: FeedbackEvent[] = [];
  const app = createLocalApi({
    host,
    metrics: registry,
    onPrediction: (p) => predictions.push(p),
    feedback: (f) => (feedback.push(f), { stored: true }),
    ...opts,
  });
  return {
    app, host, model, manifest, path, registry, predictions, feedback,
    async close() {
      await host.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function post(app: Harness['app'], path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return Promise.resolve(app.request(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  }));
}

export function softmax(logits: Float32Array): number[] {
  const m = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}
