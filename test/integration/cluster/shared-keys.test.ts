/**
 * Issue 15 item 2: two cloud servers with their own data dirs and the same shared key config (keys.sharedDir,
 * one admin token) sign with the same key, hand devices the same trusted keys and key set, and retain
 * byte-identical key sets on their brokers. Neither writes keys, a key set or an admin token of its own; the
 * operator's offline rotation (the CLI's store on the shared dir) reaches both without a restart.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloudConfigSchema } from '../../../cloud/config/schema.js';
import { draftKeySet, publishKeySet, readPublishedKeySet } from '../../../cloud/keys/keyset-file.js';
import { initRoot } from '../../../cloud/keys/root.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { startCloud, type CloudService } from '../../../cloud/server.js';
import { silentLogger } from '../../../shared/log/index.js';
import { signKeySet, verifyManifest } from '../../../shared/manifest/index.js';
import { topics } from '../../../shared/protocol/index.js';
import { denseModel } from '../../fixtures/onnx-models.js';
import { MNIST_LIKE } from '../../unit/cloud-api/helpers.js';
import { collect, connectClient } from '../fleet/device-sim.js';

const TOKEN = 'shared-admin-token-0123456789';
/** input [4], labels a/b/c: MNIST_LIKE's shape. */
const MODEL = { ...MNIST_LIKE, inputSpec: { ...MNIST_LIKE.inputSpec, raw: 'float32' } };

let root: string;
let shared: string;
let admin: KeyStore;
let rootKey: { file: string; pub: ReturnType<typeof initRoot> };
const clouds: CloudService[] = [];
const clients: MqttClient[] = [];

async function api(c: CloudService, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Response> {
  return fetch(`${c.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': contentType }) },
    body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body),
  });
}

/** What the admin does offline: draft the next key set from the shared store, sign it with the root, publish it into the shared dir. */
function publishNextKeySet(): number {
  const draft = draftKeySet({ keys: admin.list(), root: rootKey.pub, previous: readPublishedKeySet(shared)?.keyset, expiresDays: 30 });
  const signed = signKeySet(draft, [readFileSync(rootKey.file, 'utf8')]);
  return publishKeySet(shared, signed, admin.active()).verdict.keyset.version;
}

/** Every file under dir (relative), with size and mtime. */
function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .sort()
    .map((f) => `${f}:${statSync(join(dir, f)).size}:${statSync(join(dir, f)).mtimeMs}`);
}

/** Uploads the same ONNX file as a release; returns the release's signed manifest as the API serves it. */
async function release(c: CloudService, seed: number): Promise<{ seq: number; manifest: unknown; signature: { keyId: string; sig: string } }> {
  const up = await api(c, 'POST', '/v1/models/digits/releases', denseModel({ sizes: [4, 3], seed }).bytes, 'application/octet-stream');
  expect(up.status).toBe(201);
  const { seq } = (await up.json()) as { seq: number };
  const res = await api(c, 'GET', `/v1/releases/${seq}`);
  expect(res.status).toBe(200);
  return { seq, ...((await res.json()) as { manifest: unknown; signature: { keyId: string; sig: string } }) };
}

/** The retained trust/keyset payload on a cloud's broker, read by a provisioned device. */
async function retainedKeySet(c: CloudService, minVersion: number): Promise<Buffer> {
  const res = await api(c, 'POST', '/v1/devices', { id: `dev-${clients.length}` });
  expect(res.status).toBe(201);
  const bundle = (await res.json()) as { deviceId: string; mqtt: { username: string; password: string } };
  const client = await connectClient(c.brokerUrl, bundle.deviceId, { username: bundle.mqtt.username, password: bundle.mqtt.password });
  clients.push(client);
  const msgs = await collect(client, topics.keyset(), (m) => m.some((x) => (JSON.parse(x.payload.toString()) as { keyset: { version: number } }).keyset.version >= minVersion), 15_000);
  return msgs.at(-1)!.payload;
}

describe('two cloud servers on one shared key store', () => {
  let sharedBefore: string[];

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'apprentice-shared-cloud-'));
    shared = join(root, 'shared-keys');
    // `apprentice keys init --keys-dir` and the root ceremony, before any replica starts.
    admin = KeyStore.open({ dir: shared });
    rootKey = { file: join(root, 'root.pem'), pub: initRoot(join(root, 'root.pem')) };
    expect(publishNextKeySet()).toBe(1);
    sharedBefore = snapshot(shared);
    for (const id of ['replica-a', 'replica-b']) {
      const cfg = cloudConfigSchema.parse({
        dataDir: join(root, id),
        api: { bind: '127.0.0.1:0', adminToken: TOKEN },
        mqtt: { embedded: { bind: '127.0.0.1:0' } },
        keys: { sharedDir: shared },
        cluster: { replicaId: id },
        rounds: { tickSeconds: 3600 },
      });
      clouds.push(await startCloud(cfg, { log: silentLogger }));
    }
    for (const c of clouds) expect((await api(c, 'PUT', '/v1/models/digits', MODEL)).status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    for (const c of clouds) await c.stop();
    rmSync(root, { recursive: true, force: true });
  }, 60_000);

  it('sign releases with the same key, verifiable with the published key set', async () => {
    const active = admin.active().keyId;
    const keyset = readPublishedKeySet(shared)!.keyset;
    for (const c of clouds) {
      const r = await release(c, 3);
      expect(r.signature.keyId).toBe(active);
      const verdict = verifyManifest({ manifest: r.manifest, signature: r.signature }, keyset.keys);
      expect(verdict).toMatchObject({ ok: true });
    }
  }, 60_000);

  it('serve the same key set and trusted keys, and retain byte-identical key sets on their brokers', async () => {
    const [a, b] = clouds as [CloudService, CloudService];
    const [ka, kb] = await Promise.all([api(a, 'GET', '/v1/keys/keyset').then((r) => r.text()), api(b, 'GET', '/v1/keys/keyset').then((r) => r.text())]);
    expect(JSON.parse(ka)).toMatchObject({ keyset: { version: 1 } });
    expect(ka).toBe(kb);
    const [la, lb] = await Promise.all([api(a, 'GET', '/v1/keys').then((r) => r.text()), api(b, 'GET', '/v1/keys').then((r) => r.text())]);
    expect(la).toBe(lb);
    const [ra, rb] = await Promise.all([retainedKeySet(a, 1), retainedKeySet(b, 1)]);
    expect(ra.equals(rb)).toBe(true);
    expect(ra.equals(readFileSync(join(shared, 'keyset.json')))).toBe(true);
  }, 60_000);

  it('write no keys, key set or admin token of their own, and refuse to change the shared store', async () => {
    for (const c of clouds) {
      const own = readdirSync(c.dataDir);
      expect(own).not.toContain('keys');
      expect(own).not.toContain('keyset.json');
      expect(own).not.toContain('admin-token');
      const rotate = await api(c, 'POST', '/v1/keys/rotate', {});
      expect(rotate.status).toBe(409);
      expect(((await rotate.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'key_conflict', message: expect.stringMatching(/shared by every replica/) });
      const put = await api(c, 'PUT', '/v1/keys/keyset', JSON.parse(readFileSync(join(shared, 'keyset.json'), 'utf8')));
      expect(put.status).toBe(409);
      expect(((await put.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'keyset_shared', message: expect.stringMatching(/keys publish-keyset --keys-dir/) });
    }
    expect(snapshot(shared)).toEqual(sharedBefore);
  }, 60_000);

  it('follow an offline rotation of the shared store: both sign with the new key and retain the new key set', async () => {
    const next = admin.rotate().keyId;
    expect(publishNextKeySet()).toBe(2);
    const keyset = readPublishedKeySet(shared)!.keyset;
    for (const c of clouds) {
      const r = await release(c, 4);
      expect(r.signature.keyId).toBe(next);
      expect(verifyManifest({ manifest: r.manifest, signature: r.signature }, keyset.keys)).toMatchObject({ ok: true });
    }
    // The replicas poll keyset.json every 2 s, then retain it.
    const [ra, rb] = await Promise.all([retainedKeySet(clouds[0]!, 2), retainedKeySet(clouds[1]!, 2)]);
    expect(ra.equals(rb)).toBe(true);
    expect(JSON.parse(ra.toString())).toMatchObject({ keyset: { version: 2 } });
  }, 60_000);
});
