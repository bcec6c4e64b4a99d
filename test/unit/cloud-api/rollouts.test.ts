import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { call, harness, json, seedDevice, seedModel, seedRelease, type Harness } from './helpers.js';

describe('/v1/rollouts', () => {
  let h: Harness;
  beforeEach(() => {
    h = harness();
    seedModel(h);
    seedModel(h, 'other');
    seedRelease(h, { seq: 1, bytes: Buffer.from('one') });
    seedRelease(h, { model: 'other', seq: 2, bytes: Buffer.from('two') });
    seedDevice(h, 'pi-1');
    seedDevice(h, 'pi-2');
    seedDevice(h, 'pi-old', { revoked: true });
  });
  afterEach(() => h.close());

  const body = { model: 'digits', release: 1, target: { devices: ['pi-1', 'pi-2'] }, canaryShare: 0.5, soakSeconds: 30, failureThreshold: 0.25 };

  it('creates, lists, shows, aborts and rolls back a rollout', async () => {
    const res = await call(h.app, 'POST', '/v1/rollouts', { body });
    expect(res.status).toBe(201);
    const r = await json(res);
    expect(r).toMatchObject({ model: 'digits', release: 1, target: { kind: 'devices', ids: ['pi-1', 'pi-2'] }, canaryShare: 0.5, soakSeconds: 30, failureThreshold: 0.25, state: 'canary' });
    expect(res.headers.get('location')).toBe(`/v1/rollouts/${r.id}`);

    const detail = await json(await call(h.app, 'GET', `/v1/rollouts/${r.id}`));
    expect(detail.counts).toEqual({ desired: 1, waiting: 1 });
    expect(detail.devices.map((d: { deviceId: string; canary: boolean }) => [d.deviceId, d.canary])).toEqual([['pi-1', true], ['pi-2', false]]);

    expect((await json(await call(h.app, 'GET', '/v1/rollouts'))).rollouts.map((x: { id: string }) => x.id)).toEqual([r.id]);
    expect((await json(await call(h.app, 'GET', '/v1/rollouts?model=other'))).rollouts).toEqual([]);
    expect((await json(await call(h.app, 'GET', '/v1/rollouts?state=canary'))).rollouts).toHaveLength(1);
    expect((await json(await call(h.app, 'GET', '/v1/rollouts?state=weird'))).error.field).toBe('state');

    const conflict = await call(h.app, 'POST', '/v1/rollouts', { body });
    expect(conflict.status).toBe(409);
    expect((await json(conflict)).error.code).toBe('rollout_conflict');

    const paused = await call(h.app, 'POST', `/v1/rollouts/${r.id}/pause`, { body: { reason: 'checking dashboards' } });
    expect(paused.status).toBe(200);
    expect(await json(paused)).toMatchObject({ paused: true, pauseReason: 'checking dashboards' });
    expect((await call(h.app, 'POST', `/v1/rollouts/${r.id}/pause`)).status).toBe(409);
    expect(await json(await call(h.app, 'POST', `/v1/rollouts/${r.id}/resume`))).toMatchObject({ paused: false, pauseReason: null });
    expect((await call(h.app, 'POST', `/v1/rollouts/${r.id}/resume`)).status).toBe(409);

    const aborted = await call(h.app, 'POST', `/v1/rollouts/${r.id}/abort`);
    expect(aborted.status).toBe(200);
    expect((await json(aborted)).state).toBe('aborted');
    expect(h.rollouts.aborted).toEqual([{ id: r.id, reason: 'aborted by operator' }]);
    const again = await call(h.app, 'POST', `/v1/rollouts/${r.id}/abort`, { body: { reason: 'again' } });
    expect(again.status).toBe(409);

    const rolled = await json(await call(h.app, 'POST', `/v1/rollouts/${r.id}/rollback`));
    expect(rolled).toMatchObject({ state: 'rolled_back', rollbackRelease: 1 });
    expect(h.rollouts.rolledBack).toEqual([r.id]);
  });

  it('defaults the policy and accepts "all" and group targets', async () => {
    const all = await json(await call(h.app, 'POST', '/v1/rollouts', { body: { model: 'digits', release: 1, target: 'all' } }));
    expect(all).toMatchObject({ target: { kind: 'all' }, canaryShare: 0.1, waves: [0.1, 1], soakSeconds: 300, failureThreshold: 0.2, minFailures: 2, deviceTimeoutSeconds: 3600, canaryGraceSeconds: 300 });
    const group = await json(await call(h.app, 'POST', '/v1/rollouts', { body: { model: 'other', release: 2, target: { group: 'lab' } } }));
    expect(group.target).toEqual({ kind: 'group', group: 'lab' });
  });

  it('422 names the field for unknown model, release, foreign release and unknown or revoked devices', async () => {
    const cases: [unknown, string][] = [
      [{ ...body, model: 'ghost' }, 'model'],
      [{ ...body, release: 99 }, 'release'],
      [{ ...body, release: 2 }, 'release'],
      [{ ...body, target: { devices: ['pi-1', 'nobody'] } }, 'target.devices'],
      [{ ...body, target: { devices: ['pi-old'] } }, 'target.devices'],
    ];
    for (const [b, field] of cases) {
      const res = await call(h.app, 'POST', '/v1/rollouts', { body: b });
      expect(res.status, field).toBe(422);
      expect((await json(res)).error).toMatchObject({ code: 'invalid_rollout', field });
    }
    for (const [b, field] of [
      [{ ...body, canaryShare: 1.5 }, 'canaryShare'],
      [{ ...body, target: 'some' }, 'target'],
      [{ ...body, target: { devices: [] } }, 'target.devices'],
      [{ ...body, soakSeconds: -1 }, 'soakSeconds'],
      [{ ...body, waves: [0.1, 1] }, 'canaryShare'], // both: ambiguous
      [{ ...body, canaryShare: undefined, waves: [0.5, 0.2, 1] }, 'waves'],
      [{ ...body, canaryShare: undefined, waves: [0.1, 0.5] }, 'waves'],
      [{ ...body, minFailures: 0 }, 'minFailures'],
      [{ ...body, deviceTimeoutSeconds: 0 }, 'deviceTimeoutSeconds'],
    ] as const) {
      const res = await call(h.app, 'POST', '/v1/rollouts', { body: b });
      expect(res.status, field).toBe(400);
      expect((await json(res)).error.field).toBe(field);
    }
  });

  it('404 for unknown rollouts', async () => {
    for (const [m, p] of [['GET', '/v1/rollouts/nope'], ['POST', '/v1/rollouts/nope/abort'], ['POST', '/v1/rollouts/nope/rollback'], ['POST', '/v1/rollouts/nope/pause'], ['POST', '/v1/rollouts/nope/resume']] as const) {
      const res = await call(h.app, m, p);
      expect(res.status).toBe(404);
      expect((await json(res)).error.code).toBe('rollout_not_found');
    }
  });
});
