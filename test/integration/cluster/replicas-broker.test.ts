/**
 * Issue 15 item 2 with cluster.enabled: two replicas on one Mosquitto, configured only by replica id,
 * shared key dir and admin token. Each connects with its own client id (`apprentice-cloud-<replicaId>`)
 * and keeps its session (neither takes the other's over), and the key set they both retain is the shared
 * store's, byte for byte.
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
import { collect, connectClient } from '../fleet/device-sim.js';

const TOKEN = 'cluster-admin-token-0123456789';

describe.skipIf(skipWithoutMosquitto())('cluster.enabled replicas on one Mosquitto', () => {
  const root = mkdtempSync(join(tmpdir(), 'apprentice-replicas-'));
  const clouds: CloudService[] = [];
  let broker: MosquittoBroker | undefined;

  afterAll(async () => {
    for (const c of clouds) await c.stop();
    await broker?.stop();
    rmSync(root, { recursive: true, force: true });
  }, 60_000);

  it('each replica has its own session on the broker, and both retain the shared key set', async () => {
    const shared = join(root, 'keys');
    const admin = KeyStore.open({ dir: shared });
    const rootPub = initRoot(join(root, 'root.pem'));
    const draft = draftKeySet({ keys: admin.list(), root: rootPub, expiresDays: 30 });
    publishKeySet(shared, signKeySet(draft, [readFileSync(join(root, 'root.pem'), 'utf8')]), admin.active());

    broker = await startMosquitto({ config: ['connection_messages true'] });
    for (const id of ['r-a', 'r-b']) {
      const cfg = cloudConfigSchema.parse({
        dataDir: join(root, id),
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

    const device = await connectClient(broker.url, 'observer');
    try {
      const [msg] = await collect(device, topics.keyset(), (m) => m.length > 0, 10_000);
      expect(msg!.payload.equals(readFileSync(join(shared, 'keyset.json')))).toBe(true);
    } finally {
      await device.endAsync(true);
    }
  }, 120_000);
});
