/**
 * Issue 15 item 4 with the cloud's own parts: two in-process replicas (cloud/cluster/replica.ts, as
 * cloud/server.ts wires it) on one throwaway PostgreSQL registry and a real Mosquitto. Each has its own
 * registry pool, MQTT client, fenced ReleasePublisher and RolloutEngine; only the elected leader runs the
 * engine. A rollout created through the FOLLOWER's engine (what its API does) is stored only and given by
 * the leader's tick; the leader is stopped mid-rollout; the other replica leads within 15 s under the next
 * epoch and completes the rollout from the registry; the old leader's publishes are refused and counted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import mqttLib, { type MqttClient } from 'mqtt';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openFence, StaleLeaderError } from '../../../cloud/cluster/fence.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { applyDeviceEventSteps } from '../../../cloud/rollouts/store.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { parseTopic, topics, type DeviceEvent, type Manifest } from '../../../shared/protocol/index.js';
import { skipWithoutMosquitto, startMosquitto, type MosquittoBroker } from '../../helpers/broker.js';
import { Replica as ProcessReplica, nextLeader } from '../../helpers/cluster-replicas.js';
import { registryDialects } from '../../helpers/dialects.js';
import { seedClusterFleet } from '../../helpers/cluster-fleet.js';
import { startEngineReplica, type EngineReplica } from '../../helpers/engine-replica.js';
import { captureLogger } from '../../helpers/log.js';
import { FleetFixture, MODEL, artifactBytes } from '../../unit/fleet/fixtures.js';

const TAKEOVER_BOUND_MS = 15_000;
const TICK_SECONDS = 1;
const pg = registryDialects().find((d) => d.name === 'postgres')!;
const DEVICES = ['d1', 'd2', 'd3', 'd4'];
const ENGINE_PROCESS = fileURLToPath(new URL('../../helpers/engine-replica-process.ts', import.meta.url));

describe.skipIf(skipWithoutMosquitto())('two cloud replicas on PostgreSQL and Mosquitto: leader-only rollout engine, takeover, fenced publishes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-replica-services-'));
  const fx = new FleetFixture(join(dir, 'fixture'));
  let broker: MosquittoBroker | undefined;
  let observer: MqttClient | undefined;
  const replicas: EngineReplica[] = [];
  const processes: ProcessReplica[] = [];

  afterEach(async () => {
    for (const p of processes.splice(0)) p.signal('SIGKILL');
    for (const r of replicas.splice(0)) await r.stop();
    await observer?.endAsync();
    await broker?.stop();
    await pg.close();
    desired.clear();
  }, 30_000);
  afterAll(() => {
    fx.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A fresh broker with a device-side observer of every desired topic. */
  async function brokerAndObserver(): Promise<void> {
    broker = await startMosquitto();
    observer = await mqttLib.connectAsync(broker.url, { clientId: 'observer' });
    observer.on('message', (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.type === 'device' && t.kind === 'desired') desired.set(t.deviceId, payload.length ? (JSON.parse(payload.toString()) as { manifest: Manifest }).manifest.release : null);
    });
    await observer.subscribeAsync(DEVICES.map((id) => topics.desired(id)), { qos: 1 });
  }

  const seed = (reg: StoreRegistry) => seedClusterFleet(reg, fx, dir, DEVICES);

  async function startReplica(name: string, registry: StoreRegistry, url: string): Promise<EngineReplica> {
    const r = await startEngineReplica({ name, registry, url, brokerUrl: broker!.url, dataDir: dir, tickSeconds: TICK_SECONDS, timings: { pollMs: 250, renewMs: 250, queryTimeoutMs: 1000, sessionIdleTimeoutMs: 3000 }, log: captureLogger().log });
    replicas.push(r);
    return r;
  }

  /** The release each device's retained desired names, as a device subscribed to its topic sees it. */
  const desired = new Map<string, number | null>();
  const installed = (reg: StoreRegistry, id: string) => {
    const ev: DeviceEvent = { v: 1, deviceId: id, at: new Date().toISOString(), type: 'installed', model: MODEL, release: 2, sha256: null };
    // What ingest does on whichever replica received the event: its rollout effect, in the registry.
    return reg.tx((tx, t) => applyDeviceEventSteps(tx, t, ev, new Date()));
  };
  const rolloutState = async (reg: StoreRegistry, id: string) => (await reg.q.select({ s: reg.t.rollouts.state }).from(reg.t.rollouts).where(eq(reg.t.rollouts.id, id)))[0]?.s;
  const refusals = async (m: PromRegistry) => (await m.getSingleMetric('apprentice_cluster_fence_refusals_total')!.get()).values.find((v) => v.labels.kind === 'publish')?.value ?? 0;

  it('the follower stores a rollout, the leader gives it; after the leader stops the other completes it; the stale publishes are refused', async (ctx) => {
    const regA = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const regB = await pg.openAnother();
    await seed(regA);
    await brokerAndObserver();

    // One leader (what /healthz reports), one follower.
    const a = await startReplica('a', regA, url);
    await expect.poll(() => a.replica.status().role, { timeout: 10_000 }).toBe('leader');
    const b = await startReplica('b', regB, url);
    await new Promise((r) => setTimeout(r, 1000));
    expect(b.replica.status()).toEqual({ role: 'follower', epoch: null, running: [] });
    const epochA = a.replica.status().epoch!;
    await expect.poll(() => a.replica.status().running, { timeout: 5_000 }).toEqual(['rollouts']);
    expect(a.replica.status()).toEqual({ role: 'leader', epoch: epochA, running: ['rollouts'] });

    // Created through the follower (its API): stored as pending, nothing published by it.
    const created = await b.engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [0.25, 1], soakSeconds: 0 });
    expect(created.state).toBe('pending');
    const t0 = Date.now();
    // The leader's tick reads it from the registry and gives the canary its release.
    await expect.poll(() => rolloutState(regA, created.id), { timeout: 5_000, interval: 100 }).toBe('canary');
    const followerToLeaderMs = Date.now() - t0;
    expect(followerToLeaderMs).toBeLessThan(TICK_SECONDS * 1000 + 2000);
    const canary = (await regA.q.select().from(regA.t.rolloutDevices).where(eq(regA.t.rolloutDevices.rolloutId, created.id))).filter((d) => d.wave === 0).map((d) => d.deviceId);
    expect(canary).toHaveLength(1);
    await expect.poll(() => desired.get(canary[0]!), { timeout: 5_000 }).toBe(2);

    // The canary installs (through any replica's ingest: the registry): the leader moves to the fleet wave.
    await installed(regB, canary[0]!);
    await expect.poll(() => rolloutState(regA, created.id), { timeout: 5_000, interval: 100 }).toBe('fleet');
    const fleet = DEVICES.filter((d) => d !== canary[0]);
    for (const id of fleet) await expect.poll(() => desired.get(id), { timeout: 5_000 }).toBe(2);

    // The leader stops mid-rollout (the fleet has not installed yet): b takes over under the next epoch.
    const stoppedAt = Date.now();
    await a.stop();
    await expect.poll(() => b.replica.status().role, { timeout: TAKEOVER_BOUND_MS, interval: 100 }).toBe('leader');
    const takeoverMs = Date.now() - stoppedAt;
    expect(takeoverMs).toBeLessThan(TAKEOVER_BOUND_MS);
    const epochB = b.replica.status().epoch!;
    expect(epochB).toBe(epochA + 1);
    await expect.poll(() => b.replica.status().running, { timeout: 5_000 }).toEqual(['rollouts']);
    expect(a.replica.status().role).toBe('stopped');

    // b's engine resumes the rollout from the registry and completes it as the fleet installs.
    for (const id of fleet) await installed(regA, id);
    await expect.poll(() => rolloutState(regB, created.id), { timeout: 5_000, interval: 100 }).toBe('completed');

    // The old leader's publisher can no longer publish, and says so in its metrics.
    const before = await refusals(a.metrics);
    await expect(a.publisher.publishDesired('d1', signManifest(fx.manifest(9, artifactBytes(9)), fx.key))).rejects.toBeInstanceOf(StaleLeaderError);
    expect(await refusals(a.metrics)).toBe(before + 1);
    // A leader that still believes it holds epochA (paused, then resumed) is refused by the fence too.
    const metrics = new PromRegistry();
    const stale = openFence(url, { metrics });
    try {
      const publish = stale.fence.guardPublish({ epoch: () => epochA }, 'rollout.desired', (id: string) => a.publisher.publishDesired(id, signManifest(fx.manifest(9, artifactBytes(9)), fx.key)));
      const err = await publish('d1').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StaleLeaderError);
      expect(err).toMatchObject({ myEpoch: epochA, currentEpoch: epochB });
      expect(await refusals(metrics)).toBe(1);
    } finally {
      await stale.close();
    }
    // Nothing the stale replica tried reached a device.
    await new Promise((r) => setTimeout(r, 500));
    for (const id of DEVICES) expect(desired.get(id)).toBe(2);
    console.info(`[replica-services] follower's rollout acted on by the leader after ${followerToLeaderMs} ms (tick ${TICK_SECONDS} s); takeover after stop ${takeoverMs} ms`);
  }, 60_000);

  it('kill -9 of the leader process mid-rollout: another of 3 processes leads within 15 s under the next epoch and completes the rollout; the old epoch is refused', async (ctx) => {
    const reg = await pg.open(ctx);
    const url = await pg.url!(ctx);
    await seed(reg);
    await brokerAndObserver();
    const spawnReplica = (name: string) => {
      const p = new ProcessReplica(name, url, { script: ENGINE_PROCESS, args: [broker!.url, dir, String(TICK_SECONDS)] });
      processes.push(p);
      return p;
    };
    const first = spawnReplica('p1');
    const { e: lead1 } = await nextLeader([first], 0, 30_000);
    const others = [spawnReplica('p2'), spawnReplica('p3')];
    for (const p of others) await p.next((e) => e.ev === 'ready', 30_000, 'ready');
    expect(others.flatMap((p) => p.leaderEvents())).toEqual([]);

    // The rollout is created where the API runs: an engine that does not lead (it only writes the registry).
    const api = new RolloutEngine({ registry: reg, publisher: new ReleasePublisher({ mqtt: { publish: () => Promise.reject(new Error('a follower publishes nothing')) } }), reissue: () => Promise.reject(new Error('none')), leads: () => false });
    const created = await api.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [0.25, 1], soakSeconds: 0 });
    expect(created.state).toBe('pending');
    await expect.poll(() => rolloutState(reg, created.id), { timeout: 10_000, interval: 100 }).toBe('canary');
    const canary = (await reg.q.select().from(reg.t.rolloutDevices).where(eq(reg.t.rolloutDevices.rolloutId, created.id))).find((d) => d.wave === 0)!.deviceId;
    await expect.poll(() => desired.get(canary), { timeout: 10_000 }).toBe(2);
    expect(await installed(reg, canary)).toMatchObject({ rolloutId: created.id, to: 'installed' });
    await expect.poll(() => rolloutState(reg, created.id), { timeout: 10_000, interval: 100 }).toBe('fleet');
    const fleet = DEVICES.filter((d) => d !== canary);
    for (const id of fleet) await expect.poll(() => desired.get(id), { timeout: 10_000 }).toBe(2);

    const killedAt = Date.now();
    first.signal('SIGKILL');
    const { r: winner, e: lead2 } = await nextLeader(others, lead1.epoch!, TAKEOVER_BOUND_MS);
    const takeoverMs = lead2.t - killedAt;
    expect(takeoverMs).toBeLessThan(TAKEOVER_BOUND_MS);
    expect(lead2.epoch).toBe(lead1.epoch! + 1);
    for (const id of fleet) await installed(reg, id);
    await expect.poll(() => rolloutState(reg, created.id), { timeout: 10_000, interval: 100 }).toBe('completed');
    expect(others.filter((p) => p !== winner).flatMap((p) => p.leaderEvents())).toEqual([]);

    const metrics = new PromRegistry();
    const stale = openFence(url, { metrics });
    try {
      const err = await stale.fence.check(lead1.epoch!, 'rollout.desired', 'publish').catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'StaleLeaderError', myEpoch: lead1.epoch, currentEpoch: lead2.epoch });
      expect(await refusals(metrics)).toBe(1);
    } finally {
      await stale.close();
    }
    console.info(`[replica-services] kill -9 of the leader process: ${winner.name} led after ${takeoverMs} ms (epoch ${lead2.epoch})`);
  }, 120_000);
});
