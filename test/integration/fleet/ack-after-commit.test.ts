/**
 * Issue 9 "acknowledged only after stored", over real brokers: the cloud's PUBACK to the broker for
 * an examples batch goes out only after its rows are committed. A cloud that dies while the registry is
 * locked has acknowledged nothing, so its persistent session gets the batch again. On both registry
 * dialects (issue 15): SQLite locked by another connection's write transaction, PostgreSQL by another
 * connection's table lock (the cloud's connection with a short lock_timeout, so its commit fails).
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { CloudMqtt } from '../../../cloud/fleet/mqtt.js';
import { openRegistry, type StoreRegistry } from '../../../cloud/registry/open.js';
import { examples } from '../../../cloud/registry/schema.js';
import { topics } from '../../../shared/protocol/index.js';
import { brokerMatrix, sleep, waitFor, type TestBroker } from '../../helpers/broker.js';
import { registryDialects } from '../../helpers/dialects.js';
import { FleetFixture, examplesPayload } from '../../unit/fleet/fixtures.js';
import { connectClient } from './device-sim.js';

const dialects = registryDialects();

describe.each(brokerMatrix())('PUBACK after commit over $name', ({ start, features }) => {
  let broker: TestBroker;

  beforeAll(async () => {
    broker = await start();
  });
  afterAll(async () => {
    await broker?.stop();
  });
  /**
   * Ends a cloud's persistent session: the broker outlives each test, and a later test's batch must not be
   * queued for an earlier test's (gone) member of the shared subscription.
   */
  const wipeSession = async (clientId: string) => (await connectClient(broker.url, clientId)).endAsync(true);

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
      await wipeSession(clientId);
      fx.dispose();
    }
  }, 30_000);

  describe.each(dialects)('on the $name registry', (d) => {
    it('the same over the store API: a batch not committed under a lock is redelivered after a crash and stored once', async (ctx) => {
      const base = await d.open(ctx);
      // The cloud's own registry: on PostgreSQL a connection whose statements give up on a lock after 50 ms.
      let reg: StoreRegistry = base;
      let lock: { take(): Promise<void>; release(): Promise<void> };
      if (base.dialect === 'postgres') {
        const u = new URL(base.url);
        u.searchParams.set('options', '-c lock_timeout=50');
        reg = await openRegistry({ url: u.toString() });
        const locker = new pg.Client({ connectionString: base.url });
        await locker.connect();
        lock = {
          take: async () => void (await locker.query('BEGIN; LOCK TABLE examples IN EXCLUSIVE MODE')),
          release: async () => {
            await locker.query('COMMIT');
            await locker.end();
          },
        };
      } else {
        base.sqlite.pragma('busy_timeout = 20');
        const locker = new Database(base.sqlite.name);
        lock = { take: async () => void locker.exec('BEGIN IMMEDIATE'), release: async () => void (locker.exec('COMMIT'), locker.close()) };
      }
      await base.q.insert(base.t.devices).values({ id: 'pi-ack', groups: [], credentialHash: 'x' });
      const clientId = `cloud-${randomUUID().slice(0, 8)}`;
      const open = async () => {
        const cloud = new CloudMqtt({ url: broker.url, clientId, sharedSubscriptions: features.sharedSubscriptions, reconnectPeriod: 100 });
        const ingest = new Ingest({ registry: reg, mqtt: cloud });
        await ingest.start();
        await cloud.start();
        return { cloud, ingest };
      };
      let c = await open();
      const dev = await connectClient(broker.url, `dev-ack-${randomUUID().slice(0, 6)}`);
      const stored = async () => new Set((await base.q.select({ id: base.t.examples.id }).from(base.t.examples)).map((r) => r.id));
      try {
        await waitFor(async () => {
          await dev.publishAsync(topics.examples('pi-ack'), examplesPayload('pi-ack', 1).payload, { qos: 1 });
          return (await stored()).size > 0;
        }, 10_000, { intervalMs: 100 });
        await lock.take();
        const b = examplesPayload('pi-ack', 8);
        await dev.publishAsync(topics.examples('pi-ack'), b.payload, { qos: 1 });
        await waitFor(() => c.ingest.stats().failedCommits >= 2, 10_000, { intervalMs: 10, message: 'commit attempts under the lock' });
        c.cloud.raw!.end(true);
        await c.ingest.dispose();
        await c.cloud.dispose();
        // Nothing of the batch was committed (nor acknowledged) before the crash.
        const before = await stored();
        expect(b.ids.filter((id) => before.has(id))).toEqual([]);
        await lock.release();
        await sleep(100);
        c = await open();
        await waitFor(async () => {
          const now = await stored();
          return b.ids.every((id) => now.has(id));
        }, 10_000, { intervalMs: 50, message: 'the unacknowledged batch redelivered and stored' });
        expect(c.ingest.stats().dropped).toBe(0);
      } finally {
        await dev.endAsync(true);
        await c.cloud.dispose();
        await c.ingest.dispose();
        await wipeSession(clientId);
        if (reg !== base) await reg.close();
        await d.close();
      }
    }, 30_000);
  });
});
