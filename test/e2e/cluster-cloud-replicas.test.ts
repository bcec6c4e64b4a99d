/**
 * Issue 15 items 4 and 6 (first proof) with the real cloud: three `apprentice cloud` processes with
 * cluster.enabled on one throwaway PostgreSQL registry, shared keys and one Mosquitto. /healthz names one
 * leader (and its epoch) and two followers; a rollout created through a FOLLOWER's API is given by the
 * leader; kill -9 of the leader mid-rollout: another replica reports leader under the next epoch within
 * 15 s and completes the rollout from the registry; the dead leader's epoch is refused by the fence.
 * Device installs are applied to the registry as any replica's ingest applies them.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import mqttLib, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { openFence } from '../../cloud/cluster/fence.js';
import { openArtifacts } from '../../cloud/artifacts/index.js';
import { openRegistry, type StoreRegistry } from '../../cloud/registry/open.js';
import { applyDeviceEventSteps } from '../../cloud/rollouts/store.js';
import { silentLogger } from '../../shared/log/index.js';
import { signManifest } from '../../shared/manifest/index.js';
import { parseTopic, topics, type Manifest } from '../../shared/protocol/index.js';
import { skipWithoutMosquitto, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { sharedClusterKeys, spawnCloud, writeReplicaConfig, type CloudChild } from '../helpers/cloud-process.js';
import { registryDialects } from '../helpers/dialects.js';
import { FleetFixture, MODEL, artifactBytes } from '../unit/fleet/fixtures.js';

const TOKEN = 'cluster-admin-token-0123456789';
const TAKEOVER_BOUND_MS = 15_000;
const DEVICES = ['d1', 'd2', 'd3', 'd4'];
const pg = registryDialects().find((d) => d.name === 'postgres')!;

interface Health {
  status: string;
  role: string;
  epoch: number | null;
}

class CloudProcess {
  readonly child: ChildProcess;
  private readonly proc: CloudChild;
  constructor(
    readonly id: string,
    readonly apiUrl: string,
    configFile: string,
  ) {
    this.proc = spawnCloud(configFile);
    this.child = this.proc.child;
  }
  async health(): Promise<Health | undefined> {
    const res = await fetch(`${this.apiUrl}/healthz`).catch(() => undefined);
    return res?.ok ? ((await res.json()) as Health) : undefined;
  }
  get stderr(): string {
    return this.proc.stderr();
  }
  alive(): boolean {
    return this.proc.alive();
  }
}

describe.skipIf(skipWithoutMosquitto())('3 cloud processes with cluster.enabled on PostgreSQL and Mosquitto', () => {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-cluster-clouds-'));
  const clouds: CloudProcess[] = [];
  let broker: MosquittoBroker | undefined;
  let observer: MqttClient | undefined;

  afterAll(async () => {
    for (const c of clouds) if (c.alive()) c.child.kill('SIGKILL');
    await observer?.endAsync();
    await broker?.stop();
    await pg.close();
    rmSync(root, { recursive: true, force: true });
  }, 30_000);

  async function seed(reg: StoreRegistry, fx: FleetFixture): Promise<void> {
    await reg.q.insert(reg.t.models).values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} });
    // Artifacts live in the registry on PostgreSQL (issue 15 item 3): every replica reads them there.
    const { blobs } = openArtifacts({ registry: reg, dataDir: join(root, 'seed'), log: silentLogger });
    for (const [seq, parent] of [
      [1, null],
      [2, 1],
    ] as const) {
      const bytes = artifactBytes(seq);
      const { sha256, relPath } = await blobs.put('model', bytes);
      const signed = signManifest(fx.manifest(seq, bytes, { parent }), fx.key);
      await reg.q.insert(reg.t.releases).values({ model: MODEL, seq, sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: {}, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath: relPath });
    }
    const at = new Date().toISOString();
    await reg.q.insert(reg.t.devices).values(DEVICES.map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true, runningSeq: 1, desiredSeq: 1, lastSeen: at })));
  }

  it('one leader by /healthz; a follower-created rollout is given by the leader; kill -9 of the leader: another leads within 15 s at epoch+1 and completes it', async (ctx) => {
    const reg = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const fx = new FleetFixture(join(root, 'fixture'));
    try {
      await seed(reg, fx);
    } finally {
      fx.dispose();
    }
    const shared = sharedClusterKeys(root);
    broker = await startMosquitto();
    const desired = new Map<string, number | null>();
    observer = await mqttLib.connectAsync(broker.url, { clientId: 'observer' });
    observer.on('message', (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.type === 'device' && t.kind === 'desired') desired.set(t.deviceId, payload.length ? (JSON.parse(payload.toString()) as { manifest: Manifest }).manifest.release : null);
    });
    await observer.subscribeAsync(DEVICES.map((id) => topics.desired(id)), { qos: 1 });

    for (const id of ['r1', 'r2', 'r3']) {
      const { file, apiUrl } = await writeReplicaConfig(root, id, { registryUrl: url, brokerUrl: broker.url, sharedDir: shared, adminToken: TOKEN, extra: { rollouts: { tickSeconds: 1 } } });
      clouds.push(new CloudProcess(id, apiUrl, file));
    }
    for (const c of clouds) {
      await waitFor(async () => {
        if (!c.alive()) throw new Error(`cloud ${c.id} exited: ${c.stderr}`);
        return (await c.health())?.status === 'ok';
      }, 90_000, { intervalMs: 200, message: `cloud ${c.id} /healthz` });
    }
    // Exactly one leader (with an epoch), two followers (without).
    let roles: (Health | undefined)[] = [];
    await waitFor(async () => {
      roles = await Promise.all(clouds.map((c) => c.health()));
      return roles.filter((h) => h?.role === 'leader').length === 1 && roles.filter((h) => h?.role === 'follower').length === 2;
    }, 15_000, { intervalMs: 200, message: 'one leader and two followers' });
    const leader = clouds[roles.findIndex((h) => h?.role === 'leader')]!;
    const epoch1 = roles.find((h) => h?.role === 'leader')!.epoch!;
    expect(epoch1).toBeGreaterThan(0);
    for (const h of roles.filter((x) => x?.role === 'follower')) expect(h!.epoch).toBeNull();
    const followers = clouds.filter((c) => c !== leader);

    // Created through a follower's API: stored there, given by the leader.
    const res = await fetch(`${followers[0]!.apiUrl}/v1/rollouts`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, release: 2, target: 'all', waves: [0.25, 1], soakSeconds: 0 }) });
    const body = (await res.json()) as { id: string; state: string };
    expect(res.status, JSON.stringify(body)).toBe(201);
    expect(body.state).toBe('pending');
    const state = async () => (await reg.q.select({ s: reg.t.rollouts.state }).from(reg.t.rollouts).where(eq(reg.t.rollouts.id, body.id)))[0]?.s;
    await expect.poll(state, { timeout: 15_000, interval: 200 }).toBe('canary');
    const canary = (await reg.q.select().from(reg.t.rolloutDevices).where(eq(reg.t.rolloutDevices.rolloutId, body.id))).find((d) => d.wave === 0)!.deviceId;
    await expect.poll(() => desired.get(canary), { timeout: 10_000 }).toBe(2);
    // What ingest stores on any replica: the install event's rollout effect, then the device's healthy telemetry
    // on the new release (the canary's evidence before the fleet wave).
    const installed = async (id: string) => {
      await reg.tx((tx, t) => applyDeviceEventSteps(tx, t, { v: 1, deviceId: id, at: new Date().toISOString(), type: 'installed', model: MODEL, release: 2, sha256: null }, new Date()));
      await reg.q.update(reg.t.devices).set({ lastTelemetry: { release: 2, health: 'ok' } }).where(eq(reg.t.devices.id, id));
    };
    await installed(canary);
    await expect.poll(state, { timeout: 15_000, interval: 200 }).toBe('fleet');
    const fleet = DEVICES.filter((d) => d !== canary);
    for (const id of fleet) await expect.poll(() => desired.get(id), { timeout: 10_000 }).toBe(2);

    // kill -9 the leader mid-rollout (the fleet has not installed).
    const killedAt = Date.now();
    leader.child.kill('SIGKILL');
    let next: CloudProcess | undefined;
    let epoch2 = 0;
    await waitFor(async () => {
      for (const c of followers) {
        const h = await c.health();
        if (h?.role === 'leader') {
          next = c;
          epoch2 = h.epoch!;
          return true;
        }
      }
      return false;
    }, TAKEOVER_BOUND_MS, { intervalMs: 100, message: 'a new leader by /healthz' });
    const takeoverMs = Date.now() - killedAt;
    expect(takeoverMs).toBeLessThan(TAKEOVER_BOUND_MS);
    expect(epoch2).toBe(epoch1 + 1);
    expect((await followers.find((c) => c !== next)!.health())?.role).toBe('follower');

    for (const id of fleet) await installed(id);
    await expect.poll(state, { timeout: 15_000, interval: 200 }).toBe('completed');

    const stale = openFence(url);
    try {
      await expect(stale.fence.check(epoch1, 'rollout.desired', 'publish')).rejects.toMatchObject({ name: 'StaleLeaderError', myEpoch: epoch1, currentEpoch: epoch2 });
    } finally {
      await stale.close();
    }
    console.info(`[cluster-cloud-replicas] kill -9 of leader ${leader.id}: ${next!.id} reported leader (epoch ${epoch2}) after ${takeoverMs} ms`);
  }, 240_000);
});
