/**
 * Issue 10 on a real daemon (EdgeDaemon, real onnxruntime, a real broker): a leaked release key signs a
 * huge-sequence release, a root-signed key set revokes it, and the device recovers; and a daemon that
 * boots with its clock at 1970 still refuses an expired manifest (time floor).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EdgeDaemon } from '../../../edge/daemon.js';
import { generateSigningKey, signKeySet, toTrustedKey, type SigningKey } from '../../../shared/manifest/index.js';
import { silentLogger } from '../../../shared/log/index.js';
import { topics, type KeySet } from '../../../shared/protocol/index.js';
import { makeRelease, publishRelease } from '../../fixtures/edge-release.js';
import { brokerMatrix, waitFor } from '../../helpers/broker.js';
import { edgeWorld, edgeConfig, readyz, startDaemon } from './harness.js';

const day = 86_400_000;
const iso = (t: number) => new Date(t).toISOString();
const root = generateSigningKey();
const good = generateSigningKey();
const leaked = generateSigningKey();
const broker$ = brokerMatrix()[0]!;

function keyset(version: number, keys: SigningKey[], revoked: SigningKey[] = []): Buffer {
  const t0 = Date.now();
  const ks: KeySet = {
    v: 1, type: 'apprentice-keyset', version, createdAt: iso(t0 - 1000), expiresAt: iso(t0 + 90 * day), root: toTrustedKey(root),
    keys: keys.map((k) => ({ ...toTrustedKey(k), notBefore: iso(t0 - day), notAfter: iso(t0 + 365 * day) })),
    revoked: revoked.map((k) => ({ keyId: k.keyId, revokedAt: iso(t0), reason: 'leaked' })),
  };
  return Buffer.from(JSON.stringify(signKeySet(ks, [root.privateKeyPem])));
}

describe(`trust recovery over ${broker$.name}`, () => {
  const w = edgeWorld(broker$);
  const cleanups = w.cleanups;

  const setup = () => w.device();

  it('a leaked key signs a huge-sequence release and is revoked: the device goes back to a live-key release and accepts real releases again', async () => {
    const { deviceId, dir, cloud, retained } = await setup();
    const config = edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key: good, rootKey: toTrustedKey(root), runtime: { healthWindowSeconds: 0.5 } });
    const daemon = await startDaemon(config);
    cleanups.push(() => daemon.stop());
    // The key set retained on a broker this test shares with others: its own version numbers are private to this device.
    await cloud.client.publishAsync(topics.keyset(), keyset(1, [good, leaked]), { qos: 1, retain: true });
    retained.push(topics.keyset());
    await waitFor(async () => JSON.parse(await readFile(join(dir, 'trust.json'), 'utf8').catch(() => '{}')).keyset?.version === 1, 10_000, { message: 'key set 1 accepted' });

    const r1 = makeRelease(good, { release: 1, seed: 91 });
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);
    const evil = makeRelease(leaked, { release: 999_000, seed: 92 });
    retained.push(...(await publishRelease(cloud.client, deviceId, evil)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 999_000);
    const r2 = makeRelease(good, { release: 2, seed: 93 });
    retained.push(...(await publishRelease(cloud.client, deviceId, r2)));
    await cloud.waitEvent((e) => e.type === 'rejected' && e.release === 2 && e.reason === 'stale_release'); // bricked by the leaked number

    await cloud.client.publishAsync(topics.keyset(), keyset(2, [good], [leaked]), { qos: 1, retain: true });
    await waitFor(async () => (await readyz(daemon.apiUrl!)).release === 1, 10_000, { message: 'back on release 1 (signed by a live key)' });
    const state = JSON.parse(await readFile(join(dir, 'update-state.json'), 'utf8')) as { highestRelease: number };
    expect(state.highestRelease).toBe(1); // reset to the highest release of a live key, not 0

    const r3 = makeRelease(good, { release: 3, seed: 94 });
    retained.push(...(await publishRelease(cloud.client, deviceId, r3)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 3, 15_000, 'a real release installs again');
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 3 });
  }, 60_000);

  it('boots with the clock at 1970: an expired manifest stays expired (time floor from the last accepted release)', async () => {
    const { deviceId, dir, cloud, retained } = await setup();
    const config = edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key: good });
    const first = await startDaemon(config);
    const r1 = makeRelease(good, { release: 1, seed: 95 });
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1);
    await first.stop();

    const clock1970 = new Date(0);
    const second = await EdgeDaemon.create(config, { log: silentLogger, env: {}, now: () => clock1970 });
    await second.start();
    cleanups.push(() => second.stop());
    const expired = makeRelease(good, { release: 2, seed: 96, expiresAt: new Date(Date.now() - 3_600_000) });
    retained.push(...(await publishRelease(cloud.client, deviceId, expired)));
    const ev = await cloud.waitEvent((e) => e.release === 2, 15_000, 'release 2 refused');
    expect(ev).toMatchObject({ type: 'rejected', reason: 'expired' });
    expect(Date.parse(ev.at)).toBeGreaterThanOrEqual(Date.parse(r1.manifest.createdAt)); // not 1970
    expect(await readyz(second.apiUrl!)).toEqual({ status: 200, release: 1 });
  }, 60_000);
});
