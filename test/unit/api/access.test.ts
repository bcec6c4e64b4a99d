/**
 * Local API access (issue 10, item 10) on the real ORT-backed API: the optional bearer token, and the
 * feedback route's own per-minute cap.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, readApiToken } from '../../../edge/config/index.js';
import { sampleInputs } from '../../fixtures/onnx-models.js';
import { harness, post, type Harness } from './helpers.js';

const TOKEN = 'tok-0123456789abcdef';
const open: Harness[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((h) => h.close()));
});
async function api(opts: Parameters<typeof harness>[0] = {}): Promise<Harness> {
  const h = await harness(opts);
  open.push(h);
  return h;
}
const input = (seed: number) => Array.from(sampleInputs(1, 784, seed));
const refused = async (h: Harness, reason: string) => Number(new RegExp(`apprentice_edge_refused_total\\{reason="${reason}"\\} (\\d+)`).exec(await h.registry.metrics())?.[1] ?? 0);

describe('local API bearer token', () => {
  it('with a token: 401 JSON without it or with a wrong one, 200 with it; probes stay open', async () => {
    const h = await api({ token: TOKEN });
    const none = await post(h.app, '/v1/predict', { input: input(1) });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await none.json()).toMatchObject({ error: { code: 'unauthorized', message: expect.stringMatching(/missing bearer token/) } });
    for (const auth of [`Bearer ${TOKEN}x`, `Basic ${TOKEN}`, 'Bearer', `Bearer ${TOKEN} extra`, '']) {
      const r = await post(h.app, '/v1/predict', { input: input(1) }, { authorization: auth });
      expect(r.status, auth).toBe(401);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    }
    expect(h.predictions).toHaveLength(0); // nothing reached the model
    const ok = await post(h.app, '/v1/predict', { input: input(1) }, { authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    expect((await h.app.request('/metrics')).status).toBe(401);
    expect((await h.app.request('/v1/model')).status).toBe(401);
    expect((await h.app.request('/healthz')).status).toBe(200);
    expect((await h.app.request('/readyz')).status).toBe(200);
    expect(await refused(h, 'unauthorized')).toBe(8);
  });

  it('without a token every route answers as before', async () => {
    const h = await api();
    expect((await post(h.app, '/v1/predict', { input: input(2) })).status).toBe(200);
    expect((await h.app.request('/metrics')).status).toBe(200);
  });
});

describe('feedback per-minute cap', () => {
  it('over the cap: 429 JSON with Retry-After, counted, not stored; the window slides', async () => {
    let now = 1_000_000;
    const h = await api({ limits: { feedbackPerMinute: 3 }, clock: () => now });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(((await (await post(h.app, '/v1/predict', { input: input(10 + i) })).json()) as { id: string }).id);
    for (let i = 0; i < 3; i++) expect((await post(h.app, '/v1/feedback', { id: ids[i], label: 1 })).status).toBe(200);
    const over = await post(h.app, '/v1/feedback', { id: ids[3], label: 1 });
    expect(over.status).toBe(429);
    expect(over.headers.get('retry-after')).toBe('60');
    expect(await over.json()).toMatchObject({ error: { code: 'feedback_rate_limited' } });
    expect(h.feedback).toHaveLength(3);
    expect(await refused(h, 'feedback_rate')).toBe(1);
    // Refused requests do not use up the window; a bad request does not either.
    expect((await post(h.app, '/v1/feedback', { id: ids[3], label: 99 })).status).toBe(429);
    now += 60_001;
    expect((await post(h.app, '/v1/feedback', { id: ids[3], label: 1 })).status).toBe(200);
    expect(h.feedback.map((f) => f.id)).toEqual(ids.slice(0, 4));
  });
});

describe('api.tokenFile', () => {
  it('reads the first line; a missing, empty, short or binary file is a config error (exit 2)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apprentice-token-'));
    try {
      const f = join(dir, 'token');
      await writeFile(f, `${TOKEN}\nignored\n`);
      expect(await readApiToken({ tokenFile: f })).toBe(TOKEN);
      expect(await readApiToken({ token: TOKEN })).toBe(TOKEN);
      expect(await readApiToken({})).toBeUndefined();
      await expect(readApiToken({ tokenFile: join(dir, 'missing') })).rejects.toThrow(ConfigError);
      for (const bad of ['', '\n', 'short\n', 'has a space in it!!\n', Buffer.from([0xff, 0xfe, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])]) {
        await writeFile(f, bad);
        await expect(readApiToken({ tokenFile: f }), JSON.stringify(bad)).rejects.toThrow(/api.tokenFile/);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('local API concurrency limit (api.maxConcurrent)', () => {
  /** A predict request whose body arrives only when `release()` is called: it stays in progress until then. */
  function heldRequest(h: Harness) {
    let release!: () => void;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        release = () => {
          controller.enqueue(new TextEncoder().encode(JSON.stringify({ input: input(3) })));
          controller.close();
        };
      },
    });
    const res = Promise.resolve(h.app.request('/v1/predict', { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit));
    return { res, release };
  }

  it('past the limit: 503 with Retry-After and a JSON body, counted; probes and /metrics still answer; room again once one finishes', async () => {
    const h = await api({ limits: { maxConcurrent: 2 } });
    const a = heldRequest(h);
    const b = heldRequest(h);
    await new Promise((r) => setTimeout(r, 20));
    const over = await post(h.app, '/v1/predict', { input: input(1) });
    expect(over.status).toBe(503);
    expect(over.headers.get('retry-after')).toBe('1');
    expect(await over.json()).toMatchObject({ error: { code: 'busy', message: expect.stringMatching(/2 requests are already in progress/) } });
    expect(await refused(h, 'busy')).toBe(1);
    expect((await h.app.request('/healthz')).status).toBe(200);
    expect((await h.app.request('/metrics')).status).toBe(200);
    a.release();
    b.release();
    expect((await a.res).status).toBe(200);
    expect((await b.res).status).toBe(200);
    expect((await post(h.app, '/v1/predict', { input: input(1) })).status).toBe(200);
    expect(await refused(h, 'busy')).toBe(1);
  });

  it('0 turns the limit off', async () => {
    const h = await api({ limits: { maxConcurrent: 0 } });
    const held = [heldRequest(h), heldRequest(h), heldRequest(h)];
    await new Promise((r) => setTimeout(r, 20));
    expect((await post(h.app, '/v1/predict', { input: input(1) })).status).toBe(200);
    for (const x of held) x.release();
    expect((await Promise.all(held.map((x) => x.res))).map((r) => r.status)).toEqual([200, 200, 200]);
    expect(await refused(h, 'busy')).toBe(0);
  });
});
