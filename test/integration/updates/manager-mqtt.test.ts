import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UpdateManager, type UpdateOutcome } from '../../../edge/updates/index.js';
import { generateSigningKey, signManifest, toTrustedKey } from '../../../shared/manifest/index.js';
import { decodePayload, encodePayload, eventSchema, parseTopic, topics, type DeviceEvent } from '../../../shared/protocol/index.js';
import { makeManifest, modelBytes, tempDir } from '../../unit/updates/fixtures.js';
import { FakeHost, waitFor } from '../../unit/updates/harness.js';
import { clearRetained, connectClient, connectMosquitto, mosquittoReachable, publishChunks, startAedes, type TestBroker } from './brokers.js';

const key = generateSigningKey();
const hasMosquitto = await mosquittoReachable();
const brokers: Array<[string, () => Promise<TestBroker>]> = [['aedes', startAedes]];
if (hasMosquitto) brokers.push(['mosquitto', connectMosquitto]);

/**
 * The daemon's wiring, in small: the device client subscribes to its `desired` topic and hands every
 * message to the manager; events go out on `devices/{id}/events`; the cloud sees them there.
 */
describe.each(brokers)('UpdateManager over %s', (_name, start) => {
  let broker: TestBroker;
  let cloud: MqttClient;
  let device: MqttClient;
  let manager: UpdateManager;
  let host: FakeHost;
  let deviceId: string;
  let dir: string;
  let cleanup: () => Promise<void>;
  let cloudEvents: DeviceEvent[];
  let outcomes: UpdateOutcome[];
  let retained: string[];

  beforeAll(async () => {
    broker = await start();
    cloud = await connectClient(broker.url);
    cloud.on('message', (topic, payload) => {
      const t = parseTopic(topic);
      if (t?.type === 'device' && t.kind === 'events' && t.deviceId === deviceId) cloudEvents.push(decodePayload(eventSchema, payload));
    });
  });
  afterAll(async () => {
    await cloud.endAsync();
    await broker.close();
  });
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    deviceId = `dev-${randomBytes(4).toString('hex')}`;
    cloudEvents = [];
    outcomes = [];
    retained = [topics.desired(deviceId)];
    await cloud.subscribeAsync(topics.events(deviceId), { qos: 1 });
    device = await connectClient(broker.url);
    host = new FakeHost();
    manager = await UpdateManager.create({
      deviceId,
      dataDir: dir,
      trustedKeys: [toTrustedKey(key)],
      host,
      mqtt: device,
      mqttIdleTimeoutMs: 5000,
      retry: false,
      emit: (ev) => void device.publish(topics.events(deviceId), encodePayload(eventSchema, ev), { qos: 1 }),
    });
    device.on('message', (topic, payload) => {
      if (topic === topics.desired(deviceId)) void manager.handleDesired(payload).then((o) => outcomes.push(o));
    });
    await device.subscribeAsync(topics.desired(deviceId), { qos: 1 });
  });
  afterEach(async () => {
    await manager.dispose();
    await device.endAsync(true);
    await cloud.unsubscribeAsync(topics.events(deviceId));
    await clearRetained(cloud, retained);
    await cleanup();
  });

  async function publishRelease(n: number, bytes: Buffer, chunks?: number[]) {
    const signed = signManifest(makeManifest(bytes, { release: n }), key);
    retained.push(...(await publishChunks(cloud, bytes, signed.manifest.artifact, chunks)));
    await cloud.publishAsync(topics.desired(deviceId), JSON.stringify(signed), { qos: 1, retain: true });
    return signed.manifest.artifact.sha256;
  }

  it('installs a release published as retained chunks + a retained desired manifest', async () => {
    const bytes = modelBytes(9000);
    const sha = await publishRelease(1, bytes);
    await waitFor(() => cloudEvents.length === 1, 8000, 'installed event at the cloud');
    expect(cloudEvents[0]).toMatchObject({ type: 'installed', deviceId, release: 1, sha256: sha });
    expect(host.calls).toEqual([expect.objectContaining({ release: 1, fileSha256: sha })]);
    expect(manager.persisted.highestRelease).toBe(1);
  });

  it('a newer desired manifest supersedes a download stuck halfway', async () => {
    const stuck = modelBytes(6000);
    const sha1 = await publishRelease(1, stuck, [0, 1, 2]); // half the chunks: the download cannot finish
    const progress = join(dir, 'downloads', `${sha1}.progress.json`);
    await waitFor(() => existsSync(progress) && JSON.parse(readFileSync(progress, 'utf8')).have.length === 3, 5000, 'half of release 1');
    const sha2 = await publishRelease(2, modelBytes(5000));
    await waitFor(() => cloudEvents.some((e) => e.type === 'installed'), 8000, 'release 2 installed');
    expect(outcomes).toEqual(expect.arrayContaining([{ status: 'superseded', by: 2 }, { status: 'installed', release: 2, sha256: sha2 }]));
    expect(host.calls.map((c) => c.release)).toEqual([2]);
    expect(cloudEvents.map((e) => e.type)).toEqual(['installed']);
    expect(existsSync(progress)).toBe(false); // the superseded partial is cleaned up after the install
  });

  it('refuses a tampered desired manifest and reports it to the cloud', async () => {
    const signed = JSON.parse(JSON.stringify(signManifest(makeManifest(modelBytes(3000), { release: 1 }), key)));
    signed.manifest.release = 99;
    await cloud.publishAsync(topics.desired(deviceId), JSON.stringify(signed), { qos: 1, retain: true });
    await waitFor(() => cloudEvents.length === 1, 5000, 'rejected event');
    expect(cloudEvents[0]).toMatchObject({ type: 'rejected', reason: 'bad_signature', release: null });
    expect(host.calls).toEqual([]);
  });
});
