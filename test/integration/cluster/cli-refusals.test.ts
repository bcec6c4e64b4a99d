/**
 * Issue 15 item 2, as an operator meets it: the real CLI as a child process. A replica without the admin
 * token or without the shared key store does not start (exit 2, one line naming the problem) and leaves
 * no per-replica secret behind; `keys init|rotate|list --keys-dir` manage the shared store.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { draftKeySet } from '../../../cloud/keys/keyset-file.js';
import { initRoot } from '../../../cloud/keys/root.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { generateSigningKey, signKeySet } from '../../../shared/manifest/index.js';
import { runCli } from '../../helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'apprentice-cluster-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The variables a developer's shell might have set, cleared (loadCloudConfig ignores empty values). */
const CLEAN = { APPRENTICE_ADMIN_TOKEN: '', APPRENTICE_SIGNING_KEY: '', APPRENTICE_KEYS_MODE: '', APPRENTICE_KEYS_SHARED_DIR: '', APPRENTICE_CLUSTER_ENABLED: '', APPRENTICE_MQTT_URL: '', APPRENTICE_REGISTRY_URL: '', APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS: '' };
const errorLines = (stderr: string) => stderr.trim().split('\n').filter((l) => l.startsWith('error'));

describe('apprentice cloud as a replica, and keys --keys-dir', () => {
  it('cluster.enabled without an admin token: exit 2 naming api.adminToken, before touching the data dir', async () => {
    const data = join(root, 'no-token');
    const r = await runCli(['cloud', '--data-dir', data], {
      env: { ...CLEAN, APPRENTICE_CLUSTER_ENABLED: '1', APPRENTICE_KEYS_SHARED_DIR: join(root, 'keys'), APPRENTICE_MQTT_URL: 'mqtt://127.0.0.1:1' },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/api\.adminToken: required with cluster\.enabled \(set api\.adminToken or APPRENTICE_ADMIN_TOKEN/);
    expect(existsSync(data)).toBe(false);
  }, 60_000);

  it('cluster.enabled on SQLite (no registry.url): exit 2, one line naming registry.url and cluster.enabled, data dir untouched', async () => {
    const data = join(root, 'on-sqlite');
    const r = await runCli(['cloud', '--data-dir', data], {
      env: { ...CLEAN, APPRENTICE_CLUSTER_ENABLED: '1', APPRENTICE_KEYS_SHARED_DIR: join(root, 'keys'), APPRENTICE_MQTT_URL: 'mqtt://127.0.0.1:1', APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS: '1', APPRENTICE_ADMIN_TOKEN: 'replica-admin-token-0123456789' },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/registry\.url: required with cluster\.enabled \(APPRENTICE_REGISTRY_URL/);
    expect(r.stderr).not.toMatch(/api\.adminToken|keys\.sharedDir|mqtt\./);
    expect(existsSync(data)).toBe(false);
  }, 60_000);

  it('shared keys that are missing: exit 2, no key generated in the data dir or the shared dir', async () => {
    const data = join(root, 'no-keys');
    const keys = join(root, 'absent-keys');
    const r = await runCli(['cloud', '--data-dir', data, '--bind', '127.0.0.1:0', '--mqtt-bind', '127.0.0.1:0'], {
      env: { ...CLEAN, APPRENTICE_KEYS_SHARED_DIR: keys, APPRENTICE_ADMIN_TOKEN: 'replica-admin-token-0123456789' },
    });
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/absent-keys\/index\.json: the shared key store is missing; refusing to generate a key on this replica .*apprentice keys init --keys-dir/);
    expect(existsSync(keys)).toBe(false);
    expect(readdirSync(data)).not.toContain('keys');
    expect(readdirSync(data)).not.toContain('admin-token');
  }, 60_000);

  it('keys init creates the shared store once; rotate and list work on it; --data-dir and --keys-dir are exclusive', async () => {
    const keys = join(root, 'shared');
    const init = await runCli(['keys', 'init', '--keys-dir', keys], { env: CLEAN });
    expect(init.code, init.stderr).toBe(0);
    const first = /signing with ([0-9a-f]{16}) \(generated\)/.exec(init.stdout)![1]!;
    const again = await runCli(['keys', 'init', '--keys-dir', keys], { env: CLEAN });
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/a key store exists already/);
    const rotate = await runCli(['keys', 'rotate', '--keys-dir', keys], { env: CLEAN });
    expect(rotate.code, rotate.stderr).toBe(0);
    const list = await runCli(['keys', 'list', '--keys-dir', keys, '--json'], { env: CLEAN });
    expect(list.code, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout) as { keyId: string; status: string }[];
    expect(listed.map((k) => k.status)).toEqual(['active', 'trusted']);
    expect(listed[1]!.keyId).toBe(first);
    const both = await runCli(['keys', 'list', '--keys-dir', keys, '--data-dir', root], { env: CLEAN });
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/give either --data-dir \(a single cloud\) or --keys-dir \(a shared key store\), exactly one/);
  }, 120_000);

  it('a signing key kept outside the shared store: init records its public half; publish-keyset signs with it from the environment', async () => {
    const keys = join(root, 'external');
    const key = generateSigningKey();
    const pemFile = join(root, 'signing.pem');
    writeFileSync(pemFile, key.privateKeyPem, { mode: 0o600 });
    const init = await runCli(['keys', 'init', '--keys-dir', keys, '--signing-key-file', pemFile], { env: CLEAN });
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain(`signing with ${key.keyId} (file)`);
    expect(readdirSync(keys).filter((f) => f.endsWith('.pem'))).toEqual([]);
    // The first key set, drafted and signed as the admin would (offline), then published by the CLI.
    const rootPub = initRoot(join(root, 'ext-root.pem'));
    const draft = draftKeySet({ keys: KeyStore.open({ dir: keys, readOnly: true }).list(), root: rootPub, expiresDays: 30 });
    const signed = join(root, 'signed.json');
    writeFileSync(signed, JSON.stringify(signKeySet(draft, [readFileSync(join(root, 'ext-root.pem'), 'utf8')])));
    const without = await runCli(['keys', 'publish-keyset', '--keys-dir', keys, '--in', signed], { env: CLEAN });
    expect(without.code).toBe(2);
    expect(without.stderr).toMatch(new RegExp(`active key ${key.keyId} came from an external key file`));
    const indexBefore = readFileSync(join(keys, 'index.json'), 'utf8');
    const withEnv = await runCli(['keys', 'publish-keyset', '--keys-dir', keys, '--in', signed], { env: { ...CLEAN, APPRENTICE_SIGNING_KEY: key.privateKeyPem } });
    expect(withEnv.code, withEnv.stderr).toBe(0);
    const published = JSON.parse(readFileSync(join(keys, 'keyset.json'), 'utf8')) as { signatures: { keyId: string }[] };
    expect(published.signatures.map((x) => x.keyId)).toEqual([rootPub.keyId, key.keyId]);
    expect(readFileSync(join(keys, 'index.json'), 'utf8')).toBe(indexBefore);
  }, 120_000);
});
