/**
 * Issue 10: provisioning bundles carry the cloud's current signed key set. A device provisioned after a
 * rotation (and a revocation) trusts the new key set from its first start, with no `trust/keyset`
 * message over MQTT; a tampered bundled key set stops the start with a clear error; one older than the
 * key set the device holds is ignored.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { draftKeySet } from '../../../cloud/keys/keyset-file.js';
import { provisionBundleSchema, type ProvisionBundle } from '../../../cloud/provision/bundle.js';
import { ConfigError, parseEdgeConfig, type EdgeConfig } from '../../../edge/config/index.js';
import { TrustLink } from '../../../edge/trust-link.js';
import { UpdateManager } from '../../../edge/updates/index.js';
import { generateSigningKey, sha256Of, signKeySet, signManifest, toTrustedKey, type SigningKey } from '../../../shared/manifest/index.js';
import type { KeySet } from '../../../shared/protocol/index.js';
import { call, harness, json, type Harness } from '../cloud-api/helpers.js';
import { makeManifest, modelBytes, tempDir } from '../updates/fixtures.js';
import { ArtifactServer, EventLog, FakeHost } from '../updates/harness.js';

const root = generateSigningKey();
const server = new ArtifactServer();
beforeAll(() => server.start());
afterAll(() => server.stop());

let h: Harness;
let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  h = harness();
  ({ dir, cleanup } = await tempDir());
});
afterEach(async () => {
  h.close();
  await cleanup();
});

/** TrustLink.open touches no MQTT; the client is only used by wire(). */
const noClient = {} as MqttClient;
const open = (config: EdgeConfig) => TrustLink.open({ config, client: noClient, now: () => new Date() });
const configOf = (bundle: unknown, extra: Record<string, unknown> = {}) => parseEdgeConfig({ ...(bundle as object), dataDir: dir, ...extra });

async function publish(ks: KeySet): Promise<void> {
  const res = await call(h.app, 'PUT', '/v1/keys/keyset', { body: signKeySet(ks, [root.privateKeyPem]) });
  expect(res.status, JSON.stringify(await res.clone().json())).toBe(200);
}

async function provision(id: string): Promise<ProvisionBundle> {
  return provisionBundleSchema.parse(await json(await call(h.app, 'POST', '/v1/devices', { body: { id } })));
}

function release(n: number, key: SigningKey): Buffer {
  const bytes = modelBytes(2000 + n);
  const url = server.serve(`bundled-${n}-${sha256Of(bytes).slice(0, 8)}`, bytes);
  return Buffer.from(JSON.stringify(signManifest(makeManifest(bytes, { release: n }, { url }), key)));
}

describe('the key set in the provisioning bundle', () => {
  it('a device provisioned after a rotation and a revocation trusts key set 2 from its first start, with no MQTT key-set message', async () => {
    const leaked = h.keys.active();
    await publish(draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), expiresDays: 30 }));
    const previous = (await json(await call(h.app, 'GET', '/v1/keys/keyset'))).keyset as KeySet;
    h.keys.rotate(); // the new key signs from now on; the leaked one is still listed (not retired) ...
    await publish(draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), previous, expiresDays: 30, revoke: [leaked.keyId] })); // ... but revoked
    const fresh = h.keys.active();

    const bundle = await provision('pi-fresh');
    expect(bundle.keyset?.keyset).toMatchObject({ version: 2 });
    expect(bundle.trustedKeys.map((k) => k.keyId)).toContain(leaked.keyId); // what trustedKeys alone would trust

    const link = await open(configOf(bundle));
    expect(link.trust.state()).toEqual({ keysetVersion: 2, state: 'current' });
    expect(link.trust.trustedKeys().map((k) => k.keyId)).toEqual([fresh.keyId]);

    const log = new EventLog();
    const m = await UpdateManager.create({ deviceId: 'pi-fresh', dataDir: dir, trustedKeys: () => link.trust.trustedKeys(), revokedKeys: () => link.revokedKeyIds(), timeFloor: link.floor, host: new FakeHost(), emit: log.emit, retry: false, httpIdleTimeoutMs: 2000 });
    try {
      expect(await m.handleDesired(release(1, leaked))).toMatchObject({ status: 'rejected', reason: 'unknown_key' });
      expect(await m.handleDesired(release(2, fresh))).toMatchObject({ status: 'installed', release: 2 });
    } finally {
      await m.dispose();
    }
    // The accepted key set is persisted: a restart without the bundle's key set keeps it.
    const again = await open(configOf({ ...bundle, keyset: undefined }));
    expect(again.trust.state().keysetVersion).toBe(2);
  });

  it('a tampered bundled key set stops the start with a ConfigError naming the refusal', async () => {
    await publish(draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), expiresDays: 30 }));
    const bundle = await provision('pi-tampered');
    const evil = generateSigningKey();
    const ks = bundle.keyset!.keyset as KeySet;
    const tampered = { ...bundle, keyset: { ...bundle.keyset!, keyset: { ...ks, keys: [...ks.keys, { ...ks.keys[0]!, ...toTrustedKey(evil) }] } } };
    const err = await open(configOf(tampered)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.join('\n')).toMatch(/keyset: the provisioned key set is refused \(bad_signature\)/);

    // Signed by a root other than the bundle's rootKey: refused too.
    const forged = { ...bundle, keyset: signKeySet({ ...ks, root: toTrustedKey(evil) }, [evil.privateKeyPem]) };
    expect(((await open(configOf(forged)).catch((e: unknown) => e)) as ConfigError).issues.join('\n')).toMatch(/refused \((untrusted_keyset|bad_signature)\)/);
    // Nothing was persisted: the untampered bundle still opens at version 1.
    expect((await open(configOf(bundle))).trust.state().keysetVersion).toBe(1);
  });

  it('a bundled key set older than the held one is ignored; keysetFile is read the same way and a bad file is a ConfigError', async () => {
    await publish(draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), expiresDays: 30 }));
    const v1 = await provision('pi-old');
    const previous = v1.keyset!.keyset as KeySet;
    await publish(draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), previous, expiresDays: 30 }));
    const v2 = await provision('pi-new');

    const file = join(dir, 'keyset.json');
    await writeFile(file, JSON.stringify(v2.keyset));
    expect((await open(configOf({ ...v1, keyset: undefined }, { keysetFile: file }))).trust.state().keysetVersion).toBe(2);
    // The device re-flashed with its first bundle: the held version 2 stays.
    expect((await open(configOf(v1))).trust.state().keysetVersion).toBe(2);

    await writeFile(file, '{"keyset":');
    await expect(open(configOf({ ...v1, keyset: undefined }, { keysetFile: file }))).rejects.toThrow(/keysetFile: .* is not JSON/);
    await expect(open(configOf({ ...v1, keyset: undefined }, { keysetFile: join(dir, 'missing.json') }))).rejects.toThrow(/keysetFile: cannot read .*ENOENT/);
    expect(() => configOf(v1, { keysetFile: file })).toThrow(/set keyset or keysetFile, not both/);
  });
});
