/**
 * Issue 15 item 4, "a leader epoch is checked before every write the leader makes", for the rollout
 * engine on PostgreSQL: an engine started under epoch N (RolloutEngine.start(writer), as cloud/server.ts
 * starts it on election) keeps running after a takeover bumps the epoch to N+1 (it has not noticed yet).
 * Its next tick writes nothing: the fenced transaction is refused, counted and logged. An engine started
 * under N+1 then does the same work. The publisher here is NOT fenced (a FakeMqtt), so what refuses the
 * stale tick is the registry fence alone (the publish fence has its own tests).
 */
import { randomUUID } from 'node:crypto';
import { and, eq, lt } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fence } from '../../../cloud/cluster/fence.js';
import { fencedRegistry, leaderWriter } from '../../../cloud/cluster/fenced-tx.js';
import { startConsoleRetention } from '../../../cloud/fleet/retention.js';
import { RetentionJob, retentionConfigSchema } from '../../../cloud/registry/retention-job.js';
import { bumpEpoch } from '../../../cloud/cluster/store.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { fencedPgFleet } from '../../helpers/fenced-pg-fleet.js';
import { FakeMqtt, MODEL } from '../../unit/fleet/fixtures.js';

const DEVICES = ['d1', 'd2', 'd3', 'd4'];

describe('the rollout engine writes through its epoch on PostgreSQL', () => {
  const env = fencedPgFleet('the fenced rollout engine', 'leader-writes', DEVICES);
  const { dir, fx, metrics, captured } = env;
  let skip: string | undefined;
  let reg: StoreRegistry;
  let pool: pg.Pool;
  let fence: Fence;
  beforeAll(() => void ({ skip, reg, pool, fence } = env));
  const engines: RolloutEngine[] = [];
  env.stopping.push(async () => {
    for (const e of engines) await e.stop();
  });

  /** An engine with its own fake broker; no automatic tick (the test calls `evaluate()`, what the tick runs). */
  function engine(opts: { leads?: () => boolean } = {}): { engine: RolloutEngine; mqtt: FakeMqtt } {
    const mqtt = new FakeMqtt();
    const e = new RolloutEngine({
      registry: reg,
      publisher: new ReleasePublisher({ mqtt, dataDir: dir }),
      reissue: () => Promise.reject(new Error('no re-issue in this test')),
      requireTelemetry: false,
      tickSeconds: 3600,
      log: captured.log,
      ...opts,
    });
    engines.push(e);
    return { engine: e, mqtt };
  }

  /** Desired publishes naming release 2 (the start's republish sends every device its current release 1). */
  const release2Given = (m: FakeMqtt) => DEVICES.flatMap((id) => m.desiredHistory(id)).filter((seq) => seq === 2).length;
  const writeRefusals = async () => (await metrics.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values.find((v) => v.labels.kind === 'write')?.value ?? 0;
  const rollout = async (id: string) => (await reg.q.select().from(reg.t.rollouts).where(eq(reg.t.rollouts.id, id)))[0]!;
  const members = async (id: string) => (await reg.q.select().from(reg.t.rolloutDevices).where(eq(reg.t.rolloutDevices.rolloutId, id))).map((m) => m.state).sort();
  const desiredSeqs = async () => (await reg.q.select({ s: reg.t.devices.desiredSeq }).from(reg.t.devices)).map((d) => d.s);

  it('a stale engine tick writes nothing after a takeover (refused, counted, logged); the engine of the new epoch proceeds', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const cluster = drizzle(pool);
    const epochA = await bumpEpoch(cluster, 'replica-a');
    const a = engine();
    await a.engine.start(leaderWriter(reg, epochA, fence));

    // A follower's API stores the rollout (an API write: never fenced); the leader's tick acts on it.
    const created = await engine({ leads: () => false }).engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [0.25, 1], soakSeconds: 0 });
    expect(created.state).toBe('pending');

    // replica-b takes over; replica-a has not noticed and its tick runs.
    const epochB = await bumpEpoch(cluster, 'replica-b');
    expect(epochB).toBe(epochA + 1);
    const before = await writeRefusals();
    await a.engine.evaluate();

    // Nothing written: still pending, every member waiting, no device given release 2, chunks not marked.
    expect((await rollout(created.id)).state).toBe('pending');
    expect(await members(created.id)).toEqual(['waiting', 'waiting', 'waiting', 'waiting']);
    expect(await desiredSeqs()).toEqual([1, 1, 1, 1]);
    expect((await reg.q.select({ p: reg.t.releases.chunksPublished }).from(reg.t.releases).where(eq(reg.t.releases.seq, 2)))[0]?.p).toBe(false);
    expect(release2Given(a.mqtt)).toBe(0);
    expect(await writeRefusals()).toBeGreaterThan(before);
    const refusedLine = captured.lines().find((l) => l.kind === 'write' && l.action === 'rollouts.write');
    expect(refusedLine).toMatchObject({ epoch: epochA, currentEpoch: epochB });

    // The stale replica still serves the API: its own write (a pause) is not a leader write and lands.
    await a.engine.pause(created.id, 'checking the API path');
    expect((await rollout(created.id)).pausedAt).not.toBeNull();
    await a.engine.resume(created.id, 'continue');
    expect((await rollout(created.id)).pausedAt).toBeNull();

    // The engine of the new epoch gives the canary its release.
    const refusedByA = await writeRefusals();
    const b = engine();
    await b.engine.start(leaderWriter(reg, epochB, fence));
    expect((await rollout(created.id)).state).toBe('canary');
    expect((await members(created.id)).filter((s) => s === 'desired')).toHaveLength(1);
    expect((await desiredSeqs()).filter((s) => s === 2)).toHaveLength(1);
    expect(release2Given(b.mqtt)).toBe(1);
    expect(await writeRefusals()).toBe(refusedByA);

    // The canary's status says it runs release 2 (what ingest writes): the stale tick would record the
    // install and start the fleet wave, and is refused; the new leader's tick does it.
    const [canary] = await reg.q.select().from(reg.t.rolloutDevices).where(and(eq(reg.t.rolloutDevices.rolloutId, created.id), eq(reg.t.rolloutDevices.state, 'desired')));
    await reg.q.update(reg.t.devices).set({ runningSeq: 2 }).where(eq(reg.t.devices.id, canary!.deviceId));
    const inCanary = await rollout(created.id);
    await a.engine.evaluate();
    expect(await rollout(created.id)).toEqual(inCanary);
    expect((await members(created.id)).filter((s) => s === 'installed')).toHaveLength(0);
    expect(await writeRefusals()).toBeGreaterThan(refusedByA);
    await b.engine.evaluate();
    expect((await rollout(created.id)).state).toBe('fleet');
    expect((await members(created.id)).filter((s) => s === 'installed')).toHaveLength(1);
  });

  it('epoch 0 (one process) writes through plain transactions, even on PostgreSQL', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const { engine: e } = engine();
    await e.start(leaderWriter(reg, 0, fence));
    const before = await writeRefusals();
    const created = await e.create({ model: MODEL, releaseSeq: 2, target: { kind: 'devices', ids: ['d4'] }, waves: [1], soakSeconds: 0 });
    expect(created.state).not.toBe('pending');
    expect(await writeRefusals()).toBe(before);
  });

  const daysAgo = (d: number) => new Date(Date.now() - d * 86_400_000).toISOString();

  it('retention started under a stale epoch deletes no example; under the current epoch it does', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const cluster = drizzle(pool);
    const rows = [400, 300].map((age, i) => ({ id: randomUUID(), deviceId: 'd1', model: MODEL, releaseSeq: null, input: Buffer.from(new Float32Array([i]).buffer), studentOutput: [0.5, 0.5], reason: 'low_confidence', capturedAt: daysAgo(age), ingestedAt: daysAgo(age) }));
    await reg.q.insert(reg.t.examples).values(rows);
    const count = async () => (await reg.q.select({ id: reg.t.examples.id }).from(reg.t.examples)).length;
    const config = retentionConfigSchema.parse({ maxAgeDays: 90 });
    const stale = await bumpEpoch(cluster, 'replica-a');
    const job = new RetentionJob({ registry: reg, config, log: captured.log });
    job.start(3_600_000, leaderWriter(reg, stale, fence));
    const current = await bumpEpoch(cluster, 'replica-b');
    const before = await writeRefusals();
    await expect(job.runOnce()).rejects.toThrow(/retention\.delete refused: leader epoch \d+ is stale/);
    expect(await count()).toBe(2);
    expect(await writeRefusals()).toBe(before + 1);
    await job.stop();
    // Started again by the replica that now leads, under its epoch: the same pass deletes them.
    job.start(3_600_000, leaderWriter(reg, current, fence));
    expect((await job.runOnce())[0]).toMatchObject({ model: MODEL, deletedByAge: 2 });
    expect(await count()).toBe(0);
    await job.stop();
  });

  it('console retention through a stale fenced view deletes no device event; the current one does', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const cluster = drizzle(pool);
    await reg.q.insert(reg.t.deviceEvents).values({ deviceId: 'd1', at: daysAgo(200), receivedAt: daysAgo(200), type: 'installed' });
    // Events past the 90-day default (the rollout above noted recent ones).
    const events = async () => (await reg.q.select({ id: reg.t.deviceEvents.id }).from(reg.t.deviceEvents).where(lt(reg.t.deviceEvents.receivedAt, daysAgo(100)))).length;
    const stale = await bumpEpoch(cluster, 'replica-a');
    const current = await bumpEpoch(cluster, 'replica-b');
    const before = await writeRefusals();
    const staleRun = startConsoleRetention({ registry: fencedRegistry(reg, leaderWriter(reg, stale, fence), 'console-retention.delete'), log: captured.log, intervalMs: 3_600_000 });
    staleRun.stop();
    await expect(staleRun.runOnce()).rejects.toThrow(/console-retention\.delete refused/);
    expect(await events()).toBe(1);
    expect(await writeRefusals()).toBeGreaterThan(before);
    // Its first pass runs at start.
    const run = startConsoleRetention({ registry: fencedRegistry(reg, leaderWriter(reg, current, fence), 'console-retention.delete'), log: captured.log, intervalMs: 3_600_000 });
    run.stop();
    await expect.poll(events).toBe(0);
  });
});
