/**
 * Issue 15 item 2 with cluster.enabled: two replicas on one Mosquitto and one PostgreSQL registry (a
 * throwaway database: a cluster on SQLite is refused at config load), configured only by replica id,
 * registry URL, shared key dir and admin token. Each connects with its own client id
 * (`apprentice-cloud-<replicaId>`) and keeps its session (neither takes the other's over); one is elected
 * leader, and the key set it retains is the shared store's, byte for byte.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cloudConfigSchema } from '../../../cloud/config/schema.js';
import { draftKeySet, publishKeySet } from '../../../cloud/keys/keyset-file.js';
import { initRoot } from '../../../cloud/keys/root.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { startCloud, type CloudService } from '../../../cloud/server.js';
import { silentLogger } from '../../../shared/log/index.js';
import { signKeySet } from '../../../shared/manifest/index.js';
import { topics } from '../../../shared/protocol/index.js';
import { skipWithoutMosquitto, sleep, startMosquitto, waitFor, type MosquittoBroker } from '../../helpers/broker.js';
import { createThrowawayDb, postgresSkipReason, type ThrowawayDb } from '../../helpers/pg-throwaway.js';
import { collect, connectClient } from '../fleet/device-sim.js';

const TOKEN = 'cluster-admin-token-0123456789';

describe.skipIf(skipWithoutMosquitto())('cluster.enabled replicas on one Mosquitto', () => {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-replicas-'));
  const clouds: CloudService[] = [];
  let broker: MosquittoBroker | undefined;
  let db: ThrowawayDb | undefined;

  const roles = async () => (await Promise.all(clouds.map(async (c) => ((await (await fetch(`${c.apiUrl}/healthz`)).json()) as { role: string }).role))).sort();

  afterAll(async () => {
    for (const c of clouds) await c.stop();
    await broker?.stop();
    await db?.drop();
    rmSync(root, { recursive: true, force: true });
  }, 60_000);

  it('each replica has its own session on the broker; one leads, and it retains the shared key set', async (ctx) => {
    const skip = await postgresSkipReason('a cluster of replicas (cluster.enabled needs registry.url)');
    if (skip) return ctx.skip(skip);
    db = await createThrowawayDb();
    const shared = join(root, 'keys');
    const admin = KeyStore.open({ dir: shared });
    const rootPub = initRoot(join(root, 'root.pem'));
    const draft = draftKeySet({ keys: admin.list(), root: rootPub, expiresDays: 30 });
    publishKeySet(shared, signKeySet(draft, [readFileSync(join(root, 'root.pem'), 'utf8')]), admin.active());

    broker = await startMosquitto({ config: ['connection_messages true'] });
    for (const id of ['r-a', 'r-b']) {
      const cfg = cloudConfigSchema.parse({
        dataDir: join(root, id),
        registry: { url: db.url },
        api: { bind: '127.0.0.1:0', adminToken: TOKEN },
        mqtt: { url: broker.url, sharedSubscriptions: true },
        keys: { sharedDir: shared },
        cluster: { enabled: true, replicaId: id },
        rounds: { tickSeconds: 3600 },
      });
      clouds.push(await startCloud(cfg, { log: silentLogger }));
    }
    for (const id of ['r-a', 'r-b']) await waitFor(() => broker!.logs().includes(`as apprentice-cloud-${id}`), 10_000, { message: `replica ${id} connected` });
    // Sessions that collide take each other over in a loop; give it time to show.
    await sleep(2_000);
    expect(broker.logs()).not.toMatch(/apprentice-cloud-r-[ab] already connected/);
    for (const c of clouds) expect((await fetch(`${c.apiUrl}/healthz`)).status).toBe(200);
    // One leader, one follower (the advertise service, which retains the key set, runs on the leader only).
    await waitFor(async () => (await roles()).join() === 'follower,leader', 15_000, { intervalMs: 200, message: 'one replica elected' });

    const device = await connectClient(broker!.url, 'observer');
    try {
      const [msg] = await collect(device, topics.keyset(), (m) => m.length > 0, 10_000);
      expect(msg!.payload.equals(readFileSync(join(shared, 'keyset.json')))).toBe(true);
    } finally {
      await device.endAsync(true);
    }
  }, 120_000);
});
