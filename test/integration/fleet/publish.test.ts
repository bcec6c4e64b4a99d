import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EmbeddedBroker } from '../../../cloud/fleet/broker.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { ReleasePublisher, signedManifestOf } from '../../../cloud/fleet/publisher.js';
import { releases } from '../../../cloud/registry/schema.js';
import { sha256Of, verifyManifest } from '../../../shared/manifest/index.js';
import { TopicError, topics } from '../../../shared/protocol/index.js';
import { brokerMatrix, sleep, waitFor, type TestBroker } from '../../helpers/broker.js';
import { CHUNK_SIZE, FleetFixture, artifactBytes } from '../../unit/fleet/fixtures.js';
import { collect, connectClient, fetchArtifact } from './device-sim.js';

describe.each(brokerMatrix())('release publishing over $name', ({ start, features }) => {
  let broker: TestBroker;
  let cloud: CloudMqtt;
  let fx: FleetFixture;
  let publisher: ReleasePublisher;

  beforeAll(async () => {
    broker = await start();
    cloud = await CloudMqtt.create({ url: broker.url, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: features.sharedSubscriptions, reconnectPeriod: 100 });
  });
  afterAll(async () => {
    await cloud?.dispose();
    await broker?.stop();
  });
  beforeEach(() => {
    fx = new FleetFixture();
    publisher = new ReleasePublisher({ mqtt: cloud, dataDir: fx.dir });
  });
  afterEach(() => fx.dispose());

  it('a device connecting after publication gets the retained desired state and every chunk', async () => {
    const bytes = artifactBytes(11, 40 * CHUNK_SIZE + 77);
    const rel = fx.addRelease(1, { bytes });
    await publisher.ensureChunks(fx.registry, rel);
    expect(fx.db.select().from(releases).where(eq(releases.seq, 1)).get()!.chunksPublished).toBe(true);
    await publisher.publishDesired('pi-1', signedManifestOf(rel));

    const dev = await connectClient(broker.url, `dev-${randomUUID().slice(0, 8)}`);
    try {
      const [desired] = await collect(dev, topics.desired('pi-1'), (m) => m.length >= 1);
      const v = verifyManifest(desired!.payload, fx.trusted);
      if (!v.ok) throw new Error(v.detail);
      expect(v.manifest.artifact.chunks).toHaveLength(41);
      const got = await fetchArtifact(dev, v.manifest);
      expect(sha256Of(got)).toBe(rel.sha256);
      expect(got.equals(bytes)).toBe(true);
    } finally {
      await dev.endAsync(true);
    }
  });

  it('cleared chunks and desired states are gone for new subscribers', async () => {
    const old = fx.addRelease(1);
    const cur = fx.addRelease(2, { parent: 1 });
    fx.addDevice('pi-1', { runningSeq: 2, desiredSeq: 2 });
    await publisher.ensureChunks(fx.registry, old);
    await publisher.ensureChunks(fx.registry, cur);
    await publisher.publishDesired('pi-1', signedManifestOf(cur));
    await publisher.publishDesired('gone-1', signedManifestOf(old));

    // Release 1: no device runs it or is meant to. Release 2 stays.
    expect(await publisher.gcArtifacts(fx.registry)).toEqual([old.sha256]);
    expect(fx.db.select().from(releases).where(eq(releases.seq, 1)).get()!.chunksPublished).toBe(false);
    await publisher.clearDesired('gone-1');

    const dev = await connectClient(broker.url, `dev-${randomUUID().slice(0, 8)}`);
    try {
      const seen: string[] = [];
      dev.on('message', (t, p) => p.byteLength > 0 && seen.push(t));
      await dev.subscribeAsync([topics.artifactChunks(old.sha256), topics.desired('gone-1')], { qos: 1 });
      // Positive control: what was kept still arrives, so the subscription is live.
      const kept = await collect(dev, topics.artifactChunks(cur.sha256), (m) => m.length >= 4);
      expect(kept).toHaveLength(4);
      await sleep(200);
      expect(seen.filter((t) => !t.includes(cur.sha256))).toEqual([]);
    } finally {
      await dev.endAsync(true);
    }
  });

  it.skipIf(!features.mqtt5)(`speaks MQTT 5 with shared subscriptions behind the switch${features.mqtt5 ? '' : ' (skipped: aedes speaks only MQTT 3.1.1 and has no $share)'}`, async () => {
    const v5 = await CloudMqtt.create({ url: broker.url, clientId: `cloud5-${randomUUID().slice(0, 8)}`, protocolVersion: 5, sharedSubscriptions: true });
    try {
      const got: string[] = [];
      v5.onDevice('telemetry', (m) => void got.push(m.deviceId));
      const dev = await connectClient(broker.url, `dev-${randomUUID().slice(0, 8)}`);
      await waitFor(async () => {
        await dev.publishAsync(topics.telemetry('pi-5'), 'x', { qos: 1 });
        return got.includes('pi-5');
      }, 5000, { intervalMs: 100, message: 'telemetry through $share on MQTT 5' });
      await dev.endAsync(true);
      expect(v5.raw?.options.protocolVersion).toBe(5);
    } finally {
      await v5.dispose();
    }
  });

  it('refuses to publish to a wildcard topic', async () => {
    await expect(cloud.publish('apprentice/v1/devices/+/desired', 'x', { qos: 1, retain: true })).rejects.toBeInstanceOf(TopicError);
  });
});

describe('EmbeddedBroker', () => {
  it('listens on a free port when asked for 0 and carries retained messages', async () => {
    const broker = await EmbeddedBroker.create({ port: 0 });
    expect(broker.port).toBeGreaterThan(0);
    expect(broker.url).toBe(`mqtt://127.0.0.1:${broker.port}`);
    const cloud = await CloudMqtt.create({ url: broker.url, clientId: 'cloud-embedded', sharedSubscriptions: false });
    await cloud.publish(topics.desired('pi-9'), 'hello', { qos: 1, retain: true });
    const dev = await connectClient(broker.url, 'dev-embedded');
    const [m] = await collect(dev, topics.desired('pi-9'), (ms) => ms.length >= 1);
    expect(m!.payload.toString()).toBe('hello');
    await dev.endAsync(true);
    await cloud.dispose();
    await broker.stop();
    await broker.stop(); // idempotent
  });
});
