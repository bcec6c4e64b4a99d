import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { releases, rounds } from '../../../cloud/registry/schema.js';
import { recordShadowEval } from '../../../cloud/shadow/store.js';
import { call, harness, json, seedDevice, seedModel, seedRelease, type Harness } from './helpers.js';

/** The shadow figures in the API (issue 13): per round, and per device of a rollout with its evidence. */
describe('shadow figures in the API', () => {
  let h: Harness;
  beforeEach(async () => {
    h = harness();
    seedModel(h);
    seedRelease(h, { seq: 1, bytes: Buffer.from('one') });
    seedRelease(h, { seq: 2, bytes: Buffer.from('two') });
    for (const id of ['pi-1', 'pi-2', 'pi-3']) seedDevice(h, id, { runningSeq: 1 });
    h.registry.db.insert(rounds).values({ id: 'round-2', model: 'digits', state: 'released', trigger: 'manual', releaseSeq: 2 }).run();
    h.registry.db.update(releases).set({ roundId: 'round-2' }).where(eq(releases.seq, 2)).run();
    const figures = { candidateAccuracy: 0.88, runningAccuracy: 0.96, agreement: 0.88, delta: -0.08, deltaLow: -0.146, deltaHigh: -0.0139 };
    await recordShadowEval(h.registry, 'round-2', 'digits', [
      { scope: 'cohort', deviceId: null, cohort: null, samples: 160, judgedBy: null, runningSeq: null, ...figures },
      { scope: 'device', deviceId: 'pi-1', cohort: null, samples: 100, judgedBy: 'device', runningSeq: 1, ...figures },
      { scope: 'device', deviceId: 'pi-2', cohort: null, samples: 60, judgedBy: 'device', runningSeq: 1, ...figures, delta: 0, deltaLow: 0, deltaHigh: 0 },
    ]);
  });
  afterEach(() => h.close());

  it('GET /v1/rounds/:id/shadow lists cohort rows then devices; 404 for an unknown round', async () => {
    const res = await json(await call(h.app, 'GET', '/v1/rounds/round-2/shadow'));
    expect(res.round).toBe('round-2');
    expect(res.rows.map((r: { scope: string; deviceId: string | null }) => [r.scope, r.deviceId])).toEqual([['cohort', null], ['device', 'pi-1'], ['device', 'pi-2']]);
    expect(res.rows[1]).toMatchObject({ samples: 100, judgedBy: 'device', runningSeq: 1, delta: -0.08, deltaHigh: -0.0139 });
    const missing = await call(h.app, 'GET', '/v1/rounds/nope/shadow');
    expect(missing.status).toBe(404);
    expect((await json(missing)).error.field).toBe('id');
  });

  it('a rollout shows the evidence and figures of each device, "no evidence" where there are none', async () => {
    const r = await json(await call(h.app, 'POST', '/v1/rollouts', { body: { model: 'digits', release: 2, target: 'all', agreementMargin: 0.02 } }));
    expect(r.agreementMargin).toBe(0.02);
    const detail = await json(await call(h.app, 'GET', `/v1/rollouts/${r.id}`));
    expect(detail.evidence['pi-1']).toMatchObject({ evidence: 'device', hold: false, samples: 100, delta: -0.08 }); // −1.4 ≥ −2.0
    expect(detail.evidence['pi-2']).toMatchObject({ evidence: 'device', hold: false, deltaHigh: 0 });
    expect(detail.evidence['pi-3']).toMatchObject({ evidence: 'none', hold: false, samples: null, reason: expect.stringMatching(/^no evidence/) });
  });

  it('400 names agreementMargin when it is out of [0, 1]', async () => {
    for (const agreementMargin of [-0.1, 2, 'big']) {
      const res = await call(h.app, 'POST', '/v1/rollouts', { body: { model: 'digits', release: 2, target: 'all', agreementMargin } });
      expect(res.status).toBe(400);
      expect((await json(res)).error.field).toBe('agreementMargin');
    }
  });
});
