import { afterEach, describe, expect, it } from 'vitest';
import { startLocalServer } from '../../../edge/api/server.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { harness, post, type Harness } from './helpers.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const input = Array.from(sampleInputs(1, 784, 5));

async function predictId(app: Harness['app']): Promise<{ id: string; index: number }> {
  return (await (await post(app, '/v1/predict', { input })).json()) as { id: string; index: number };
}

describe('readiness and model info', () => {
  it('readyz is 503 until a model is loaded, then 200; healthz is always 200', async () => {
    h = await harness({ load: false });
    expect((await h.app.request('/healthz')).status).toBe(200);
    const r1 = await h.app.request('/readyz');
    expect(r1.status).toBe(503);
    expect(await r1.json()).toMatchObject({ error: { code: 'no_model' } });
    const p = await post(h.app, '/v1/predict', { input });
    expect(p.status).toBe(503);
    expect(await p.json()).toMatchObject({ error: { code: 'no_model' } });
    expect((await h.app.request('/v1/model')).status).toBe(503);

    await h.host.activate(h.path, h.manifest);
    const r2 = await h.app.request('/readyz');
    expect(r2.status).toBe(200);
    expect(await r2.json()).toEqual({ status: 'ready', model: 'mnist-student', release: 4 });
    expect((await post(h.app, '/v1/predict', { input })).status).toBe(200);
  });

  it('GET /v1/model summarises the manifest', async () => {
    h = await harness();
    const res = await h.app.request('/v1/model');
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ model: 'mnist-student', release: 4, sha256: h.model.sha256, input: { shape: [784] }, output: { kind: 'logits', classes: 10 } });
    expect(Date.parse(body.loaded_at as string)).toBeGreaterThan(0);
  });
});

describe('POST /v1/feedback', () => {
  it('stores the remembered input with a label given by index or name', async () => {
    h = await harness();
    const p = await predictId(h.app);
    const r1 = await post(h.app, '/v1/feedback', { id: p.id, label: 7 });
    expect(r1.status).toBe(200);
    expect(await r1.json()).toEqual({ id: p.id, index: 7, label: 'digit_7', stored: true });
    const r2 = await post(h.app, '/v1/feedback', { id: p.id, label: 'digit_3' });
    expect(await r2.json()).toMatchObject({ index: 3 });
    expect(h.feedback).toHaveLength(2);
    expect(h.feedback[0]).toMatchObject({ id: p.id, label: 7, labelName: 'digit_7', manifest: { release: 4 } });
    expect(Array.from(h.feedback[0]!.input)).toEqual(Array.from(Float32Array.from(input)));
    expect(h.feedback[0]!.probs).toHaveLength(10);
  });

  it('keeps batch rows apart', async () => {
    h = await harness();
    const rows = [0, 1].map((i) => Array.from(sampleInputs(1, 784, 90 + i)));
    const body = (await (await post(h.app, '/v1/predict', { inputs: rows })).json()) as { predictions: { id: string }[] };
    await post(h.app, '/v1/feedback', { id: body.predictions[1]!.id, label: 1 });
    expect(Array.from(h.feedback[0]!.input)).toEqual(Array.from(Float32Array.from(rows[1]!)));
  });

  it('answers 404 for unknown or expired ids and 400 for bad labels', async () => {
    let now = 1_000_000;
    h = await harness({ clock: () => now, limits: { rememberMs: 60_000 } });
    const unknown = await post(h.app, '/v1/feedback', { id: '00000000-0000-4000-8000-000000000000', label: 1 });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'unknown_prediction', field: 'id' } });
    const p = await predictId(h.app);
    for (const [label, field] of [[10, 'label'], ['cat', 'label'], [-1, 'label'], [1.5, 'label'], [null, 'label']] as const) {
      const r = await post(h.app, '/v1/feedback', { id: p.id, label });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { field: string } }).error.field).toBe(field);
    }
    expect((await post(h.app, '/v1/feedback', { id: 'nope', label: 1 })).status).toBe(400);
    expect((await post(h.app, '/v1/feedback', { id: p.id, label: 1, x: 1 })).status).toBe(400);
    now += 60_001;
    expect((await post(h.app, '/v1/feedback', { id: p.id, label: 1 })).status).toBe(404);
  });

  it('evicts the least recently used beyond the bound', async () => {
    h = await harness({ limits: { rememberPredictions: 2 } });
    const a = await predictId(h.app);
    const b = await predictId(h.app);
    await predictId(h.app);
    expect((await post(h.app, '/v1/feedback', { id: a.id, label: 0 })).status).toBe(404);
    expect((await post(h.app, '/v1/feedback', { id: b.id, label: 0 })).status).toBe(200);
  });
});

describe('GET /metrics', () => {
  it('exposes request counters, latency, model release, predictions and process metrics', async () => {
    h = await harness();
    await post(h.app, '/v1/predict', { input });
    await post(h.app, '/v1/predict', { inputs: [input, input] });
    await post(h.app, '/v1/predict', { input: [1] });
    await h.app.request('/nowhere');
    const res = await h.app.request('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toContain('apprentice_edge_http_requests_total{route="/v1/predict",method="POST",status="200"} 2');
    expect(text).toContain('apprentice_edge_http_requests_total{route="/v1/predict",method="POST",status="400"} 1');
    expect(text).toContain('apprentice_edge_http_requests_total{route="other",method="GET",status="404"} 1');
    expect(text).toContain('apprentice_edge_http_request_duration_seconds_bucket{le="0.001",route="/v1/predict"}');
    expect(text).toContain(`apprentice_edge_model_release{model="mnist-student",sha256="${h.model.sha256}"} 4`);
    expect(text).toContain('apprentice_edge_predictions_total 3');
    expect(text).toContain('apprentice_edge_model_loaded 1');
    expect(text).toContain('process_resident_memory_bytes');
  });
});

describe('micro-batching switch', () => {
  it('gives the same answers with batching off', async () => {
    h = await harness({ batching: false });
    const r = (await (await post(h.app, '/v1/predict', { input })).json()) as { probabilities: number[] };
    const solo = await h.host.predict(Float32Array.from(input), 1);
    r.probabilities.forEach((p, j) => expect(p).toBeCloseTo(solo.probs[j]!, 6));
  });

  it('gives the same answers with batching on (concurrent requests share runs)', async () => {
    h = await harness({ batching: { maxBatch: 8, maxWaitMs: 0 } });
    const rows = Array.from({ length: 6 }, (_, i) => Array.from(sampleInputs(1, 784, 200 + i)));
    const answers = await Promise.all(rows.map(async (r) => (await (await post(h!.app, '/v1/predict', { input: r })).json()) as { probabilities: number[] }));
    for (let i = 0; i < rows.length; i++) {
      const solo = await h.host.predict(Float32Array.from(rows[i]!), 1);
      answers[i]!.probabilities.forEach((p, j) => expect(p).toBeCloseTo(solo.probs[j]!, 6));
    }
  });
});

describe('startLocalServer', () => {
  it('serves over a socket and stops gracefully', async () => {
    h = await harness();
    const server = await startLocalServer({ app: h.app, hostname: '127.0.0.1', port: 0 });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const r = await fetch(`${server.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }) });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { release: number }).release).toBe(4);
    const big = await fetch(`${server.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: Array(300_000).fill(0.5) }) });
    expect(big.status).toBe(413);
    await server.stop();
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
    await expect(startLocalServer({ app: h.app, hostname: '256.0.0.1', port: 0 })).rejects.toThrow();
  });
});
