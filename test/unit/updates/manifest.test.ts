import { generateKeyPairSync, sign as edSign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  buildArtifactDescriptor,
  canonicalJson,
  chunkArtifact,
  generateSigningKey,
  keyIdOf,
  loadPrivateKey,
  loadPublicKey,
  ManifestError,
  rawPublicKey,
  signManifest,
  toTrustedKey,
  verifyManifest,
  KeyError,
  sha256Of,
} from '../../../shared/manifest/index.js';
import { makeManifest, modelBytes } from './fixtures.js';

const key = generateSigningKey();
const trusted = [toTrustedKey(key)];
const bytes = modelBytes(3000);

/** Reorders object keys recursively (reversed), as another JSON serialiser might. */
function reorder(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(reorder);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reorder(x)]));
  return v;
}

describe('keys', () => {
  it('key id is the first 16 hex of sha256(raw public key), same from private or public PEM', () => {
    expect(key.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keyIdOf(key.publicKeyPem)).toBe(key.keyId);
    expect(keyIdOf(key.privateKeyPem)).toBe(key.keyId);
    expect(rawPublicKey(key.publicKeyPem)).toHaveLength(32);
    expect(loadPublicKey(key.publicKeyPem).asymmetricKeyType).toBe('ed25519');
    expect(loadPrivateKey(key.privateKeyPem).type).toBe('private');
  });

  it('refuses non-ed25519 keys and garbage PEM', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => keyIdOf(publicKey)).toThrow(KeyError);
    expect(() => loadPublicKey('not a pem')).toThrow(KeyError);
    expect(() => loadPrivateKey(key.publicKeyPem)).toThrow(KeyError);
  });
});

describe('signManifest / verifyManifest', () => {
  it('roundtrips through JSON bytes, text and objects', () => {
    const signed = signManifest(makeManifest(bytes), key);
    expect(signed.signature).toMatchObject({ alg: 'ed25519', keyId: key.keyId });
    for (const payload of [Buffer.from(JSON.stringify(signed)), JSON.stringify(signed), JSON.parse(JSON.stringify(signed))]) {
      const r = verifyManifest(payload, trusted);
      expect(r).toMatchObject({ ok: true, keyId: key.keyId });
      if (r.ok) expect(r.manifest).toEqual(signed.manifest);
    }
  });

  it('is independent of key order (RFC 8785 canonical JSON)', () => {
    const signed = signManifest(makeManifest(bytes), key);
    const reordered = reorder(JSON.parse(JSON.stringify(signed)));
    expect(JSON.stringify(reordered)).not.toBe(JSON.stringify(signed));
    expect(verifyManifest(reordered, trusted).ok).toBe(true);
    expect(canonicalJson({ b: 1, a: [2, { d: 1, c: 0 }] })).toBe('{"a":[2,{"c":0,"d":1}],"b":1}');
    expect(canonicalJson({ x: 1e21, y: 0.1, z: -0 })).toBe('{"x":1e+21,"y":0.1,"z":0}');
  });

  it.each([
    ['release', (m: any) => { m.release = 2; }],
    ['sha256', (m: any) => { m.artifact.sha256 = 'f'.repeat(64); }],
    ['nested metric', (m: any) => { m.metrics.accuracy = 0.5; }],
    ['added field', (m: any) => { m.extra = 1; }],
    ['removed optional', (m: any) => { delete m.lineage.round; }],
  ])('a tampered %s → bad_signature', (_name, tamper) => {
    const signed = JSON.parse(JSON.stringify(signManifest(makeManifest(bytes), key)));
    tamper(signed.manifest);
    expect(verifyManifest(signed, trusted)).toMatchObject({ ok: false, reason: 'bad_signature' });
  });

  it('a truncated or foreign signature → bad_signature', () => {
    const signed = signManifest(makeManifest(bytes), key);
    const other = signManifest(makeManifest(bytes, { release: 9 }), key);
    expect(verifyManifest({ ...signed, signature: { ...signed.signature, sig: other.signature.sig } }, trusted)).toMatchObject({ reason: 'bad_signature' });
    expect(verifyManifest({ ...signed, signature: { ...signed.signature, sig: signed.signature.sig.slice(0, 44) } }, trusted)).toMatchObject({ reason: 'bad_signature' });
  });

  it('an untrusted key → unknown_key, even with a valid signature', () => {
    const stranger = generateSigningKey();
    const signed = signManifest(makeManifest(bytes), stranger);
    expect(verifyManifest(signed, trusted)).toMatchObject({ ok: false, reason: 'unknown_key' });
    expect(verifyManifest(signed, [])).toMatchObject({ ok: false, reason: 'unknown_key' });
    // A trusted entry whose id does not belong to its PEM does not make the key trusted.
    expect(verifyManifest(signed, [{ keyId: stranger.keyId, publicKeyPem: key.publicKeyPem }])).toMatchObject({ reason: 'unknown_key' });
  });

  it('rotation: trusts both old and new keys while both are provisioned', () => {
    const next = generateSigningKey();
    const both = [toTrustedKey(key), toTrustedKey(next)];
    expect(verifyManifest(signManifest(makeManifest(bytes), key), both)).toMatchObject({ ok: true, keyId: key.keyId });
    expect(verifyManifest(signManifest(makeManifest(bytes), next), both)).toMatchObject({ ok: true, keyId: next.keyId });
    // The old key retired: its releases are no longer accepted.
    expect(verifyManifest(signManifest(makeManifest(bytes), key), [toTrustedKey(next)])).toMatchObject({ reason: 'unknown_key' });
  });

  it.each([
    ['empty bytes', Buffer.alloc(0)],
    ['not JSON', Buffer.from('{"manifest":')],
    ['null', null],
    ['a number', 42],
    ['an array', []],
    ['no signature', { manifest: {} }],
    ['wrong alg', { manifest: {}, signature: { alg: 'rsa', keyId: 'a'.repeat(16), sig: 'AA==' } }],
    ['bad key id', { manifest: {}, signature: { alg: 'ed25519', keyId: 'XYZ', sig: 'AA==' } }],
    ['extra envelope key', { manifest: {}, signature: { alg: 'ed25519', keyId: 'a'.repeat(16), sig: 'AA==' }, x: 1 }],
  ])('garbage (%s) → malformed_manifest', (_name, payload) => {
    expect(verifyManifest(payload, trusted)).toMatchObject({ ok: false, reason: 'malformed_manifest' });
  });

  it('a validly signed but schema-invalid manifest → malformed_manifest (signature checked first)', () => {
    const bad = { ...makeManifest(bytes), release: 0 };
    const sig = signManifest(makeManifest(bytes), key); // borrow a valid envelope
    // Sign the invalid object directly (signManifest refuses; a buggy signer might not).
    const forged = { manifest: bad, signature: { ...sig.signature, sig: rawSign(bad) } };
    expect(verifyManifest(forged, trusted)).toMatchObject({ ok: false, reason: 'malformed_manifest' });
    // The same invalid object with a wrong signature is a signature failure, not a schema one.
    expect(verifyManifest({ manifest: bad, signature: sig.signature }, trusted)).toMatchObject({ reason: 'bad_signature' });
    // A manifest missing entirely, signed by nobody.
    expect(verifyManifest({ signature: sig.signature }, trusted)).toMatchObject({ reason: 'malformed_manifest' });
  });

  it('refuses to sign an invalid manifest or with a mismatched key id', () => {
    expect(() => signManifest({ ...makeManifest(bytes), labels: ['only-one'] }, key)).toThrow(ManifestError);
    expect(() => signManifest(makeManifest(bytes), { privateKeyPem: key.privateKeyPem, keyId: '0'.repeat(16) })).toThrow(ManifestError);
  });

  it('signs the validated value: schema defaults are part of what was signed', () => {
    const m = makeManifest(bytes);
    const { raw: _raw, ...input } = m.input;
    const signed = signManifest({ ...m, input: input as typeof m.input }, key);
    expect(signed.manifest.input.raw).toBe('float32');
    expect(verifyManifest(JSON.parse(JSON.stringify(signed)), trusted).ok).toBe(true);
  });
});

describe('artifact descriptor', () => {
  it('hashes the whole file and every chunk', () => {
    const a = buildArtifactDescriptor(bytes, { chunkSize: 1024, quantization: 'int8', url: 'https://cdn.example/m.onnx' });
    expect(a).toMatchObject({ format: 'onnx', quantization: 'int8', bytes: 3000, chunkSize: 1024, sha256: sha256Of(bytes), url: 'https://cdn.example/m.onnx' });
    const chunks = chunkArtifact(bytes, 1024);
    expect(chunks.map((c) => c.length)).toEqual([1024, 1024, 952]);
    expect(a.chunks).toEqual(chunks.map(sha256Of));
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    expect(buildArtifactDescriptor(bytes, { quantization: 'fp32' }).chunks).toHaveLength(1);
  });

  it('rejects chunk sizes the schema does not allow', () => {
    expect(() => buildArtifactDescriptor(bytes, { chunkSize: 10, quantization: 'fp32' })).toThrow(ManifestError);
    expect(() => chunkArtifact(bytes, 0)).toThrow(ManifestError);
  });
});

/** Raw Ed25519 signing over canonical JSON, to forge a "signed but schema-invalid" manifest. */
function rawSign(value: unknown): string {
  return edSign(null, Buffer.from(canonicalJson(value)), loadPrivateKey(key.privateKeyPem)).toString('base64');
}
