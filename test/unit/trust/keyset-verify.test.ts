/**
 * The key set's trust rules (shared/manifest/keyset.ts), one attack per test after TUF's
 * tests/test_updater_top_level_update.py: a key set signed by anything but the root, an older key set,
 * a root rotation without the old root, a bootstrap from trustedKeys and its pin.
 */
import { describe, expect, it } from 'vitest';
import { generateSigningKey, signKeySet, toTrustedKey, verifyKeySet, releaseKeysOf, isRevoked, keySetExpired, KeySetError, type SigningKey } from '../../../shared/manifest/index.js';
import type { KeySet } from '../../../shared/protocol/index.js';

const day = 86_400_000;
const iso = (t: number) => new Date(t).toISOString();
const now = Date.parse('2026-06-01T00:00:00Z');

function keyset(version: number, root: SigningKey, keys: SigningKey[], over: Partial<KeySet> = {}): KeySet {
  return {
    v: 1,
    type: 'apprentice-keyset',
    version,
    createdAt: iso(now),
    expiresAt: iso(now + 365 * day),
    root: toTrustedKey(root),
    keys: keys.map((k) => ({ ...toTrustedKey(k), notBefore: iso(now - day), notAfter: iso(now + 180 * day) })),
    revoked: [],
    ...over,
  };
}

const root = generateSigningKey();
const root2 = generateSigningKey();
const rel1 = generateSigningKey();
const rel2 = generateSigningKey();
const mallory = generateSigningKey();
const v1 = keyset(1, root, [rel1]);

describe('verifyKeySet', () => {
  it('accepts version N+1 signed by the root it holds, also as bytes', () => {
    const v2 = signKeySet(keyset(2, root, [rel1, rel2]), [root.privateKeyPem]);
    const r = verifyKeySet(Buffer.from(JSON.stringify(v2)), { current: v1, bootstrapKeys: [] });
    expect(r).toMatchObject({ ok: true, how: 'root', keyset: { version: 2 } });
    // A provisioned root works the same while no key set is held.
    expect(verifyKeySet(v2, { root: toTrustedKey(root), bootstrapKeys: [] })).toMatchObject({ ok: true, how: 'root' });
  });

  it('refuses a key set signed by anything but the root: a release key, an attacker, nobody it knows', () => {
    for (const signer of [rel1, mallory]) {
      const forged = signKeySet(keyset(2, root, [rel1, mallory]), [signer.privateKeyPem]);
      expect(verifyKeySet(forged, { current: v1, bootstrapKeys: [toTrustedKey(rel1)] })).toMatchObject({ ok: false, reason: 'untrusted_keyset' });
    }
  });

  it('refuses a signature from the root id over other bytes (tampered after signing)', () => {
    const good = signKeySet(keyset(2, root, [rel1]), [root.privateKeyPem]);
    const tampered = { ...good, keyset: { ...good.keyset, keys: [...good.keyset.keys, { ...toTrustedKey(mallory), notBefore: iso(now), notAfter: iso(now + day) }] } };
    expect(verifyKeySet(tampered, { current: v1, bootstrapKeys: [] })).toMatchObject({ ok: false, reason: 'bad_signature' });
  });

  it('refuses an older or equal key set (rollback)', () => {
    const v3 = keyset(3, root, [rel2]);
    for (const version of [1, 2, 3]) {
      const old = signKeySet(keyset(version, root, [rel1]), [root.privateKeyPem]);
      expect(verifyKeySet(old, { current: v3, bootstrapKeys: [] })).toMatchObject({ ok: false, reason: 'stale_keyset' });
    }
  });

  it('root rotation: accepted only when signed by the old root and the new one', () => {
    const rotated = keyset(2, root2, [rel2]);
    expect(verifyKeySet(signKeySet(rotated, [root.privateKeyPem, root2.privateKeyPem]), { current: v1, bootstrapKeys: [] })).toMatchObject({ ok: true, how: 'root_rotation' });
    // The new root alone: anyone can make a key pair.
    expect(verifyKeySet(signKeySet(rotated, [root2.privateKeyPem]), { current: v1, bootstrapKeys: [] })).toMatchObject({ ok: false, reason: 'untrusted_keyset' });
    // The old root alone: the new root never proved it holds its key.
    expect(verifyKeySet(signKeySet(rotated, [root.privateKeyPem]), { current: v1, bootstrapKeys: [] })).toMatchObject({ ok: false, reason: 'bad_signature' });
    // After the rotation, the old root no longer signs anything.
    const v3ByOld = signKeySet(keyset(3, root2, [rel2]), [root.privateKeyPem]);
    expect(verifyKeySet(v3ByOld, { current: rotated, bootstrapKeys: [] })).toMatchObject({ ok: false, reason: 'untrusted_keyset' });
  });

  it('bootstrap: a device with only trustedKeys accepts a first key set signed by one of them and by its root, once', () => {
    const first = signKeySet(keyset(5, root, [rel1]), [rel1.privateKeyPem, root.privateKeyPem]);
    const anchor = { bootstrapKeys: [toTrustedKey(rel1)] };
    expect(verifyKeySet(first, anchor)).toMatchObject({ ok: true, how: 'bootstrap', keyset: { version: 5 } });
    // Not by an unknown key, and the root must sign too.
    expect(verifyKeySet(signKeySet(keyset(5, root, [rel1]), [mallory.privateKeyPem, root.privateKeyPem]), anchor)).toMatchObject({ ok: false, reason: 'untrusted_keyset' });
    expect(verifyKeySet(signKeySet(keyset(5, root, [rel1]), [rel1.privateKeyPem]), anchor)).toMatchObject({ ok: false, reason: 'bad_signature' });
    // Once a root is held, trustedKeys sign nothing more.
    const later = signKeySet(keyset(6, mallory, [rel1]), [rel1.privateKeyPem, mallory.privateKeyPem]);
    expect(verifyKeySet(later, { ...anchor, current: keyset(5, root, [rel1]) })).toMatchObject({ ok: false, reason: 'untrusted_keyset' });
  });

  it('a pinned rootKeyId closes the trust-on-first-use gap', () => {
    // A leaked release key and a root of the attacker's making: refused under the pin.
    const evil = signKeySet(keyset(1, mallory, [rel1]), [rel1.privateKeyPem, mallory.privateKeyPem]);
    expect(verifyKeySet(evil, { bootstrapKeys: [toTrustedKey(rel1)], rootKeyId: root.keyId })).toMatchObject({ ok: false, reason: 'root_pin_mismatch' });
    const good = signKeySet(keyset(1, root, [rel1]), [rel1.privateKeyPem, root.privateKeyPem]);
    expect(verifyKeySet(good, { bootstrapKeys: [toTrustedKey(rel1)], rootKeyId: root.keyId })).toMatchObject({ ok: true });
  });

  it('refuses a key whose id does not match its public key', () => {
    const ks = keyset(2, root, [rel1]);
    ks.keys[0] = { ...ks.keys[0]!, keyId: mallory.keyId };
    expect(verifyKeySet(signKeySet(ks, [root.privateKeyPem]), { current: v1, bootstrapKeys: [] })).toMatchObject({ ok: false, reason: 'malformed_keyset' });
  });

  it.each([
    ['empty', ''],
    ['not JSON', '{"keyset":'],
    ['no signatures', JSON.stringify({ keyset: v1, signatures: [] })],
    ['a keyset that is a string', JSON.stringify({ keyset: 'v1', signatures: [{ alg: 'ed25519', keyId: root.keyId, sig: 'AA==' }] })],
    ['a NaN-bearing object', { keyset: { ...v1, version: Number.NaN }, signatures: [{ alg: 'ed25519', keyId: root.keyId, sig: 'AA==' }] }],
    ['a short signature', JSON.stringify({ keyset: v1, signatures: [{ alg: 'ed25519', keyId: root.keyId, sig: 'AAAA' }] })],
    ['random bytes', Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 73) % 256))],
  ])('refuses %s without throwing', (_n, payload) => {
    const r = verifyKeySet(payload, { current: v1, bootstrapKeys: [toTrustedKey(rel1)] });
    expect(r.ok).toBe(false);
  });

  it('refuses to sign an invalid key set or with no key', () => {
    expect(() => signKeySet({ ...v1, version: 0 }, [root.privateKeyPem])).toThrow(KeySetError);
    expect(() => signKeySet(v1, [])).toThrow(KeySetError);
  });
});

describe('key set queries', () => {
  it('release keys exclude revoked keys and keys outside their window; expiry uses the given time', () => {
    const ks = keyset(2, root, [rel1, rel2], { revoked: [{ keyId: mallory.keyId, revokedAt: iso(now) }] });
    expect(releaseKeysOf(ks).map((k) => k.keyId).sort()).toEqual([rel1.keyId, rel2.keyId].sort());
    expect(releaseKeysOf(ks, iso(now + 200 * day))).toEqual([]);
    expect(releaseKeysOf(ks, iso(now - 2 * day))).toEqual([]);
    const revoked = { ...ks, keys: [ks.keys[0]!], revoked: [{ keyId: rel2.keyId, revokedAt: iso(now) }] };
    expect(releaseKeysOf(revoked).map((k) => k.keyId)).toEqual([rel1.keyId]);
    expect(isRevoked(revoked, rel2.keyId)).toBe(true);
    expect(isRevoked(undefined, rel2.keyId)).toBe(false);
    expect(keySetExpired(ks, new Date(now))).toBe(false);
    expect(keySetExpired(ks, new Date(now + 366 * day))).toBe(true);
  });
});
