/**
 * Issue 9 "acknowledged only after stored", over real brokers: the cloud's PUBACK to the broker for
 * an examples batch goes out only after its rows are committed. A cloud that dies while the registry is
 * locked has acknowledged nothing, so its persistent session gets the batch again.
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { examples } from '../../../cloud/registry/schema.js';
import { topics } from '../../../shared/protocol/index.js';
import { brokerMatrix, sleep, waitFor, type TestBroker } from '../../helpers/broker.js';
import { FleetFixture, examplesPayload } from '../../unit/fleet/fixtures.js';
import { connectClient } from './device-sim.js';

describe.each(brokerMatrix())('PUBACK after commit over $name', ({ start, features }) => {
  let broker: TestBroker;

  beforeAll(async () => {
    broker = await start();
  });
  afterAll(async () => {
    await broker?.stop();
  });

  it('a batch whose commit never succeeded is not acknowledged: after a crash the broker delivers it again', async () => {
    const fx = new FleetFixture();
    fx.addDevice('pi-ack');
    fx.registry.sqlite.pragma('busy_timeout = 20');
    const clientId = `cloud-${randomUUID().slice(0, 8)}`;
    const open = async () => {
      // Handlers first, then the connection (the order the cloud's composition root uses).
      const cloud = new CloudMqtt({ url: broker.url, clientId, sharedSubscriptions: features.sharedSubscriptions, reconnectPeriod: 100 });
      const ingest = new Ingest({ registry: fx.registry, mqtt: cloud });
      await ingest.start();
      await cloud.start();
      return { cloud, ingest };
    };
    let c = await open();
    const dev = await connectClient(broker.url, `dev-ack-${randomUUID().slice(0, 6)}`);
    const locker = new Database(fx.dbPath);
    const stored = () => new Set(fx.db.select({ id: examples.id }).from(examples).all().map((r) => r.id));
    try {
      await waitFor(async () => {
        // The subscription is in place once a first batch is stored.
        await dev.publishAsync(topics.examples('pi-ack'), examplesPayload('pi-ack', 1).payload, { qos: 1 });
        return stored().size > 0;
      }, 10_000, { intervalMs: 100 });

      locker.exec('BEGIN IMMEDIATE');
      const b = examplesPayload('pi-ack', 8);
      await dev.publishAsync(topics.examples('pi-ack'), b.payload, { qos: 1 });
      await waitFor(() => c.ingest.stats().failedCommits >= 2, 10_000, { intervalMs: 10, message: 'commit attempts under the lock' });
      // The crash: the connection drops with the batch uncommitted (and so unacknowledged).
      c.cloud.raw!.end(true);
      await c.ingest.dispose();
      await c.cloud.dispose();
      expect(b.ids.some((id) => stored().has(id))).toBe(false);
      locker.exec('COMMIT');

      await sleep(100);
      c = await open();
      await waitFor(() => b.ids.every((id) => stored().has(id)), 10_000, { intervalMs: 50, message: 'the unacknowledged batch redelivered and stored' });
      expect(c.ingest.stats().dropped).toBe(0);
    } finally {
      locker.close();
      await dev.endAsync(true);
      await c.cloud.dispose();
      await c.ingest.dispose();
      fx.dispose();
    }
  }, 30_000);
});
