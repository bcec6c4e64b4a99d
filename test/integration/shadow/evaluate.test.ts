import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { examples, releases } from '../../../cloud/registry/schema.js';
import { shadowEvaluate, shadowManifestMetrics, shadowRows } from '../../../cloud/shadow/evaluate.js';
import { recordShadowEval, shadowEvalOfRelease, shadowEvalOfRound } from '../../../cloud/shadow/store.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { FleetFixture, MODEL } from '../../unit/fleet/fixtures.js';
import { RIGHT, TRAP, addExamples, shadowModels } from '../../fixtures/shadow-models.js';

/**
 * Shadow evaluation against a hand-computed case, with real onnxruntime sessions and a real registry
 * (test/fixtures/shadow-models.ts: the teacher and the running release are the identity, the candidate
 * is wrong on TRAP inputs).
 */
let identity: Uint8Array;
let candidate: Uint8Array;
let fx: FleetFixture;
let teacher: Teacher;

beforeAll(async () => {
  ({ identity, candidate } = await shadowModels());
});

beforeEach(async () => {
  fx = new FleetFixture();
  writeFileSync(join(fx.dir, 'teacher.onnx'), identity);
  teacher = await Teacher.create([join(fx.dir, 'teacher.onnx')]);
  fx.addRelease(1, { bytes: Buffer.from(identity) });
});
afterEach(async () => {
  await teacher.dispose();
  fx.dispose();
});

const add = (deviceId: string, n: number, x: number[], reason?: 'audit' | 'low_margin') => addExamples(fx.db, MODEL, deviceId, n, x, reason);

function fleet(): void {
  for (const id of ['pi-good', 'pi-bad', 'pi-small', 'pi-other']) fx.addDevice(id, { runningSeq: 1 });
  fx.addDevice('pi-none'); // runs nothing
  add('pi-good', 10, TRAP); // older than the window of 60: not evaluated
  add('pi-good', 60, RIGHT);
  add('pi-good', 30, TRAP, 'low_margin'); // hard examples are not audit samples
  add('pi-bad', 40, RIGHT);
  add('pi-bad', 20, TRAP);
  add('pi-small', 10, RIGHT);
  add('pi-none', 5, TRAP);
  fx.db.insert(examples).values({ id: randomUUID(), deviceId: 'pi-none', model: MODEL, input: Buffer.alloc(12), studentOutput: [], reason: 'audit', capturedAt: '2026-11-02T00:00:00Z', ingestedAt: '2026-11-02T00:00:00Z' }).run();
}

const input = () => ({ registry: fx.registry, dataDir: fx.dir, model: MODEL, teacher, candidate, inputSize: 2, classes: 2, perDevice: 60, minSamples: 50 });

describe('shadow evaluation (real ORT, real registry)', () => {
  it('per-device and per-cohort figures match the hand-computed case', async () => {
    fleet();
    const e = await shadowEvaluate(input());
    const dev = Object.fromEntries(e.devices.map((d) => [d.deviceId, d]));
    expect(e.skipped).toBe(1); // the 3-value input
    expect(e.missingRunning).toEqual([]);

    // pi-good: 60 newest audit samples, all right for both: Δ = 0, interval [0, 0].
    expect(dev['pi-good']).toMatchObject({ samples: 60, candidateAccuracy: 1, runningAccuracy: 1, agreement: 1, delta: 0, deltaLow: 0, deltaHigh: 0, judgedBy: 'device', runningSeq: 1 });
    // pi-bad: 60 samples, 20 traps: b = 0, w = 20.
    // Δ = −20/60 = −0.333333; SE = √(20 − 400/60)/60 = √13.333/60 = 0.0608581; 1.95996 × SE = 0.1192797.
    const bad = dev['pi-bad']!;
    expect(bad).toMatchObject({ samples: 60, better: 0, worse: 20, runningAccuracy: 1, judgedBy: 'device' });
    expect(bad.candidateAccuracy).toBeCloseTo(40 / 60, 12);
    expect(bad.agreement).toBeCloseTo(40 / 60, 12);
    expect(bad.delta).toBeCloseTo(-1 / 3, 12);
    expect(bad.deltaLow).toBeCloseTo(-0.452613, 5);
    expect(bad.deltaHigh).toBeCloseTo(-0.2140536, 5);
    // Under 50 samples: judged by the cohort. Running nothing: nothing to compare, no evidence.
    expect(dev['pi-small']).toMatchObject({ samples: 10, judgedBy: 'cohort' });
    expect(dev['pi-other']).toMatchObject({ samples: 0, judgedBy: 'cohort', runningSeq: 1 });
    expect(dev['pi-none']).toMatchObject({ samples: 5, judgedBy: 'none', runningSeq: null, candidateAccuracy: 0 });
    expect(dev['pi-none']!.delta).toBeUndefined();

    // The base line pools the 130 paired samples (pi-none has no pair): w = 20, b = 0.
    // Δ = −20/130 = −0.153846; SE = √(20 − 400/130)/130 = 0.0316444; upper = −0.153846 + 0.0620222 = −0.0918241.
    expect(e.cohorts).toHaveLength(1);
    const base = e.cohorts[0]!;
    expect(base).toMatchObject({ cohort: null, devices: 5, samples: 130, worse: 20, better: 0 });
    expect(base.delta).toBeCloseTo(-20 / 130, 12);
    expect(base.deltaHigh).toBeCloseTo(-0.0918241, 5);

    // The teacher's labels are stored on the audit rows (reused by later rounds).
    const labelled = fx.db.select({ t: examples.teacherId }).from(examples).where(eq(examples.reason, 'audit')).all();
    expect(labelled.filter((r) => r.t === teacher.id)).toHaveLength(120 + 10 + 5); // windows of 60, 60, 10, 5

    // Signed metrics: per cohort, numbers only.
    const m = shadowManifestMetrics(e);
    expect(Object.keys(m).sort()).toEqual(['shadow.base.accuracy', 'shadow.base.delta', 'shadow.base.deltaHigh', 'shadow.base.deltaLow', 'shadow.base.samples']);
    expect(m['shadow.base.samples']).toBe(130);
  });

  it('groups by the cohortOf seam, and records the figures for the round and its release', async () => {
    fleet();
    const e = await shadowEvaluate({ ...input(), cohortOf: (id) => (id === 'pi-bad' || id === 'pi-small' ? 'noisy' : null) });
    const byCohort = Object.fromEntries(e.cohorts.map((c) => [c.cohort ?? 'base', c]));
    expect(byCohort.noisy).toMatchObject({ samples: 70, worse: 20, devices: 2 });
    expect(byCohort.base).toMatchObject({ samples: 60, worse: 0, devices: 3 });
    expect(e.devices.find((d) => d.deviceId === 'pi-small')).toMatchObject({ cohort: 'noisy', judgedBy: 'cohort' });
    // pi-other's cohort (base: 60 paired samples) decides for it.
    expect(e.devices.find((d) => d.deviceId === 'pi-other')).toMatchObject({ cohort: null, judgedBy: 'cohort' });
    expect(Object.keys(shadowManifestMetrics(e))).toContain('shadow.noisy.deltaHigh');

    await recordShadowEval(fx.registry, 'round-1', MODEL, shadowRows(e));
    await recordShadowEval(fx.registry, 'round-1', MODEL, shadowRows(e)); // a retried round replaces its rows
    const rows = await shadowEvalOfRound(fx.registry, 'round-1');
    expect(rows).toHaveLength(2 + 5);
    expect(rows.slice(0, 2).every((r) => r.scope === 'cohort')).toBe(true);
    expect(rows.find((r) => r.deviceId === 'pi-bad')).toMatchObject({ judgedBy: 'device', runningSeq: 1, samples: 60 });
    expect(rows.find((r) => r.deviceId === 'pi-none')).toMatchObject({ delta: null, judgedBy: 'none' });
    // A release points at its round; one without (uploaded, re-issued) has no figures.
    fx.addRelease(2, { parent: 1, bytes: Buffer.from(candidate) });
    expect(await shadowEvalOfRelease(fx.registry, 2)).toEqual([]);
    fx.db.update(releases).set({ roundId: 'round-1' }).where(eq(releases.seq, 2)).run();
    expect(await shadowEvalOfRelease(fx.registry, 2)).toHaveLength(7);
  });

  it('no audit samples at all: rows only for devices running a release, with no evidence', async () => {
    fx.addDevice('pi-1', { runningSeq: 1 });
    add('pi-1', 30, RIGHT, 'low_margin');
    const e = await shadowEvaluate(input());
    expect(e.devices).toEqual([expect.objectContaining({ deviceId: 'pi-1', samples: 0, judgedBy: 'none' })]);
    expect(e.cohorts).toEqual([expect.objectContaining({ cohort: null, samples: 0 })]);
    expect(shadowManifestMetrics(e)).toEqual({ 'shadow.base.samples': 0 });
  });
});
