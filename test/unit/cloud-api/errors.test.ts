import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REGISTRY_BUSY_TIMEOUT_MS } from '../../../cloud/registry/db.js';
import { RolloutError } from '../../../cloud/rollouts/policy.js';
import { RoundConflictError, UnknownModelError } from '../../../cloud/rounds/types.js';
import { call, harness, json, seedModel, seedRelease, TOKEN, type Harness } from './helpers.js';

/** Every failure answers the one JSON shape `{ error: { code, message, field? } }`. */
describe('cloud API error shape', () => {
  let h: Harness;
  beforeAll(() => {
    h = harness({ limits: { maxBodyBytes: 1024 } });
  });
  afterAll(() => h.close());

  async function expectError(res: Response, status: number, code: string, field?: string) {
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = await json(res);
    expect(Object.keys(body)).toEqual(['error']);
    expect(body.error.code).toBe(code);
    expect(typeof body.error.message).toBe('string');
    if (field !== undefined) expect(body.error.field).toBe(field);
    return body.error as { code: string; message: string; field?: string };
  }

  it('malformed JSON → 400 invalid_json', async () => {
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: '{"id": ' }), 400, 'invalid_json');
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: '' }), 400, 'invalid_json');
  });

  it('wrong types, missing and unknown fields → 400 invalid_body naming the field', async () => {
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: { id: 42 } }), 400, 'invalid_body', 'id');
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: { groups: [] } }), 400, 'invalid_body', 'id');
    const unknown = await expectError(await call(h.app, 'POST', '/v1/devices', { body: { id: 'a', colour: 'red' } }), 400, 'invalid_body', 'colour');
    expect(unknown.message).toMatch(/unknown field/);
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: [] }), 400, 'invalid_body');
    await expectError(await call(h.app, 'POST', '/v1/rollouts', { body: { model: 'm', release: 'one', target: 'all' } }), 400, 'invalid_body', 'release');
  });

  it('wrong or missing Content-Type → 415', async () => {
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: '{"id":"a"}', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type');
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: 'id=a', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type');
    const res = await h.app.request('/v1/devices', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: new Blob(['{"id":"a"}']) });
    await expectError(res, 415, 'unsupported_media_type');
    // Parameters are fine.
    expect((await call(h.app, 'POST', '/v1/devices', { body: '{"id":"ct-ok"}', headers: { 'content-type': 'application/json; charset=utf-8' } })).status).toBe(201);
  });

  it('oversize bodies → 413, by Content-Length and when streamed without one', async () => {
    const big = JSON.stringify({ id: 'a', groups: Array.from({ length: 200 }, (_, i) => `group-${i}`) });
    await expectError(await call(h.app, 'POST', '/v1/devices', { body: big }), 413, 'payload_too_large');
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const res = await h.app.request('/v1/devices', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: stream, duplex: 'half' } as RequestInit);
    await expectError(res, 413, 'payload_too_large');
  });

  it('unknown routes → 404, known paths with another method → 405 with Allow', async () => {
    await expectError(await call(h.app, 'GET', '/v1/nothing'), 404, 'not_found');
    await expectError(await call(h.app, 'GET', '/nope'), 404, 'not_found');
    const res = await call(h.app, 'PATCH', '/v1/devices/pi-1');
    await expectError(res, 405, 'method_not_allowed');
    expect(res.headers.get('allow')).toBe('GET, DELETE, HEAD');
    expect((await call(h.app, 'DELETE', '/v1/models')).headers.get('allow')).toBe('GET, HEAD');
  });

  it('a service failure is a 500 without internals', async () => {
    const bad = harness({ rounds: { start: () => { throw new Error('secret stack detail'); } } });
    try {
      await call(bad.app, 'PUT', '/v1/models/m', { body: { inputSpec: { shape: [2], dtype: 'float32', scaling: { scale: 1, offset: 0 } }, labels: ['a', 'b'], teacher: { files: ['t.onnx'] }, studentSpec: 'linear', distill: { baseData: 'csv:a', holdout: 'csv:b' } } });
      const err = await expectError(await call(bad.app, 'POST', '/v1/models/m/rounds'), 500, 'internal');
      expect(err.message).not.toMatch(/secret/);
    } finally {
      bad.close();
    }
  });

  it.each([
    [new RoundConflictError('m', 'r-1'), 409, 'round_in_progress'],
    [new UnknownModelError('m'), 404, 'not_found'],
    [Object.assign(new Error('model m: distillSettings.baseData: required'), { name: 'RoundConfigError' }), 422, 'invalid_model_config'],
  ])('maps cloud/rounds errors: %s', async (error, status, code) => {
    const x = harness({ rounds: { start: () => { throw error; } } });
    try {
      seedModel(x, 'm');
      await expectError(await call(x.app, 'POST', '/v1/models/m/rounds'), status, code);
    } finally {
      x.close();
    }
  });

  it.each([
    ['not_found', 404, 'rollout_not_found'],
    ['conflict', 409, 'rollout_conflict'],
    ['invalid', 422, 'invalid_rollout'],
  ] as const)('maps cloud/fleet RolloutError %s', async (kind, status, code) => {
    const x = harness();
    x.rollouts.create = async () => { throw new RolloutError('nope', kind); };
    try {
      seedModel(x);
      seedRelease(x, { seq: 1, bytes: Buffer.from('x') });
      await expectError(await call(x.app, 'POST', '/v1/rollouts', { body: { model: 'digits', release: 1, target: 'all' } }), status, code);
    } finally {
      x.close();
    }
  });

  it('a registry locked by another writer past the busy timeout → 503 registry_busy with Retry-After, counted', async () => {
    const metrics = new PromRegistry();
    const x = harness({ uploads: { metrics } });
    const locker = new Database(join(x.dir, 'registry.db'));
    x.registry.sqlite.pragma('busy_timeout = 20');
    locker.exec('BEGIN IMMEDIATE');
    try {
      const res = await call(x.app, 'POST', '/v1/devices', { body: { id: 'pi-busy', groups: ['lab'] } });
      expect(res.headers.get('retry-after')).toBe('1');
      await expectError(res, 503, 'registry_busy');
      const counted = await metrics.getSingleMetric('apprentice_cloud_api_refused_total')!.get();
      expect(counted.values).toEqual([expect.objectContaining({ labels: { reason: 'registry_busy' }, value: 1 })]);
    } finally {
      locker.exec('ROLLBACK');
      locker.close();
      x.registry.sqlite.pragma(`busy_timeout = ${REGISTRY_BUSY_TIMEOUT_MS}`);
    }
    try {
      expect((await call(x.app, 'POST', '/v1/devices', { body: { id: 'pi-busy', groups: ['lab'] } })).status).toBe(201);
    } finally {
      x.close();
    }
  });
});
