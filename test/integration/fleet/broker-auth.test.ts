/**
 * The embedded broker's authentication and ACL (cloud/fleet/broker-auth.ts), on a real aedes with a
 * real registry: the same rules deploy/mosquitto/acl gives Mosquitto.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { embeddedBrokerAuth } from '../../../cloud/fleet/broker-auth.js';
import { EmbeddedBroker } from '../../../cloud/fleet/broker.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import { Registry } from '../../../cloud/registry/db.js';
import { devices } from '../../../cloud/registry/schema.js';
import { topics } from '../../../shared/protocol/topics.js';
import { sleep, waitFor } from '../../helpers/net.js';

const CLOUD = { user: 'apprentice-cloud', password: 'cloud-secret-0123456789' };
let registry: Registry;
let broker: EmbeddedBroker;
const clients: MqttClient[] = [];

beforeAll(async () => {
  registry = Registry.open(join(mkdtempSync(join(tmpdir(), 'apprentice-broker-auth-')), 'registry.db'));
  registry.db.insert(devices).values([
    { id: 'dev-a', groups: [], credentialHash: hashPassword('pw-a') },
    { id: 'dev-b', groups: [], credentialHash: hashPassword('pw-b') },
    { id: 'dev-gone', groups: [], credentialHash: hashPassword('pw-gone'), revoked: true },
  ]).run();
  broker = await EmbeddedBroker.create({ port: 0, aedes: embeddedBrokerAuth({ registry, cloudUser: CLOUD.user, cloudPassword: CLOUD.password }) });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await broker.stop();
  registry.dispose();
});

/** Resolves with the connected client, or rejects with the CONNACK error. */
function connect(username?: string, password?: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(broker.url, { username, password, reconnectPeriod: 0, connectTimeout: 3000 });
    clients.push(c);
    c.once('connect', () => resolve(c));
    c.once('error', (err) => reject(err));
  });
}

describe('embedded broker auth and ACL', () => {
  it('refuses anonymous clients, wrong passwords and revoked devices; accepts provisioned ones', async () => {
    await expect(connect()).rejects.toThrow();
    await expect(connect('dev-a', 'wrong')).rejects.toThrow();
    await expect(connect('dev-gone', 'pw-gone')).rejects.toThrow();
    await expect(connect('nobody', 'pw-a')).rejects.toThrow();
    await expect(connect(CLOUD.user, 'not-the-secret')).rejects.toThrow();
    expect((await connect('dev-a', 'pw-a')).connected).toBe(true);
  });

  it('disconnects a device that publishes on another device\'s topic, and delivers nothing of it', async () => {
    const cloud = await connect(CLOUD.user, CLOUD.password);
    const seen: string[] = [];
    cloud.on('message', (t) => seen.push(t));
    await cloud.subscribeAsync([topics.allDevices('telemetry'), topics.desired('dev-b')], { qos: 1 });
    for (const forged of [topics.telemetry('dev-b'), topics.desired('dev-b')]) {
      const a = await connect('dev-a', 'pw-a');
      const closed = new Promise<void>((r) => a.once('close', () => r()));
      a.publish(forged, 'forged', { qos: 0 });
      // aedes closes the connection on a refused PUBLISH ([MQTT-3.3.5-2]).
      await closed;
    }
    const a = await connect('dev-a', 'pw-a');
    await a.publishAsync(topics.telemetry('dev-a'), 'mine', { qos: 1 }); // positive control
    await waitFor(() => seen.includes(topics.telemetry('dev-a')), 3000, { message: "dev-a's own telemetry" });
    await sleep(200);
    expect(seen).toEqual([topics.telemetry('dev-a')]);
  });

  it("refuses a subscription to another device's desired manifest; grants its own and the artifacts", async () => {
    const cloud = await connect(CLOUD.user, CLOUD.password);
    await cloud.publishAsync(topics.desired('dev-b'), 'for-b', { qos: 1, retain: true });
    await cloud.publishAsync(topics.desired('dev-a'), 'for-a', { qos: 1, retain: true });
    const sha = 'a'.repeat(64);
    await cloud.publishAsync(topics.artifactChunk(sha, 0), 'chunk', { qos: 1, retain: true });
    const a = await connect('dev-a', 'pw-a');
    const got: string[] = [];
    a.on('message', (t) => got.push(t));
    // SUBACK 0x80 for the foreign topic: MQTT.js rejects the call.
    await expect(a.subscribeAsync(topics.desired('dev-b'), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await a.subscribeAsync([topics.desired('dev-a'), topics.artifactChunks(sha)], { qos: 1 });
    await waitFor(() => got.length >= 2, 3000, { message: 'own desired and the chunk' });
    await sleep(200);
    expect(got.sort()).toEqual([topics.artifactChunk(sha, 0), topics.desired('dev-a')].sort());
    for (const t of [topics.desired('dev-a'), topics.desired('dev-b'), topics.artifactChunk(sha, 0)]) await cloud.publishAsync(t, '', { qos: 1, retain: true });
  });

  it('lets a device read its own receipts, the key set and the cloud info, never write them, never read another\'s receipts', async () => {
    const cloud = await connect(CLOUD.user, CLOUD.password);
    await cloud.publishAsync(topics.keyset(), 'keyset-v1', { qos: 1, retain: true });
    await cloud.publishAsync(topics.cloudInfo(), 'info', { qos: 1, retain: true });
    const a = await connect('dev-a', 'pw-a');
    const got: Array<[string, string]> = [];
    a.on('message', (t, p) => got.push([t, p.toString()]));
    await expect(a.subscribeAsync(topics.receipts('dev-b'), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await expect(a.subscribeAsync('apprentice/v1/devices/+/receipts', { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await a.subscribeAsync([topics.receipts('dev-a'), topics.keyset(), topics.cloudInfo()], { qos: 1 });
    await waitFor(() => got.length >= 2, 3000, { message: 'the retained key set and cloud info' });
    await cloud.publishAsync(topics.receipts('dev-a'), 'receipt-a', { qos: 1 });
    await cloud.publishAsync(topics.receipts('dev-b'), 'receipt-b', { qos: 1 });
    await waitFor(() => got.some(([t]) => t === topics.receipts('dev-a')), 3000, { message: "dev-a's receipt" });
    await sleep(200);
    expect(got.sort()).toEqual([[topics.cloudInfo(), 'info'], [topics.receipts('dev-a'), 'receipt-a'], [topics.keyset(), 'keyset-v1']]);

    // Writing any of them (even its own receipts) is refused and closes the connection ([MQTT-3.3.5-2]).
    const watcher = await connect(CLOUD.user, CLOUD.password);
    const forged: string[] = [];
    watcher.on('message', (t, p) => p.length && forged.push(t));
    await watcher.subscribeAsync([topics.keyset(), topics.cloudInfo(), topics.receipts('dev-a')], { qos: 1 });
    await sleep(200);
    forged.length = 0; // the retained copies
    for (const t of [topics.keyset(), topics.cloudInfo(), topics.receipts('dev-a'), topics.receipts('dev-b')]) {
      const d = await connect('dev-a', 'pw-a');
      const closed = new Promise<void>((r) => d.once('close', () => r()));
      d.publish(t, 'forged', { qos: 0, retain: true });
      await closed;
    }
    await sleep(200);
    expect(forged).toEqual([]);
    for (const t of [topics.keyset(), topics.cloudInfo()]) await cloud.publishAsync(t, '', { qos: 1, retain: true });
  });

  it('refuses a device revoked after provisioning at its next connect', async () => {
    registry.db.update(devices).set({ revoked: true }).where(eq(devices.id, 'dev-b')).run();
    await expect(connect('dev-b', 'pw-b')).rejects.toThrow();
  });
});
