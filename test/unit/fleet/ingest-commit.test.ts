/**
 * Issue 9 "acknowledged only after stored": the promise `Ingest.handleMessage` returns for an example
 * batch (CloudMqtt sends the PUBACK when it settles) settles only after the rows are committed, a
 * failed commit (a locked registry) is retried and never drops rows, and at most `maxPendingRows`
 * rows wait uncommitted.
 */
import Database from 'better-sqlite3';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { deviceEvents, examples } from '../../../cloud/registry/schema.js';
import { waitFor } from '../../helpers/broker.js';
import { FleetFixture, eventPayload, examplesPayload, statusPayload } from './fixtures.js';

describe('Ingest: acknowledged only after stored', () => {
  let fx: FleetFixture;
  let ingest: Ingest | undefined;
  let metrics: PromRegistry;

  beforeEach(() => {
    fx = new FleetFixture();
    fx.addDevice('pi-1');
    // A short busy timeout, so a locked database fails a commit quickly instead of blocking 5 s.
    fx.registry.sqlite.pragma('busy_timeout = 20');
    metrics = new PromRegistry();
  });
  afterEach(async () => {
    await ingest?.dispose();
    fx.dispose();
  });

  const stored = () => fx.db.select({ id: examples.id }).from(examples).all().length;

  it('settles the batch promise only after its rows are committed', async () => {
    let committedAtSettle = -1;
    ingest = await Ingest.create({ registry: fx.registry, metrics });
    const b = examplesPayload('pi-1', 16);
    const p = ingest.handleMessage('examples', 'pi-1', b.payload);
    expect(p).toBeInstanceOf(Promise);
    expect(stored()).toBe(0);
    await p!.then(() => (committedAtSettle = stored()));
    expect(committedAtSettle).toBe(16);
    // Malformed and unknown-device messages have nothing to wait for: acknowledged at once.
    await expect(ingest.handleMessage('examples', 'pi-1', Buffer.from('nope'))).resolves.toBeUndefined();
    await expect(ingest.handleMessage('examples', 'stranger', examplesPayload('stranger', 1).payload)).resolves.toBeUndefined();
  });

  it('a commit failing while another connection holds the write lock is retried until it lands; nothing dropped', async () => {
    ingest = await Ingest.create({ registry: fx.registry, metrics });
    const locker = new Database(fx.dbPath);
    locker.pragma('busy_timeout = 0');
    locker.exec('BEGIN IMMEDIATE');
    const b = examplesPayload('pi-1', 32);
    let settled = false;
    const p = ingest.handleMessage('examples', 'pi-1', b.payload)!.then(() => (settled = true));
    await waitFor(() => ingest!.stats().failedCommits >= 2, 10_000, { intervalMs: 10 });
    expect(settled).toBe(false);
    expect(ingest.uncommitted()).toBe(32);
    locker.exec('COMMIT');
    locker.close();
    await p;
    expect(stored()).toBe(32);
    expect(ingest.stats()).toMatchObject({ examplesInserted: 32, dropped: 0 });
    const m = await metrics.getSingleMetricAsString('apprentice_cloud_ingest_examples_total');
    expect(m).toMatch(/result="commit_failed"} [1-9]/);
  });

  it('past maxPendingRows a batch waits for the next commit instead of growing the buffer', async () => {
    ingest = await Ingest.create({ registry: fx.registry, metrics, maxPendingRows: 40 });
    const locker = new Database(fx.dbPath);
    locker.exec('BEGIN IMMEDIATE');
    const first = ingest.handleMessage('examples', 'pi-1', examplesPayload('pi-1', 30).payload)!;
    const second = ingest.handleMessage('examples', 'pi-1', examplesPayload('pi-1', 30).payload)!;
    await waitFor(() => ingest!.stats().failedCommits >= 1, 10_000, { intervalMs: 10 });
    expect(ingest.stats().backpressureWaits).toBe(1);
    locker.exec('COMMIT');
    locker.close();
    await Promise.all([first, second]);
    expect(stored()).toBe(60);
    expect(ingest.stats().flushes).toBe(2);
  });

  it('status writes are batched into one transaction per window', async () => {
    ingest = await Ingest.create({ registry: fx.registry, metrics, stateFlushMs: 20 });
    fx.addDevice('pi-off', { online: false });
    const acks = Array.from({ length: 10 }, () => ingest!.handleMessage('status', 'pi-off', statusPayload('pi-off', 1)));
    expect(fx.device('pi-off')!.online).toBe(false);
    // Acknowledged once handled, before the batched commit.
    expect(await Promise.all(acks)).toEqual(Array(10).fill(undefined));
    expect(fx.device('pi-off')!.online).toBe(false);
    await waitFor(() => fx.device('pi-off')!.online, 5_000, { intervalMs: 5 });
    const m = await metrics.getSingleMetricAsString('apprentice_cloud_ingest_device_state_total');
    expect(m).toMatch(/result="committed"} 10/);
  });

  it('a device event whose write fails is not acknowledged: retried in order until durable, then settled', async () => {
    ingest = await Ingest.create({ registry: fx.registry, metrics });
    const events = () => fx.db.select({ type: deviceEvents.type }).from(deviceEvents).all().map((r) => r.type);
    const locker = new Database(fx.dbPath);
    locker.pragma('busy_timeout = 0');
    locker.exec('BEGIN IMMEDIATE');
    const settled: string[] = [];
    const first = ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'installed', 1));
    const second = ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'rolled_back', 1, 'nan_output'));
    expect(first).toBeInstanceOf(Promise);
    void first!.then(() => settled.push('installed'));
    void second!.then(() => settled.push('rolled_back'));
    const retried = async () => (await metrics.getSingleMetricAsString('apprentice_cloud_ingest_messages_total')).match(/kind="events",result="retried"} (\d+)/)?.[1];
    await waitFor(async () => Number(await retried()) >= 2, 10_000, { intervalMs: 10 });
    expect(settled).toEqual([]); // the PUBACK waits for these promises
    expect(events()).toEqual([]);
    locker.exec('COMMIT');
    locker.close();
    await Promise.all([first, second]);
    expect(settled).toEqual(['installed', 'rolled_back']);
    expect(events()).toEqual(['installed', 'rolled_back']);
  });
});
