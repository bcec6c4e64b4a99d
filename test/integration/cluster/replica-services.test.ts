/**
 * Issue 15 item 4 with the cloud's own parts: two in-process replicas (cloud/cluster/replica.ts, as
 * cloud/server.ts wires it) on one throwaway PostgreSQL registry and a real Mosquitto. Each has its own
 * registry pool, MQTT client, fenced ReleasePublisher and RolloutEngine; only the elected leader runs the
 * engine. A rollout created through the FOLLOWER's engine (what its API does) is stored only and given by
 * the leader's tick; the leader is stopped mid-rollout; the other replica leads within 15 s under the next
 * epoch and completes the rollout from the registry; the old leader's publishes are refused and counted.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import mqttLib, { type MqttClient } from 'mqtt';
import { Registry as PromRegistry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { openFence, StaleLeaderError } from '../../../cloud/cluster/fence.js';
import { leaderService, Replica } from '../../../cloud/cluster/replica.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { applyDeviceEventSteps } from '../../../cloud/rollouts/store.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { parseTopic, topics, type DeviceEvent, type Manifest } from '../../../shared/protocol/index.js';
import { skipWithoutMosquitto, startMosquitto, type MosquittoBroker } from '../../helpers/broker.js';
import { registryDialects } from '../../helpers/dialects.js';
import { captureLogger } from '../../helpers/log.js';
import { FleetFixture, MODEL, artifactBytes } from '../../unit/fleet/fixtures.js';

const TAKEOVER_BOUND_MS = 15_000;
const TICK_SECONDS = 1;
const pg = registryDialects().find((d) => d.name === 'postgres')!;
const DEVICES = ['d1', 'd2', 'd3', 'd4'];

interface TestReplica {
  name: string;
  replica: Replica;
  engine: RolloutEngine;
  publisher: ReleasePublisher;
  metrics: PromRegistry;
  stop(): Promise<void>;
}

describe.skipIf(skipWithoutMosquitto())('two cloud replicas on PostgreSQL and Mosquitto: leader-only rollout engine, takeover, fenced publishes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'apprentice-replica-services-'));
  const fx = new FleetFixture(join(dir, 'fixture'));
  let broker: MosquittoBroker | undefined;
  let observer: MqttClient | undefined;
  const replicas: TestReplica[] = [];

  afterAll(async () => {
    for (const r of replicas) await r.stop();
    await observer?.endAsync();
    await broker?.stop();
    fx.dispose();
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  async function seed(reg: StoreRegistry): Promise<void> {
    await reg.q.insert(reg.t.models).values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} });
    mkdirSync(join(dir, 'artifacts'), { recursive: true });
    for (const [seq, parent] of [
      [1, null],
      [2, 1],
    ] as const) {
      const bytes = artifactBytes(seq);
      const m = fx.manifest(seq, bytes, { parent });
      const signed = signManifest(m, fx.key);
      const artifactPath = `artifacts/${m.artifact.sha256}.onnx`;
      writeFileSync(join(dir, artifactPath), bytes);
      await reg.q.insert(reg.t.releases).values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: m.metrics, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath });
    }
    const at = new Date().toISOString();
    await reg.q.insert(reg.t.devices).values(DEVICES.map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true, runningSeq: 1, desiredSeq: 1, lastSeen: at })));
  }

  async function startReplica(name: string, reg: StoreRegistry, url: string): Promise<TestReplica> {
    const metrics = new PromRegistry();
    const { log } = captureLogger();
    const replica = new Replica({ clusterUrl: url, holder: name, timings: { pollMs: 250, renewMs: 250, queryTimeoutMs: 1000, sessionIdleTimeoutMs: 3000 }, log, metrics });
    const mqtt = new CloudMqtt({ url: broker!.url, clientId: `apprentice-cloud-${name}`, sharedSubscriptions: false, log });
    await mqtt.start();
    const publisher = new ReleasePublisher({ mqtt: replica.fencedMqtt(mqtt), dataDir: dir, log });
    const engine = new RolloutEngine({
      registry: reg,
      publisher,
      log,
      tickSeconds: TICK_SECONDS,
      requireTelemetry: false,
      reissue: () => Promise.reject(new Error('no re-issue in this test')),
      leads: () => replica.leads(),
    });
    await replica.start([leaderService('rollouts', () => engine.start(), () => engine.stop())]);
    let stopped = false;
    const r: TestReplica = {
      name,
      replica,
      engine,
      publisher,
      metrics,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await replica.stop();
        await mqtt.dispose();
      },
    };
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
    broker = await startMosquitto();
    observer = await mqttLib.connectAsync(broker.url, { clientId: 'observer' });
    observer.on('message', (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.type === 'device' && t.kind === 'desired') desired.set(t.deviceId, payload.length ? (JSON.parse(payload.toString()) as { manifest: Manifest }).manifest.release : null);
    });
    await observer.subscribeAsync(DEVICES.map((id) => topics.desired(id)), { qos: 1 });

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
});
