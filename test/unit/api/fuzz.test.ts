import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRandom } from '../../fixtures/onnx-models.js';
import { harness, type Harness } from './helpers.js';

/**
 * Thousands of malformed requests, each invalid by construction: every answer must be a 4xx with the one
 * JSON error shape, and the API must still serve a valid request afterwards.
 */

let h: Harness;
beforeAll(async () => {
  h = await harness();
});
afterAll(async () => {
  await h.close();
});

const rand = seededRandom(20240601);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-_!@#$%^&*(){}[]"\\ \n\t\u00e9\u4e2d\ud83d\ude00';
const randStr = (max = 20) => Array.from({ length: int(max) }, () => chars[int(chars.length)]).join('');

function randJson(depth = 0): unknown {
  const k = depth > 3 ? int(5) : int(7);
  switch (k) {
    case 0: return rand() * 1e6 - 5e5;
    case 1: return randStr();
    case 2: return rand() < 0.5;
    case 3: return null;
    case 4: return int(1000);
    case 5: return Array.from({ length: int(5) }, () => randJson(depth + 1));
    default: return Object.fromEntries(Array.from({ length: int(4) }, () => [randStr(8), randJson(depth + 1)]));
  }
}

const badElements: unknown[] = ['0.5', null, true, [], {}, 1e39, -1e39, 'NaN'];
const validRow = () => Array.from({ length: 784 }, () => rand());

function invalidPredictBody(): { body: string | Uint8Array; contentType?: string } {
  const json = (v: unknown) => ({ body: JSON.stringify(v) });
  switch (int(16)) {
    case 0: { // not an object
      let v = randJson();
      while (v !== null && typeof v === 'object' && !Array.isArray(v)) v = randJson();
      return json(v);
    }
    case 1: // unknown keys only
      return json(Object.fromEntries([[`x_${randStr(6)}`, randJson()], ...Array.from({ length: int(3) }, () => [randStr(6) + '_', randJson()])]));
    case 2: // input of the wrong type
      return json({ input: pick([randStr(), rand(), null, true, { a: 1 }]) });
    case 3: { // input of the wrong length
      let n = int(2000);
      if (n === 784) n = 785;
      return json({ input: Array.from({ length: n }, () => rand()) });
    }
    case 4: { // one bad element
      const row: unknown[] = validRow();
      row[int(784)] = pick(badElements);
      return json({ input: row });
    }
    case 5: // inputs: empty / non-array rows / wrong lengths
      return json({ inputs: pick([[], [validRow(), randStr()], [validRow(), Array.from({ length: 1 + int(100) }, () => rand())], randStr()]) });
    case 6: // too many rows (413)
      return json({ inputs: Array.from({ length: 257 + int(50) }, () => [0]) });
    case 7: { // bad base64 text
      const s = pick([randStr(40) + '!', 'AAA', 'A===', 'AAAA'.repeat(10) + '=A', Buffer.from(randStr(30)).toString('base64url') + '-_']);
      return json({ input_b64: s, encoding: pick(['float32', 'uint8']) });
    }
    case 8: { // valid base64 of the wrong byte count
      let bytes = int(5000);
      if (bytes === 784 || bytes === 3136) bytes++;
      return json({ input_b64: Buffer.alloc(bytes, 7).toString('base64'), encoding: pick(['float32', 'uint8']) });
    }
    case 9: // bad encoding / count
      return json({ input_b64: Buffer.alloc(784).toString('base64'), encoding: pick(['float16', 'int8', 1, null, undefined]), count: pick([undefined, 1]) });
    case 10:
      return json({ input_b64: Buffer.alloc(784).toString('base64'), encoding: 'uint8', count: pick([0, -1, 1.5, '1', 1e9, 2]) });
    case 11: // bad options on a valid input
      return json({ input: validRow(), ...pick([{ top_k: 0 }, { top_k: 11 }, { top_k: 1.5 }, { top_k: '3' }, { raw: 'yes' }, { raw: 1 }, { inputs: [validRow()] }, { count: 1 }]) });
    case 12: { // random bytes
      // Whatever these decode to (mostly not JSON, at best a bare scalar), it is not a predict body.
      return { body: Uint8Array.from({ length: 1 + int(300) }, () => int(256)) };
    }
    case 13: { // a valid body with a wrong content type (415)
      return { body: JSON.stringify({ input: validRow() }), contentType: pick(['text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/json-patch+json', '', 'application/x-www-form-urlencoded']) };
    }
    case 14: { // truncated or deeply nested JSON
      const full = JSON.stringify({ input: validRow() });
      return { body: rand() < 0.5 ? full.slice(0, int(full.length - 1)) : '['.repeat(1 + int(20_000)) + ']'.repeat(int(20_000)) };
    }
    default: // over the body limit (413), rarely: they are big
      return rand() < 0.1 ? json({ input: Array.from({ length: 150_000 }, () => 0.123456789) }) : json({ input: validRow(), top_k: -int(5) - 1 });
  }
}

function invalidFeedbackBody(): unknown {
  switch (int(4)) {
    case 0: return randJson();
    case 1: return { id: randStr(36), label: int(10) };
    case 2: return { id: '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b', label: int(10) }; // unknown id: 404
    default: return { id: '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b', label: pick([-1, 1.5, '', null, [], {}]) };
  }
}

async function expectClientError(res: Response, what: unknown): Promise<void> {
  const text = await res.text();
  let body: { error?: { code?: unknown; message?: unknown } } | undefined;
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = undefined;
  }
  const ok = res.status >= 400 && res.status < 500 && typeof body?.error?.code === 'string' && typeof body.error.message === 'string' && (res.headers.get('content-type') ?? '').includes('application/json');
  if (!ok) throw new Error(`unexpected answer ${res.status} ${text.slice(0, 200)} to ${JSON.stringify(what)?.slice(0, 300)}`);
}

describe('fuzz: malformed requests', () => {
  it('answers every malformed request with a 4xx JSON error and keeps serving', async () => {
    const statuses = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const feedback = i % 10 === 9;
      const { body, contentType } = feedback ? { body: JSON.stringify(invalidFeedbackBody()), contentType: undefined } : invalidPredictBody();
      const headers: Record<string, string> = {};
      if (contentType !== '') headers['content-type'] = contentType ?? 'application/json';
      const res = await h.app.request(feedback ? '/v1/feedback' : '/v1/predict', { method: 'POST', headers, body });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      await expectClientError(res, typeof body === 'string' ? body.slice(0, 300) : `bytes(${body.length})`);
    }
    expect([...statuses.keys()].sort()).toEqual(expect.arrayContaining([400, 404, 413, 415]));
    const ok = await h.app.request('/v1/predict', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: validRow() }) });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { probabilities: number[] }).probabilities).toHaveLength(10);
  });

  it('answers odd methods and paths with JSON errors', async () => {
    for (const [method, path] of [['PUT', '/v1/predict'], ['GET', '/v1/feedback'], ['POST', '/v1/model'], ['POST', '/metrics'], ['GET', '/v1/predict/x'], ['GET', '/%'], ['PATCH', '/readyz']] as const) {
      await expectClientError(await h.app.request(path, { method }), `${method} ${path}`);
    }
  });
});
