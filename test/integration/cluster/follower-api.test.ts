/**
 * Issue 15 item 4, "every replica serves the whole API": the API paths that used to publish directly (a
 * shadow run's start, switch and abort; a device's revoke) called on a FOLLOWER. Two in-process replicas
 * (test/helpers/engine-replica.ts: Replica, fenced publisher, rollout engine) on one throwaway PostgreSQL
 * registry and a real Mosquitto, each with the shadow service and the revoked-retained sweep wired as
 * cloud/server.ts wires them, and the follower's real HTTP API (createCloudApi). The follower only records
 * the intent in the registry; the leader publishes it (seen by a device-side observer); a new leader picks
 * up what the old one had not acted on; a stale leader's fenced writes are refused.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import mqttLib, { type MqttClient } from 'mqtt';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createCloudApi } from '../../../cloud/api/app.js';
import { openFence } from '../../../cloud/cluster/fence.js';
import { leaderWriter } from '../../../cloud/cluster/fenced-tx.js';
import { leaderService } from '../../../cloud/cluster/replica.js';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { RevokedRetained } from '../../../cloud/fleet/revocations.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { reissueRelease, signShadowManifest } from '../../../cloud/rounds/index.js';
import { ShadowRollouts } from '../../../cloud/shadow/index.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { parseTopic, topics, type Manifest } from '../../../shared/protocol/index.js';
import { skipWithoutMosquitto, startMosquitto, type MosquittoBroker } from '../../helpers/broker.js';
import { seedClusterFleet } from '../../helpers/cluster-fleet.js';
import { registryDialects } from '../../helpers/dialects.js';
import { startEngineReplica, type EngineReplica } from '../../helpers/engine-replica.js';
import { captureLogger } from '../../helpers/log.js';
import { readRetained } from '../../helpers/retained.js';
import { call, json, TOKEN } from '../../unit/cloud-api/helpers.js';
import { FleetFixture, MODEL } from '../../unit/fleet/fixtures.js';

const TICK_SECONDS = 1;
const pg = registryDialects().find((d) => d.name === 'postgres')!;
const DEVICES = ['d1', 'd2', 'd3', 'd4'];
const TIMINGS = { pollMs: 250, renewMs: 250, queryTimeoutMs: 1000, sessionIdleTimeoutMs: 3000 };

interface ApiReplica extends EngineReplica {
  shadow: ShadowRollouts;
  revocations: RevokedRetained;
}

describe.skipIf(skipWithoutMosquitto())('the shadow and revoke API paths on a follower: recorded in the registry, published by the leader', () => {
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-follower-api-'));
  const fx = new FleetFixture(join(dir, 'fixture'));
  const signer = { sign: (m: Manifest) => signManifest(m, fx.key) };
  let broker: MosquittoBroker | undefined;
  let observer: MqttClient | undefined;
  const replicas: ApiReplica[] = [];
  /** Per device topic (desired, agent): the last payload a device-side subscriber saw (null: cleared). */
  const seen = new Map<string, Buffer | null>();

  afterEach(async () => {
    for (const r of replicas.splice(0)) await r.stop();
    await observer?.endAsync();
    await broker?.stop();
    await pg.close();
    seen.clear();
  }, 30_000);
  afterAll(() => {
    fx.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  async function brokerAndObserver(): Promise<void> {
    broker = await startMosquitto();
    observer = await mqttLib.connectAsync(broker.url, { clientId: 'observer' });
    observer.on('message', (topic, payload) => void seen.set(topic, payload.length ? payload : null));
    await observer.subscribeAsync(DEVICES.flatMap((id) => [topics.desired(id), topics.agent(id)]), { qos: 1 });
  }
  const desiredRelease = (id: string): number | null | undefined => {
    const p = seen.get(topics.desired(id));
    return p === undefined ? undefined : p === null ? null : (JSON.parse(p.toString()) as { manifest: Manifest }).manifest.release;
  };

  /** A replica as cloud/server.ts wires its shadow service and revoke sweep (clustered, fenced writer). */
  async function startReplica(name: string, registry: StoreRegistry, url: string, tickSeconds: number): Promise<ApiReplica> {
    let shadow!: ShadowRollouts;
    let revocations!: RevokedRetained;
    const r = await startEngineReplica({
      name,
      registry,
      url,
      brokerUrl: broker!.url,
      dataDir: dir,
      tickSeconds,
      timings: TIMINGS,
      log: captureLogger().log,
      compatOf: (id) => deviceCompatOf(registry, id),
      services: ({ replica, publisher, engine, metrics }) => {
        shadow = new ShadowRollouts({
          registry,
          publisher,
          tickSeconds,
          signShadow: (seq, until) => signShadowManifest(registry, signer, seq, until),
          reissue: (seq) => reissueRelease(registry, signer, seq),
          rollouts: engine,
          clustered: true,
          writer: (epoch) => replica.writer(registry, epoch),
        });
        revocations = new RevokedRetained({ registry, publisher, rollouts: engine, writer: (epoch) => replica.writer(registry, epoch), metrics, tickSeconds });
        return [
          leaderService('shadow', async (epoch) => (shadow.start(epoch), await shadow.republish(), await shadow.tick()), () => shadow.stop()),
          leaderService('revocations', (epoch) => revocations.start(epoch), () => revocations.stop()),
        ];
      },
    });
    const out = Object.assign(r, { shadow, revocations });
    replicas.push(out);
    return out;
  }

  /** The replica's HTTP API, wired as cloud/server.ts wires it on a cluster. */
  function apiOf(r: ApiReplica, registry: StoreRegistry) {
    const keysDir = join(dir, `keys-${r.name}`);
    mkdirSync(keysDir, { recursive: true });
    return createCloudApi({
      registry,
      keys: KeyStore.open({ dir: keysDir }),
      adminToken: TOKEN,
      broker: { publicUrl: 'mqtts://broker.example.com:8883' },
      rounds: { start: () => ({ id: 'r' }) },
      rollouts: r.engine,
      shadow: r.shadow,
      fleet: { onDeviceProvisioned: async () => undefined, onDeviceRevoked: () => r.revocations.kick() },
      artifactsDir: dir,
    });
  }

  /** Replica a leads, b follows; both tick every `tickSeconds` (an hour: they act only at election and when kicked). */
  async function leaderAndFollower(ctx: Parameters<NonNullable<typeof pg.open>>[0], tickSeconds = TICK_SECONDS) {
    const regA = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const regB = await pg.openAnother();
    await seedClusterFleet(regA, fx, dir, DEVICES);
    await brokerAndObserver();
    const a = await startReplica('a', regA, url, tickSeconds);
    await expect.poll(() => a.replica.status().running, { timeout: 10_000 }).toEqual(['rollouts', 'shadow', 'revocations']);
    const b = await startReplica('b', regB, url, tickSeconds);
    await new Promise((r) => setTimeout(r, 1000));
    expect(b.replica.status()).toEqual({ role: 'follower', epoch: null, running: [] });
    return { a, b, regA, regB, url };
  }

  const runState = async (reg: StoreRegistry, id: string) => (await reg.q.select({ s: reg.t.shadowRuns.state }).from(reg.t.shadowRuns).where(eq(reg.t.shadowRuns.id, id)))[0]?.s;
  const shadowBody = (ids: string[]) => ({ model: MODEL, release: 2, target: { devices: ids }, waves: [1], soakSeconds: 0, shadow: { minutes: 30, minAgreement: 0.9, minRequests: 20 } });

  it('a shadow run started, aborted and switched through the follower API is published by the leader', async (ctx) => {
    const { a, b, regB } = await leaderAndFollower(ctx);
    const api = apiOf(b, regB);

    const res = await call(api, 'POST', '/v1/rollouts', { body: shadowBody(['d1', 'd2']) });
    expect(res.status).toBe(201);
    const run = await json(res);
    // The follower recorded the run and sent nothing: its devices wait for the leader.
    expect(run.devices.map((d: { state: string }) => d.state)).toEqual(['pending', 'pending']);
    for (const id of ['d1', 'd2']) await expect.poll(() => desiredRelease(id), { timeout: 5_000 }).toBe(run.shadowRelease);
    await expect.poll(async () => (await json(await call(api, 'GET', `/v1/rollouts/${run.id}`))).devices.map((d: { state: string }) => d.state), { timeout: 5_000 }).toEqual(['sent', 'sent']);

    // Abort through the follower: 202, recorded; the leader ends it and gives each device its own release back.
    const aborted = await call(api, 'POST', `/v1/rollouts/${run.id}/abort`, { body: { reason: 'wrong candidate' } });
    expect(aborted.status).toBe(202);
    expect(await json(aborted)).toMatchObject({ state: 'aborting', reason: 'wrong candidate' });
    await expect.poll(() => runState(regB, run.id), { timeout: 5_000, interval: 100 }).toBe('aborted');
    for (const id of ['d1', 'd2']) await expect.poll(() => desiredRelease(id), { timeout: 5_000 }).toBe(1);
    expect((await call(api, 'POST', `/v1/rollouts/${run.id}/abort`)).status).toBe(409);

    // Switch through the follower: the leader re-issues the candidate and starts its rollout.
    const second = await json(await call(api, 'POST', '/v1/rollouts', { body: shadowBody(['d3']) }));
    await expect.poll(() => desiredRelease('d3'), { timeout: 5_000 }).toBe(second.shadowRelease);
    const switched = await call(api, 'POST', `/v1/rollouts/${second.id}/switch`);
    expect(switched.status).toBe(202);
    expect((await json(switched)).state).toBe('switching');
    await expect.poll(() => runState(regB, second.id), { timeout: 5_000, interval: 100 }).toBe('switched');
    const done = await json(await call(api, 'GET', `/v1/rollouts/${second.id}`));
    expect(done.rolloutId).toEqual(expect.any(String));
    expect(done.switchedRelease).toBeGreaterThan(second.shadowRelease);
    // The switch's rollout (canary wave = all of d3) is the leader's too: d3 is sent the re-issued release.
    await expect.poll(() => desiredRelease('d3'), { timeout: 5_000 }).toBe(done.switchedRelease);

    // The follower never tried to publish (nothing refused); the leader did it all under its epoch.
    const refused = async (m: PromRegistry) => (await m.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values.reduce((s, v) => s + v.value, 0);
    expect(await refused(b.metrics)).toBe(0);
    expect(await refused(a.metrics)).toBe(0);
  }, 60_000);

  it('a device revoked through the follower API: the leader clears its retained desired and agent', async (ctx) => {
    const { a, b, regB } = await leaderAndFollower(ctx);
    const api = apiOf(b, regB);
    // What an earlier leader retained for d4 (its release and an agent release), as the registry says.
    await regB.q.update(regB.t.devices).set({ desiredAgentSeq: 7 }).where(eq(regB.t.devices.id, 'd4'));
    const pub = await mqttLib.connectAsync(broker!.url, { clientId: 'old-leader' });
    await pub.publishAsync(topics.desired('d4'), JSON.stringify(signManifest(fx.manifest(1, Buffer.from('x')), fx.key)), { qos: 1, retain: true });
    await pub.publishAsync(topics.agent('d4'), '{"agent":7}', { qos: 1, retain: true });
    await pub.endAsync();
    const d4Topics = [topics.desired('d4'), topics.agent('d4')];
    expect([...(await readRetained(broker!.url, d4Topics)).keys()].sort()).toEqual([...d4Topics].sort());

    const res = await call(api, 'DELETE', '/v1/devices/d4');
    expect(res.status).toBe(200);
    expect(await json(res)).toMatchObject({ id: 'd4', revoked: true });
    await expect.poll(() => seen.get(topics.desired('d4')), { timeout: 5_000 }).toBeNull();
    await expect.poll(() => seen.get(topics.agent('d4')), { timeout: 5_000 }).toBeNull();
    expect((await readRetained(broker!.url, d4Topics)).size).toBe(0);
    await expect.poll(async () => (await regB.q.select().from(regB.t.devices).where(eq(regB.t.devices.id, 'd4')))[0], { timeout: 5_000 }).toMatchObject({ desiredSeq: null, desiredAgentSeq: null });
    const cleared = (await a.metrics.getSingleMetric('apprentice_cloud_revoked_retained_total')!.get()).values.find((v) => v.labels.result === 'cleared')?.value;
    expect(cleared).toBe(1);
    // The other devices keep theirs.
    expect((await readRetained(broker!.url, [topics.desired('d1')])).size).toBe(1);
  }, 60_000);

  it('intents the old leader had not acted on are carried out at the next election; a stale leader is refused', async (ctx) => {
    // An hour's tick: a leader acts only at its election and when an API call on its own replica kicks it.
    const { a, b, regA, regB, url } = await leaderAndFollower(ctx, 3600);
    const epochA = a.replica.status().epoch!;
    const apiB = apiOf(b, regB);
    // Recorded through the follower; the leader's tick does not come before it goes.
    const run = await json(await call(apiB, 'POST', '/v1/rollouts', { body: shadowBody(['d1']) }));
    expect((await call(apiB, 'POST', `/v1/rollouts/${run.id}/switch`)).status).toBe(202);
    expect((await call(apiB, 'DELETE', '/v1/devices/d2')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 500));
    expect(await runState(regB, run.id)).toBe('switching');
    expect(seen.get(topics.desired('d2'))).not.toBeNull();

    // The leader goes: b leads under the next epoch, and its election carries out both from the registry.
    await a.stop();
    await expect.poll(() => b.replica.status().running, { timeout: 15_000, interval: 100 }).toEqual(['rollouts', 'shadow', 'revocations']);
    expect(b.replica.status().epoch).toBe(epochA + 1);
    await expect.poll(() => runState(regB, run.id), { timeout: 5_000, interval: 100 }).toBe('switched');
    await expect.poll(() => seen.get(topics.desired('d2')), { timeout: 5_000 }).toBeNull();
    expect((await regB.q.select().from(regB.t.devices).where(eq(regB.t.devices.id, 'd2')))[0]).toMatchObject({ revoked: true, desiredSeq: null });

    // New intents through the old replica's API (it records only), then a stale leader (still on epoch A) tries them.
    const apiA = apiOf(a, regA);
    const next = await json(await call(apiA, 'POST', '/v1/rollouts', { body: shadowBody(['d3']) }));
    expect((await call(apiA, 'POST', `/v1/rollouts/${next.id}/switch`)).status).toBe(202);
    expect((await call(apiA, 'DELETE', '/v1/devices/d4')).status).toBe(200);
    const metrics = new PromRegistry();
    const stale = openFence(url, { metrics });
    try {
      const staleWriter = () => leaderWriter(regA, epochA, stale.fence);
      const noPublish = { publishDesired: async () => undefined, clearDesired: async () => undefined, ensureChunks: async () => undefined, clearAgent: async () => undefined };
      const never = (what: string) => () => Promise.reject(new Error(`a stale leader must not ${what}`));
      const staleShadow = new ShadowRollouts({ registry: regA, publisher: noPublish, signShadow: never('sign'), reissue: never('re-issue'), rollouts: { create: never('start a rollout') }, clustered: true, writer: staleWriter, tickSeconds: 3600 });
      staleShadow.start(epochA);
      await expect(staleShadow.tick()).rejects.toMatchObject({ name: 'StaleLeaderError', myEpoch: epochA, currentEpoch: epochA + 1 });
      await staleShadow.stop();
      const staleSweep = new RevokedRetained({ registry: regA, publisher: noPublish, rollouts: { evaluate: never('evaluate') }, writer: staleWriter, metrics, tickSeconds: 3600 });
      await staleSweep.start(epochA);
      await staleSweep.stop();
      const writes = (await metrics.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values.find((v) => v.labels.kind === 'write')?.value;
      expect(writes).toBe(2);
      expect((await metrics.getSingleMetric('apprentice_cloud_revoked_retained_total')!.get()).values).toEqual([expect.objectContaining({ labels: { result: 'failed' }, value: 1 })]);
    } finally {
      await stale.close();
    }
    // Nothing of it landed: the run still waits, d4 still has its retained desired.
    expect(await runState(regA, next.id)).toBe('switching');
    expect((await regA.q.select().from(regA.t.devices).where(eq(regA.t.devices.id, 'd4')))[0]).toMatchObject({ revoked: true, desiredSeq: 1 });
    expect(seen.get(topics.desired('d4'))).not.toBeNull();

    // The real leader's next tick does.
    await b.shadow.tick();
    expect(await runState(regB, next.id)).toBe('switched');
    expect(await b.revocations.sweep()).toBe(1);
    await expect.poll(() => seen.get(topics.desired('d4')), { timeout: 5_000 }).toBeNull();
  }, 60_000);
});
