/**
 * The teacher-labelled switch gate of on-device shadow runs (issue 13 items 3, 4 and 7), with real ORT
 * sessions (test/fixtures/shadow-models.ts: teacher and running release are the identity, the candidate is
 * wrong on TRAP inputs), the real registry, real signing and the real RolloutEngine the switch starts.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { eq } from 'drizzle-orm';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { devices, examples, releases, shadowEvals } from '../../../cloud/registry/schema.js';
import { reissueRelease, signShadowManifest } from '../../../cloud/rounds/index.js';
import { agreementGate, allGates, ShadowRollouts, teacherSwitchGate, type ModelTeacher } from '../../../cloud/shadow/index.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { createLogger } from '../../../shared/log/index.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, type Manifest, type ShadowTelemetry, type Telemetry } from '../../../shared/protocol/index.js';
import { RIGHT, TRAP, shadowModels } from '../../fixtures/shadow-models.js';
import { MODEL } from '../../unit/fleet/fixtures.js';
import { RolloutHarness } from '../../unit/rollouts/harness.js';

const T0 = Date.parse('2030-01-01T00:00:00Z');
let now: number;
let h: RolloutHarness;
let shadow: ShadowRollouts;
let models: { identity: Uint8Array; candidate: Uint8Array };
/** Teacher batches run (the gate caches its decision per input). */
let teacherCalls: number;
let teacherOf: () => Promise<ModelTeacher>;
/** The metrics registry of the run's gate (as the cloud's server passes its own). */
let metrics: PromRegistry;
const IDS = ['d01', 'd02'];

/** apprentice_cloud_shadow_teacher_gate_total by result. */
async function gateCounts(reg: PromRegistry): Promise<Record<string, number>> {
  const m = await reg.getSingleMetric('apprentice_cloud_shadow_teacher_gate_total')?.get();
  return Object.fromEntries((m?.values ?? []).map((v) => [String(v.labels.result), v.value]));
}

/** A logger whose JSON lines are kept for the test to read. */
function capturedLog(): { log: ReturnType<typeof createLogger>; lines: () => { msg: string; level: number }[] } {
  const chunks: string[] = [];
  const destination = new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) });
  return { log: createLogger({ level: 'info', destination }), lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; level: number }) };
}

beforeAll(async () => {
  models = await shadowModels();
});

beforeEach(async () => {
  now = T0;
  teacherCalls = 0;
  h = new RolloutHarness();
  h.shas[1] = h.fx.addRelease(1, { bytes: Buffer.from(models.identity) }).sha256;
  h.shas[2] = h.fx.addRelease(2, { parent: 1, bytes: Buffer.from(models.candidate) }).sha256;
  await h.boot({ now: () => new Date(now), republishOnStart: false });
  const seen = new Date(T0 - 1000).toISOString();
  for (const id of IDS) {
    h.fx.addDevice(id, { desiredSeq: 1, runningSeq: 1 });
    h.fx.db.update(devices).set({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.shadow], lastSeen: seen }).where(eq(devices.id, id)).run();
  }
  writeFileSync(join(h.fx.dir, 'teacher.onnx'), models.identity);
  teacherOf = async (): Promise<ModelTeacher> => {
    const t = await Teacher.create([join(h.fx.dir, 'teacher.onnx')]);
    const logits = t.logits.bind(t);
    return { teacher: { id: t.id, dispose: () => t.dispose(), logits: (x, size) => (teacherCalls++, logits(x, size)) }, inputSize: 2, classes: 2 };
  };
  const signer = { sign: (m: Manifest) => signManifest(m, h.fx.key) };
  metrics = new PromRegistry();
  shadow = new ShadowRollouts({
    registry: h.fx.registry,
    publisher: new ReleasePublisher({ mqtt: h.fake, dataDir: h.fx.dir, compatOf: (id) => deviceCompatOf(h.fx.registry, id) }),
    signals: h.ingest,
    now: () => new Date(now),
    signShadow: (seq, until) => signShadowManifest(h.fx.registry, signer, seq, until, new Date(now)),
    reissue: async (seq) => reissueRelease(h.fx.registry, signer, seq, { now: new Date(now) }),
    rollouts: h.engine,
    gate: allGates(agreementGate, teacherSwitchGate({ registry: h.fx.registry, dataDir: h.fx.dir, teacherOf, metrics })),
  });
  shadow.start();
});
afterEach(async () => {
  await shadow.stop();
  await h.dispose();
});

/** `n` shadow_disagreement examples of `x` from `d`, answered by release 1, sent during the window. */
function disagreements(d: string, n: number, x: readonly number[]): void {
  for (let i = 0; i < n; i++) {
    const at = new Date(now + 1000 + i).toISOString();
    h.fx.db.insert(examples).values({ id: randomUUID(), deviceId: d, model: MODEL, releaseSeq: 1, input: Buffer.from(new Float32Array(x).buffer), studentOutput: [], reason: 'shadow_disagreement', capturedAt: at, ingestedAt: at }).run();
  }
}

/** A heartbeat with the device's cumulative shadow figures, through the real ingest. */
async function report(d: string, run: { shadowSeq: number; until: string }, requests: number, agreements: number): Promise<void> {
  const s: ShadowTelemetry = { model: MODEL, release: run.shadowSeq, sha256: h.shas[2]!, until: run.until, state: 'running', requests, agreements, skipped: 0, latencyMs: { p50: 0.4, p95: 0.9 } };
  const t: Telemetry = {
    v: 1, deviceId: d, at: new Date(now).toISOString(), model: MODEL, release: 1, uptimeSeconds: 10, requests: 5, errors: 0,
    latencyMs: { p50: 1, p95: 2 }, rssBytes: 1e8, outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok', shadow: s,
  };
  await h.feed('telemetry', d, Buffer.from(JSON.stringify(t)));
  await new Promise((r) => setTimeout(r, 10));
}

const start = () => shadow.create({ model: MODEL, releaseSeq: 2, target: { kind: 'devices', ids: IDS }, policy: { waves: [1], soakSeconds: 60, failureThreshold: 0.5 }, minutes: 30, minAgreement: 0.5, minRequests: 20 });

describe('teacher-labelled shadow switch', () => {
  it('switch path: the device the candidate is worse for is held back with its figures, the other switches', async () => {
    const run = await start();
    // d01: 100 shadowed, 20 disagreements, all sent: the teacher sides with the running model on every one.
    await report('d01', run, 100, 80);
    disagreements('d01', 20, TRAP);
    // d02: 100 shadowed, 10 disagreements: on one the candidate is wrong, on nine the cloud's models agree (ties).
    await report('d02', run, 100, 90);
    disagreements('d02', 1, TRAP);
    disagreements('d02', 9, RIGHT);

    const v = (await shadow.get(run.id))!;
    expect(v.decision.switch).toBe(true);
    const d1 = v.decision.devices.find((d) => d.deviceId === 'd01')!;
    const d2 = v.decision.devices.find((d) => d.deviceId === 'd02')!;
    // d01: b = 0, w = 20, N = 100: Δ = −0.2; SE = √(20 − 400/100)/100 = 0.04; upper = −0.2 + 1.96 × 0.04 = −0.1216.
    expect(d1).toMatchObject({ verdict: 'fail', agreement: 0.8 });
    expect(d1.detail).toMatch(/teacher: held back, upper bound < −1\.0: −20\.0 pts \(95% CI −27\.8 … −12\.2\) over 100 shadowed requests, 20 disagreements of which 20 labelled: candidate right on 0, running on 20/);
    // d02: w = 1, N = 100: Δ = −0.01; SE = √(1 − 1/100)/100 = 0.0099499; 1.96 × SE = 0.0195012: [−0.0295, +0.0095].
    expect(d2).toMatchObject({ verdict: 'pass', agreement: 0.9 });
    expect(d2.detail).toMatch(/−1\.0 pts \(95% CI −3\.0 … \+1\.0\)/);
    // The teacher's labels are stored on the rows (the rounds reuse them); a second read is cached.
    expect(h.fx.db.select().from(examples).where(eq(examples.reason, 'shadow_disagreement')).all().every((r) => r.teacherId !== null)).toBe(true);
    const calls = teacherCalls;
    await shadow.get(run.id);
    expect(teacherCalls).toBe(calls);

    now += 31 * 60_000;
    await shadow.tick();
    await h.engine.idle();
    const after = (await shadow.get(run.id))!;
    expect(after.run).toMatchObject({ state: 'switched' });
    expect(after.run.reason).toMatch(/gate passed: .*teacher: 1 device\(s\) pass on their labelled disagreements; held back: d01/);
    const seq = after.run.switchedSeq!;
    // The evidence belongs to the re-issued release (same bytes as the candidate).
    expect(h.fx.db.select().from(releases).where(eq(releases.seq, seq)).get()!.sha256).toBe(h.shas[2]);
    const rows = h.fx.db.select().from(shadowEvals).where(eq(shadowEvals.releaseSeq, seq)).all();
    expect(rows.map((r) => [r.deviceId, r.judgedBy, r.runningSeq, r.samples])).toEqual([['d01', 'device', 1, 100], ['d02', 'device', 1, 100]]);
    expect(rows[0]!.deltaHigh).toBeCloseTo(-0.2 + 1.959963984540054 * 0.04, 9);

    const rollout = (await h.view(after.run.rolloutId!));
    const row = (d: string) => rollout.devices.find((x) => x.deviceId === d)!;
    expect(row('d01').state).toBe('held_back');
    expect(row('d01').reason).toMatch(/^held back: upper bound −12\.2 pts < −1\.0: −20\.0 pts .* vs running #1, agreement 80\.0%, 100 requests shadowed on device d01, disagreements labelled by the teacher \(shadow:/);
    expect(row('d02').state).not.toBe('held_back');
    expect(h.fx.device('d01')!.desiredSeq).toBe(1);
    expect(h.fx.device('d02')!.desiredSeq).toBe(seq);
    // A device held back is not a refused switch: both counters exported, at 0.
    expect(await gateCounts(metrics)).toEqual({ refused: 0, failed: 0 });
  });

  it('no-switch path: the candidate is worse on every device with evidence; nothing is re-issued', async () => {
    const run = await start();
    await report('d01', run, 100, 80);
    disagreements('d01', 20, TRAP);
    // d02: too few requests to count for either gate.
    await report('d02', run, 10, 10);
    const before = h.fx.db.select().from(releases).all().length;
    now += 31 * 60_000;
    await shadow.tick();
    const v = (await shadow.get(run.id))!;
    expect(v.run).toMatchObject({ state: 'expired', switchedSeq: null });
    expect(v.run.reason).toMatch(/gate not passed: teacher: candidate worse on the labelled disagreements of every device with evidence \(1; d01: /);
    expect(v.decision.devices.find((d) => d.deviceId === 'd02')).toMatchObject({ verdict: 'no_evidence' });
    expect(h.fx.db.select().from(releases).all()).toHaveLength(before);
    // Counted once: the decision is cached, later reads of the same inputs do not count again.
    await shadow.get(run.id);
    expect(await gateCounts(metrics)).toEqual({ refused: 1, failed: 0 });
  });

  it('a teacher that cannot be opened refuses the switch (logged, counted) and is tried again on the next call', async () => {
    const run = await start();
    await report('d01', run, 100, 80);
    disagreements('d01', 20, TRAP);
    let broken = true;
    const own = new PromRegistry();
    const { log, lines } = capturedLog();
    const gate = teacherSwitchGate({ registry: h.fx.registry, dataDir: h.fx.dir, log, metrics: own, teacherOf: async () => (broken ? Promise.reject(new Error('teacher.onnx: cannot read teacher model (ENOENT)')) : teacherOf()) });
    expect(await gateCounts(own)).toEqual({ refused: 0, failed: 0 });
    const v = (await shadow.get(run.id))!;
    const input = { run: v.run, devices: v.devices, now: new Date(now) };
    expect(await gate(input)).toMatchObject({ switch: false, reason: expect.stringMatching(/^teacher: the disagreements could not be labelled and scored \(teacher\.onnx: cannot read/) });
    expect(await gateCounts(own)).toEqual({ refused: 0, failed: 1 });
    // Not cached: the same inputs fail again and count again.
    await gate(input);
    expect(await gateCounts(own)).toEqual({ refused: 0, failed: 2 });
    broken = false;
    const again = await gate(input);
    expect(again.devices).toEqual([expect.objectContaining({ deviceId: 'd01', verdict: 'fail' })]);
    expect(again.switch).toBe(false);
    expect(await gateCounts(own)).toEqual({ refused: 1, failed: 2 });
    // The log lines stay: an error per failure, a warning per refusal.
    expect(lines().map((l) => [l.level, l.msg])).toEqual([[50, 'shadow/teacher-gate-failed'], [50, 'shadow/teacher-gate-failed'], [40, 'shadow/teacher-gate-refused']]);
    // A second gate on the same registry (a restarted service) counts on the same counter.
    const second = teacherSwitchGate({ registry: h.fx.registry, dataDir: h.fx.dir, metrics: own, teacherOf: () => Promise.reject(new Error('gone')) });
    await second(input);
    expect(await gateCounts(own)).toEqual({ refused: 1, failed: 3 });
  });

  it('disagreements that never reached the cloud are no evidence, not a pass', async () => {
    const run = await start();
    await report('d01', run, 100, 60);
    disagreements('d01', 3, TRAP); // 3 of 40: under min(10, 40)
    const v = (await shadow.get(run.id))!;
    expect(v.decision.devices[0]).toMatchObject({ deviceId: 'd01', verdict: 'pass' });
    expect(v.decision.devices[0]!.detail).toMatch(/teacher: no evidence: 3 of 40 disagreements labelled by the teacher \(< 10\)/);
    expect(v.decision.reason).toMatch(/teacher: no device has labelled evidence/);
  });
});
