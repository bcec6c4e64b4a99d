/**
 * Issue 13 item 1, end to end through the real round worker: a model with two cohorts makes one round
 * produce a base release and one release per cohort. Each cohort student warm-starts from the base
 * release, trains on the base data plus only its own devices' hard examples, is gated against the base,
 * and is signed (through the parent's per-line signing guard) with its cohort and the base as parent.
 * Its automatic rollout goes to its cohort's group. Real registry file, real onnxruntime, tiny data.
 */
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { currentRelease } from '../../../cloud/rounds/releases.js';
import { shadowEvalOfRelease } from '../../../cloud/shadow/store.js';
import { RoundRunner } from '../../../cloud/rounds/runner.js';
import { trainTeacher } from '../../../cloud/teacher/train-teacher.js';
import { loadDataset } from '../../../shared/data/index.js';
import { verifyManifest } from '../../../shared/manifest/index.js';
import { manifestSchema } from '../../../shared/protocol/schemas.js';
import { registryDialects } from '../../helpers/dialects.js';
import { openForSuite } from '../../helpers/dialects-suite.js';
import { FakePublisher, FakeRollouts, TestSigner, insertExamples, insertModel, tempDir } from '../../unit/rounds/helpers.js';

const SETTINGS = {
  baseData: 'mnist:train',
  baseLimit: 1500,
  holdout: 'mnist:test',
  holdoutLimit: 300,
  epochs: 1,
  batchSize: 64,
  lr: 3e-3,
  temperature: 4,
  alpha: 0.9,
  tolerance: 0.1,
  latencyBudgetMs: 20,
  hardExampleShare: 0.2,
  cohorts: [
    { name: 'rotated', group: 'rot' },
    // A line's own training settings (cloud/rounds/cohort-training.ts): more epochs on a base subset,
    // augmented with the teacher (random rotations labelled by the teacher on the rotated view).
    { name: 'solo', group: 'solo', epochs: 2, baseLimit: 500, hardExampleShare: 0.5, augment: { rotate: 20, probability: 0.5 } },
  ],
};

const dialects = registryDialects();
const teacherDir = tempDir();
const teacherFile = join(teacherDir.dir, 'teacher.onnx');
beforeAll(() => trainTeacher({ data: 'mnist:train', limit: 1500, arch: 'mlp:32', dropout: 0, inputDropout: 0, epochs: 1, batchSize: 64, learningRate: 3e-3, jitter: 0, seed: 7, out: teacherFile }), 120_000);
afterAll(() => teacherDir.cleanup());

describe.each(dialects)('a round of a model with cohorts on $name', (d) => {
  const tmp = tempDir();
  let registry: StoreRegistry;
  let unavailable: string | undefined;
  let runner: RoundRunner;
  const signer = new TestSigner();
  const publish = new FakePublisher();
  const rollouts = new FakeRollouts();

  beforeAll(async () => {
    const opened = await openForSuite(d);
    if (typeof opened === 'string') return void (unavailable = opened);
    registry = opened;
    await insertModel(registry, { teacherFile, distillSettings: SETTINGS, schedule: { autoRollout: true, rollout: { target: { kind: 'all' } } } });
    const add = (id: string, groups: string[]) => registry.q.insert(registry.t.devices).values({ id, groups, credentialHash: 'x' });
    await add('r1', ['lab', 'rot']);
    await add('r2', ['rot']);
    await add('s1', ['solo']);
    await add('b1', ['lab']);
    const traffic = await loadDataset('mnist:test', { limit: 60, shuffleSeed: 5 });
    const x = (i: number) => traffic.features.slice(i * 784, (i + 1) * 784);
    const from = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => x(a + i));
    await insertExamples(registry, 'mnist', from(0, 5), [], undefined, { deviceId: 'r1' });
    // Audit samples (hard examples too): the shadow evaluation of each line reads its members' own.
    await insertExamples(registry, 'mnist', from(5, 10), [], undefined, { deviceId: 'r1', reason: 'audit' });
    await insertExamples(registry, 'mnist', from(10, 20), [], undefined, { deviceId: 'r2' });
    await insertExamples(registry, 'mnist', from(20, 24), [], undefined, { deviceId: 's1' });
    await insertExamples(registry, 'mnist', from(24, 27), [], undefined, { deviceId: 's1', reason: 'audit' });
    await insertExamples(registry, 'mnist', from(27, 60), [], undefined, { deviceId: 'b1' });
    runner = await RoundRunner.create({ registry, dataDir: tmp.dir, signer, publish, rollouts });
  }, 120_000);

  beforeEach((ctx) => {
    if (unavailable) ctx.skip(unavailable);
  });
  afterAll(async () => {
    await runner?.dispose();
    await d.close();
    tmp.cleanup();
  });

  it('releases the base and one student per cohort, each on its own line', async () => {
    const { id } = await runner.start('mnist', 'manual');
    const done = (await runner.settled(id))!;
    expect(done.state, done.error ?? '').toBe('released');
    const { releases } = registry.t;
    const rows = (await registry.q.select().from(releases).where(eq(releases.roundId, id))).sort((a, b) => a.seq - b.seq);
    expect(rows.map((r) => r.cohort)).toEqual([null, 'rotated', 'solo']);
    const [base, rot, solo] = rows.map((r) => ({ row: r, m: manifestSchema.parse(r.manifest) }));
    expect(done.releaseSeq).toBe(base!.row.seq);
    expect(base!.m.cohort).toBeUndefined();
    for (const [line, name, hard] of [[rot!, 'rotated', 20], [solo!, 'solo', 7]] as const) {
      // Named cohort and parent (the base release), signed, warm-started from the base, trained on its own devices' examples.
      expect(line.m).toMatchObject({ cohort: name, parent: base!.row.seq, lineage: { exampleCount: hard } });
      expect(line.row.parentSeq).toBe(base!.row.seq);
      expect(verifyManifest({ manifest: line.row.manifest, signature: line.row.signature }, signer.trusted).ok).toBe(true);
      const metrics = line.row.metrics as Record<string, unknown>;
      expect(metrics).toMatchObject({ cohort: name, warmStart: { fromSeq: base!.row.seq, loaded: true }, hardCount: hard, parentSeq: base!.row.seq });
      // Gate: no worse than the base beyond the tolerance, on the same fixed holdout.
      expect(metrics.parentHoldoutAccuracy).toBe((base!.row.metrics as Record<string, number>).holdoutAccuracy);
      expect(metrics.gate).toMatchObject({ pass: true });
    }
    expect(base!.m.lineage.exampleCount).toBe(60);
    // "rotated" trains like the base line: 1 epoch, all 1,500 base examples, its 20 examples ×ceil(0.2·1500 / (0.8·20)) = 19;
    // "solo" with its own settings:
    // 2 epochs on the first 500 base examples, its 7 examples repeated ceil(0.5·500 / (0.5·7)) = 72 → capped at 20.
    expect(rot!.row.metrics).toMatchObject({ epochs: 1, baseCount: 1500, hardRepeat: 19 });
    expect(solo!.row.metrics).toMatchObject({ epochs: 2, baseCount: 500, hardRepeat: 20, transferCount: 640, augment: { rotate: 20, shift: 0, scale: 0, probability: 0.5 } });
    expect(rot!.row.metrics).not.toHaveProperty('augment');
    // The round keeps the per-cohort outcomes.
    expect((done.metrics as { cohorts: unknown[] }).cohorts).toMatchObject([
      { cohort: 'rotated', state: 'released', releaseSeq: rot!.row.seq, exampleCount: 20, cohortDevices: 2 },
      { cohort: 'solo', state: 'released', releaseSeq: solo!.row.seq, exampleCount: 7, cohortDevices: 1 },
    ]);
    // Published and rolled out per line: the base to the schedule's target, each cohort to its group.
    expect(publish.calls.map((c) => c.sha256).sort()).toEqual(rows.map((r) => r.sha256).sort());
    expect(rollouts.calls.map((c) => [c.releaseSeq, c.target])).toEqual([
      [base!.row.seq, { kind: 'all' }],
      [rot!.row.seq, { kind: 'group', group: 'rot' }],
      [solo!.row.seq, { kind: 'group', group: 'solo' }],
    ]);
    // Shadow evaluation per line (issue 13 item 2): each cohort student on its members' audit samples only,
    // recorded under its line, which its release (and so its rollout's agreement gate) reads. Nothing runs
    // yet, so no device has a paired comparison: no evidence.
    const lineRows = async (seq: number) => (await shadowEvalOfRelease(registry, seq)).map((r) => [r.line, r.scope, r.deviceId ?? r.cohort, r.samples, r.judgedBy]);
    expect(await lineRows(rot!.row.seq)).toEqual([['rotated', 'cohort', 'rotated', 5, null], ['rotated', 'device', 'r1', 5, 'none']]);
    expect(await lineRows(solo!.row.seq)).toEqual([['solo', 'cohort', 'solo', 3, null], ['solo', 'device', 's1', 3, 'none']]);
    expect((await lineRows(base!.row.seq)).filter((r) => r[1] === 'device').map((r) => [r[0], r[2]])).toEqual([[null, 'r1'], [null, 's1']]);
    expect((rot!.row.metrics as Record<string, unknown>).shadow).toMatchObject({ devices: 1, samples: 5, noEvidence: 1 });
    expect((solo!.row.metrics as Record<string, unknown>)['shadow.solo.samples']).toBe(3);
    // Current release per line.
    expect((await currentRelease(registry, 'mnist'))?.seq).toBe(base!.row.seq);
    expect((await currentRelease(registry, 'mnist', 'solo'))?.seq).toBe(solo!.row.seq);
  }, 240_000);
});
