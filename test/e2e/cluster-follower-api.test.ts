/**
 * Issue 15 item 4 with the real cloud: two `apprentice cloud` processes with cluster.enabled on one
 * throwaway PostgreSQL registry, shared keys and one Mosquitto (cloud/server.ts's own wiring). Through the
 * FOLLOWER's HTTP API: a shadow run is started (201, devices pending) and switched (202, `switching`), and a
 * device is revoked; the leader publishes the shadow manifest, carries out the switch and clears the
 * revoked device's retained desired, as a device-side subscriber sees.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqttLib, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { openArtifacts } from '../../cloud/artifacts/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { topics, type Manifest } from '../../shared/protocol/index.js';
import { skipWithoutMosquitto, startMosquitto, waitFor, type MosquittoBroker } from '../helpers/broker.js';
import { sharedClusterKeys, spawnCloud, waitForCloudApi, writeReplicaConfig, type CloudChild } from '../helpers/cloud-process.js';
import { seedClusterFleet } from '../helpers/cluster-fleet.js';
import { registryDialects } from '../helpers/dialects.js';
import { readRetained } from '../helpers/retained.js';
import { FleetFixture, MODEL } from '../unit/fleet/fixtures.js';

const TOKEN = 'cluster-admin-token-0123456789';
const DEVICES = ['d1', 'd2', 'd3'];
const pg = registryDialects().find((d) => d.name === 'postgres')!;

describe.skipIf(skipWithoutMosquitto())('2 cloud processes with cluster.enabled: the shadow and revoke API on the follower', () => {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-cluster-follower-api-'));
  const clouds: CloudChild[] = [];
  let broker: MosquittoBroker | undefined;
  let observer: MqttClient | undefined;

  afterAll(async () => {
    for (const c of clouds) if (c.alive()) c.child.kill('SIGKILL');
    await observer?.endAsync();
    await broker?.stop();
    await pg.close();
    rmSync(root, { recursive: true, force: true });
  }, 30_000);

  it('a shadow run started and switched, and a device revoked, through the follower: the leader publishes them', async (ctx) => {
    const reg = await pg.open(ctx);
    const url = await pg.url!(ctx);
    const fx = new FleetFixture(join(root, 'fixture'));
    try {
      // Artifacts in the registry (issue 15 item 3): every replica reads them there.
      const { blobs } = openArtifacts({ registry: reg, dataDir: join(root, 'seed'), log: silentLogger });
      await seedClusterFleet(reg, fx, root, DEVICES, async (bytes) => (await blobs.put('model', bytes)).relPath);
    } finally {
      fx.dispose();
    }
    const shared = sharedClusterKeys(root);
    broker = await startMosquitto();
    const desired = new Map<string, number | null>();
    observer = await mqttLib.connectAsync(broker.url, { clientId: 'observer' });
    observer.on('message', (topic, payload) => {
      const id = DEVICES.find((d) => topics.desired(d) === topic);
      if (id) desired.set(id, payload.length ? (JSON.parse(payload.toString()) as { manifest: Manifest }).manifest.release : null);
    });
    await observer.subscribeAsync(DEVICES.map((id) => topics.desired(id)), { qos: 1 });

    const apis: string[] = [];
    for (const id of ['r1', 'r2']) {
      const { file, apiUrl } = await writeReplicaConfig(root, id, { registryUrl: url, brokerUrl: broker.url, sharedDir: shared, adminToken: TOKEN, extra: { rollouts: { tickSeconds: 1 } } });
      const c = spawnCloud(file);
      clouds.push(c);
      apis.push(apiUrl);
      await waitForCloudApi(c, apiUrl, 90_000);
    }
    const role = async (api: string) => ((await (await fetch(`${api}/healthz`)).json()) as { role: string }).role;
    let follower = '';
    await waitFor(async () => {
      const roles = await Promise.all(apis.map(role));
      follower = apis[roles.indexOf('follower')] ?? '';
      return roles.includes('leader') && follower !== '';
    }, 15_000, { intervalMs: 200, message: 'one leader, one follower' });
    // The leader's start retained every device's desired release 1.
    for (const id of DEVICES) await waitFor(() => desired.get(id) === 1, 10_000, { message: `${id} desired 1` });

    const call = (method: string, path: string, body?: unknown) =>
      fetch(`${follower}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
    const created = await call('POST', '/v1/rollouts', { model: MODEL, release: 2, target: { devices: ['d1', 'd2'] }, waves: [1], soakSeconds: 0, shadow: { minutes: 30 } });
    expect(created.status).toBe(201);
    const run = (await created.json()) as { id: string; shadowRelease: number; devices: { state: string }[] };
    expect(run.devices.map((d) => d.state)).toEqual(['pending', 'pending']);
    for (const id of ['d1', 'd2']) await waitFor(() => desired.get(id) === run.shadowRelease, 10_000, { message: `${id} sent the shadow manifest by the leader` });

    const switched = await call('POST', `/v1/rollouts/${run.id}/switch`);
    expect(switched.status).toBe(202);
    expect(((await switched.json()) as { state: string }).state).toBe('switching');
    let view: { state: string; switchedRelease: number | null } = { state: '', switchedRelease: null };
    await waitFor(async () => (view = (await (await call('GET', `/v1/rollouts/${run.id}`)).json()) as typeof view).state === 'switched', 10_000, { message: 'the leader switched the run' });
    for (const id of ['d1', 'd2']) await waitFor(() => desired.get(id) === view.switchedRelease, 10_000, { message: `${id} given the switched release` });

    const revoked = await call('DELETE', '/v1/devices/d3');
    expect(revoked.status).toBe(200);
    await waitFor(() => desired.get('d3') === null, 10_000, { message: 'the leader cleared d3 retained desired' });
    expect((await readRetained(broker.url, [topics.desired('d3')])).size).toBe(0);
    expect((await readRetained(broker.url, [topics.desired('d1')])).size).toBe(1);
    for (const c of clouds) expect(c.alive()).toBe(true);
  }, 240_000);
});
