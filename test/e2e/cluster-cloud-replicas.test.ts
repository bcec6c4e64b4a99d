/**
 * Issue 15 items 4 and 6 (first proof) with the real cloud: three `apprentice cloud` processes with
 * cluster.enabled on one throwaway PostgreSQL registry, shared keys and one Mosquitto, each subscribed to the
 * device topics through `$share` on MQTT 5. /healthz names one leader (and its epoch) and two followers.
 * The devices are provisioned through the replicas' API and speak the device protocol over MQTT with their
 * own logins, checked by the broker (password file and ACL as `apprentice broker-auth` writes them, reloaded
 * after provisioning) (test/integration/fleet/device-sim.ts: verify the signed desired state, fetch the retained
 * chunks, then `installed`, the retained status, telemetry and, after a health window, `committed`).
 * A rollout created through a FOLLOWER's API is given by the leader; the canary's install advances it to the
 * fleet wave; kill -9 of the leader while the fleet devices have not installed yet (held: a slow link):
 * another replica reports leader under the next epoch within 15 s and completes the rollout from the
 * registry once the fleet installs; the dead leader's epoch is refused by the fence. The replicas' ingest
 * counters show device events accepted by followers: they reached the leader's engine only through the registry.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import mqttLib, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { openFence } from '../../cloud/cluster/fence.js';
import { openArtifacts } from '../../cloud/artifacts/index.js';
import { KeyStore } from '../../cloud/keys/store.js';
import { ACL_FILE, DEFAULT_CLOUD_USER, PASSWD_FILE, writeBrokerAuth } from '../../cloud/provision/broker-auth.js';
import { reloadMosquittoAuth } from '../../cloud/provision/reload.js';
import type { StoreRegistry } from '../../cloud/registry/open.js';
import { silentLogger } from '../../shared/log/index.js';
import { signManifest, type SigningKey } from '../../shared/manifest/index.js';
import { parseTopic, topics, type Manifest } from '../../shared/protocol/index.js';
import { skipWithoutMosquitto, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { sharedClusterKeys, spawnCloud, writeReplicaConfig, type CloudChild } from '../helpers/cloud-process.js';
import { registryDialects } from '../helpers/dialects.js';
import { SimDevice } from '../integration/fleet/device-sim.js';
import type { ProvisionedDevice } from './fault-harness.js';
import { FleetFixture, MODEL, artifactBytes } from '../unit/fleet/fixtures.js';

const TOKEN = 'cluster-admin-token-0123456789';
const TAKEOVER_BOUND_MS = 15_000;
const DEVICES = ['d1', 'd2', 'd3', 'd4'];
/** A daemon's health window before `committed`, shortened. */
const COMMIT_AFTER_MS = 300;
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
    readonly configFile: string,
  ) {
    this.proc = spawnCloud(configFile);
    this.child = this.proc.child;
  }
  async health(): Promise<Health | undefined> {
    const res = await fetch(`${this.apiUrl}/healthz`).catch(() => undefined);
    return res?.ok ? ((await res.json()) as Health) : undefined;
  }
  async call(method: string, path: string, body?: unknown): Promise<Response> {
    return fetch(`${this.apiUrl}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  }
  /** Device events this replica's ingest accepted (apprentice_cloud_ingest_messages_total{kind="events",result="accepted"}). */
  async eventsAccepted(): Promise<number> {
    const text = await (await this.call('GET', '/metrics')).text();
    const line = text.split('\n').find((l) => l.startsWith('apprentice_cloud_ingest_messages_total{') && l.includes('kind="events"') && l.includes('result="accepted"'));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
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
  const devices: SimDevice[] = [];
  let broker: MosquittoBroker | undefined;
  let observer: MqttClient | undefined;

  afterAll(async () => {
    for (const d of devices) await d.close().catch(() => undefined);
    for (const c of clouds) if (c.alive()) c.child.kill('SIGKILL');
    await observer?.endAsync();
    await broker?.stop();
    await pg.close();
    rmSync(root, { recursive: true, force: true });
  }, 30_000);

  /** Model MODEL with releases 1 and 2 (2's parent is 1), signed with the cluster's active key, artifacts in the registry. Returns release 1's sha256. */
  async function seed(reg: StoreRegistry, fx: FleetFixture, key: SigningKey): Promise<string> {
    await reg.q.insert(reg.t.models).values({ name: MODEL, inputSpec: { shape: [4], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' }, labels: ['a', 'b'], teacher: { files: [], outputKind: 'logits' }, studentSpec: 'mlp', distillSettings: {} });
    // Artifacts live in the registry on PostgreSQL (issue 15 item 3): every replica reads them there.
    const { blobs } = openArtifacts({ registry: reg, dataDir: join(root, 'seed'), log: silentLogger });
    let first = '';
    for (const [seq, parent] of [
      [1, null],
      [2, 1],
    ] as const) {
      const bytes = artifactBytes(seq);
      const { sha256, relPath } = await blobs.put('model', bytes);
      if (seq === 1) first = sha256;
      const signed = signManifest(fx.manifest(seq, bytes, { parent }), key);
      await reg.q.insert(reg.t.releases).values({ model: MODEL, seq, sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: {}, manifest: signed.manifest, signature: signed.signature, parentSeq: parent, artifactPath: relPath });
    }
    return first;
  }

  it('devices over MQTT: one leader by /healthz; a follower-created rollout is given by the leader; kill -9 of the leader: another leads within 15 s at epoch+1 and completes it from events ingested by any replica', async (ctx) => {
    const t0 = Date.now();
    const reg = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const shared = sharedClusterKeys(root);
    const fx = new FleetFixture(join(root, 'fixture'));
    let release1: string;
    try {
      release1 = await seed(reg, fx, KeyStore.open({ dir: shared }).active());
    } finally {
      fx.dispose();
    }
    // Mosquitto with logins and the ACL (`apprentice broker-auth`): the cloud's user now, each device's once
    // provisioned. (One cloud user for the three replicas, each with its own client id.)
    const auth = { authDir: join(root, 'auth'), pidFile: join(root, 'mosquitto.pid'), cloudPasswordFile: join(root, 'cloud-mqtt-password') };
    const cloudLogin = { username: DEFAULT_CLOUD_USER, password: 'cloud-mqtt-password-0123456789' };
    writeFileSync(auth.cloudPasswordFile, `${cloudLogin.password}\n`, { mode: 0o600 });
    await writeBrokerAuth({ registry: reg, outDir: auth.authDir, cloudPasswordFile: auth.cloudPasswordFile });
    broker = await startMosquitto({
      fullConfig: ({ port }) =>
        ['per_listener_settings false', 'allow_anonymous false', `password_file ${join(auth.authDir, PASSWD_FILE)}`, `acl_file ${join(auth.authDir, ACL_FILE)}`, `listener ${port} 127.0.0.1`, 'log_dest stderr', 'log_type error', 'log_type warning', ''].join('\n'),
    });
    writeFileSync(auth.pidFile, `${broker.pid}\n`);
    const desired = new Map<string, number | null>();
    observer = await mqttLib.connectAsync(broker.url, { clientId: 'observer', ...cloudLogin });
    observer.on('message', (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.type === 'device' && t.kind === 'desired') desired.set(t.deviceId, payload.length ? (JSON.parse(payload.toString()) as { manifest: Manifest }).manifest.release : null);
    });
    await observer.subscribeAsync(DEVICES.map((id) => topics.desired(id)), { qos: 1 });

    for (const id of ['r1', 'r2', 'r3']) {
      const { file, apiUrl } = await writeReplicaConfig(root, id, { registryUrl: url, brokerUrl: broker.url, sharedDir: shared, adminToken: TOKEN, mqtt: { protocolVersion: 5, ...cloudLogin }, extra: { rollouts: { tickSeconds: 1 } } });
      clouds.push(new CloudProcess(id, apiUrl, file));
    }
    for (const c of clouds) {
      await waitFor(async () => {
        if (!c.alive()) throw new Error(`cloud ${c.id} exited: ${c.stderr}`);
        return (await c.health())?.status === 'ok';
      }, 90_000, { intervalMs: 200, message: `cloud ${c.id} /healthz` });
    }
    const startedMs = Date.now() - t0;
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

    // Each device is provisioned through a replica's API (round robin) and logs in with its bundle, on release 1.
    const bundles: ProvisionedDevice[] = [];
    for (const [i, id] of DEVICES.entries()) {
      const res = await clouds[i % clouds.length]!.call('POST', '/v1/devices', { id, groups: ['lab'] });
      const bundle = (await res.json()) as ProvisionedDevice;
      expect(res.status, JSON.stringify(bundle)).toBe(201);
      bundles.push(bundle);
    }
    // The operator's `apprentice broker-auth` + reload: the provisioned devices' logins reach the broker.
    expect(await reloadMosquittoAuth(reg, auth)).toMatchObject({ devices: DEVICES.length, pid: broker.pid });
    await expect(mqttLib.connectAsync(broker.url, { clientId: 'intruder', username: DEVICES[0], password: 'not-its-password', reconnectPeriod: 0 })).rejects.toThrow(/Not authorized|Bad username or password/i);
    for (const bundle of bundles) {
      const id = bundle.deviceId;
      devices.push(
        await SimDevice.connect(bundle.mqtt.url, id, bundle.trustedKeys.map((k) => ({ keyId: k.keyId, publicKeyPem: k.publicKeyPem })), {
          login: { username: bundle.mqtt.username, password: bundle.mqtt.password, clientId: id },
          running: { release: 1, sha256: release1 },
          commitAfterMs: COMMIT_AFTER_MS,
        }),
      );
    }
    const deviceRow = async (id: string) => (await reg.q.select().from(reg.t.devices).where(eq(reg.t.devices.id, id)))[0];
    // Their statuses were ingested (by whichever replica the share gave them to): online on release 1.
    for (const id of DEVICES) await expect.poll(async () => { const r = await deviceRow(id); return [r?.online, r?.runningSeq]; }, { timeout: 15_000, interval: 200 }).toEqual([true, 1]);

    // Every device holds what it receives (a slow link) until told: the canary once known, the fleet after the kill.
    for (const d of devices) d.hold();
    // Created through a follower's API: stored there, given by the leader.
    const res = await followers[0]!.call('POST', '/v1/rollouts', { model: MODEL, release: 2, target: 'all', waves: [0.25, 1], soakSeconds: 0 });
    const body = (await res.json()) as { id: string; state: string };
    expect(res.status, JSON.stringify(body)).toBe(201);
    expect(body.state).toBe('pending');
    const members = async () => reg.q.select().from(reg.t.rolloutDevices).where(eq(reg.t.rolloutDevices.rolloutId, body.id));
    const state = async () => (await reg.q.select({ s: reg.t.rollouts.state }).from(reg.t.rollouts).where(eq(reg.t.rollouts.id, body.id)))[0]?.s;
    await expect.poll(state, { timeout: 15_000, interval: 200 }).toBe('canary');
    const canary = (await members()).find((d) => d.wave === 0)!.deviceId;
    const fleet = DEVICES.filter((d) => d !== canary);
    await devices.find((d) => d.id === canary)!.release();
    // The canary installs over MQTT: its events, status and telemetry are ingested by any replica; the
    // leader's engine sees them in the registry and starts the fleet wave.
    await expect.poll(() => desired.get(canary), { timeout: 10_000 }).toBe(2);
    await expect.poll(state, { timeout: 20_000, interval: 200 }).toBe('fleet');
    expect(devices.find((d) => d.id === canary)!.installed).toEqual([2]);
    for (const id of fleet) await expect.poll(() => desired.get(id), { timeout: 10_000 }).toBe(2);
    for (const d of devices.filter((x) => x.id !== canary)) await expect.poll(() => d.waiting, { timeout: 10_000 }).toBeGreaterThan(0);
    // The canary's events (installed, committed) are all stored before the kill: the counters below are final for the leader.
    const eventRows = async () => (await reg.q.select().from(reg.t.deviceEvents)).map((e) => `${e.deviceId}:${e.type}`).sort();
    const sent = () => devices.flatMap((d) => d.events.map((e) => `${d.id}:${e.type}`)).sort();
    await expect.poll(eventRows, { timeout: 10_000, interval: 200 }).toEqual([`${canary}:committed`, `${canary}:installed`]);
    expect(sent()).toEqual([`${canary}:committed`, `${canary}:installed`]);
    const acceptedBeforeKill = await Promise.all(clouds.map(async (c) => [c.id, await c.eventsAccepted()] as const));

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
    const follower = followers.find((c) => c !== next)!;
    expect((await follower.health())?.role).toBe('follower');

    // The fleet installs now (installed, status, telemetry, then committed after the health window). Mosquitto
    // keeps the dead leader's MQTT 5 session in the $share group for its expiry and queues its turn of these
    // there (README "Session expiry"); the live replicas ingest the rest, and the new leader's engine takes the
    // installs from the registry: events, or the status it reconciles on.
    const releasedAt = Date.now();
    for (const d of devices) await d.release();
    for (const d of devices) await expect.poll(() => d.events.map((e) => e.type), { timeout: 10_000 }).toEqual(['installed', 'committed']);
    for (const d of devices) expect([d.id, d.installed, d.refused]).toEqual([d.id, [2], []]);
    // Settled: the live replicas' counters stay put for a second and account for every stored event.
    const leaderBeforeKill = acceptedBeforeKill.find(([id]) => id === leader.id)![1];
    const live = async () => (await next!.eventsAccepted()) + (await follower.eventsAccepted());
    let storedBeforeRestart = -1;
    await waitFor(async () => {
      const before = await live();
      await new Promise((r) => setTimeout(r, 1_000));
      const n = (await eventRows()).length;
      if ((await live()) !== before || n !== leaderBeforeKill + before) return false;
      storedBeforeRestart = n;
      return true;
    }, 20_000, { intervalMs: 100, message: 'live ingest settled' });
    const stateBeforeRestart = await state();

    // The killed replica comes back (as systemd restarts it) under its id, so its MQTT session: it ingests what
    // was queued for it, as a follower; the new leader keeps leading.
    const back = new CloudProcess(leader.id, leader.apiUrl, leader.configFile);
    clouds.push(back);
    await waitFor(async () => {
      if (!back.alive()) throw new Error(`cloud ${back.id} exited: ${back.stderr}`);
      return (await back.health())?.status === 'ok';
    }, 90_000, { intervalMs: 200, message: `cloud ${back.id} /healthz after its restart` });
    expect((await back.health())?.role).toBe('follower');
    expect((await next!.health())?.role).toBe('leader');

    await expect.poll(state, { timeout: 30_000, interval: 200 }).toBe('completed').catch(async (err: Error) => {
      throw new Error(`${err.message}: members ${JSON.stringify((await members()).map((m) => [m.deviceId, m.state]))}; stderr ${clouds.map((c) => `${c.id}: ${c.stderr.slice(-1500)}`).join(' | ')}`);
    });
    expect((await members()).map((m) => m.state).sort()).toEqual(DEVICES.map(() => 'installed'));
    // Every event the devices sent is in the registry once, the queued ones included.
    await expect.poll(eventRows, { timeout: 15_000, interval: 200 }).toEqual(sent());
    const total = sent().length;
    expect(total).toBe(2 * DEVICES.length);

    // Each event was accepted by exactly one replica: the dead leader before the kill, the others up to now.
    const acceptedAfter = await Promise.all([next!, follower, back].map(async (c) => [c === back ? `${c.id}(restarted)` : c.id, await c.eventsAccepted()] as const));
    expect(leaderBeforeKill + acceptedAfter.reduce((n, [, v]) => n + v, 0)).toBe(total);
    // Accepted by replicas while they were followers: these events reached the leader's engine through the registry only.
    // (The new leader's count before the kill, when it followed; the other follower's and the restarted replica's in all.)
    const byFollowers = acceptedBeforeKill.find(([id]) => id === next!.id)![1] + acceptedAfter[1]![1] + acceptedAfter[2]![1];
    expect(byFollowers).toBeGreaterThan(0);
    // What Mosquitto queued in the dead leader's session reached the registry through that replica once it was back.
    expect(acceptedAfter[2]![1]).toBe(total - storedBeforeRestart);
    const transitions = await reg.q.select().from(reg.t.rolloutTransitions).where(eq(reg.t.rolloutTransitions.rolloutId, body.id));
    // When the rollout completed, by its own transition (the restart above may have come after it).
    const completedMs = Date.parse(transitions.find((x) => x.deviceId === null && x.toState === 'completed')!.at) - releasedAt;
    const installedBy = transitions.filter((x) => x.toState === 'installed' && x.deviceId).map((x) => `${x.deviceId}: ${x.reason ?? ''}`);

    const stale = openFence(url);
    try {
      await expect(stale.fence.check(epoch1, 'rollout.desired', 'publish')).rejects.toMatchObject({ name: 'StaleLeaderError', myEpoch: epoch1, currentEpoch: epoch2 });
    } finally {
      await stale.close();
    }
    console.info(
      `[cluster-cloud-replicas] replicas up in ${startedMs} ms; kill -9 of leader ${leader.id}: ${next!.id} reported leader (epoch ${epoch2}) after ${takeoverMs} ms; events accepted before the kill ${JSON.stringify(Object.fromEntries(acceptedBeforeKill))}, at the end ${JSON.stringify(Object.fromEntries(acceptedAfter))}; ${total - storedBeforeRestart} of ${total} events waited in the dead leader's session (rollout ${stateBeforeRestart} before its restart; completed ${completedMs} ms after the fleet was released, ${completedMs + releasedAt - killedAt} ms after the kill); installs recorded: ${JSON.stringify(installedBy)}; test ${Date.now() - t0} ms`,
    );
  }, 180_000);
});
