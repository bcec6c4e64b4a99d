/**
 * The root-of-trust ceremony as an operator runs it (cloud/keys/root*.ts, keyset-file.ts), checked by
 * a device's TrustStore: init the offline root, draft, sign offline, publish; rotate; revoke. And the
 * promise that the cloud server never reads a root key.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { draftKeySet, publishKeySet, readPublishedKeySet } from '../../../cloud/keys/keyset-file.js';
import { initRoot, readRootKey } from '../../../cloud/keys/root.js';
import { KeyStore, keysDirIn } from '../../../cloud/keys/store.js';
import { TrustStore } from '../../../edge/updates/index.js';
import { generateSigningKey, signKeySet, toTrustedKey } from '../../../shared/manifest/index.js';
import { UsageError } from '../../../shared/cli/errors.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

describe('root ceremony', () => {
  it('init-root, draft, sign offline, publish; devices bootstrap, follow a rotation and a revocation', async () => {
    const admin = mkdtempSync(join(tmpdir(), 'root-admin-'));
    const data = mkdtempSync(join(tmpdir(), 'root-cloud-'));
    const rootFile = join(admin, 'root.pem');
    const root = initRoot(rootFile);
    expect(statSync(rootFile).mode & 0o777).toBe(0o600);
    expect(() => initRoot(rootFile)).toThrow(UsageError);
    expect(readRootKey(rootFile).trusted.keyId).toBe(root.keyId);

    const store = KeyStore.open({ dir: keysDirIn(data) });
    const first = store.active();
    // A device in the field: only edge.json's trustedKeys, no root.
    const devDir = mkdtempSync(join(tmpdir(), 'root-device-'));
    const device = await TrustStore.open({ dataDir: devDir, trustedKeys: [toTrustedKey(first)] });

    const sign = (draft: ReturnType<typeof draftKeySet>) => signKeySet(draft, [readRootKey(rootFile).privateKeyPem]);
    const v1 = sign(draftKeySet({ keys: store.list(), root, expiresDays: 30 }));
    publishKeySet(data, v1, store.active());
    const published1 = readPublishedKeySet(data)!;
    // The first one is co-signed by the active release key, so trustedKeys-only devices can bootstrap.
    expect(published1.signatures.map((s) => s.keyId).sort()).toEqual([root.keyId, first.keyId].sort());
    expect(await device.apply(Buffer.from(JSON.stringify(published1)))).toMatchObject({ ok: true, how: 'bootstrap' });

    // Rotate: a new signing key, no edge.json edit.
    const rotated = store.rotate();
    const v2 = sign(draftKeySet({ keys: store.list(), root, previous: published1.keyset, expiresDays: 30 }));
    publishKeySet(data, v2, store.active());
    expect(await device.apply(Buffer.from(JSON.stringify(readPublishedKeySet(data))))).toMatchObject({ ok: true, how: 'root' });
    expect(device.trustedKeys().map((k) => k.keyId).sort()).toEqual([first.keyId, rotated.keyId].sort());

    // Revoke the first key (say it leaked).
    const v3 = sign(draftKeySet({ keys: store.list(), root, previous: readPublishedKeySet(data)!.keyset, expiresDays: 30, revoke: [first.keyId] }));
    publishKeySet(data, v3, store.active());
    expect(await device.apply(Buffer.from(JSON.stringify(readPublishedKeySet(data))))).toMatchObject({ ok: true });
    expect(device.trustedKeys().map((k) => k.keyId)).toEqual([rotated.keyId]);

    // publish-keyset applies the devices' rules: an older version, or one not signed by the root, is refused.
    expect(() => publishKeySet(data, v2, store.active())).toThrow(/stale_keyset/);
    const forged = signKeySet(draftKeySet({ keys: store.list(), root, previous: v3.keyset, expiresDays: 30 }), [generateSigningKey().privateKeyPem]);
    expect(() => publishKeySet(data, forged, store.active())).toThrow(/untrusted_keyset/);
    expect(() => publishKeySet(data, { keyset: 1 }, store.active())).toThrow(UsageError);
    expect(readPublishedKeySet(data)!.keyset.version).toBe(3);
  });

  it('refuses a root key file readable by others', () => {
    const admin = mkdtempSync(join(tmpdir(), 'root-admin-'));
    const f = join(admin, 'root.pem');
    initRoot(f);
    chmodSync(f, 0o644);
    expect(() => readRootKey(f)).toThrow(/0600/);
  });
});

describe('the cloud server never reads a root key', () => {
  /** Every repo source file reachable from `entry` through static and dynamic relative imports. */
  function reachable(entry: string): Set<string> {
    const seen = new Set<string>();
    const todo = [entry];
    while (todo.length) {
      const file = todo.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      const src = readFileSync(file, 'utf8');
      for (const m of src.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
        // `./x.js` is `x.ts`, or `x.tsx` (the console's pages).
        const ts = resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts'));
        todo.push(existsSync(ts) ? ts : `${ts}x`);
      }
    }
    return seen;
  }

  it('cloud/server.ts does not load cloud/keys/root.ts or the root commands', () => {
    const files = reachable(join(REPO, 'cloud/server.ts'));
    expect(files.size).toBeGreaterThan(20); // the walk did follow imports
    expect(files.has(join(REPO, 'cloud/keys/store.ts'))).toBe(true);
    expect(files.has(join(REPO, 'cloud/keys/root.ts'))).toBe(false);
    expect(files.has(join(REPO, 'cloud/keys/root-cli.ts'))).toBe(false);
    for (const f of files) expect(readFileSync(f, 'utf8'), f).not.toMatch(/readRootKey|initRoot/);
  });
});
