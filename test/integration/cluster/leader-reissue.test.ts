/**
 * Issue 15 item 4 for re-issues: a rollback's re-issue is leader work, so the rollout engine makes it through
 * its fenced leader view (RolloutEngineDeps.reissue gets the registry to write with, and cloud/server.ts
 * passes it to reissueRelease). An engine started under epoch N that has not noticed a takeover to N+1
 * allocates no sequence and inserts no release row, whether the rollback comes through its API or its tick;
 * the engine of N+1 then re-issues once. The same for an agent rollback (reissueAgent, issue 14). Real
 * reissueRelease / reissueAgent and signatures, on PostgreSQL.
 */
import { eq } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fence } from '../../../cloud/cluster/fence.js';
import { leaderSlot, leaderWriter } from '../../../cloud/cluster/fenced-tx.js';
import { bumpEpoch } from '../../../cloud/cluster/store.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { reissueAgent } from '../../../cloud/agents/release.js';
import { RELEASE_SEQ_HIGH, reissueRelease, signShadowManifest } from '../../../cloud/rounds/releases.js';
import { ShadowRollouts } from '../../../cloud/shadow/index.js';
import { DEVICE_CAPABILITIES } from '../../../shared/protocol/index.js';
import { signManifest } from '../../../shared/manifest/index.js';
import type { Manifest } from '../../../shared/protocol/schemas.js';
import { pushTinyAgent } from '../../helpers/agent-cloud.js';
import { fencedPgFleet } from '../../helpers/fenced-pg-fleet.js';
import { FakeMqtt, MODEL } from '../../unit/fleet/fixtures.js';

const DEVICES = ['d1', 'd2', 'd3'];

describe("a stale leader's rollback re-issue writes no release row (PostgreSQL)", () => {
  const env = fencedPgFleet('fenced re-issues', 'leader-reissue', DEVICES);
  const { dir, fx, metrics, captured } = env;
  const signer = { sign: (m: Manifest) => signManifest(m, fx.key) };
  let skip: string | undefined;
  let reg: StoreRegistry;
  let pool: pg.Pool;
  let fence: Fence;
  beforeAll(() => void ({ skip, reg, pool, fence } = env));
  const engines: RolloutEngine[] = [];
  env.stopping.push(async () => {
    for (const e of engines) await e.stop();
  });
  /** The registries the engines handed to `reissue` (the engine's leader view, not `reg`). */
  const reissuedWith: StoreRegistry[] = [];

  /** An engine wired as cloud/server.ts wires it: the re-issue writes with the registry the engine passes. */
  function engine(): RolloutEngine {
    const e = new RolloutEngine({
      registry: reg,
      publisher: new ReleasePublisher({ mqtt: new FakeMqtt(), dataDir: dir }),
      reissue: async (prev, leaderReg) => {
        reissuedWith.push(leaderReg);
        return reissueRelease(leaderReg, signer, prev);
      },
      reissueAgent: async (agentSeq, leaderReg) => {
        reissuedWith.push(leaderReg);
        return (await reissueAgent({ registry: leaderReg, key: fx.key, agentSeq, now: new Date() })).agentSeq;
      },
      requireTelemetry: false,
      tickSeconds: 3600,
      log: captured.log,
    });
    engines.push(e);
    return e;
  }

  const releases = async () => (await reg.q.select({ seq: reg.t.releases.seq, metrics: reg.t.releases.metrics }).from(reg.t.releases).orderBy(reg.t.releases.seq)).map((r) => ({ seq: r.seq, reissueOf: (r.metrics as { reissueOf?: number }).reissueOf ?? null }));
  const seqHigh = async () => (await reg.q.select({ v: reg.t.meta.value }).from(reg.t.meta).where(eq(reg.t.meta.key, RELEASE_SEQ_HIGH)))[0]?.v ?? null;
  const rollout = async (id: string) => (await reg.q.select().from(reg.t.rollouts).where(eq(reg.t.rollouts.id, id)))[0]!;
  const desiredSeqs = async () => (await reg.q.select({ s: reg.t.devices.desiredSeq }).from(reg.t.devices)).map((d) => d.s);
  const writeRefusals = async () => (await metrics.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values.find((v) => v.labels.kind === 'write')?.value ?? 0;

  it('refused through the API and the tick of the stale engine; the engine of the new epoch re-issues once', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const cluster = drizzle(pool);
    const epochA = await bumpEpoch(cluster, 'replica-a');
    const a = engine();
    await a.start(leaderWriter(reg, epochA, fence));
    const created = await a.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0 });
    expect(created.state).toBe('fleet');
    expect(await desiredSeqs()).toEqual([2, 2, 2]);

    // replica-b takes over; replica-a has not noticed and takes an operator's rollback.
    const epochB = await bumpEpoch(cluster, 'replica-b');
    const before = { releases: await releases(), high: await seqHigh(), refusals: await writeRefusals() };
    expect(before.releases).toEqual([
      { seq: 1, reissueOf: null },
      { seq: 2, reissueOf: null },
    ]);
    const answered = await a.rollback(created.id, 'bad release');

    // The API's own write landed (any replica makes it); the re-issue was refused: no row, no sequence.
    expect(answered).toMatchObject({ state: 'rolling_back', rollbackSeq: null });
    expect(reissuedWith.length).toBeGreaterThan(0);
    expect(reissuedWith.every((r) => r !== reg)).toBe(true);
    expect(await releases()).toEqual(before.releases);
    expect(await seqHigh()).toBe(before.high);
    expect(await writeRefusals()).toBeGreaterThan(before.refusals);
    expect(captured.lines().find((l) => l.msg === 'rollouts/left-to-the-new-leader')).toMatchObject({ action: 'rollouts.write', epoch: epochA, currentEpoch: epochB });

    // Its tick retries the rolling_back rollout: refused again, still nothing.
    const afterApi = await writeRefusals();
    await a.evaluate();
    expect(await releases()).toEqual(before.releases);
    expect(await seqHigh()).toBe(before.high);
    expect(await writeRefusals()).toBeGreaterThan(afterApi);
    expect((await rollout(created.id)).state).toBe('rolling_back');
    expect(await desiredSeqs()).toEqual([2, 2, 2]);

    // The engine of the new epoch continues the rollback at its start: one re-issue of release 1.
    const refusedByA = await writeRefusals();
    const b = engine();
    await b.start(leaderWriter(reg, epochB, fence));
    expect(await releases()).toEqual([...before.releases, { seq: 3, reissueOf: 1 }]);
    expect(await rollout(created.id)).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 });
    expect(await desiredSeqs()).toEqual([3, 3, 3]);
    expect(await writeRefusals()).toBe(refusedByA);
  });

  it("an agent rollback's re-issue (reissueAgent) is refused the same way: no agent release row", async (ctx) => {
    if (skip) return ctx.skip(skip);
    const cluster = drizzle(pool);
    for (const version of ['0.1.0', '0.2.0']) await pushTinyAgent(fx, dir, { version, registry: reg, dataDir: dir });
    await reg.q.update(reg.t.devices).set({ platform: 'linux-x64', agent: 'apprentice-edge/0.1.0', capabilities: [DEVICE_CAPABILITIES.agentUpdate] });
    const agentRows = async () => (await reg.q.select({ seq: reg.t.agentReleases.agentSeq, version: reg.t.agentReleases.version, reissueOf: reg.t.agentReleases.reissueOf }).from(reg.t.agentReleases).orderBy(reg.t.agentReleases.agentSeq));
    const epochA = await bumpEpoch(cluster, 'replica-a');
    const a = engine();
    await a.start(leaderWriter(reg, epochA, fence));
    const created = await a.create({ model: 'agent:linux-x64', kind: 'agent', releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0 });

    const epochB = await bumpEpoch(cluster, 'replica-b');
    const before = { rows: await agentRows(), refusals: await writeRefusals(), handedOut: reissuedWith.length };
    expect(before.rows.map((r) => r.seq)).toEqual([1, 2]);
    expect(await a.rollback(created.id, 'bad agent')).toMatchObject({ state: 'rolling_back', rollbackSeq: null });
    expect(reissuedWith.length).toBeGreaterThan(before.handedOut);
    expect(reissuedWith.every((r) => r !== reg)).toBe(true);
    expect(await agentRows()).toEqual(before.rows);
    expect(await writeRefusals()).toBeGreaterThan(before.refusals);

    const b = engine();
    await b.start(leaderWriter(reg, epochB, fence));
    expect(await agentRows()).toEqual([...before.rows, { seq: 3, version: '0.1.0', reissueOf: 1 }]);
    expect(await rollout(created.id)).toMatchObject({ state: 'rolled_back', rollbackSeq: 3 });
  });

  it("the shadow switch's re-issue, wired as cloud/server.ts wires it, is refused under a stale epoch: no release row, the run stays shadowing", async (ctx) => {
    if (skip) return ctx.skip(skip);
    const cluster = drizzle(pool);
    // server.ts: the shadow service's re-issue writes through the epoch its leader service was started under.
    const slot = leaderSlot(reg, 'shadow.reissue');
    const epochA = await bumpEpoch(cluster, 'replica-a');
    const rollouts = engine();
    const shadow = new ShadowRollouts({
      registry: reg,
      publisher: new ReleasePublisher({ mqtt: new FakeMqtt(), dataDir: dir }),
      signShadow: (seq, until) => signShadowManifest(reg, signer, seq, until),
      reissue: async (seq) => reissueRelease(slot.registry, signer, seq),
      rollouts,
      log: captured.log,
    });
    slot.lead(leaderWriter(reg, epochA, fence));
    const run = await shadow.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, policy: { waves: [1], soakSeconds: 0 }, minutes: 30 });

    const epochB = await bumpEpoch(cluster, 'replica-b');
    const before = { releases: await releases(), refusals: await writeRefusals() };
    await expect(shadow.switch(run.id, 'operator on the stale leader')).rejects.toThrow(/shadow\.reissue refused: leader epoch \d+ is stale/);
    expect(await releases()).toEqual(before.releases);
    expect(await writeRefusals()).toBe(before.refusals + 1);
    expect((await shadow.get(run.id))!.run).toMatchObject({ state: 'shadowing', switchedSeq: null });

    // The shadow service started again by the new leader (its writer of epoch B): the switch re-issues once.
    slot.follow();
    slot.lead(leaderWriter(reg, epochB, fence));
    await rollouts.start(leaderWriter(reg, epochB, fence));
    const switched = (await shadow.switch(run.id, 'operator on the new leader')).run;
    const added = (await releases()).slice(before.releases.length);
    expect(added).toEqual([{ seq: switched.switchedSeq, reissueOf: 2 }]);
    expect(switched).toMatchObject({ state: 'switched' });
    await shadow.stop();
  });
});
