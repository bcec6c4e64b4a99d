/**
 * Issue 10 key-set plumbing, API side: upload a root-signed key set (PUT /v1/keys/keyset, checked as a
 * device would), read it back, and new provisioning bundles carry the root public key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { draftKeySet } from '../../../cloud/keys/keyset-file.js';
import { provisionBundleSchema } from '../../../cloud/provision/bundle.js';
import { generateSigningKey, signKeySet, toTrustedKey } from '../../../shared/manifest/index.js';
import { call, harness, json, type Harness } from './helpers.js';

describe('/v1/keys/keyset', () => {
  let h: Harness;
  let published = 0;
  const root = generateSigningKey();
  const other = generateSigningKey();
  beforeAll(() => {
    h = harness({ onKeySetPublished: () => void published++ });
  });
  afterAll(() => h.close());

  const draft = () => draftKeySet({ keys: h.keys.list(), root: toTrustedKey(root), previous: undefined, expiresDays: 30 });

  it('refuses malformed and wrongly signed key sets with a JSON body; publishes a root-signed one; bundles carry the root', async () => {
    expect((await call(h.app, 'GET', '/v1/keys/keyset')).status).toBe(404);
    const before = provisionBundleSchema.parse(await json(await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-1' } })));
    expect(before.rootKey).toBeUndefined();

    const notJson = await call(h.app, 'PUT', '/v1/keys/keyset', { body: '{"keyset":', headers: { 'content-type': 'application/json' } });
    expect(notJson.status).toBe(400);
    for (const bad of [{}, { keyset: {}, signatures: [] }, [], '"x"', 42, { keyset: draft(), signatures: [{ alg: 'ed25519', keyId: 'zz', sig: '!' }] }]) {
      const res = await call(h.app, 'PUT', '/v1/keys/keyset', { body: bad });
      expect(res.status, JSON.stringify(bad).slice(0, 80)).toBe(422);
      expect((await json(res)).error.code).toBe('keyset_refused');
    }
    // Signed by anything but the root it names: refused.
    const forged = await call(h.app, 'PUT', '/v1/keys/keyset', { body: signKeySet(draft(), [other.privateKeyPem]) });
    expect(forged.status).toBe(422);
    expect(published).toBe(0);

    const ok = await call(h.app, 'PUT', '/v1/keys/keyset', { body: signKeySet(draft(), [root.privateKeyPem]) });
    expect(ok.status, JSON.stringify(await ok.clone().json())).toBe(200);
    expect(await json(ok)).toEqual({ version: 1 });
    expect(published).toBe(1);
    const got = await json(await call(h.app, 'GET', '/v1/keys/keyset'));
    expect(got.keyset).toMatchObject({ version: 1, root: { keyId: root.keyId } });
    // The same version again is not newer: refused.
    expect((await call(h.app, 'PUT', '/v1/keys/keyset', { body: signKeySet(draft(), [root.privateKeyPem]) })).status).toBe(422);

    const after = provisionBundleSchema.parse(await json(await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-2' } })));
    expect(after.rootKey).toEqual({ keyId: root.keyId, publicKeyPem: toTrustedKey(root).publicKeyPem });
  });
});
