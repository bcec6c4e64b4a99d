import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { harness, json, TOKEN, type Harness } from './helpers.js';

// Spy on the real timingSafeEqual: the token check must go through it, with equal-length digests.
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});
const crypto = await import('node:crypto');

describe('cloud API auth', () => {
  let h: Harness;
  beforeAll(() => {
    h = harness();
  });
  afterAll(() => h.close());

  const get = (path: string, headers: Record<string, string> = {}) => h.app.request(path, { headers });

  it('answers /healthz and /openapi.json without a token', async () => {
    expect((await get('/healthz')).status).toBe(200);
    expect(await json(await get('/healthz'))).toMatchObject({ status: 'ok', role: 'single', epoch: null });
    expect((await get('/openapi.json')).status).toBe(200);
  });

  it("/healthz reports the replica's role and epoch as the cluster gives them, without a token", async () => {
    let now: { role: 'leader' | 'follower'; epoch: number | null } = { role: 'follower', epoch: null };
    const r = harness({ replicaRole: () => now });
    try {
      expect(await json(await r.app.request('/healthz'))).toMatchObject({ status: 'ok', role: 'follower', epoch: null });
      now = { role: 'leader', epoch: 7 };
      const body = await json(await r.app.request('/healthz'));
      expect(body).toEqual({ status: 'ok', uptimeSeconds: expect.any(Number), role: 'leader', epoch: 7 });
    } finally {
      r.close();
    }
  });

  it.each([
    ['no token', {}, /missing bearer token/],
    ['wrong token', { authorization: 'Bearer nope' }, /invalid token/],
    ['a longer wrong token', { authorization: `Bearer ${TOKEN}x` }, /invalid token/],
    ['a prefix of the token', { authorization: `Bearer ${TOKEN.slice(0, 10)}` }, /invalid token/],
    ['another scheme', { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` }, /malformed Authorization/],
  ])('401 JSON for %s', async (_name, headers, message) => {
    for (const path of ['/v1/devices', '/v1/models', '/v1/no-such-route']) {
      const res = await get(path, headers as Record<string, string>);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
      const body = await json(res);
      expect(body.error.code).toBe('unauthorized');
      expect(body.error.message).toMatch(message);
    }
  });

  it('accepts the right token (scheme case-insensitive) and compares sha256 digests in constant time', async () => {
    const spy = vi.mocked(crypto.timingSafeEqual);
    spy.mockClear();
    expect((await get('/v1/devices', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    expect((await get('/v1/devices', { authorization: `bearer ${TOKEN}` })).status).toBe(200);
    expect((await get('/v1/devices', { authorization: 'Bearer x' })).status).toBe(401);
    expect(spy).toHaveBeenCalledTimes(3);
    for (const [a, b] of spy.mock.calls) {
      expect((a as Buffer).length).toBe(32);
      expect((b as Buffer).length).toBe(32);
    }
  });

  it('serves the Prometheus metrics of the registry it was given, behind the token', async () => {
    const { Registry: PromRegistry } = await import('prom-client');
    const { EngineCpuMeter } = await import('../../../cloud/rollouts/meter.js');
    const metrics = new PromRegistry();
    new EngineCpuMeter(metrics).event('status');
    const m = harness({ uploads: { metrics } });
    try {
      expect((await m.app.request('/metrics')).status).toBe(401);
      const res = await m.app.request('/metrics', { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      const text = await res.text();
      expect(text).toMatch(/^apprentice_rollout_engine_events_total\{kind="status"\} 1$/m);
      expect(text).toMatch(/# TYPE apprentice_rollout_engine_cpu_seconds_total counter/);
    } finally {
      m.close();
    }
  });

  it('refuses to start with a short admin token', async () => {
    const { createCloudApi } = await import('../../../cloud/api/app.js');
    expect(() => createCloudApi({ ...({} as any), adminToken: 'short' })).toThrow(/at least 16/);
  });
});
