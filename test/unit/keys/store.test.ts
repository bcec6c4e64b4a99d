import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KeyStore, KeyStoreError } from '../../../cloud/keys/store.js';
import { generateSigningKey, signManifest, verifyManifest } from '../../../shared/manifest/index.js';
import type { Manifest } from '../../../shared/protocol/index.js';

const manifest: Manifest = {
  v: 1,
  model: 'digits',
  release: 7,
  artifact: { format: 'onnx', quantization: 'int8', sha256: 'ab'.repeat(32), bytes: 10, chunkSize: 1024, chunks: ['cd'.repeat(32)] },
  input: { shape: [2], dtype: 'float32', scaling: { scale: 1, offset: 0 }, raw: 'float32' },
  output: { kind: 'logits', classes: 2 },
  labels: ['a', 'b'],
  teacher: { id: 't' },
  metrics: { accuracy: 0.9 },
  lineage: { exampleCount: 0 },
  parent: null,
  createdAt: '2024-01-01T00:00:00.000Z',
  expiresAt: '2030-01-01T00:00:00.000Z',
  selfTest: { input: [0, 1], expected: [0.1, 0.2], tolerance: 0.01 },
};

describe('KeyStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'apprentice-keys-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const mode = (p: string) => statSync(p).mode & 0o777;

  it('generates a key on first start: private key 0600, index written atomically, same key on reopen', () => {
    const keys = KeyStore.open({ dir });
    const { keyId } = keys.active();
    expect(keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(mode(join(dir, `${keyId}.key.pem`))).toBe(0o600);
    expect(mode(join(dir, 'index.json'))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
    expect(readdirSync(dir).sort()).toEqual([`${keyId}.key.pem`, 'index.json']);
    expect(KeyStore.open({ dir }).active().keyId).toBe(keyId);
    expect(keys.list()).toEqual([expect.objectContaining({ keyId, status: 'active', source: 'generated' })]);
  });

  it('rotation keeps both keys trusted until the old one is retired; new signatures verify against trusted()', () => {
    const keys = KeyStore.open({ dir });
    const old = keys.active();
    const signedOld = signManifest(manifest, old);
    const rotated = keys.rotate();
    const next = keys.active();
    expect(rotated.keyId).toBe(next.keyId);
    expect(next.keyId).not.toBe(old.keyId);
    expect(keys.trusted().map((k) => k.keyId)).toEqual([next.keyId, old.keyId]);

    const signedNew = signManifest(manifest, keys.active());
    expect(signedNew.signature.keyId).toBe(next.keyId);
    expect(verifyManifest(signedNew, keys.trusted())).toMatchObject({ ok: true, keyId: next.keyId });
    expect(verifyManifest(signedOld, keys.trusted())).toMatchObject({ ok: true, keyId: old.keyId });

    const retired = keys.retire(old.keyId);
    expect(retired).toMatchObject({ keyId: old.keyId, status: 'retired' });
    expect(existsSync(join(dir, `${old.keyId}.key.pem`))).toBe(false);
    expect(keys.trusted().map((k) => k.keyId)).toEqual([next.keyId]);
    expect(verifyManifest(signedOld, keys.trusted())).toMatchObject({ ok: false, reason: 'unknown_key' });
    // Survives a restart.
    const reopened = KeyStore.open({ dir });
    expect(reopened.active().keyId).toBe(next.keyId);
    expect(reopened.list().map((k) => [k.keyId, k.status])).toEqual([[next.keyId, 'active'], [old.keyId, 'retired']]);
  });

  it('stages a key without activating it, then activates it', () => {
    const keys = KeyStore.open({ dir });
    const first = keys.active().keyId;
    const staged = keys.rotate({ activate: false });
    expect(staged.status).toBe('trusted');
    expect(keys.active().keyId).toBe(first);
    keys.activate(staged.keyId);
    expect(keys.active().keyId).toBe(staged.keyId);
  });

  it('refuses to retire the active key or unknown and already retired keys', () => {
    const keys = KeyStore.open({ dir });
    const first = keys.active().keyId;
    expect(() => keys.retire(first)).toThrow(/is the active signing key/);
    expect(() => keys.retire('0123456789abcdef')).toThrow(/unknown key/);
    keys.rotate();
    keys.retire(first);
    expect(() => keys.retire(first)).toThrow(/already retired/);
    expect(() => keys.activate(first)).toThrow(KeyStoreError);
  });

  it('sees changes made by another process (the CLI) without a restart', () => {
    const server = KeyStore.open({ dir });
    const cli = KeyStore.open({ dir, create: false });
    const next = cli.rotate().keyId;
    expect(server.active().keyId).toBe(next);
    expect(server.trusted()).toHaveLength(2);
  });

  it('fails clearly on a corrupted key file, a loose mode, a corrupt index and a missing store', () => {
    const keyId = KeyStore.open({ dir }).active().keyId;
    const file = join(dir, `${keyId}.key.pem`);
    const pem = readFileSync(file, 'utf8');

    writeFileSync(file, pem.replace(/[A-Za-z]{10}/, 'AAAAAAAAAA'));
    expect(() => KeyStore.open({ dir })).toThrow(new RegExp(`${keyId}\\.key\\.pem: not a valid Ed25519 private key`));
    writeFileSync(file, 'garbage');
    expect(() => KeyStore.open({ dir })).toThrow(KeyStoreError);

    writeFileSync(file, generateSigningKey().privateKeyPem);
    expect(() => KeyStore.open({ dir })).toThrow(/holds key [0-9a-f]{16}, but the index names it/);

    writeFileSync(file, pem);
    chmodSync(file, 0o644);
    expect(() => KeyStore.open({ dir })).toThrow(/mode 0644, expected 0600 \(run: chmod 600/);
    chmodSync(file, 0o600);

    rmSync(file);
    expect(() => KeyStore.open({ dir })).toThrow(/is missing/);
    writeFileSync(file, pem, { mode: 0o600 });

    writeFileSync(join(dir, 'index.json'), '{"version": 1, "active": ');
    expect(() => KeyStore.open({ dir })).toThrow(/index\.json: not valid JSON/);
    writeFileSync(join(dir, 'index.json'), JSON.stringify({ version: 1, active: keyId, keys: [] , retired: [] }));
    expect(() => KeyStore.open({ dir })).toThrow(/index\.json: keys: /);

    expect(() => KeyStore.open({ dir: join(dir, 'elsewhere'), create: false })).toThrow(/no key store here/);
  });

  it('signs with a key from APPRENTICE_SIGNING_KEY (never written to disk) and keeps it trusted after it changes', () => {
    const external = generateSigningKey();
    const keys = KeyStore.open({ dir, keyPem: external.privateKeyPem });
    expect(keys.active().keyId).toBe(external.keyId);
    expect(readdirSync(dir)).toEqual(['index.json']);
    expect(keys.list()[0]).toMatchObject({ keyId: external.keyId, source: 'env', status: 'active' });
    expect(() => keys.rotate()).toThrow(/pinned by APPRENTICE_SIGNING_KEY/);
    expect(keys.rotate({ activate: false }).status).toBe('trusted');

    const replacement = generateSigningKey();
    const after = KeyStore.open({ dir, keyPem: replacement.privateKeyPem });
    expect(after.active().keyId).toBe(replacement.keyId);
    expect(after.trusted().map((k) => k.keyId)).toContain(external.keyId);
    // Without the variable, the env key cannot sign.
    expect(() => KeyStore.open({ dir }).active()).toThrow(/APPRENTICE_SIGNING_KEY/);
    expect(() => KeyStore.open({ dir, keyPem: 'not a pem' })).toThrow(/APPRENTICE_SIGNING_KEY: not a valid Ed25519 private key/);
  });

  it('loads a key file only with mode 0600', () => {
    const external = generateSigningKey();
    const file = join(dir, '..', `${external.keyId}-signing.pem`);
    writeFileSync(file, external.privateKeyPem, { mode: 0o640 });
    try {
      expect(() => KeyStore.open({ dir, keyFile: file })).toThrow(/mode 0640, expected 0600/);
      chmodSync(file, 0o600);
      expect(KeyStore.open({ dir, keyFile: file }).active().keyId).toBe(external.keyId);
      expect(() => KeyStore.open({ dir, keyFile: file, keyPem: external.privateKeyPem })).toThrow(/not both/);
    } finally {
      rmSync(file, { force: true });
    }
  });
});
