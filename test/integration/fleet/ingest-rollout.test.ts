import { randomUUID } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { RolloutEngine } from '../../../cloud/rollouts/engine.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { examples, releases } from '../../../cloud/registry/schema.js';
import { signManifest } from '../../../shared/manifest/index.js';
import { DEVICE_CAPABILITIES, topics } from '../../../shared/protocol/index.js';
import { brokerMatrix, waitFor, type TestBroker } from '../../helpers/broker.js';
import { FleetFixture, MODEL, artifactBytes, examplesPayload, statusPayload, telemetryPayload } from '../../unit/fleet/fixtures.js';
import { SimDevice, connectClient } from './device-sim.js';

describe.each(brokerMatrix())('fleet over $name', ({ start, features }) => {
  let broker: TestBroker;
  let fx: FleetFixture;
  let cloud: CloudMqtt;
  let ingest: Ingest;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    broker = await start();
  });
  afterAll(async () => {
    await broker?.stop();
  });
  beforeEach(async () => {
    // The broker outlives each test: clear the retained state earlier tests left for these devices.
    const c = await connectClient(broker.url, `cleaner-${randomUUID().slice(0, 6)}`);
    for (const id of ['pi-1', 'pi-2', 'pi-3']) {
      await c.publishAsync(topics.desired(id), Buffer.alloc(0), { qos: 1, retain: true });
      await c.publishAsync(topics.status(id), Buffer.alloc(0), { qos: 1, retain: true });
    }
    await c.endAsync();
    fx = new FleetFixture();
    for (const id of ['pi-1', 'pi-2', 'pi-3']) fx.addDevice(id, { online: false });
  });
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    fx.dispose();
  });

  async function startCloud(): Promise<void> {
    cloud = await CloudMqtt.create({ url: broker.url, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: features.sharedSubscriptions, reconnectPeriod: 100 });
    ingest = await Ingest.create({ registry: fx.registry, mqtt: cloud });
    closers.push(() => cloud.dispose(), () => ingest.dispose());
  }

  /** The cloud with releases 1 and 2 (2's parent is 1) and a rollout engine ticking every 100 ms. */
  async function startEngine(): Promise<RolloutEngine> {
    await startCloud();
    fx.addRelease(1);
    fx.addRelease(2, { parent: 1 });
    const publisher = new ReleasePublisher({ mqtt: cloud, dataDir: fx.dir, compatOf: (id) => deviceCompatOf(fx.registry, id) });
    const engine = await RolloutEngine.create({ registry: fx.registry, publisher, reissue: fx.reissue, signals: ingest, tickSeconds: 0.1 });
    closers.push(() => engine.dispose());
    return engine;
  }

  /** A release as an upload makes it (`lineage.source: uploaded`): only devices declaring manifest.lineage-source take it. */
  function addUploaded(seq: number): void {
    const bytes = artifactBytes(seq);
    const m = fx.manifest(seq, bytes, { parent: 1, lineage: { exampleCount: 0, source: 'uploaded' } });
    const signed = signManifest(m, fx.key);
    const artifactPath = join('artifacts', `${m.artifact.sha256}.onnx`);
    writeFileSync(join(fx.dir, artifactPath), bytes);
    fx.db.insert(releases).values({ model: MODEL, seq, sha256: m.artifact.sha256, bytes: bytes.byteLength, quantization: 'fp32', metrics: {}, manifest: signed.manifest, signature: signed.signature, parentSeq: 1, artifactPath }).run();
  }

  async function device(id: string): Promise<MqttClient> {
    const c = await connectClient(broker.url, `dev-${id}-${randomUUID().slice(0, 6)}`);
    closers.push(() => c.endAsync(true));
    return c;
  }

  it('ingests statuses (retained before the cloud subscribed), telemetry and examples, once each', async () => {
    const d1 = await device('pi-1');
    // Published before the cloud exists: arrives as a retained message, also with shared subscriptions on.
    await d1.publishAsync(topics.status('pi-1'), statusPayload('pi-1', 1), { qos: 1, retain: true });
    await startCloud();
    await waitFor(() => fx.device('pi-1')!.online, 5000, { message: 'retained status ingested' });

    const batch = examplesPayload('pi-1', 64, { size: 784 });
    await d1.publishAsync(topics.examples('pi-1'), batch.payload, { qos: 1 });
    await d1.publishAsync(topics.examples('pi-1'), batch.payload, { qos: 1 }); // redelivery
    await d1.publishAsync(topics.examples('pi-1'), Buffer.from('\x00garbage'), { qos: 1 });
    await d1.publishAsync(topics.examples('pi-1'), examplesPayload('pi-2', 1).payload, { qos: 1 }); // speaks for another device
    await d1.publishAsync(topics.examples('intruder'), examplesPayload('intruder', 1).payload, { qos: 1 });
    await d1.publishAsync(topics.telemetry('pi-1'), telemetryPayload('pi-1', 1), { qos: 0 });

    await waitFor(() => {
      const s = ingest.stats();
      return s.batches === 2 && s.malformed === 2 && s.unknownDevice === 1 && fx.device('pi-1')!.lastTelemetry !== null;
    }, 5000, { message: `ingest stats ${JSON.stringify(ingest.stats())}` });
    await waitFor(() => ingest.stats().examplesInserted + ingest.stats().duplicates === 128);
    expect(ingest.stats()).toMatchObject({ examplesInserted: 64, duplicates: 64 });
    expect(fx.db.select().from(examples).all()).toHaveLength(64);
  });

  it('resubscribes after the broker restarts and loses every session', async () => {
    await startCloud();
    const d2 = await device('pi-2');
    await broker.restart();
    await waitFor(() => cloud.connected && d2.connected, 10_000, { message: 'reconnected' });
    // The broker forgot our subscriptions (non-persistent restart); only a resubscribe brings messages back.
    await waitFor(async () => {
      await d2.publishAsync(topics.examples('pi-2'), examplesPayload('pi-2', 1).payload, { qos: 1 });
      return ingest.stats().examplesInserted > 0;
    }, 10_000, { intervalMs: 200, message: 'examples after restart' });
  });

  it('rolls a release out to real devices: canary, then fleet, then completed', async () => {
    const engine = await startEngine();
    const devs = await Promise.all(['pi-1', 'pi-2', 'pi-3'].map((id) => SimDevice.connect(broker.url, id, fx.trusted)));
    for (const d of devs) closers.push(() => d.close());
    await waitFor(() => ['pi-1', 'pi-2', 'pi-3'].every((id) => fx.device(id)!.online), 5000, { message: 'devices online' });

    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.3, soakSeconds: 0, failureThreshold: 0, minFailures: 1 });
    expect((await engine.get(r.id))!.counts).toMatchObject({ desired: 1, waiting: 2 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 10_000, { message: `rollout completed (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    for (const d of devs) expect(d.installed).toEqual([2]);
    await waitFor(() => ['pi-1', 'pi-2', 'pi-3'].every((id) => fx.device(id)!.runningSeq === 2), 5000, { message: 'statuses say release 2' });
    expect(devs.flatMap((d) => d.refused)).toEqual([]);
  });

  it('rolls back over real devices: only the canary ever sees the bad release', async () => {
    const engine = await startEngine();
    const devs = await Promise.all(['pi-1', 'pi-2', 'pi-3'].map((id) => SimDevice.connect(broker.url, id, fx.trusted)));
    for (const d of devs) {
      d.rejectRelease = 2;
      closers.push(() => d.close());
    }
    await waitFor(() => ['pi-1', 'pi-2', 'pi-3'].every((id) => fx.device(id)!.online), 5000, { message: 'devices online' });

    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.3, soakSeconds: 0, failureThreshold: 0, minFailures: 1 });
    const canary = (await engine.get(r.id))!.devices.find((d) => d.canary)!.deviceId;
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'rolled_back', 10_000, { message: 'rolled back' });
    const sim = devs.find((d) => d.id === canary)!;
    await waitFor(() => sim.installed.includes(3), 5000, { message: 're-issue installed by the canary' });
    for (const d of devs.filter((x) => x.id !== canary)) expect(d.installed).toEqual([]);
  });

  it('a switched-off device times out and a failing one is quarantined: the rollout completes, the quarantined one is never told the bad release again, the late install is recorded', async () => {
    const engine = await startEngine();
    const good = await SimDevice.connect(broker.url, 'pi-1', fx.trusted);
    const bad = await SimDevice.connect(broker.url, 'pi-2', fx.trusted);
    bad.rejectRelease = 2;
    closers.push(() => good.close(), () => bad.close());
    await waitFor(() => ['pi-1', 'pi-2'].every((id) => fx.device(id)!.online), 5000, { message: 'devices online' });

    // pi-3 stays switched off. One failure is below minFailures (2): quarantine, not rollback.
    const r = await engine.create({ model: MODEL, releaseSeq: 2, target: { kind: 'all' }, waves: [1], soakSeconds: 0, deviceTimeoutSeconds: 5 });
    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 20_000, { message: `rollout completed (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    expect((await engine.get(r.id))!.counts).toMatchObject({ installed: 1, quarantined: 1, timed_out: 1, failed: 0 });
    await waitFor(() => bad.installed.includes(3), 5000, { message: 'the quarantined device installed the re-issue of its release' });

    // Reconnecting, the quarantined device finds only the re-issue retained; it never sees release 2 again.
    await bad.close();
    const again = await SimDevice.connect(broker.url, 'pi-2', fx.trusted);
    again.rejectRelease = 2;
    closers.push(() => again.close());
    const late = await SimDevice.connect(broker.url, 'pi-3', fx.trusted);
    closers.push(() => late.close());
    await waitFor(() => again.installed.includes(3) && late.installed.includes(2), 5000, { message: 'reconnected devices converged' });
    expect(again.installed).toEqual([3]);
    // The switched-off device's install after the rollout completed is still recorded.
    await waitFor(async () => (await engine.get(r.id))!.devices.find((d) => d.deviceId === 'pi-3')!.installedAt !== null, 5000, { message: 'late install recorded' });
    expect((await engine.get(r.id))!.devices.find((d) => d.deviceId === 'pi-3')).toMatchObject({ state: 'timed_out' });
    expect(fx.device('pi-2')!.desiredSeq).toBe(3);
  });

  it('an uploaded release: a never-connected device times out (not incompatible); late ones are judged by their first status', async () => {
    const engine = await startEngine();
    addUploaded(5);
    fx.addDevice('pi-4', { online: false });
    const caps = [DEVICE_CAPABILITIES.lineageSource];
    const first = await SimDevice.connect(broker.url, 'pi-1', fx.trusted, { capabilities: caps });
    closers.push(() => first.close());
    await waitFor(() => fx.device('pi-1')!.capabilities !== null, 5000, { message: 'pi-1 reported its capabilities' });

    // pi-2 is provisioned and never connects; pi-3 comes late with the capability, pi-4 late without it.
    const r = await engine.create({ model: MODEL, releaseSeq: 5, target: { kind: 'all' }, waves: [1], soakSeconds: 0, deviceTimeoutSeconds: 4 });
    expect((await engine.get(r.id))!.counts).toMatchObject({ desired: 4, incompatible: 0 });
    const late = await SimDevice.connect(broker.url, 'pi-3', fx.trusted, { capabilities: caps });
    const old = await SimDevice.connect(broker.url, 'pi-4', fx.trusted);
    closers.push(() => late.close(), () => old.close());

    await waitFor(async () => (await engine.get(r.id))!.rollout.state === 'completed', 20_000, { message: `rollout completed (${JSON.stringify((await engine.get(r.id))?.counts)})` });
    expect((await engine.get(r.id))!.counts).toMatchObject({ installed: 2, timed_out: 1, incompatible: 1, desired: 0 });
    const view = (await engine.get(r.id))!;
    const row = (id: string) => view.devices.find((d) => d.deviceId === id)!;
    expect(row('pi-2')).toMatchObject({ state: 'timed_out' });
    expect(row('pi-3')).toMatchObject({ state: 'installed' });
    expect(row('pi-4')).toMatchObject({ state: 'incompatible', reason: `needs ${DEVICE_CAPABILITIES.lineageSource}` });
    expect(first.installed).toEqual([5]);
    expect(late.installed).toEqual([5]);
    expect(old.installed).toEqual([]);
    expect(fx.device('pi-2')!.desiredSeq).toBeNull(); // nothing was ever sent to it
  });
});
