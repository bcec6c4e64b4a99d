/**
 * Shadow evaluation per release line (issue 13 items 2, 3 and 7): a cohort line's candidate is judged on
 * its members' own audit traffic, each against the release it runs, and recorded under its line, so the
 * agreement gate of the cohort rollout finds its evidence: one member held back by its own traffic while
 * the other proceeds. Real ORT sessions (test/fixtures/shadow-models.ts), the real registry and engine.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { models, releases } from '../../../cloud/registry/schema.js';
import { rolloutShadowView } from '../../../cloud/rollouts/agreement.js';
import { shadowEvaluate, shadowRows } from '../../../cloud/shadow/evaluate.js';
import { recordShadowEval, shadowEvalOfRelease, shadowEvalOfRound } from '../../../cloud/shadow/store.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { RIGHT, TRAP, addExamples, shadowModels } from '../../fixtures/shadow-models.js';
import { MODEL } from '../../unit/fleet/fixtures.js';
import { RolloutHarness } from '../../unit/rollouts/harness.js';

let models_: { identity: Uint8Array; candidate: Uint8Array };
let h: RolloutHarness;
let teacher: Teacher;

beforeAll(async () => {
  models_ = await shadowModels();
});
beforeEach(async () => {
  h = new RolloutHarness();
  h.fx.db.update(models).set({ distillSettings: { baseData: 'mnist:train', cohorts: [{ name: 'lab', group: 'lab' }] } }).where(eq(models.name, MODEL)).run();
  // 1: running everywhere (the identity). Round `round-2` made 2 for the base line (the identity again:
  // no worse for anyone) and 3 for cohort lab (the candidate, wrong on TRAP inputs).
  h.shas[1] = h.fx.addRelease(1, { bytes: Buffer.from(models_.identity) }).sha256;
  h.shas[2] = h.fx.addRelease(2, { parent: 1, bytes: Buffer.from(models_.identity) }).sha256;
  h.shas[3] = h.fx.addRelease(3, { parent: 2, bytes: Buffer.from(models_.candidate) }).sha256;
  h.fx.db.update(releases).set({ roundId: 'round-2' }).where(eq(releases.seq, 2)).run();
  h.fx.db.update(releases).set({ roundId: 'round-2', cohort: 'lab' }).where(eq(releases.seq, 3)).run();
  for (const id of ['lab-1', 'lab-2']) h.fx.addDevice(id, { groups: ['lab'], runningSeq: 1, desiredSeq: 1 });
  h.fx.addDevice('base-1', { groups: [], runningSeq: 1, desiredSeq: 1 });
  addExamples(h.fx.db, MODEL, 'lab-1', 40, RIGHT);
  addExamples(h.fx.db, MODEL, 'lab-1', 20, TRAP); // the cohort candidate is wrong on a third of lab-1's traffic
  addExamples(h.fx.db, MODEL, 'lab-2', 60, RIGHT);
  addExamples(h.fx.db, MODEL, 'base-1', 60, TRAP); // not a member: never in the cohort line's figures
  writeFileSync(join(h.fx.dir, 'teacher.onnx'), models_.identity);
  teacher = await Teacher.create([join(h.fx.dir, 'teacher.onnx')]);
  // The round's evaluation with real timers (ORT), then the engine on a fake clock (soak, ticks).
  await evaluateLines();
  vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
  await h.boot();
});
afterEach(async () => {
  await teacher.dispose();
  await h.dispose();
  vi.useRealTimers();
});

/** What a round does for each of its lines (cloud/rounds/ship.ts). */
async function evaluateLines(): Promise<void> {
  const common = { registry: h.fx.registry, dataDir: h.fx.dir, model: MODEL, teacher, inputSize: 2, classes: 2, perDevice: 60, minSamples: 50 };
  const cohortOf = (d: string) => (d.startsWith('lab-') ? 'lab' : null);
  const base = await shadowEvaluate({ ...common, candidate: models_.identity, cohortOf });
  await recordShadowEval(h.fx.registry, 'round-2', MODEL, shadowRows(base), null);
  const lab = await shadowEvaluate({ ...common, candidate: models_.candidate, cohortOf: () => 'lab', devices: ['lab-1', 'lab-2'] });
  expect(lab.devices.map((d) => [d.deviceId, d.judgedBy, d.samples])).toEqual([['lab-1', 'device', 60], ['lab-2', 'device', 60]]);
  expect(lab.cohorts).toEqual([expect.objectContaining({ cohort: 'lab', devices: 2, samples: 120, worse: 20 })]);
  await recordShadowEval(h.fx.registry, 'round-2', MODEL, shadowRows(lab), 'lab');
}

describe('shadow evaluation of cohort lines', () => {
  it('each line has its own rows; the cohort release reads its line, the base release the base', async () => {
    expect(await shadowEvalOfRound(h.fx.registry, 'round-2')).toHaveLength(2 + 3 + 1 + 2);
    const base = await shadowEvalOfRelease(h.fx.registry, 2);
    expect(base.filter((r) => r.scope === 'device').map((r) => r.deviceId)).toEqual(['base-1', 'lab-1', 'lab-2']);
    expect(base.every((r) => r.line === null && (r.delta === null || r.delta === 0))).toBe(true);
    const lab = await shadowEvalOfRelease(h.fx.registry, 3);
    expect(lab.map((r) => [r.scope, r.deviceId ?? r.cohort, r.line])).toEqual([['cohort', 'lab', 'lab'], ['device', 'lab-1', 'lab'], ['device', 'lab-2', 'lab']]);
    // A retried round replaces one line's rows, not the other's.
    await recordShadowEval(h.fx.registry, 'round-2', MODEL, [], 'lab');
    expect(await shadowEvalOfRelease(h.fx.registry, 3)).toEqual([]);
    expect(await shadowEvalOfRelease(h.fx.registry, 2)).toHaveLength(base.length);
  });

  it('the cohort rollout holds back the member its own traffic says the candidate is worse for; the other proceeds', async () => {
    const r = await h.engine.create({ model: MODEL, releaseSeq: 3, waves: [1], soakSeconds: 10 });
    await h.engine.idle();
    const v = (await h.view(r.id));
    const row = (d: string) => v.devices.find((x) => x.deviceId === d)!;
    expect(v.devices.map((d) => d.deviceId).sort()).toEqual(['lab-1', 'lab-2']);
    // lab-1: b = 0, w = 20 of 60: Δ = −33.3 pts, upper −21.4 (as in the hand-computed case of evaluate.test.ts).
    expect(row('lab-1').state).toBe('held_back');
    expect(row('lab-1').reason).toMatch(/^held back: upper bound −21\.4 pts < −1\.0: −33\.3 pts .* vs running #1 100\.0%, agreement 66\.7%, 60 audit samples of device lab-1$/);
    expect(row('lab-2').state).toBe('desired');
    expect(h.fake.desiredRelease('lab-2')).toBe(3);
    await h.install('lab-2', 3);
    await h.advance(15);
    expect((await h.view(r.id)).rollout.state).toBe('completed');
    const shadow = await rolloutShadowView(h.fx.registry, v.rollout, v.devices);
    expect(shadow['lab-2']).toMatchObject({ evidence: 'device', hold: false, delta: 0, samples: 60 });
    expect(shadow['lab-1']).toMatchObject({ evidence: 'device', hold: true });
  });
});
