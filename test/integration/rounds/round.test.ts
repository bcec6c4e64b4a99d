import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { eq } from 'drizzle-orm';
import { Hono } from 'hono';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openArtifacts } from '../../../cloud/artifacts/index.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { silentLogger } from '../../../shared/log/index.js';
import { RoundRunner } from '../../../cloud/rounds/runner.js';
import type { RoundView } from '../../../cloud/rounds/types.js';
import { trainTeacher } from '../../../cloud/teacher/train-teacher.js';
import { loadDataset } from '../../../shared/data/index.js';
import { sha256Of, verifyManifest } from '../../../shared/manifest/index.js';
import { registryDialects } from '../../helpers/dialects.js';
import { openForSuite } from '../../helpers/dialects-suite.js';
import { FakePublisher, FakeRollouts, TestSigner, insertExamples, insertModel, tempDir } from '../../unit/rounds/helpers.js';

/**
 * Rounds end to end on a small MNIST subset: a tiny teacher trained here, a real registry (a SQLite file,
 * and a PostgreSQL database: the worker opens the registry where the cloud's is, issue 15), the real
 * worker process (forked through tsx), real onnxruntime. Budget: about a minute per dialect on 2 cores.
 */
const STUDENT_SETTINGS = {
  baseData: 'mnist:train',
  baseLimit: 3000,
  holdout: 'mnist:test',
  holdoutLimit: 500,
  epochs: 1,
  batchSize: 64,
  lr: 3e-3,
  temperature: 4,
  alpha: 0.9,
  tolerance: 0.05,
  latencyBudgetMs: 50,
  hardExampleShare: 0.1,
};

const dialects = registryDialects();
const teacherDir = tempDir();
const teacherFile = join(teacherDir.dir, 'teacher.onnx');
beforeAll(() => trainTeacher({ data: 'mnist:train', limit: 3000, arch: 'mlp:64', dropout: 0, inputDropout: 0, epochs: 1, batchSize: 64, learningRate: 3e-3, jitter: 0, seed: 7, out: teacherFile }));
afterAll(() => teacherDir.cleanup());

describe.each(dialects)('rounds end to end on $name', (d) => {
  const tmp = tempDir();
  let registry: StoreRegistry;
  let unavailable: string | undefined;
  let runner: RoundRunner;
  const signer = new TestSigner();
  const publish = new FakePublisher();
  const rollouts = new FakeRollouts();
  let hardIds: string[];
  let first: RoundView | undefined;

  beforeAll(async () => {
    const opened = await openForSuite(d);
    if (typeof opened === 'string') return void (unavailable = opened);
    registry = opened;
    await insertModel(registry, { teacherFile, distillSettings: STUDENT_SETTINGS, schedule: { autoRollout: true, rollout: { target: { kind: 'group', group: 'lab' } } } });
    // "Device traffic": test digits outside the holdout, three of them with a user-supplied label.
    const shifted = await loadDataset('mnist:test', { limit: 40, shuffleSeed: 99 });
    const inputs = Array.from({ length: shifted.count }, (_, i) => shifted.features.slice(i * 784, (i + 1) * 784));
    hardIds = await insertExamples(registry, 'mnist', inputs, [shifted.labels![0]!, shifted.labels![1]!, shifted.labels![2]!]);
    await insertExamples(registry, 'mnist', [new Float32Array(10)]); // wrong size: skipped, not fatal
    runner = await RoundRunner.create({ registry, dataDir: tmp.dir, signer, publish, rollouts, options: { publicBaseUrl: 'https://cloud.example' } });
  });

  beforeEach((ctx) => {
    if (unavailable) ctx.skip(unavailable);
  });
  afterAll(async () => {
    await runner?.dispose();
    await d.close();
    tmp.cleanup();
  });

  it('releases a signed, self-testing model while the API keeps answering', async () => {
    // A tiny HTTP API in this process: if training ran on this thread, /ping would stall for seconds.
    const app = new Hono().get('/ping', (c) => c.text('pong'));
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    const latencies: number[] = [];
    try {
      const { id } = await runner.start('mnist', 'manual');
      let view = (await runner.get(id))!;
      const phases = new Set<string>();
      let pingsWhileTraining = 0;
      while (view.state === 'queued' || view.state === 'running') {
        const t = performance.now();
        const res = await fetch(`http://127.0.0.1:${port}/ping`);
        expect(await res.text()).toBe('pong');
        latencies.push(performance.now() - t);
        view = (await runner.get(id))!;
        if (view.progress) phases.add(view.progress.phase);
        if (view.progress?.phase === 'train') pingsWhileTraining++;
        await new Promise((r) => setTimeout(r, 10));
      }
      first = view;
      expect(view.error).toBeNull();
      expect(view.state).toBe('released');
      expect(pingsWhileTraining).toBeGreaterThan(0);
    } finally {
      server.close();
    }
    latencies.sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)]!;
    expect(latencies.length).toBeGreaterThan(20);
    expect(p99).toBeLessThan(100);

    const { examples, releases } = registry.t;
    const rel = (await registry.q.select().from(releases).where(eq(releases.seq, first!.releaseSeq!)))[0]!;
    const v = verifyManifest({ manifest: rel.manifest, signature: rel.signature }, signer.trusted);
    if (!v.ok) throw new Error(v.detail);
    const m = v.manifest;
    expect(m.model).toBe('mnist');
    expect(m.parent).toBeNull();
    expect(m.artifact.quantization).toBe('int8');
    expect(m.artifact.url).toBe(`https://cloud.example/v1/artifacts/${m.artifact.sha256}`);
    expect(m.lineage).toEqual({ exampleCount: 40, round: first!.id });
    expect(m.metrics.holdoutAccuracy).toBeGreaterThan(0.6);
    expect(m.metrics.hardAgreement).toBeGreaterThan(0.5);
    expect(Date.parse(m.expiresAt) - Date.parse(m.createdAt)).toBe(30 * 86_400_000);

    // SQLite: the file under the data dir; PostgreSQL (issue 15): the registry's artifact store, and no file on this disk.
    const bytes =
      registry.dialect === 'postgres'
        ? await openArtifacts({ registry, dataDir: tmp.dir, log: silentLogger }).blobs.readAll('model', m.artifact.sha256)
        : new Uint8Array(await readFile(join(tmp.dir, rel.artifactPath)));
    expect(existsSync(join(tmp.dir, rel.artifactPath))).toBe(registry.dialect === 'sqlite');
    expect(bytes.byteLength).toBe(m.artifact.bytes);
    expect(sha256Of(bytes)).toBe(m.artifact.sha256);

    // Self-test exactly as a device runs it: batch 1 in onnxruntime-node.
    const session = await ort.InferenceSession.create(bytes);
    const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', Float32Array.from(m.selfTest.input), [1, 784]) });
    const got = out[session.outputNames[0]!]!.data as Float32Array;
    await session.release();
    expect(got.length).toBe(m.selfTest.expected.length);
    got.forEach((g, i) => expect(Math.abs(g - m.selfTest.expected[i]!)).toBeLessThanOrEqual(m.selfTest.tolerance));

    expect(publish.calls).toEqual([{ sha256: m.artifact.sha256, bytes: m.artifact.bytes, chunkSize: 128 * 1024 }]);
    expect(rel.chunksPublished).toBe(true);
    expect(rollouts.calls).toEqual([{ model: 'mnist', releaseSeq: m.release, target: { kind: 'group', group: 'lab' }, canaryShare: 0.1, soakSeconds: 300, failureThreshold: 0.2 }]);

    // Teacher logits were stored on the example rows for the next round.
    const row = (await registry.q.select().from(examples).where(eq(examples.id, hardIds[0]!)))[0]!;
    expect(row.teacherId).toBe(m.teacher.id);
    expect(row.teacherLogits?.byteLength).toBe(40);
    expect(first!.metrics).toMatchObject({ hardCount: 40, hardSkipped: 1, hardLogitsComputed: 40, warmStarted: 0 });
  });

  it('warm-starts the next round from the current release', async () => {
    const { id } = await runner.start('mnist', 'manual');
    const view = (await runner.settled(id))!;
    expect(view.error).toBeNull();
    expect(view.state).toBe('released');
    expect(view.releaseSeq).toBeGreaterThan(first!.releaseSeq!);
    expect(view.metrics).toMatchObject({ warmStarted: 1, warmStart: { fromSeq: first!.releaseSeq, loaded: true }, hardLogitsComputed: 0, parentSeq: first!.releaseSeq });
    // Shadow evaluation ran in the worker (issue 13): no device runs a release here, so nothing to judge.
    expect(view.metrics).toMatchObject({ shadow: { perDevice: 500, minSamples: 50, devices: 0, judgedByDevice: 0, noEvidence: 0 } });
    const { releases } = registry.t;
    const rel = (await registry.q.select().from(releases).where(eq(releases.seq, view.releaseSeq!)))[0]!;
    expect(rel.parentSeq).toBe(first!.releaseSeq);
    expect((rel.manifest as { parent: number }).parent).toBe(first!.releaseSeq);
  });

  it('rejects a student that does not clear the gate, with the reason', async () => {
    // A negative tolerance demands an improvement of 50 points over the parent: impossible.
    const { models, releases } = registry.t;
    await registry.q.update(models).set({ distillSettings: { ...STUDENT_SETTINGS, tolerance: -0.5 } }).where(eq(models.name, 'mnist'));
    const before = (await registry.q.select().from(releases)).length;
    const { id } = await runner.start('mnist', 'manual');
    const view = (await runner.settled(id))!;
    expect(view.state).toBe('rejected');
    expect(view.error).toMatch(/^holdout accuracy 0\.\d+ < parent #\d+ 0\.\d+ − tolerance -0\.5$/);
    expect((await registry.q.select().from(releases)).length).toBe(before);
    await registry.q.update(models).set({ distillSettings: STUDENT_SETTINGS }).where(eq(models.name, 'mnist'));
  });

  it('marks a round failed when its worker is killed', async () => {
    const { id } = await runner.start('mnist', 'manual');
    // Kill it once it is working (past start-up), as an OOM killer would.
    while (((await runner.get(id))!.progress?.phase ?? 'starting') === 'starting') await new Promise((r) => setTimeout(r, 10));
    expect((await runner.get(id))!.state).toBe('running');
    process.kill(runner.workerPid(id)!, 'SIGKILL');
    const view = (await runner.settled(id))!;
    expect(view.state).toBe('failed');
    expect(view.error).toContain('worker killed by SIGKILL');
  });
});
