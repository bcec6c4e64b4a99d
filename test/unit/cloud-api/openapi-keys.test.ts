import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, harness, json, type Harness } from './helpers.js';

describe('GET /openapi.json', () => {
  let h: Harness;
  let doc: any;
  beforeAll(async () => {
    h = harness();
    doc = await json(await h.app.request('/openapi.json'));
  });
  afterAll(() => h.close());

  it('lists every route of the app, with bearer security except the public ones', () => {
    expect(doc.openapi).toBe('3.1.0');
    const ops = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, m]) => Object.keys(m).map((k) => `${k.toUpperCase()} ${p}`));
    expect(ops.sort()).toEqual(
      [
        'GET /healthz',
        'GET /openapi.json',
        'GET /metrics',
        'POST /v1/devices',
        'GET /v1/devices',
        'GET /v1/devices/{id}',
        'DELETE /v1/devices/{id}',
        'GET /v1/devices/{id}/events',
        'GET /v1/devices/{id}/telemetry',
        'GET /v1/fleet/summary',
        'GET /v1/audit',
        'PUT /v1/models/{name}',
        'GET /v1/models',
        'GET /v1/models/{name}',
        'POST /v1/models/{name}/releases',
        'POST /v1/models/{name}/rounds',
        'GET /v1/models/{name}/rounds',
        'GET /v1/rounds/{id}',
        'GET /v1/rounds/{id}/shadow',
        'GET /v1/releases',
        'GET /v1/releases/{seq}',
        'GET /v1/releases/{seq}/artifact',
        'POST /v1/agents',
        'GET /v1/agents',
        'GET /v1/agents/{version}/{platform}',
        'POST /v1/rollouts',
        'GET /v1/rollouts',
        'GET /v1/rollouts/{id}',
        'POST /v1/rollouts/{id}/abort',
        'POST /v1/rollouts/{id}/pause',
        'POST /v1/rollouts/{id}/resume',
        'POST /v1/rollouts/{id}/rollback',
        'POST /v1/rollouts/{id}/switch',
        'GET /v1/examples/stats',
        'GET /v1/examples/export',
        'GET /v1/examples/quarantine',
        'POST /v1/examples/quarantine/{id}/accept',
        'POST /v1/examples/quarantine/{id}/drop',
        'GET /v1/artifacts/{sha256}',
        'GET /v1/keys',
        'GET /v1/keys/keyset',
        'PUT /v1/keys/keyset',
        'POST /v1/keys/rotate',
        'POST /v1/keys/{keyId}/activate',
        'DELETE /v1/keys/{keyId}',
      ].sort(),
    );
    // Every route the app serves is documented (none forgotten by hand).
    const served = new Set(h.app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
    expect([...served].sort()).toEqual(ops.sort());
    expect(doc.paths['/healthz'].get.security).toEqual([]);
    // Issue 15: every replica's /healthz says its role and leader epoch.
    const health = doc.paths['/healthz'].get.responses['200'].content['application/json'].schema;
    expect(health.required).toEqual(expect.arrayContaining(['status', 'uptimeSeconds', 'role', 'epoch']));
    expect(health.properties.role.enum).toEqual(['single', 'leader', 'follower', 'stopped']);
    // Device HTTP Basic or the admin token, checked by the route itself.
    expect(doc.paths['/v1/artifacts/{sha256}'].get.security).toEqual([]);
    expect(doc.paths['/v1/devices'].get.security).toBeUndefined();
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  it('derives request schemas and parameters from the route zod schemas', () => {
    const put = doc.paths['/v1/models/{name}'].put;
    const body = put.requestBody.content['application/json'].schema;
    expect(body.required).toEqual(expect.arrayContaining(['inputSpec', 'labels', 'teacher', 'studentSpec', 'distill']));
    expect(body.required).not.toContain('schedule');
    expect(body.additionalProperties).toBe(false);
    expect(body.properties.distill.properties.alpha).toMatchObject({ minimum: 0, maximum: 1, default: 0.9 });
    expect(put.parameters).toEqual([expect.objectContaining({ name: 'name', in: 'path', required: true })]);
    expect(Object.keys(put.responses)).toEqual(expect.arrayContaining(['200', '201', '400', '401', '413', '415']));
    expect(put.responses['400'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Error' });

    const exp = doc.paths['/v1/examples/export'].get;
    expect(exp.parameters.map((p: { name: string; required: boolean }) => [p.name, p.required])).toEqual([['model', true], ['since', false], ['format', false], ['labelled', false]]);
    expect(exp.responses['200'].content['text/csv']).toBeDefined();
    expect(doc.paths['/v1/devices'].post.responses['201'].content['application/json'].schema.properties.mqtt.required).toEqual(['url', 'username', 'password']);
    expect(doc.components.schemas.Error.properties.error.required).toEqual(['code', 'message']);
    expect(doc.paths['/v1/rollouts/{id}/abort'].post.requestBody.required).toBe(false);
  });
});

describe('/v1/keys', () => {
  let h: Harness;
  beforeAll(() => {
    h = harness();
  });
  afterAll(() => h.close());

  it('lists, stages, activates and retires keys', async () => {
    const first = h.keys.active().keyId;
    expect((await json(await call(h.app, 'GET', '/v1/keys'))).keys).toEqual([expect.objectContaining({ keyId: first, status: 'active', source: 'generated' })]);
    const staged = await call(h.app, 'POST', '/v1/keys/rotate', { body: { activate: false } });
    expect(staged.status).toBe(201);
    const next = (await json(staged)).keyId;
    expect(h.keys.active().keyId).toBe(first);
    expect(h.keys.trusted().map((k) => k.keyId)).toEqual([first, next]);

    const busy = await call(h.app, 'DELETE', `/v1/keys/${first}`);
    expect(busy.status).toBe(409);
    expect((await json(busy)).error).toMatchObject({ code: 'key_conflict', field: 'keyId' });

    expect((await json(await call(h.app, 'POST', `/v1/keys/${next}/activate`))).status).toBe('active');
    expect((await json(await call(h.app, 'DELETE', `/v1/keys/${first}`))).status).toBe('retired');
    expect(h.keys.trusted().map((k) => k.keyId)).toEqual([next]);
    expect((await call(h.app, 'DELETE', '/v1/keys/0123456789abcdef')).status).toBe(404);
    expect((await json(await call(h.app, 'DELETE', '/v1/keys/xyz'))).error.field).toBe('keyId');
    // A rotation with an empty body activates the new key.
    const rotated = await json(await call(h.app, 'POST', '/v1/keys/rotate'));
    expect(rotated.status).toBe('active');
  });
});
