/**
 * The compatibility policy end to end (issue 10 step 1), on a real broker: the cloud retains its info,
 * a current daemon's status modules add the protocol-2 fields only once that info arrives, ingest
 * records them, and the publisher sends the device only what it declared.
 */
import { randomUUID } from 'node:crypto';
import { Registry as PromRegistry } from 'prom-client';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deviceCompatOf } from '../../../cloud/fleet/device-compat.js';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { devices } from '../../../cloud/registry/schema.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { IncompatibleReleaseError, ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { CloudInfoWatcher, EDGE_CAPABILITIES, StatusPublisher, statusExtension } from '../../../edge/status/index.js';
import { generateSigningKey, signManifest } from '../../../shared/manifest/index.js';
import { CLOUD_FEATURES, decodePayload, PROTOCOL_REVISION, signedManifestSchema, statusSchema, topics, type SignedManifest } from '../../../shared/protocol/index.js';
import { brokerMatrix, sleep, waitFor, type TestBroker } from '../../helpers/broker.js';
import { FleetFixture } from '../../unit/fleet/fixtures.js';
import { makeManifest, modelBytes } from '../../unit/updates/fixtures.js';

const key = generateSigningKey();
const plain = signManifest(makeManifest(modelBytes(2000)), key);
const withAssignment: SignedManifest = { ...plain, assignment: { assignment: { deviceId: 'x', model: plain.manifest.model, cohort: null }, signature: plain.signature } };
const ranged = signManifest(makeManifest(modelBytes(2000), { input: { ...plain.manifest.input, range: [0, 1] } }), key);

describe.each(brokerMatrix())('protocol compatibility over $name', ({ start }) => {
  let broker: TestBroker;
  let cloud: CloudMqtt;
  let fx: FleetFixture;
  let ingest: Ingest;
  let publisher: ReleasePublisher;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    broker = await start();
    cloud = await CloudMqtt.create({ url: broker.url, clientId: `cloud-${randomUUID().slice(0, 8)}`, sharedSubscriptions: false, reconnectPeriod: 100 });
  });
  afterAll(async () => {
    await cloud?.dispose();
    await broker?.stop();
  });
  beforeEach(async () => {
    fx = new FleetFixture();
    ingest = await Ingest.create({ registry: fx.registry, mqtt: cloud, metrics: new PromRegistry() });
    publisher = new ReleasePublisher({ mqtt: cloud, dataDir: fx.dir, compatOf: (id) => deviceCompatOf(fx.registry, id) });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await cloud.publish(topics.cloudInfo(), Buffer.alloc(0), { qos: 1, retain: true });
    await ingest.dispose();
    fx.dispose();
  });

  /** A device wired like edge/daemon.ts: the cloud-info watcher, then status. Resolves connected. */
  async function device(id: string): Promise<{ client: MqttClient; info: CloudInfoWatcher; desired: Buffer[] }> {
    fx.addDevice(id);
    const client = mqtt.connect(broker.url, { clientId: `${id}-${randomUUID().slice(0, 6)}`, clean: true, resubscribe: false, reconnectPeriod: 100 });
    clients.push(client);
    const desired: Buffer[] = [];
    client.on('message', (t, p) => t === topics.desired(id) && desired.push(p));
    client.on('connect', () => client.subscribe(topics.desired(id), { qos: 1 }));
    let status: StatusPublisher | undefined;
    const info = new CloudInfoWatcher({ client, onChange: () => status?.publish() });
    status = new StatusPublisher({ client, deviceId: id, running: () => null, extension: () => (info.accepts(CLOUD_FEATURES.statusExt) ? statusExtension({ degraded: null }) : undefined) });
    info.start();
    status.start();
    await new Promise<void>((r) => client.once('connect', () => r()));
    return { client, info, desired };
  }

  it('without the cloud info a device sends protocol-1 status; with it, the protocol-2 fields, which ingest records', async () => {
    const statuses: Buffer[] = [];
    const spy = mqtt.connect(broker.url, { clientId: `spy-${randomUUID().slice(0, 6)}` });
    clients.push(spy);
    spy.on('message', (_t, p) => statuses.push(p));
    await spy.subscribeAsync(topics.status('pi-new'), { qos: 1 });

    const d = await device('pi-new');
    await waitFor(() => statuses.length >= 1, 5_000, { message: 'the first status' });
    await sleep(200);
    expect(Object.keys(decodePayload(statusSchema, statuses[0]!))).not.toContain('capabilities');
    expect(fx.device('pi-new')).toMatchObject({ protocolVersion: null, capabilities: null });

    await publisher.publishCloudInfo();
    await waitFor(() => fx.device('pi-new')?.protocolVersion === PROTOCOL_REVISION, 5_000, { message: 'ingest records the protocol fields' });
    expect(d.info.current?.accepts).toContain(CLOUD_FEATURES.statusExt);
    expect(fx.device('pi-new')).toMatchObject({ capabilities: [...EDGE_CAPABILITIES], trust: { keysetVersion: null, state: 'trusted_keys' }, degraded: null });
    expect(decodePayload(statusSchema, statuses.at(-1)!)).toMatchObject({ protocolVersion: PROTOCOL_REVISION, capabilities: [...EDGE_CAPABILITIES] });
  });

  it('sends a device only the envelope fields it declared, and no release that needs a capability it lacks', async () => {
    const d = await device('pi-old');
    await publisher.publishDesired('pi-old', withAssignment);
    await waitFor(() => d.desired.length === 1, 5_000, { message: 'the desired manifest' });
    const got = decodePayload(signedManifestSchema, d.desired[0]!);
    expect(Object.keys(got).sort()).toEqual(['manifest', 'signature']);

    await expect(publisher.publishDesired('pi-old', ranged)).rejects.toBeInstanceOf(IncompatibleReleaseError);
    await expect(publisher.publishDesired('pi-old', ranged)).rejects.toThrow(/manifest\.input-range/);
    await sleep(300);
    expect(d.desired).toHaveLength(1);

    // A device that declares both gets both. Ingest stops first: it batches status writes, and the
    // device's own protocol-1 status landing after this update would undo it.
    await ingest.dispose();
    fx.db.update(devices).set({ protocolVersion: 2, capabilities: ['desired.assignment', 'manifest.input-range'] }).run();
    await publisher.publishDesired('pi-old', ranged);
    await publisher.publishDesired('pi-old', withAssignment);
    await waitFor(() => d.desired.length === 3, 5_000, { message: 'both releases' });
    expect(Object.keys(decodePayload(signedManifestSchema, d.desired[2]!))).toContain('assignment');
    await cloud.publish(topics.desired('pi-old'), Buffer.alloc(0), { qos: 1, retain: true });
  });
});
