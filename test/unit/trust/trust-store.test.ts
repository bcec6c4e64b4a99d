/**
 * The device's root of trust (edge/updates/trust.ts) with the real update pipeline: a signing key
 * rotated by a root-signed key set, with no edge.json edit, and a release signed by the new key installs.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TRUST_FILE, TrustStore, TrustStoreError, UpdateManager } from '../../../edge/updates/index.js';
import { generateSigningKey, sha256Of, signKeySet, signManifest, toTrustedKey, type SigningKey } from '../../../shared/manifest/index.js';
import type { KeySet } from '../../../shared/protocol/index.js';
import { makeManifest, modelBytes, tempDir } from '../updates/fixtures.js';
import { ArtifactServer, EventLog, FakeHost } from '../updates/harness.js';

const day = 86_400_000;
const t0 = Date.now();
const iso = (t: number) => new Date(t).toISOString();
const root = generateSigningKey();
const oldKey = generateSigningKey();
const newKey = generateSigningKey();

function keyset(version: number, keys: SigningKey[], over: Partial<KeySet> = {}): KeySet {
  return {
    v: 1, type: 'apprentice-keyset', version, createdAt: iso(t0), expiresAt: iso(t0 + 90 * day), root: toTrustedKey(root),
    keys: keys.map((k) => ({ ...toTrustedKey(k), notBefore: iso(t0 - day), notAfter: iso(t0 + 365 * day) })), revoked: [], ...over,
  };
}
const payload = (ks: KeySet, signers: SigningKey[]) => Buffer.from(JSON.stringify(signKeySet(ks, signers.map((s) => s.privateKeyPem))));

const server = new ArtifactServer();
beforeAll(() => server.start());
afterAll(() => server.stop());
let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(async () => cleanup());

describe('TrustStore', () => {
  it('bootstraps from trustedKeys, persists, keeps the key set across a restart, and refuses older ones', async () => {
    const trust = await TrustStore.open({ dataDir: dir, trustedKeys: [toTrustedKey(oldKey)] });
    expect(trust.state()).toEqual({ keysetVersion: null, state: 'trusted_keys' });
    expect(trust.trustedKeys().map((k) => k.keyId)).toEqual([oldKey.keyId]);

    expect(await trust.apply(payload(keyset(1, [oldKey]), [oldKey, root]))).toMatchObject({ ok: true, how: 'bootstrap' });
    expect(await trust.apply(payload(keyset(2, [oldKey, newKey]), [root]))).toMatchObject({ ok: true, how: 'root' });
    expect(trust.trustedKeys().map((k) => k.keyId).sort()).toEqual([oldKey.keyId, newKey.keyId].sort());
    // The retained copy arrives again at every connect: unchanged, not an error.
    expect(await trust.apply(payload(keyset(2, [oldKey, newKey]), [root]))).toEqual({ ok: 'unchanged', version: 2 });
    expect(await trust.apply(payload(keyset(1, [oldKey]), [root]))).toMatchObject({ ok: false, reason: 'stale_keyset' });
    expect(await trust.apply(Buffer.alloc(0))).toMatchObject({ ok: 'ignored' });

    const again = await TrustStore.open({ dataDir: dir, trustedKeys: [toTrustedKey(oldKey)] });
    expect(again.state()).toEqual({ keysetVersion: 2, state: 'current' });
    expect(again.state(new Date(t0 + 91 * day))).toEqual({ keysetVersion: 2, state: 'trust_stale' });
    // After a restart the held root still rules: trustedKeys cannot bootstrap a second time.
    const evil = generateSigningKey();
    expect(await again.apply(payload({ ...keyset(3, [newKey]), root: toTrustedKey(evil) }, [oldKey, evil]))).toMatchObject({ ok: false, reason: 'untrusted_keyset' });
  });

  it('a corrupt trust file stops the start with a clear error', async () => {
    await writeFile(join(dir, TRUST_FILE), '{"keyset": 1}');
    await expect(TrustStore.open({ dataDir: dir, trustedKeys: [toTrustedKey(oldKey)] })).rejects.toThrow(TrustStoreError);
  });

  it('revoked keys stop being trusted', async () => {
    const trust = await TrustStore.open({ dataDir: dir, trustedKeys: [toTrustedKey(oldKey)], rootKey: toTrustedKey(root) });
    await trust.apply(payload(keyset(1, [oldKey, newKey]), [root]));
    await trust.apply(payload(keyset(2, [newKey], { revoked: [{ keyId: oldKey.keyId, revokedAt: iso(t0), reason: 'leaked' }] }), [root]));
    expect(trust.trustedKeys().map((k) => k.keyId)).toEqual([newKey.keyId]);
    expect(JSON.parse(await readFile(join(dir, TRUST_FILE), 'utf8')).keyset.version).toBe(2);
  });
});

describe('rotation through the update pipeline', () => {
  it('a device with only the old key in edge.json installs a release signed by the new key once the key set names it', async () => {
    const log = new EventLog();
    const trust = await TrustStore.open({ dataDir: dir, trustedKeys: [toTrustedKey(oldKey)] });
    const m = await UpdateManager.create({ deviceId: 'pi-1', dataDir: dir, trustedKeys: () => trust.trustedKeys(), host: new FakeHost(), emit: log.emit, retry: false, httpIdleTimeoutMs: 2000 });
    try {
      const release = (n: number, key: SigningKey) => {
        const bytes = modelBytes(3000 + n);
        const url = server.serve(`rot-${n}-${sha256Of(bytes).slice(0, 8)}`, bytes);
        return Buffer.from(JSON.stringify(signManifest(makeManifest(bytes, { release: n }, { url }), key)));
      };
      expect(await m.handleDesired(release(1, oldKey))).toMatchObject({ status: 'installed', release: 1 });
      expect(await m.handleDesired(release(2, newKey))).toMatchObject({ status: 'rejected', reason: 'unknown_key' });
      // The ceremony's output: key set 1, the old root-less device bootstraps from its old key.
      expect(await trust.apply(payload(keyset(1, [oldKey, newKey]), [oldKey, root]))).toMatchObject({ ok: true });
      expect(await m.handleDesired(release(3, newKey))).toMatchObject({ status: 'installed', release: 3 });
      // Retire the old key: its releases are refused from now on.
      expect(await trust.apply(payload(keyset(2, [newKey]), [root]))).toMatchObject({ ok: true });
      expect(await m.handleDesired(release(4, oldKey))).toMatchObject({ status: 'rejected', reason: 'unknown_key' });
      expect(await m.handleDesired(release(5, newKey))).toMatchObject({ status: 'installed', release: 5 });
    } finally {
      await m.dispose();
    }
  });
});
