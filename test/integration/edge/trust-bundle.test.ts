/**
 * Issue 10 on a real daemon (EdgeDaemon, real onnxruntime, a real broker), the two remaining trust gaps:
 * - a device whose edge.json (its provisioning bundle) carries the current key set trusts a rotated key
 *   from its first start, with no key set retained on the broker; a tampered bundled key set stops
 *   `EdgeDaemon.create` with a ConfigError;
 * - `requireAssignment` refuses a `desired` without a signed assignment;
 * - a newer event reason (`sequence_jump`) reaches a cloud that accepts it as is, and an older cloud
 *   (its retained info lacks `events.reasons-2`) as `malformed_manifest` with the real reason in detail.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../edge/config/index.js';
import { EdgeDaemon } from '../../../edge/daemon.js';
import { silentLogger } from '../../../shared/log/index.js';
import { generateSigningKey, signKeySet, toTrustedKey, type SigningKey } from '../../../shared/manifest/index.js';
import { CLOUD_FEATURES, cloudInfo, cloudInfoSchema, encodePayload, topics, type KeySet } from '../../../shared/protocol/index.js';
import { makeRelease, publishRelease } from '../../fixtures/edge-release.js';
import { brokerMatrix } from '../../helpers/broker.js';
import { edgeWorld, edgeConfig, readyz, startDaemon } from './harness.js';

const day = 86_400_000;
const iso = (t: number) => new Date(t).toISOString();
const root = generateSigningKey();
const oldKey = generateSigningKey();
const newKey = generateSigningKey();
const broker$ = brokerMatrix()[0]!;

function signedKeySet(keys: SigningKey[]) {
  const t0 = Date.now();
  const ks: KeySet = {
    v: 1, type: 'apprentice-keyset', version: 1, createdAt: iso(t0 - 1000), expiresAt: iso(t0 + 90 * day), root: toTrustedKey(root),
    keys: keys.map((k) => ({ ...toTrustedKey(k), notBefore: iso(t0 - day), notAfter: iso(t0 + 365 * day) })), revoked: [],
  };
  return signKeySet(ks, [root.privateKeyPem]);
}

describe(`bundled key set and event compatibility over ${broker$.name}`, () => {
  const w = edgeWorld(broker$);
  const cleanups = w.cleanups;

  const setup = () => w.device();

  it('a device provisioned after a rotation installs a release signed by the new key with no key set on the broker', async () => {
    const { deviceId, dir, cloud, retained } = await setup();
    // trustedKeys has only the old key; the bundle's key set (rotation done) names only the new one.
    const config = edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key: oldKey, rootKey: toTrustedKey(root), keyset: signedKeySet([newKey]), runtime: { healthWindowSeconds: 0.5 } });
    const daemon = await startDaemon(config);
    cleanups.push(() => daemon.stop());
    const r1 = makeRelease(newKey, { release: 1, seed: 71 });
    retained.push(...(await publishRelease(cloud.client, deviceId, r1)));
    await cloud.waitEvent((e) => e.type === 'installed' && e.release === 1, 15_000, 'release 1 (new key) installed');
    expect(await readyz(daemon.apiUrl!)).toEqual({ status: 200, release: 1 });
  }, 60_000);

  it('a tampered bundled key set stops the start with a ConfigError', async () => {
    const { deviceId, dir } = await setup();
    const good = signedKeySet([newKey]);
    const tampered = { ...good, keyset: { ...good.keyset, expiresAt: iso(Date.now() + 3650 * day) } };
    const config = edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key: oldKey, rootKey: toTrustedKey(root), keyset: tampered });
    const err = await EdgeDaemon.create(config, { log: silentLogger, env: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues[0]).toMatch(/^keyset: the provisioned key set is refused \(bad_signature\)/);
  }, 30_000);

  it('requireAssignment: true refuses a desired that carries no signed assignment', async () => {
    const { deviceId, dir, cloud, retained } = await setup();
    await cloud.client.publishAsync(topics.cloudInfo(), encodePayload(cloudInfoSchema, cloudInfo(new Date())), { qos: 1, retain: true });
    retained.push(topics.cloudInfo());
    const daemon = await startDaemon(edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key: oldKey, requireAssignment: true }));
    cleanups.push(() => daemon.stop());
    retained.push(...(await publishRelease(cloud.client, deviceId, makeRelease(oldKey, { release: 1, seed: 74 }))));
    const ev = await cloud.waitEvent((e) => e.type === 'rejected' && e.release === 1, 15_000, 'release 1 refused');
    expect(ev).toMatchObject({ reason: 'assignment_mismatch', detail: expect.stringContaining('requireAssignment') });
    expect((await readyz(daemon.apiUrl!)).status).toBe(503);
  }, 60_000);

  for (const cloudKind of ['current', 'older'] as const) {
    it(`sequence_jump reaches ${cloudKind === 'current' ? 'a current cloud as is' : 'an older cloud as malformed_manifest'}`, async () => {
      const { deviceId, dir, cloud, retained } = await setup();
      const info = cloudInfo(new Date());
      if (cloudKind === 'older') info.accepts = info.accepts.filter((f) => f !== CLOUD_FEATURES.eventReasons);
      await cloud.client.publishAsync(topics.cloudInfo(), encodePayload(cloudInfoSchema, info), { qos: 1, retain: true });
      retained.push(topics.cloudInfo());
      const daemon = await startDaemon(edgeConfig({ deviceId, mqttUrl: w.broker.url, dataDir: dir, key: oldKey, updates: { maxSequenceJump: 10 } }));
      cleanups.push(() => daemon.stop());
      const far = makeRelease(oldKey, { release: 500, seed: 73 });
      retained.push(...(await publishRelease(cloud.client, deviceId, far)));
      const ev = await cloud.waitEvent((e) => e.type === 'rejected' && e.release === 500, 15_000, 'release 500 refused');
      if (cloudKind === 'current') expect(ev).toMatchObject({ reason: 'sequence_jump' });
      else expect(ev).toMatchObject({ reason: 'malformed_manifest', detail: expect.stringMatching(/^sequence_jump: release 500 is more than 10 above/) });
      expect(cloud.invalid).toEqual([]);
    }, 60_000);
  }
});
