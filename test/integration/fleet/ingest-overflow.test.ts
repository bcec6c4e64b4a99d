/**
 * Issue 9 overflow drill fixes, over real brokers (Mosquitto with the matrix, aedes always):
 * - the cloud keeps reading while commits are pending, so batches that arrive together share one
 *   transaction, and each PUBACK still goes out only after its rows are committed;
 * - a resent batch whose rows are already stored is receipted `stored` at once, without a transaction;
 * - a real outbox publisher facing a cloud that is away resends the same rows with a growing wait,
 *   not once per fixed timeout, and everything drains once the cloud is back.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { examples } from '../../../cloud/registry/schema.js';
import { Outbox, OutboxPublisher, buildExample } from '../../../edge/outbox/index.js';
import { encodePayload, receiptSchema, topics, type Receipt } from '../../../shared/protocol/index.js';
import { brokerMatrix, sleep, waitFor, type TestBroker } from '../../helpers/broker.js';
import { FleetFixture, MODEL, examplesPayload } from '../../unit/fleet/fixtures.js';
import { tempDir } from '../../unit/outbox/helpers.js';
import { connectClient } from './device-sim.js';

describe.each(brokerMatrix())('ingest under overflow over $name', ({ name, start }) => {
  let broker: TestBroker;

  beforeAll(async () => {
    broker = await start();
  });
  afterAll(async () => {
    await broker?.stop();
  });

  // Plain subscriptions: the first test's persistent session would otherwise stay in the `cloud` share
  // group after it ends and take its share of the second test's messages.
  async function openCloud(fx: FleetFixture, clientId: string, receipts?: (deviceId: string, r: Receipt) => void) {
    const cloud = new CloudMqtt({ url: broker.url, clientId, sharedSubscriptions: false, reconnectPeriod: 100 });
    const ingest = new Ingest({
      registry: fx.registry,
      mqtt: cloud,
      receipts: receipts ?? ((deviceId, r) => void cloud.publish(topics.receipts(deviceId), encodePayload(receiptSchema, r), { qos: 1, retain: false }).catch(() => undefined)),
    });
    await ingest.start();
    await cloud.start();
    return { cloud, ingest };
  }

  it('batches arriving during a held commit are all read, committed together and acknowledged only after; a stored batch resent is receipted without a transaction', async (ctx) => {
    if (name === 'aedes') {
      // aedes did not forward this one device's next QoS 1 message before our PUBACK of the previous
      // one, so with a single publisher there is nothing to read ahead (several devices do interleave).
      console.log('skipped on aedes: it forwards one device\'s next QoS 1 message only after the previous PUBACK');
      return ctx.skip();
    }
    const fx = new FleetFixture();
    fx.addDevice('pi-gc');
    fx.registry.sqlite.pragma('busy_timeout = 20');
    const receipts: Receipt[] = [];
    const c = await openCloud(fx, `cloud-${randomUUID().slice(0, 8)}`, (_d, r) => receipts.push(r));
    const dev = await connectClient(broker.url, `dev-gc-${randomUUID().slice(0, 6)}`);
    const locker = new Database(fx.dbPath);
    const stored = () => new Set(fx.db.select({ id: examples.id }).from(examples).all().map((r) => r.id));
    try {
      await waitFor(async () => {
        await dev.publishAsync(topics.examples('pi-gc'), examplesPayload('pi-gc', 1).payload, { qos: 1 });
        return stored().size > 0;
      }, 10_000, { intervalMs: 100 });
      await waitFor(() => receipts.length === c.ingest.stats().batches, 5_000, { intervalMs: 20 });
      const before = c.ingest.stats();

      // The cloud's own PUBACKs to the broker (the device's come from the broker, at once).
      let cloudAcks = 0;
      c.cloud.raw!.on('packetsend', (p) => p.cmd === 'puback' && cloudAcks++);
      locker.exec('BEGIN IMMEDIATE');
      const batches = Array.from({ length: 10 }, () => examplesPayload('pi-gc', 4));
      for (const b of batches) await dev.publishAsync(topics.examples('pi-gc'), b.payload, { qos: 1 });
      // Every batch is read while the first commit is still failing: the reader did not wait for it.
      await waitFor(() => c.ingest.stats().batches - before.batches === 10, 10_000, { intervalMs: 20, message: `all 10 batches read during the held commit (${JSON.stringify(c.ingest.stats())})` });
      await waitFor(() => c.ingest.stats().failedCommits > before.failedCommits, 10_000, { intervalMs: 20 });
      await sleep(200);
      expect(cloudAcks).toBe(0); // no PUBACK before the commit
      expect(receipts.length).toBe(before.batches);
      locker.exec('COMMIT');

      await waitFor(() => cloudAcks === 10, 10_000, { intervalMs: 20, message: 'a PUBACK for each batch after the commit' });
      const all = batches.flatMap((b) => b.ids);
      const s = stored();
      expect(all.every((id) => s.has(id))).toBe(true);
      const after = c.ingest.stats();
      // One transaction for the 10 (two at most, if the retry raced the last arrival), not 10.
      expect(after.flushes - before.flushes).toBeLessThanOrEqual(2);
      expect(after.examplesInserted - before.examplesInserted).toBe(40);

      // A resend of a stored batch (its receipt was late or lost): receipted at once, no transaction.
      const flushes = after.flushes;
      await dev.publishAsync(topics.examples('pi-gc'), batches[3]!.payload, { qos: 1 });
      await waitFor(() => receipts.length === before.batches + 11, 5_000, { intervalMs: 20 });
      expect(receipts.at(-1)).toMatchObject({ kind: 'examples', stored: batches[3]!.ids });
      expect(c.ingest.stats()).toMatchObject({ flushes, duplicatesSkipped: 4, duplicates: 4, dropped: 0 });
    } finally {
      locker.close();
      await dev.endAsync(true);
      await c.cloud.dispose();
      await c.ingest.dispose();
      fx.dispose();
    }
  }, 40_000);

  it('an outbox facing an absent cloud resends the same rows with a doubling wait, then drains with every id stored once', async () => {
    const fx = new FleetFixture();
    const deviceId = 'pi-backoff';
    fx.addDevice(deviceId);
    const clientId = `cloud-${randomUUID().slice(0, 8)}`;
    // The cloud's persistent session exists, then the cloud goes away: the broker queues for it.
    let c = await openCloud(fx, clientId);
    await c.cloud.dispose();
    await c.ingest.dispose();

    const tmp = tempDir();
    const outbox = await Outbox.create({ path: join(tmp.dir, 'outbox.db'), maxRows: 1000, maxBytes: 10_000_000 });
    const client = await connectClient(broker.url, `${deviceId}-${randomUUID().slice(0, 4)}`);
    const publisher = new OutboxPublisher({ outbox, client, deviceId, receipts: () => true, receiptTimeoutMs: 300, receiptTimeoutMaxMs: 60_000, maxBatchExamples: 8, backoff: { initialMs: 10, maxMs: 10 } });
    const sends: number[] = [];
    client.on('packetsend', (p) => p.cmd === 'publish' && sends.push(Date.now()));
    client.subscribe(topics.receipts(deviceId), { qos: 1 });
    client.on('message', (topic, payload) => topic === topics.receipts(deviceId) && publisher.handleReceipt(payload));
    const ids: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const e = buildExample({ input: Float32Array.from([i, 1, 2, 3]), probs: Float32Array.from([0.5, 0.5]), reason: 'low_margin', model: MODEL, release: 1 });
        outbox.add(e);
        ids.push(e.id);
      }
      publisher.start();
      await sleep(4_000);
      // Waits of 0.3, 0.6, 1.2, 2.4 s (each × jitter in [1, 1.5)): at most 4 sends in 4 s; a fixed 300 ms
      // timeout would have sent 13.
      expect(sends.length).toBeGreaterThanOrEqual(3);
      expect(sends.length).toBeLessThanOrEqual(4);
      const gaps = sends.slice(1).map((t, i) => t - sends[i]!);
      for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThan(gaps[i - 1]! * 1.2);
      expect(publisher.stats()).toMatchObject({ receiptTimeouts: sends.length - 1, depth: 3 });

      c = await openCloud(fx, clientId);
      await waitFor(() => outbox.depth() === 0, 20_000, { intervalMs: 50, message: 'the outbox drained after the cloud came back' });
      const stored = fx.db.select({ id: examples.id }).from(examples).all().map((r) => r.id);
      expect(stored.sort()).toEqual([...ids].sort());
      // Every queued copy was consumed; the copies after the first were counted as duplicates.
      await waitFor(() => c.ingest.stats().examplesInserted + c.ingest.stats().duplicates === 3 * sends.length, 10_000, { intervalMs: 50, message: `every copy consumed (${JSON.stringify({ sends: sends.length, ingest: c.ingest.stats() })})` });
      expect(c.ingest.stats()).toMatchObject({ examplesInserted: 3, duplicates: 3 * (sends.length - 1), dropped: 0 });
      expect(outbox.stats()).toMatchObject({ published: 3, dropped: 0, evicted: 0 });
    } finally {
      await publisher.stop();
      await client.endAsync(true);
      outbox.dispose();
      tmp.cleanup();
      await c.cloud.dispose();
      await c.ingest.dispose();
      fx.dispose();
    }
  }, 60_000);
});
