import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { releases } from '../../../cloud/registry/schema.js';
import { verifyManifest } from '../../../shared/manifest/sign.js';
import { denseModel, garbageModel } from '../../fixtures/onnx-models.js';
import { harness, json, seedModel, TOKEN, type Harness } from './helpers.js';

let h: Harness | undefined;
afterEach(() => {
  h?.close();
  h = undefined;
});

/** seedModel's model: input [4], labels a/b/c. */
const good = denseModel({ sizes: [4, 3], seed: 3 });

function upload(app: Harness['app'], bytes: Uint8Array | ReadableStream<Uint8Array>, { model = 'digits', query = '', contentType = 'application/octet-stream' } = {}): Promise<Response> {
  return Promise.resolve(app.request(`/v1/models/${model}/releases${query}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': contentType }, body: bytes, ...(bytes instanceof ReadableStream ? { duplex: 'half' } : {}) } as RequestInit));
}

/** Nothing half-stored: no release row, no artifact file, no temp file left. */
function expectNothingStored(x: Harness): void {
  expect(x.registry.db.select().from(releases).all()).toEqual([]);
  const stored = join(x.artifactsDir, 'artifacts');
  expect(existsSync(stored) ? readdirSync(stored) : []).toEqual([]);
  const tmp = join(x.artifactsDir, 'tmp');
  expect(existsSync(tmp) ? readdirSync(tmp) : []).toEqual([]);
}

describe('POST /v1/models/{name}/releases (upload)', () => {
  it('stores a good ONNX file as a signed release a device verifies, with lineage "uploaded" and a self-test from its own output', async () => {
    const published: number[] = [];
    h = harness({ uploads: { publicBaseUrl: 'https://cloud.example.com', publish: async (seq) => (published.push(seq), []) } });
    seedModel(h);
    const res = await upload(h.app, good.bytes, { query: `?metrics=${encodeURIComponent('{"accuracy":0.91}')}` });
    expect(res.status).toBe(201);
    const body = await json(res);
    expect(body).toMatchObject({ model: 'digits', quantization: 'fp32', sha256: good.sha256, bytes: good.bytes.byteLength, problems: [], roundId: null });
    expect(published).toEqual([body.seq]);

    const detail = await json(await h.app.request(`/v1/releases/${body.seq}`, { headers: { authorization: `Bearer ${TOKEN}` } }));
    const verified = verifyManifest({ manifest: detail.manifest, signature: detail.signature }, h.keys.trusted());
    expect(verified.ok).toBe(true);
    const m = detail.manifest;
    expect(m.lineage).toEqual({ exampleCount: 0, source: 'uploaded' });
    expect(m.metrics.accuracy).toBe(0.91);
    expect(m.artifact.url).toBe(`https://cloud.example.com/v1/artifacts/${m.artifact.sha256}`);
    // The golden output is the model's own output for the self-test input.
    const expected = good.forward(Float32Array.from(m.selfTest.input), 1);
    m.selfTest.expected.forEach((v: number, k: number) => expect(v).toBeCloseTo(expected[k]!, 4));

    // The artifact is served back byte for byte.
    const art = await h.app.request(`/v1/releases/${body.seq}/artifact`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(Buffer.from(await art.arrayBuffer()).equals(Buffer.from(good.bytes))).toBe(true);
    expect(readdirSync(join(h.artifactsDir, 'tmp'))).toEqual([]);
  });

  it('each bad file gets a 4xx naming the problem, is counted by reason, and nothing is stored', async () => {
    const metrics = new PromRegistry();
    h = harness({ uploads: { metrics } });
    seedModel(h);
    const cases: [string, Uint8Array, number, string][] = [
      ['garbage bytes', garbageModel(600).bytes, 422, 'not_onnx'],
      ['truncated ONNX', good.bytes.slice(0, Math.floor(good.bytes.byteLength / 2)), 422, 'not_onnx'],
      ['wrong input shape', denseModel({ sizes: [5, 3] }).bytes, 422, 'wrong_input_shape'],
      ['wrong output size', denseModel({ sizes: [4, 5] }).bytes, 422, 'wrong_output_size'],
    ];
    for (const [what, bytes, status, code] of cases) {
      const res = await upload(h.app, bytes);
      expect(res.status, what).toBe(status);
      const err = (await json(res)).error;
      expect(err.code, what).toBe(code);
      expect(err.message.length, what).toBeGreaterThan(10);
      expectNothingStored(h);
    }
    const wrongOut = await json(await upload(h.app, denseModel({ sizes: [4, 5] }).bytes));
    expect(wrongOut.error.message).toContain('5 values per example, the model has 3 labels');
    const counted = await metrics.getSingleMetric('apprentice_cloud_release_uploads_total')!.get();
    expect(Object.fromEntries(counted.values.map((v) => [v.labels.result, v.value]))).toEqual({ not_onnx: 2, wrong_input_shape: 1, wrong_output_size: 2 });
  });

  it('unknown model → 404, wrong content type → 415, empty body → 400, bad metrics → 400', async () => {
    h = harness();
    seedModel(h);
    const unknown = await upload(h.app, good.bytes, { model: 'nope' });
    expect(unknown.status).toBe(404);
    expect((await json(unknown)).error).toMatchObject({ code: 'unknown_model', field: 'name' });
    expect((await upload(h.app, good.bytes, { contentType: 'application/json' })).status).toBe(415);
    expect((await json(await upload(h.app, new Uint8Array(0)))).error.code).toBe('empty_body');
    const bad = await upload(h.app, good.bytes, { query: '?metrics=%7B%22a%22%3A%22x%22%7D' });
    expect(bad.status).toBe(400);
    expect((await json(bad)).error.field).toBe('metrics');
    expect((await upload(h.app, good.bytes, { query: '?quantize=int4' })).status).toBe(400);
    expectNothingStored(h);
  });

  it('over api.maxUploadBytes → 413, by Content-Length and while streaming (no length), and the temp file is removed', async () => {
    h = harness({ limits: { maxUploadBytes: 2048 } });
    seedModel(h);
    const big = garbageModel(5000).bytes;
    const byLength = await upload(h.app, big);
    expect(byLength.status).toBe(413);
    expect((await json(byLength)).error.code).toBe('payload_too_large');
    const chunks = [big.slice(0, 1500), big.slice(1500, 3000), big.slice(3000)];
    const stream = new ReadableStream<Uint8Array>({ pull: (c) => (chunks.length ? c.enqueue(chunks.shift()!) : c.close()) });
    const streamed = await upload(h.app, stream);
    expect(streamed.status).toBe(413);
    expect((await json(streamed)).error.message).toContain('maxUploadBytes (2048 bytes)');
    expectNothingStored(h);
    // The JSON routes keep their own 1 MiB limit; the upload limit does not widen them.
    expect(h.registry.db.select().from(releases).all()).toHaveLength(0);
  });

  it('?quantize=int8 ships an int8 artifact whose self-test comes from the quantized bytes', async () => {
    h = harness();
    seedModel(h);
    const fp32 = denseModel({ sizes: [4, 8, 3], seed: 5 });
    const res = await upload(h.app, fp32.bytes, { query: '?quantize=int8' });
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(201);
    expect(body.quantization).toBe('int8');
    expect(body.sha256).not.toBe(fp32.sha256);
    const detail = await json(await h.app.request(`/v1/releases/${body.seq}`, { headers: { authorization: `Bearer ${TOKEN}` } }));
    expect(detail.manifest.artifact.quantization).toBe('int8');
    expect(detail.manifest.selfTest.tolerance).toBe(0.05);
    expect(verifyManifest({ manifest: detail.manifest, signature: detail.signature }, h.keys.trusted()).ok).toBe(true);
  });
  it('detects a model that already outputs probabilities (a final Softmax), so devices do not apply softmax twice; output=probs on logits → 422', async () => {
    h = harness();
    seedModel(h);
    const manifestOf = async (res: Response) => {
      const body = await json(res);
      expect(res.status, JSON.stringify(body)).toBe(201);
      return (await json(await h!.app.request(`/v1/releases/${body.seq}`, { headers: { authorization: `Bearer ${TOKEN}` } }))).manifest;
    };
    const probsModel = denseModel({ sizes: [4, 3], seed: 9, softmax: true });
    const detected = await manifestOf(await upload(h.app, probsModel.bytes));
    expect(detected.output).toEqual({ kind: 'probs', classes: 3 });
    // The self-test compares raw outputs: the golden values are the probabilities themselves.
    expect(detected.selfTest.expected.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 5);
    expect((await manifestOf(await upload(h.app, good.bytes))).output.kind).toBe('logits');
    // The uploader may insist on logits (e.g. a model whose logits happen to look normalised).
    expect((await manifestOf(await upload(h.app, probsModel.bytes, { query: '?output=logits' }))).output.kind).toBe('logits');
    const before = h.registry.db.select().from(releases).all().length;
    const wrong = await upload(h.app, good.bytes, { query: '?output=probs' });
    expect(wrong.status).toBe(422);
    expect((await json(wrong)).error).toMatchObject({ code: 'wrong_output_kind', field: 'body' });
    expect(h.registry.db.select().from(releases).all()).toHaveLength(before);
    expect((await upload(h.app, good.bytes, { query: '?output=softmax' })).status).toBe(400);
  });

  it('more uploads than api.maxConcurrentUploads at once → 503 uploads_busy with Retry-After, counted; the slots free up afterwards', async () => {
    const metrics = new PromRegistry();
    h = harness({ limits: { maxConcurrentUploads: 2 }, uploads: { metrics } });
    seedModel(h);
    // Two uploads whose bodies stall half-way hold both slots.
    const gates: (() => void)[] = [];
    const stalled = () => {
      const parts = [good.bytes.slice(0, 64), good.bytes.slice(64)];
      return new ReadableStream<Uint8Array>({
        pull: async (c) => {
          if (parts.length === 1) await new Promise<void>((r) => gates.push(r));
          return parts.length ? c.enqueue(parts.shift()!) : c.close();
        },
      });
    };
    const first = upload(h.app, stalled());
    const second = upload(h.app, stalled());
    while (gates.length < 2) await new Promise((r) => setTimeout(r, 5));
    const busy = await upload(h.app, good.bytes);
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('10');
    expect((await json(busy)).error.code).toBe('uploads_busy');
    // The slots are the API's, not the route's: an agent push waits for the same ones (issue 14).
    const agentPush = await h.app.request('/v1/agents', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/gzip' }, body: new Uint8Array([0x1f, 0x8b]) });
    expect(agentPush.status).toBe(503);
    expect((await json(agentPush)).error.code).toBe('uploads_busy');
    for (const g of gates) g();
    expect((await first).status).toBe(201);
    expect((await second).status).toBe(201);
    expect((await upload(h.app, good.bytes)).status).toBe(201);
    const counted = await metrics.getSingleMetric('apprentice_cloud_release_uploads_total')!.get();
    expect(Object.fromEntries(counted.values.map((v) => [v.labels.result, v.value]))).toEqual({ released: 3, uploads_busy: 1 });
  });
});
