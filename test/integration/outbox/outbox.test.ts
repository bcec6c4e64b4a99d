/**
 * The outbox against real brokers (STYLE.md 10): the embedded aedes always, a private Mosquitto child
 * where the binary exists (test/helpers/broker.ts prints why it falls back, and fails instead under
 * APPRENTICE_REQUIRE_MOSQUITTO=1), plus one pass over the system Mosquitto on 127.0.0.1:1883.
 *
 * "Nothing lost" is checked at a QoS 1 subscriber by unique example UUID; duplicates are allowed only
 * as repeated UUIDs (at-least-once; the cloud's ingest is idempotent on the UUID).
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { connect, type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Outbox, OutboxPublisher, type PublishClient } from '../../../edge/outbox/index.js';
import { decodePayload, examplesBatchSchema, topics } from '../../../shared/protocol/index.js';
import { brokerMatrix, canConnect, mosquittoRequired, startAedes, waitFor, type TestBroker } from '../../helpers/broker.js';
import { makeExample, tempDir } from '../../unit/outbox/helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const deviceId = (tag: string) => `it-${tag}-${randomUUID().slice(0, 8)}`;

/** A QoS 1 subscriber that tallies example UUIDs. `clean: false` keeps its queue across broker restarts. */
async function subscriber(url: string, device: string, { clean = true, onSeen }: { clean?: boolean; onSeen?: (unique: number) => void } = {}) {
  const client = connect(url, { clientId: `sub-${device}`, clean, reconnectPeriod: 100, connectTimeout: 2000 });
  cleanups.push(() => client.endAsync(true));
  const seen = new Map<string, number>();
  let messages = 0;
  client.on('message', (_topic, payload) => {
    messages++;
    for (const e of decodePayload(examplesBatchSchema, payload).examples) seen.set(e.id, (seen.get(e.id) ?? 0) + 1);
    onSeen?.(seen.size);
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync(topics.examples(device), { qos: 1 });
  return { client, seen, messages: () => messages, deliveries: () => [...seen.values()].reduce((a, b) => a + b, 0) };
}

/**
 * Wraps the real client to check, at the moment MQTT.js reports the PUBACK, that the batch's rows are
 * still on disk: rows must not go before the broker acknowledged them.
 */
function watchedClient(client: MqttClient, outbox: () => Outbox) {
  const violations: string[] = [];
  const acked = new Set<string>();
  let acks = 0;
  const wrapped: PublishClient = {
    get connected() {
      return client.connected;
    },
    publish(topic, message, opts, cb) {
      const ids = decodePayload(examplesBatchSchema, message).examples.map((e) => e.id);
      return client.publish(topic, message, opts, (err) => {
        if (!err) {
          acks++;
          const o = outbox();
          if (!o.closed) {
            const present = new Set(o.peek({ limit: 1_000_000 }).map((r) => r.id));
            // A row may already be gone only if an earlier (abandoned or duplicate) batch was acked.
            violations.push(...ids.filter((id) => !present.has(id) && !acked.has(id)));
          }
          for (const id of ids) acked.add(id);
        }
        cb(err);
      });
    },
    on: (event, listener) => client.on(event, listener),
    removeListener: (event, listener) => client.removeListener(event, listener),
  };
  return { wrapped, violations, acks: () => acks };
}

async function device(url: string, id: string, path: string, { maxBatchExamples = 16 } = {}) {
  const outbox = await Outbox.create({ path, maxRows: 100_000, maxBytes: 100_000_000 });
  const mqttClient = connect(url, { clientId: `dev-${id}-${randomUUID().slice(0, 4)}`, reconnectPeriod: 150, connectTimeout: 2000 });
  mqttClient.on('error', () => {}); // reconnect errors are expected while a broker restarts
  const watch = watchedClient(mqttClient, () => outbox);
  const publisher = new OutboxPublisher({ outbox, client: watch.wrapped, deviceId: id, maxBatchExamples, ackTimeoutMs: 5000, backoff: { initialMs: 50, maxMs: 500 } });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await publisher.stop();
    await mqttClient.endAsync(true);
    outbox.dispose();
  };
  cleanups.push(close);
  return { outbox, mqttClient, publisher, watch, close };
}

function addMany(outbox: Outbox, n: number, reason: 'low_confidence' | 'audit' | 'feedback' = 'low_confidence'): string[] {
  return Array.from({ length: n }, () => {
    const e = makeExample(reason, 64);
    outbox.add(e);
    return e.id;
  });
}

describe.each(brokerMatrix())('outbox over $name', ({ name, start }) => {
  let broker: TestBroker;
  let tmp: ReturnType<typeof tempDir>;
  beforeAll(async () => {
    broker = await start({ persistent: true });
    tmp = tempDir();
  });
  afterAll(async () => {
    await broker?.stop();
    tmp?.cleanup();
  });

  it('delivers every example, once, and deletes each row only after its PUBACK', async () => {
    const id = deviceId(name);
    const sub = await subscriber(broker.url, id);
    const dev = await device(broker.url, id, join(tmp.dir, `${id}.db`));
    const ids = addMany(dev.outbox, 150);
    dev.publisher.start();
    ids.push(...addMany(dev.outbox, 50, 'audit')); // while publishing

    await waitFor(() => sub.seen.size === 200 && dev.outbox.depth() === 0, 15_000, { message: `200 unique ids (have ${sub.seen.size})` });
    expect([...sub.seen.keys()].sort()).toEqual([...ids].sort());
    expect(sub.deliveries()).toBe(200); // a steady link gives no duplicates at all
    expect(dev.watch.violations).toEqual([]);
    expect(dev.publisher.counters()).toEqual({ selected: 200, published: 200, evicted: 0, dropped: 0, refused: 0, lost: 0 });
    expect(dev.publisher.stats().failures).toBe(0);
  });

  it('loses nothing when the broker stops and starts in the middle of a stream', async () => {
    const id = deviceId(name);
    let restarting: Promise<void> | undefined;
    let depthAtRestart = -1;
    const dev = await device(broker.url, id, join(tmp.dir, `${id}.db`), { maxBatchExamples: 8 });
    let connects = 0;
    dev.mqttClient.on('connect', () => connects++);
    // Restart from inside the subscriber's handler, so it happens mid-stream however fast the link is.
    const sub = await subscriber(broker.url, id, {
      clean: false,
      onSeen: (unique) => {
        if (unique < 40 || restarting) return;
        depthAtRestart = dev.outbox.depth();
        restarting = broker.restart();
      },
    });
    const ids = addMany(dev.outbox, 300);
    dev.publisher.start();
    await waitFor(() => restarting !== undefined, 10_000, { message: 'restart triggered' });
    ids.push(...addMany(dev.outbox, 50, 'feedback')); // the outbox keeps accepting while the broker is away
    await restarting;

    await waitFor(() => sub.seen.size === ids.length && dev.outbox.depth() === 0, 30_000, {
      message: `${ids.length} unique ids after restart (have ${sub.seen.size}, depth ${dev.outbox.depth()})`,
    });
    expect(depthAtRestart).toBeGreaterThan(200);
    expect(connects).toBeGreaterThanOrEqual(2); // the first connect and at least one reconnect
    expect(new Set(sub.seen.keys())).toEqual(new Set(ids));
    expect(sub.deliveries()).toBeGreaterThanOrEqual(ids.length); // duplicates only as repeated UUIDs
    expect(dev.watch.violations).toEqual([]);
    expect(dev.publisher.counters()).toMatchObject({ selected: 350, evicted: 0, dropped: 0 });
  });

  it('loses nothing when the device process stops mid-stream and reopens its outbox file', async () => {
    const id = deviceId(name);
    const path = join(tmp.dir, `${id}.db`);
    const sub = await subscriber(broker.url, id);
    const first = await device(broker.url, id, path, { maxBatchExamples: 8 });
    const ids = addMany(first.outbox, 200);
    first.publisher.start();
    await waitFor(() => sub.seen.size >= 24, 10_000, { message: 'first batches' });
    await first.close(); // like a crash: an unacknowledged batch may be in flight
    const left = sub.seen.size;
    expect(left).toBeLessThan(200);

    const second = await device(broker.url, id, path, { maxBatchExamples: 64 });
    expect(second.outbox.depth()).toBeGreaterThan(0);
    second.publisher.start();
    await waitFor(() => sub.seen.size === 200 && second.outbox.depth() === 0, 15_000, { message: `200 unique ids (have ${sub.seen.size})` });
    expect(new Set(sub.seen.keys())).toEqual(new Set(ids));
    expect(second.publisher.counters().selected).toBe(200);
  });
});

describe('outbox over aedes with a slow PUBACK', () => {
  it('keeps rows on disk until the broker acknowledges, and never re-sends the batch meanwhile', async () => {
    let delayMs = 600;
    let received = 0;
    const broker = await startAedes({
      options: {
        authorizePublish: (_client, packet, cb) => {
          if (packet.topic.endsWith('/examples')) received++;
          setTimeout(() => cb(null), delayMs); // aedes sends PUBACK only after this
        },
      },
    });
    cleanups.push(() => broker.stop());
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const id = deviceId('slow');
    const dev = await device(broker.url, id, join(tmp.dir, 'o.db'), { maxBatchExamples: 64 });
    addMany(dev.outbox, 10);
    dev.publisher.start();
    await waitFor(() => received === 1, 5000, { message: 'batch at broker' });
    await new Promise((r) => setTimeout(r, delayMs / 2));
    expect(dev.outbox.depth()).toBe(10); // written to the socket, but no PUBACK yet
    expect(dev.publisher.stats().inFlight).toBe(10);
    await waitFor(() => dev.outbox.depth() === 0, 5000, { message: 'rows deleted after PUBACK' });
    expect(received).toBe(1);
    delayMs = 0;
  });
});

// The shared system broker: unique device ids keep parallel runs apart.
const systemUp = await canConnect(1883);
if (!systemUp && !mosquittoRequired()) console.warn('[outbox test] skipping the system Mosquitto pass: nothing listens on 127.0.0.1:1883');
describe.skipIf(!systemUp && !mosquittoRequired())('outbox over the system Mosquitto on 127.0.0.1:1883', () => {
  it('delivers every example by unique id', async () => {
    const url = 'mqtt://127.0.0.1:1883';
    const tmp = tempDir();
    cleanups.push(tmp.cleanup);
    const id = deviceId('sys');
    const sub = await subscriber(url, id);
    const dev = await device(url, id, join(tmp.dir, 'o.db'));
    const ids = addMany(dev.outbox, 120);
    dev.publisher.start();
    await waitFor(() => sub.seen.size === 120 && dev.outbox.depth() === 0, 15_000, { message: `120 unique ids (have ${sub.seen.size})` });
    expect(new Set(sub.seen.keys())).toEqual(new Set(ids));
    expect(dev.watch.violations).toEqual([]);
  });
});
