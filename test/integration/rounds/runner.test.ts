import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openArtifacts } from '../../../cloud/artifacts/index.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { silentLogger } from '../../../shared/log/index.js';
import { RoundRunner, type RoundRunnerDeps } from '../../../cloud/rounds/runner.js';
import { RoundConfigError } from '../../../cloud/rounds/settings.js';
import { storeArtifact } from '../../../cloud/rounds/store.js';
import { RoundConflictError, UnknownModelError } from '../../../cloud/rounds/types.js';
import { verifyManifest } from '../../../shared/manifest/index.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { registryDialects } from '../../helpers/dialects.js';
import { FakePublisher, FakeRollouts, TestSigner, insertModel, newId, tempDir } from '../../unit/rounds/helpers.js';

const FAKE_WORKER = fileURLToPath(new URL('./fake-worker.ts', import.meta.url));

const dialects = registryDialects();

async function fake(registry: StoreRegistry, name: string, mode: string, schedule: Record<string, unknown> | null = null): Promise<void> {
  await insertModel(registry, { name, distillSettings: { baseData: 'mnist:train', fake: mode }, schedule });
}

describe.each(dialects)('RoundRunner (fake worker process) on $name', (d) => {
  let tmp: ReturnType<typeof tempDir>;
  let registry: StoreRegistry;
  let signer: TestSigner;
  let publish: FakePublisher;
  let rollouts: FakeRollouts;
  const runners: RoundRunner[] = [];
  const create = async (extra: Partial<RoundRunnerDeps['options']> = {}) => {
    const r = await RoundRunner.create({ registry, dataDir: tmp.dir, signer, publish, rollouts, options: { workerPath: FAKE_WORKER, ...extra } });
    runners.push(r);
    return r;
  };

  beforeEach(async (ctx) => {
    tmp = tempDir();
    registry = await d.open(ctx);
    signer = new TestSigner();
    publish = new FakePublisher();
    rollouts = new FakeRollouts();
  });
  afterEach(async () => {
    await Promise.all(runners.splice(0).map((r) => r.dispose(200)));
    await d.close();
    tmp.cleanup();
  });

  it('signs through the parent, publishes, rolls out, and records the release', async () => {
    await fake(registry, 'm1', 'release', { autoRollout: true });
    const runner = await create();
    const { id } = await runner.start('m1', 'manual');
    const view = (await runner.settled(id))!;
    expect(view).toMatchObject({ state: 'released', error: null, attempts: 1, trigger: 'manual', releaseSeq: 1, progress: { phase: 'done' } });
    const { releases } = registry.t;
    const rel = (await registry.q.select().from(releases).where(eq(releases.seq, 1)))[0]!;
    expect(verifyManifest({ manifest: rel.manifest, signature: rel.signature }, signer.trusted).ok).toBe(true);
    expect(rel.chunksPublished).toBe(true);
    expect(publish.calls).toEqual([{ sha256: rel.sha256, bytes: rel.bytes, chunkSize: 4096 }]);
    expect(rollouts.calls).toEqual([{ model: 'm1', releaseSeq: 1, target: { kind: 'all' }, canaryShare: 0.1, soakSeconds: 300, failureThreshold: 0.2 }]);
  });

  it('signs nothing on the worker\'s own say: one sequence, the round\'s model, the stored file, once (issue 10)', async () => {
    await fake(registry, 'rogue', 'rogue');
    const runner = await create({ publicBaseUrl: 'https://cloud.example' });
    const { id } = await runner.start('rogue', 'manual');
    const view = (await runner.settled(id))!;
    expect(view.state).toBe('rejected');
    const r = JSON.parse(view.error!) as Record<string, string>;
    expect(r.secondSequence).toBe(r.firstSequence); // asking again gives the same one, never a new one
    expect(r.otherSequence).toMatch(/^manifest is for release \d+, the round was allocated \d+$/);
    expect(r.lowerSequence).toMatch(/the round was allocated/);
    expect(r.otherModel).toBe('manifest is for model "someone-else", the round\'s model is "rogue"');
    expect(r.unstoredBytes).toMatch(/^no stored artifact with sha256 [0-9a-f]{64}/);
    expect(r.foreignUrl).toMatch(/^manifest artifact url "https:\/\/attacker\.example\/v1\/artifacts\/[0-9a-f]{64}" is not the cloud's "https:\/\/cloud\.example\/v1\/artifacts\//);
    expect(r.notAManifest).toMatch(/^not a valid manifest/);
    expect(r.honest).toBe('signed');
    expect(r.twice).toMatch(/already had its manifest signed/);
    expect(r.cohortWithoutSequence).toMatch(/has no release sequence for cohort nope yet/);
    expect(r.cohortSequenceDiffers).toBe('true');
    expect(r.unknownCohort).toBe('model "rogue" has no cohort "nope"');
    // The key store signed exactly one manifest: the honest one.
    expect(signer.signed).toHaveLength(1);
    expect(signer.signed[0]).toMatchObject({ model: 'rogue', release: Number(r.firstSequence) });
  });

  it('refuses a second round for a model, unknown models and invalid settings; queues beyond maxConcurrent', async () => {
    await fake(registry, 'a', 'hang');
    await fake(registry, 'b', 'reject');
    await insertModel(registry, { name: 'bad', distillSettings: { baseData: 'mnist:train', epochs: 0 } });
    const runner = await create();
    const { id } = await runner.start('a', 'manual');
    await expect(runner.start('a', 'manual')).rejects.toBeInstanceOf(RoundConflictError);
    await expect(runner.start('zzz', 'manual')).rejects.toBeInstanceOf(UnknownModelError);
    await expect(runner.start('bad', 'manual')).rejects.toThrow(new RoundConfigError('model bad: distillSettings.epochs: Too small: expected number to be >=1'));
    const b = await runner.start('b', 'schedule');
    expect((await runner.get(b.id))!.state).toBe('queued');
    while ((await runner.get(id))!.progress?.epoch !== 2) await new Promise((r) => setTimeout(r, 20));
    expect(await runner.get(id)).toMatchObject({ state: 'running', progress: { phase: 'train', epochs: 3 } });
    process.kill(runner.workerPid(id)!, 'SIGTERM');
    expect((await runner.settled(id))!).toMatchObject({ state: 'failed', error: 'worker killed by SIGTERM' });
    expect((await runner.settled(b.id))!).toMatchObject({ state: 'rejected', error: 'holdout accuracy 0.5 < parent 0.9 − tolerance 0.01', exampleCount: 3 });
  });

  it('two runners on two connections (two replicas) start at most one round per model', async () => {
    await fake(registry, 'once', 'reject');
    const other = await d.openAnother();
    const r1 = await create();
    const r2 = await RoundRunner.create({ registry: other, dataDir: tmp.dir, signer, publish, rollouts, options: { workerPath: FAKE_WORKER } });
    runners.push(r2);
    const tries = await Promise.allSettled([r1.start('once', 'manual'), r2.start('once', 'manual'), r1.start('once', 'schedule'), r2.start('once', 'schedule')]);
    const started = tries.filter((t) => t.status === 'fulfilled');
    expect(started).toHaveLength(1);
    for (const t of tries) if (t.status === 'rejected') expect(t.reason).toBeInstanceOf(RoundConflictError);
    const { rounds } = registry.t;
    expect(await registry.q.select().from(rounds).where(eq(rounds.model, 'once'))).toHaveLength(1);
  });

  it('fails a round with the exit code and stderr tail, or the worker error message', async () => {
    await fake(registry, 'crash', 'crash');
    await fake(registry, 'err', 'error');
    const runner = await create({ maxConcurrent: 2 });
    const [c, e] = await Promise.all([runner.start('crash', 'manual'), runner.start('err', 'manual')]);
    const crashed = (await runner.settled(c.id))!;
    expect(crashed.state).toBe('failed');
    expect(crashed.error).toBe('worker exited with code 7 stderr: fake worker: out of memory while training');
    expect((await runner.settled(e.id))!.error).toBe('baseData: mnist:nope is not a dataset (worker exited with code 1)');
  });

  it('a round past its wall-clock limit is stopped and failed with that reason', async () => {
    await fake(registry, 'slow', 'hang');
    const runner = await create({ maxWallSeconds: 1 });
    const { id } = await runner.start('slow', 'manual');
    const done = (await runner.settled(id))!;
    expect(done.state).toBe('failed');
    expect(done.error).toMatch(/^round exceeded its wall-clock limit of 1 s \(rounds\.maxWallSeconds\)/);
    expect(runner.workerPid(id)).toBeUndefined();
  });

  it('keeps a release whose worker died before reporting it', async () => {
    await fake(registry, 'm', 'die-after-release');
    const runner = await create();
    const { id } = await runner.start('m', 'manual');
    expect((await runner.settled(id))!).toMatchObject({ state: 'released', releaseSeq: 1, metrics: { holdoutAccuracy: 0.9 } });
    expect(publish.calls).toHaveLength(1);
  });

  it('after a restart: fails interrupted rounds, retries them once, then gives up', async () => {
    await fake(registry, 'h', 'hang');
    const r1 = await create();
    const { id: first } = await r1.start('h', 'manual');
    while (!(await r1.get(first))!.progress?.epoch) await new Promise((r) => setTimeout(r, 20));
    await r1.dispose(200); // the cloud stops; the row stays `running`
    const { rounds } = registry.t;
    expect((await registry.q.select().from(rounds).where(eq(rounds.id, first)))[0]!.state).toBe('running');

    const r2 = await create();
    const retry = (await r2.list('h')).find((v) => v.trigger === 'retry')!;
    expect(await r2.get(first)).toMatchObject({ state: 'failed', error: `cloud restarted during round; retried as ${retry.id}` });
    while ((await r2.get(retry.id))!.state !== 'running') await new Promise((r) => setTimeout(r, 20));
    expect((await r2.get(retry.id))!.attempts).toBe(2);
    await r2.dispose(200);

    const r3 = await create();
    expect(await r3.get(retry.id)).toMatchObject({ state: 'failed', error: 'cloud restarted during round; not retried after 2 attempts' });
    expect(await r3.list('h')).toHaveLength(2);
  });

  it('cluster (issue 15): a follower only queues; the leader runs rounds other replicas queue; a step-down leaves its round to the next leader', async () => {
    await fake(registry, 'q', 'release');
    const follower = RoundRunner.follower({ registry, dataDir: tmp.dir, signer, publish, rollouts, options: { workerPath: FAKE_WORKER } });
    runners.push(follower);
    const leader = RoundRunner.follower({ registry, dataDir: tmp.dir, signer, publish, rollouts, options: { workerPath: FAKE_WORKER } });
    runners.push(leader);
    await leader.lead(0, 100);
    // Queued through the follower's API: stored, not run there.
    const { id } = await follower.start('q', 'manual');
    expect(follower.workerPid(id)).toBeUndefined();
    // The leader's poll picks it up from the registry and runs it to a release.
    await expect.poll(async () => (await leader.get(id))?.state, { timeout: 10_000, interval: 50 }).toBe('released');
    expect(publish.calls).toHaveLength(1);

    await fake(registry, 'hq', 'hang');
    const { id: hung } = await follower.start('hq', 'manual');
    await expect.poll(async () => (await leader.get(hung))?.progress?.epoch, { timeout: 10_000, interval: 50 }).toBeDefined();
    // Stepping down stops the worker and leaves the round `running` ...
    await leader.follow(200);
    expect((await leader.get(hung))!.state).toBe('running');
    // ... for the next leader, which fails it and retries it.
    await follower.lead(0, 100);
    const retry = (await follower.list('hq')).find((v) => v.trigger === 'retry')!;
    expect(await follower.get(hung)).toMatchObject({ state: 'failed', error: `cloud restarted during round; retried as ${retry.id}` });
    await expect.poll(async () => (await follower.get(retry.id))?.state, { timeout: 10_000, interval: 50 }).toBe('running');
  });

  it('after a restart: finishes publishing a round whose release was already stored', async () => {
    await fake(registry, 'p', 'release', { autoRollout: true });
    const id = newId();
    const { models, releases, rounds } = registry.t;
    await registry.q.insert(rounds).values({ id, model: 'p', state: 'running', trigger: 'manual', attempts: 1, startedAt: new Date().toISOString() });
    const m = denseModel({ sizes: [4, 2] });
    const stored = await storeArtifact(tmp.dir, m.bytes, openArtifacts({ registry, dataDir: tmp.dir, log: silentLogger }).blobs);
    await registry.q
      .insert(releases)
      .values({ model: 'p', seq: 5, sha256: stored.sha256, bytes: m.bytes.byteLength, quantization: 'fp32', metrics: { holdoutAccuracy: 0.8 }, manifest: { artifact: { chunkSize: 2048 }, lineage: { exampleCount: 4 } }, signature: {}, roundId: id, artifactPath: stored.relPath });
    const runner = await create();
    expect((await runner.settled(id))!).toMatchObject({ state: 'released', releaseSeq: 5, exampleCount: 4, metrics: { holdoutAccuracy: 0.8 } });
    expect(publish.calls).toEqual([{ sha256: stored.sha256, bytes: m.bytes.byteLength, chunkSize: 2048 }]);
    expect(rollouts.calls).toMatchObject([{ model: 'p', releaseSeq: 5 }]);
    expect(await registry.q.select().from(models)).toHaveLength(1);
  });
});
