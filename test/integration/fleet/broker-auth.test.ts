/**
 * The embedded broker's authentication and ACL (cloud/fleet/broker-auth.ts), on a real aedes with a
 * real registry of either dialect (issue 15): the same rules deploy/mosquitto/acl gives Mosquitto.
 */
import { eq } from 'drizzle-orm';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { embeddedBrokerAuth } from '../../../cloud/fleet/broker-auth.js';
import { EmbeddedBroker } from '../../../cloud/fleet/broker.js';
import { hashPassword } from '../../../cloud/provision/passwd.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { topics } from '../../../shared/protocol/topics.js';
import { registryDialects } from '../../helpers/dialects.js';
import { sleep, waitFor } from '../../helpers/net.js';

const CLOUD = { user: 'apprentice-cloud', password: 'cloud-secret-0123456789' };
const dialects = registryDialects();

describe.each(dialects)('embedded broker auth and ACL on $name', (d) => {
  let registry: StoreRegistry;
  let broker: EmbeddedBroker;
  const clients: MqttClient[] = [];
  /** Why this dialect's cases are skipped (PostgreSQL unreachable and not required), if they are. */
  let unavailable: string | undefined;

  beforeAll(async () => {
    try {
      registry = await d.open({ skip: (note) => void (unavailable = note ?? 'unavailable') });
    } catch (err) {
      if (!unavailable) throw err;
    }
    if (unavailable) return;
    await registry.q.insert(registry.t.devices).values([
      { id: 'dev-a', groups: [], credentialHash: hashPassword('pw-a') },
      { id: 'dev-b', groups: [], credentialHash: hashPassword('pw-b') },
      { id: 'dev-gone', groups: [], credentialHash: hashPassword('pw-gone'), revoked: true },
      { id: 'dev-b2', groups: [], credentialHash: hashPassword('pw-b2') },
      { id: 'dev-r', groups: [], credentialHash: hashPassword('pw-r') },
    ]);
    broker = await EmbeddedBroker.create({ port: 0, aedes: embeddedBrokerAuth({ registry, cloudUser: CLOUD.user, cloudPassword: CLOUD.password }) });
  });
  beforeEach((ctx) => {
    if (unavailable) ctx.skip(unavailable);
  });
  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await broker?.stop();
    await d.close();
  });

  /**
   * Resolves with the connected client, or rejects with the CONNACK error. A device's client id is its
   * username unless given; the cloud's is random.
   */
  function connect(username?: string, password?: string, clientId = username && username !== CLOUD.user ? username : `cloud-${Math.random().toString(16).slice(2, 10)}`): Promise<MqttClient> {
    return new Promise((resolve, reject) => {
      const c = mqtt.connect(broker.url, { username, password, clientId, reconnectPeriod: 0, connectTimeout: 3000 });
      clients.push(c);
      c.once('connect', () => resolve(c));
      c.once('error', (err) => reject(err));
    });
  }

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
    await waitFor(() => seen.includes(topics.telemetry('dev-a')), 10_000, { message: "dev-a's own telemetry" });
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
    await waitFor(() => got.length >= 2, 10_000, { message: 'own desired and the chunk' });
    await sleep(200);
    expect(got.sort()).toEqual([topics.artifactChunk(sha, 0), topics.desired('dev-a')].sort());
    for (const t of [topics.desired('dev-a'), topics.desired('dev-b'), topics.artifactChunk(sha, 0)]) await cloud.publishAsync(t, '', { qos: 1, retain: true });
  });

  it("lets a device read its own agent release topic, never another's, and never write its own (issue 14)", async () => {
    const cloud = await connect(CLOUD.user, CLOUD.password);
    await cloud.publishAsync(topics.agent('dev-b'), 'agent-for-b', { qos: 1, retain: true });
    await cloud.publishAsync(topics.agent('dev-a'), 'agent-for-a', { qos: 1, retain: true });
    const a = await connect('dev-a', 'pw-a');
    const got: [string, string][] = [];
    a.on('message', (t, p) => got.push([t, p.toString()]));
    await expect(a.subscribeAsync(topics.agent('dev-b'), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await expect(a.subscribeAsync('apprentice/v1/devices/+/agent', { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await a.subscribeAsync(topics.agent('dev-a'), { qos: 1 });
    await waitFor(() => got.length >= 1, 10_000, { message: "dev-a's retained agent release" });
    await sleep(200);
    expect(got).toEqual([[topics.agent('dev-a'), 'agent-for-a']]);
    // A device forging its own agent release is refused and disconnected ([MQTT-3.3.5-2]); the retained one stays.
    const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
    a.publish(topics.agent('dev-a'), 'forged', { qos: 1, retain: true });
    await closed;
    const watcher = await connect(CLOUD.user, CLOUD.password);
    const seen: string[] = [];
    watcher.on('message', (_t, p) => seen.push(p.toString()));
    await watcher.subscribeAsync(topics.agent('dev-a'), { qos: 1 });
    await waitFor(() => seen.length >= 1, 10_000, { message: 'the retained agent release' });
    expect(seen).toEqual(['agent-for-a']);
    for (const t of [topics.agent('dev-a'), topics.agent('dev-b')]) await cloud.publishAsync(t, '', { qos: 1, retain: true });
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
    await waitFor(() => got.length >= 2, 10_000, { message: 'the retained key set and cloud info' });
    await cloud.publishAsync(topics.receipts('dev-a'), 'receipt-a', { qos: 1 });
    await cloud.publishAsync(topics.receipts('dev-b'), 'receipt-b', { qos: 1 });
    await waitFor(() => got.some(([t]) => t === topics.receipts('dev-a')), 10_000, { message: "dev-a's receipt" });
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

  it("a hijack fails: device A under B's client id, or the cloud's, is refused, and the victims' sessions survive", async () => {
    const cloud = await connect(CLOUD.user, CLOUD.password, 'apprentice-cloud-test');
    const b = await connect('dev-b2', 'pw-b2');
    const closed: string[] = [];
    cloud.on('close', () => closed.push('cloud'));
    b.on('close', () => closed.push('dev-b2'));
    const got: string[] = [];
    b.on('message', (_t, p) => got.push(p.toString()));
    await b.subscribeAsync(topics.desired('dev-b2'), { qos: 1 });

    // CONNACK 2 (identifier rejected) before aedes would close the session holding that id.
    await expect(connect('dev-a', 'pw-a', 'dev-b2')).rejects.toThrow(/Identifier rejected/i);
    await expect(connect('dev-a', 'pw-a', 'apprentice-cloud-test')).rejects.toThrow(/Identifier rejected/i);
    await expect(connect('dev-a', 'pw-a', 'apprentice-edge-dev-b2')).rejects.toThrow(/Identifier rejected/i);
    // Nor can the cloud user (e.g. a misconfigured replica) take a device's id.
    await expect(connect(CLOUD.user, CLOUD.password, 'dev-b2')).rejects.toThrow(/Identifier rejected/i);
    await expect(connect(CLOUD.user, CLOUD.password, 'apprentice-edge-dev-b2')).rejects.toThrow(/Identifier rejected/i);

    await cloud.publishAsync(topics.desired('dev-b2'), 'still-here', { qos: 1 });
    await waitFor(() => got.includes('still-here'), 10_000, { message: 'B still receives' });
    expect(closed).toEqual([]);
    expect(b.connected && cloud.connected).toBe(true);
  });

  it('accepts the legacy apprentice-edge-<username> client id for one release', async () => {
    const legacy = await connect('dev-a', 'pw-a', 'apprentice-edge-dev-a');
    await legacy.publishAsync(topics.telemetry('dev-a'), 'legacy', { qos: 1 });
    expect(legacy.connected).toBe(true);
  });

  it('refuses retained device publishes except on status', async () => {
    const cloud = await connect(CLOUD.user, CLOUD.password);
    const seen: string[] = [];
    cloud.on('message', (t, p) => p.length && seen.push(`${t}=${p.toString()}`));
    const a = await connect('dev-a', 'pw-a');
    await a.publishAsync(topics.status('dev-a'), 'online', { qos: 1, retain: true });
    for (const t of [topics.telemetry('dev-a'), topics.examples('dev-a'), topics.events('dev-a')]) {
      const d = await connect('dev-a', 'pw-a');
      const gone = new Promise<void>((r) => d.once('close', () => r()));
      d.publish(t, 'sticky', { qos: 1, retain: true });
      await gone;
    }
    // A new subscriber gets the retained status and nothing else.
    await cloud.subscribeAsync(['status', 'telemetry', 'examples', 'events'].map((k) => topics.device('dev-a', k as 'status')), { qos: 1 });
    await waitFor(() => seen.length >= 1, 10_000, { message: 'the retained status' });
    await sleep(200);
    expect(seen).toEqual([`${topics.status('dev-a')}=online`]);
    await cloud.publishAsync(topics.status('dev-a'), '', { qos: 1, retain: true });
  });

  it('revoking a device closes its live session, and it cannot come back', async () => {
    const c = await connect('dev-r', 'pw-r');
    const gone = new Promise<void>((r) => c.once('close', () => r()));
    await registry.q.update(registry.t.devices).set({ revoked: true }).where(eq(registry.t.devices.id, 'dev-r'));
    expect(broker.disconnectDevice('dev-r')).toBe(1);
    await gone;
    await expect(connect('dev-r', 'pw-r')).rejects.toThrow();
    expect(broker.disconnectDevice('dev-r')).toBe(0);
  });

  it('refuses a device revoked after provisioning at its next connect', async () => {
    await registry.q.update(registry.t.devices).set({ revoked: true }).where(eq(registry.t.devices.id, 'dev-b'));
    await expect(connect('dev-b', 'pw-b')).rejects.toThrow();
  });
});
