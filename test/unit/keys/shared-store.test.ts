/**
 * Issue 15 item 2: a key store every replica mounts (keys.sharedDir) is read-only to the cloud. A missing
 * store is refused instead of generated, nothing is written into it, changes are made with the CLI's
 * store (not read-only) and picked up by the replicas, and a key from the environment must be listed in it.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCloudKeys } from '../../../cloud/keys/cloud-keys.js';
import { KeyStore, KeyStoreError } from '../../../cloud/keys/store.js';
import { generateSigningKey } from '../../../shared/manifest/index.js';

/** Every file's name, size and mtime: what "not written" means. */
function snapshot(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .map((f) => {
      const st = statSync(join(dir, f));
      return `${f}:${st.size}:${st.mtimeMs}`;
    });
}

function expectRefused(fn: () => unknown, message: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(KeyStoreError);
  expect((err as Error).message).toMatch(message);
}

describe('shared key store (read-only)', () => {
  let root: string;
  let shared: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'apprentice-shared-keys-'));
    shared = join(root, 'shared');
  });
  afterEach(() => {
    chmodSync(root, 0o700);
    rmSync(root, { recursive: true, force: true });
  });

  it('refuses a missing store instead of generating a key, and creates nothing', () => {
    expectRefused(() => KeyStore.open({ dir: shared, readOnly: true }), /shared key store is missing; refusing to generate a key on this replica.*apprentice keys init --keys-dir/);
    expect(readdirSync(root)).toEqual([]);
  });

  it('reads a store made by the CLI side without writing to it, even when the directory is read-only', () => {
    const admin = KeyStore.open({ dir: shared });
    const before = snapshot(shared);
    chmodSync(shared, 0o500);
    const a = KeyStore.open({ dir: shared, readOnly: true });
    const b = KeyStore.open({ dir: shared, readOnly: true });
    expect(a.active()).toEqual(admin.active());
    expect(b.active().keyId).toBe(a.active().keyId);
    expect(b.trusted()).toEqual(a.trusted());
    chmodSync(shared, 0o700);
    expect(snapshot(shared)).toEqual(before);
  });

  it('refuses rotate, activate and retire with the CLI command to run instead', () => {
    const admin = KeyStore.open({ dir: shared });
    const staged = admin.rotate({ activate: false });
    const replica = KeyStore.open({ dir: shared, readOnly: true });
    const before = snapshot(shared);
    expectRefused(() => replica.rotate(), /cannot rotate keys here: the key store .* is shared by every replica .*--keys-dir/);
    expectRefused(() => replica.activate(staged.keyId), /cannot activate a key here/);
    expectRefused(() => replica.retire(staged.keyId), /cannot retire a key here/);
    expect(snapshot(shared)).toEqual(before);
  });

  it('follows a rotation done with the CLI side (every accessor re-reads the index)', () => {
    const admin = KeyStore.open({ dir: shared });
    const replica = KeyStore.open({ dir: shared, readOnly: true });
    const first = replica.active().keyId;
    const next = admin.rotate().keyId;
    expect(next).not.toBe(first);
    expect(replica.active().keyId).toBe(next);
    expect(replica.trusted().map((k) => k.keyId)).toEqual([next, first]);
  });

  it('takes the private key from the environment only when the shared index lists it', () => {
    KeyStore.open({ dir: shared });
    const stranger = generateSigningKey();
    expectRefused(() => KeyStore.open({ dir: shared, readOnly: true, keyPem: stranger.privateKeyPem }), new RegExp(`APPRENTICE_SIGNING_KEY \\(${stranger.keyId}\\) is not in the shared key store`));
    // The admin records the key (its public half only: the PEM stays in the secret), then replicas sign with it.
    const pemFile = join(root, 'signing.pem');
    writeFileSync(pemFile, stranger.privateKeyPem, { mode: 0o600 });
    KeyStore.open({ dir: shared, keyFile: pemFile });
    expect(readdirSync(shared).filter((f) => f.includes(stranger.keyId))).toEqual([]);
    const replica = KeyStore.open({ dir: shared, readOnly: true, keyPem: stranger.privateKeyPem });
    expect(replica.active()).toMatchObject({ keyId: stranger.keyId, privateKeyPem: stranger.privateKeyPem });
    // Without the secret, the replica cannot sign (and says where the key was supposed to come from).
    const without = KeyStore.open({ dir: shared, readOnly: true });
    expectRefused(() => without.active(), /came from an external key file, which this process was not given/);
  });

  it('openCloudKeys: local keys under DATA/keys by default, the shared dir (keys and keyset.json) when given', () => {
    const data = join(root, 'data');
    const local = openCloudKeys({ keys: {}, cluster: { enabled: false, replicaId: 'r1' } }, data, {});
    expect(local).toMatchObject({ shared: false, trustDir: data });
    expect(local.keys.dir).toBe(join(data, 'keys'));
    expect(JSON.parse(readFileSync(join(data, 'keys', 'index.json'), 'utf8')).active).toBe(local.keys.active().keyId);

    const data2 = join(root, 'data2');
    expectRefused(() => openCloudKeys({ keys: { sharedDir: shared }, cluster: { enabled: false, replicaId: 'r1' } }, data2, {}), /shared key store is missing/);
    KeyStore.open({ dir: shared });
    const s = openCloudKeys({ keys: { mode: 'shared', sharedDir: shared }, cluster: { enabled: true, replicaId: 'r1' } }, data2, {});
    expect(s).toMatchObject({ shared: true, trustDir: shared });
    expect(s.keys.readOnly).toBe(true);
  });
});
