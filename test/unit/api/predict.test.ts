import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { harness, post, softmax, type Harness } from './helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await harness();
});
afterAll(async () => {
  await h.close();
});

const x = sampleInputs(3, 784, 77);
const row = (i: number) => x.subarray(i * 784, (i + 1) * 784);

function expectGolden(probabilities: number[], input: Float32Array) {
  const want = softmax(h.model.forward(input, 1));
  expect(probabilities).toHaveLength(10);
  probabilities.forEach((p, i) => expect(p).toBeCloseTo(want[i]!, 5));
}

interface Answer {
  id: string;
  label: string;
  index: number;
  confidence: number;
  probabilities?: number[];
  top_k?: { index: number; label: string; probability: number }[];
  model?: string;
  release?: number;
  latency_ms?: number;
}

describe('POST /v1/predict', () => {
  it('answers one JSON example with golden probabilities', async () => {
    const res = await post(h.app, '/v1/predict', { input: Array.from(row(0)) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Answer;
    expectGolden(body.probabilities!, row(0));
    expect(body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(body.index).toBe(body.probabilities!.indexOf(Math.max(...body.probabilities!)));
    expect(body.label).toBe(`digit_${body.index}`);
    expect(body.confidence).toBe(body.probabilities![body.index]);
    expect(body).toMatchObject({ model: 'mnist-student', release: 4 });
    expect(body.latency_ms).toBeGreaterThanOrEqual(0);
    expect(h.predictions.at(-1)).toMatchObject({ id: body.id, manifest: { release: 4 } });
    expect(Array.from(h.predictions.at(-1)!.input)).toEqual(Array.from(row(0)));
  });

  it('gives the same answer on the {"input":[…]} fast path as on the general path', async () => {
    const values = Array.from(row(1));
    const fast = (await (await post(h.app, '/v1/predict', `{ "input": [${values.join(', ')}] }`)).json()) as Answer;
    const general = (await (await post(h.app, '/v1/predict', { input: values, raw: false })).json()) as Answer;
    expect(fast.probabilities).toEqual(general.probabilities);
    expect(fast.index).toBe(general.index);
  });

  it('answers a batch of inputs', async () => {
    const res = await post(h.app, '/v1/predict', { inputs: [0, 1, 2].map((i) => Array.from(row(i))) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { predictions: Answer[]; release: number };
    expect(body.predictions).toHaveLength(3);
    expect(new Set(body.predictions.map((p) => p.id)).size).toBe(3);
    body.predictions.forEach((p, i) => expectGolden(p.probabilities!, row(i)));
    expect(body.release).toBe(4);
  });

  it('scales raw JSON numbers with the manifest scaling', async () => {
    const pixels = Array.from(row(1), (v) => Math.round(v * 255));
    const res = await post(h.app, '/v1/predict', { input: pixels, raw: true });
    const body = (await res.json()) as Answer;
    expectGolden(body.probabilities!, Float32Array.from(pixels, (p) => p / 255));
  });

  it('accepts base64 float32 (one, or many with count)', async () => {
    const one = Buffer.from(row(2).slice().buffer).toString('base64');
    const r1 = (await (await post(h.app, '/v1/predict', { input_b64: one, encoding: 'float32' })).json()) as Answer;
    expectGolden(r1.probabilities!, row(2));
    const all = Buffer.from(x.slice().buffer).toString('base64');
    const r3 = await post(h.app, '/v1/predict', { input_b64: all, encoding: 'float32', count: 3 });
    expect(r3.status).toBe(200);
    const b3 = (await r3.json()) as { predictions: Answer[] };
    b3.predictions.forEach((p, i) => expectGolden(p.probabilities!, row(i)));
  });

  it('accepts base64 uint8 pixels, scaled by the manifest', async () => {
    const px = Uint8Array.from(row(0), (v) => Math.round(v * 255));
    const res = await post(h.app, '/v1/predict', { input_b64: Buffer.from(px).toString('base64'), encoding: 'uint8' });
    expect(res.status).toBe(200);
    expectGolden(((await res.json()) as Answer).probabilities!, Float32Array.from(px, (p) => p / 255));
  });

  it('returns top_k instead of all probabilities', async () => {
    const res = await post(h.app, '/v1/predict', { input: Array.from(row(0)), top_k: 3 });
    const body = (await res.json()) as Answer;
    expect(body.probabilities).toBeUndefined();
    expect(body.top_k).toHaveLength(3);
    const want = softmax(h.model.forward(row(0), 1));
    const order = want.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0]).slice(0, 3).map(([, i]) => i);
    expect(body.top_k!.map((t) => t.index)).toEqual(order);
    expect(body.top_k![0]).toMatchObject({ label: `digit_${order[0]}`, index: body.index });
  });

  it('names the field of validation errors', async () => {
    const cases: [unknown, number, string | undefined, string][] = [
      [{ input: [1, 2, 3] }, 400, 'input', 'invalid_input'],
      [{ input: [...Array(783).fill(0), 'a'] }, 400, 'input.783', 'invalid_input'],
      [{ input: [...Array(783).fill(0), null] }, 400, 'input.783', 'invalid_input'],
      [{ input: '1,2,3' }, 400, 'input', 'invalid_body'],
      [{ inputs: [Array(784).fill(0), [1]] }, 400, 'inputs.1', 'invalid_input'],
      [{ inputs: [Array(784).fill(0), 5] }, 400, 'inputs.1', 'invalid_input'],
      [{ inputs: [] }, 400, 'inputs', 'invalid_input'],
      [{ input_b64: '!!!!', encoding: 'float32' }, 400, 'input_b64', 'invalid_input'],
      [{ input_b64: 'AAAA', encoding: 'float32' }, 400, 'input_b64', 'invalid_input'],
      [{ input_b64: 'AAAA' }, 400, 'encoding', undefined as unknown as string],
      [{ input_b64: 'AAAA', encoding: 'float16' }, 400, 'encoding', 'invalid_body'],
      [{ input: Array(784).fill(0), top_k: 11 }, 400, 'top_k', 'invalid_body'],
      [{ input: Array(784).fill(0), top_k: 0 }, 400, 'top_k', 'invalid_body'],
      [{ input: Array(784).fill(0), extra: 1 }, 400, 'extra', 'invalid_body'],
      [{ input: Array(784).fill(0), inputs: [] }, 400, undefined, 'invalid_body'],
      [{}, 400, 'input', 'invalid_body'],
      [[1, 2], 400, undefined, 'invalid_body'],
      [{ input: [...Array(783).fill(0), 1e39] }, 400, 'input.783', 'invalid_input'],
      [{ input: Array(784).fill(0), count: 2 }, 400, 'count', 'invalid_body'],
      [{ inputs: Array(257).fill([0]) }, 413, 'inputs', 'batch_too_large'],
      [{ input_b64: 'AAAA', encoding: 'uint8', count: 300 }, 413, 'count', 'batch_too_large'],
    ];
    for (const [body, status, field, code] of cases) {
      const res = await post(h.app, '/v1/predict', body);
      const json = (await res.json()) as { error: { code: string; message: string; field?: string } };
      expect({ body, status: res.status, field: json.error.field }).toEqual({ body, status, field });
      if (code) expect(json.error.code).toBe(code);
      expect(json.error.message.length).toBeGreaterThan(0);
    }
    // NaN bits in float32 base64 are refused too.
    const nan = new Float32Array(784);
    nan[5] = NaN;
    const res = await post(h.app, '/v1/predict', { input_b64: Buffer.from(nan.buffer).toString('base64'), encoding: 'float32' });
    expect(res.status).toBe(400);
    // 1e999 parses to Infinity.
    const inf = await post(h.app, '/v1/predict', `{"input":[${Array(783).fill(0).join(',')},1e999]}`);
    expect(((await inf.json()) as { error: { field: string } }).error.field).toBe('input.783');
  });

  it('refuses bad JSON (400), non-JSON content types (415) and big bodies (413)', async () => {
    const bad = await post(h.app, '/v1/predict', '{"input": [1,2');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp']) {
      const r = await post(h.app, '/v1/predict', { input: [] }, { 'content-type': ct });
      expect(r.status).toBe(415);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type');
    }
    const none = await h.app.request('/v1/predict', { method: 'POST', body: '{}' , headers: {} });
    expect([415]).toContain(none.status);
    const ok = await post(h.app, '/v1/predict', { input: Array.from(row(0)) }, { 'content-type': 'Application/JSON; charset=utf-8' });
    expect(ok.status).toBe(200);
    const huge = JSON.stringify({ input: Array(200_000).fill(0.123456) });
    const big = await post(h.app, '/v1/predict', huge); // streamed: no content-length
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
    const declared = await post(h.app, '/v1/predict', '{}', { 'content-length': String(2 * 1024 * 1024) });
    expect(declared.status).toBe(413);
  });

  it('answers 404 JSON for unknown routes and 405 for wrong methods', async () => {
    const nf = await h.app.request('/v2/nothing');
    expect(nf.status).toBe(404);
    expect(await nf.json()).toMatchObject({ error: { code: 'not_found' } });
    const m = await h.app.request('/v1/predict');
    expect(m.status).toBe(405);
    expect(m.headers.get('allow')).toBe('POST');
    expect(await m.json()).toMatchObject({ error: { code: 'method_not_allowed' } });
    expect((await h.app.request('/healthz', { method: 'DELETE' })).status).toBe(405);
  });
});
