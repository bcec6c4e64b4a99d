/** Console stores (issue 12) on both registry dialects (issue 15): device events, audit, telemetry history. */
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listAudit, recordAudit } from '../../../cloud/audit/store.js';
import { DeviceStateWriter } from '../../../cloud/fleet/device-state-writer.js';
import { listDeviceEvents, pruneDeviceEvents, recordDeviceEvents } from '../../../cloud/fleet/events-store.js';
import { Ingest } from '../../../cloud/fleet/ingest.js';
import { startConsoleRetention } from '../../../cloud/fleet/retention.js';
import { pruneTelemetryHistory, TelemetryHistory, telemetrySeries } from '../../../cloud/fleet/telemetry-history.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import type { Telemetry } from '../../../shared/protocol/index.js';
import { registryDialects } from '../../helpers/dialects.js';
import { eventPayload } from './fixtures.js';

function telemetry(deviceId: string, at: string, over: Partial<Telemetry> & { dropped?: number; depth?: number } = {}): Telemetry {
  const { dropped = 0, depth = 0, ...rest } = over;
  return {
    v: 1,
    deviceId,
    at,
    model: 'tiny',
    release: 1,
    uptimeSeconds: 10,
    requests: 0,
    errors: 0,
    latencyMs: { p50: 1, p95: 2 },
    rssBytes: 100,
    outbox: { depth, bytes: 0, dropped, evicted: 0, selected: 0, published: 0 },
    health: 'ok',
    ...rest,
  };
}

const dialects = registryDialects();

describe.each(dialects)('console stores on $name', (d) => {
  let reg: StoreRegistry;
  const device = async (id: string) => (await reg.q.select().from(reg.t.devices).where(eq(reg.t.devices.id, id)))[0];
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    await reg.q.insert(reg.t.devices).values(['pi-1', 'pi-2'].map((id) => ({ id, groups: ['lab'], credentialHash: 'x', online: true })));
  });
  afterEach(() => d.close());

  describe('device events', () => {
    it('records, lists newest first per device, pages with before, and prunes by age', async () => {
      const t0 = new Date('2026-11-30T10:00:00Z');
      await recordDeviceEvents(reg, [{ deviceId: 'pi-1', at: t0.toISOString(), type: 'installed', release: 1 }], t0);
      await recordDeviceEvents(reg, [{ deviceId: 'pi-2', at: t0.toISOString(), type: 'rejected', reason: 'bad_signature', detail: 'x'.repeat(5000) }], t0);
      const later = new Date(t0.getTime() + 3600_000);
      await recordDeviceEvents(reg, [{ deviceId: 'pi-1', at: later.toISOString(), type: 'wave', source: 'rollout', detail: 'wave 1' }], later);

      const pi1 = await listDeviceEvents(reg, { deviceId: 'pi-1', limit: 10 });
      expect(pi1.map((e) => [e.type, e.source])).toEqual([['wave', 'rollout'], ['installed', 'device']]);
      const all = await listDeviceEvents(reg, { limit: 2 });
      expect(all).toHaveLength(2);
      const rest = await listDeviceEvents(reg, { limit: 2, before: all[1]!.id });
      expect(rest.map((e) => e.deviceId)).toEqual(['pi-1']);
      expect(all.find((e) => e.deviceId === 'pi-2')?.detail).toHaveLength(1024);

      expect(await pruneDeviceEvents(reg, new Date(t0.getTime() + 60_000), 1)).toBe(2);
      expect((await listDeviceEvents(reg, { limit: 10 })).map((e) => e.type)).toEqual(['wave']);
    });

    it('ingest writes every accepted device event, and rolled_back marks the device until its next install', async () => {
      const ingest = await Ingest.create({ registry: reg });
      try {
        await ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'rolled_back', 1, 'nan_output'));
        await ingest.handleMessage('events', 'pi-1', Buffer.from('{"not":"an event"}'));
        await ingest.handleMessage('events', 'ghost', eventPayload('ghost', 'installed', 1));
        const evs = await listDeviceEvents(reg, { limit: 10 });
        expect(evs.map((e) => [e.deviceId, e.type, e.reason])).toEqual([['pi-1', 'rolled_back', 'nan_output']]);
        expect((await device('pi-1'))?.rolledBackAt).not.toBeNull();
        await ingest.handleMessage('events', 'pi-1', eventPayload('pi-1', 'installed', 2));
        expect((await device('pi-1'))?.rolledBackAt).toBeNull();
        expect(await listDeviceEvents(reg, { deviceId: 'pi-1', limit: 10 })).toHaveLength(2);
      } finally {
        await ingest.stop();
      }
    });
  });

  describe('audit log', () => {
    it('records actions and lists them newest first with paging', async () => {
      const a = await recordAudit(reg, { actor: 'admin-token', action: 'rollout.create', target: 'r-1', detail: { release: 3 } });
      await recordAudit(reg, { actor: 'session:abc', action: 'rollout.pause', target: 'r-1' });
      const list = await listAudit(reg, { limit: 10 });
      expect(list.map((e) => [e.actor, e.action, e.target])).toEqual([['session:abc', 'rollout.pause', 'r-1'], ['admin-token', 'rollout.create', 'r-1']]);
      expect(list[1]).toEqual(a);
      expect(list[1]!.detail).toEqual({ release: 3 });
      expect(await listAudit(reg, { limit: 10, before: list[0]!.id })).toEqual([a]);
    });
  });

  describe('telemetry history', () => {
    it('downsamples into 1m and 1h buckets through the batched writer, with counter increases and restarts', async () => {
      const history = new TelemetryHistory();
      const writer = new DeviceStateWriter({ registry: reg, flushMs: 1_000_000 });
      writer.addSink(history.sink);
      const push = (at: string, over: Parameters<typeof telemetry>[2]) => writer.push({ kind: 'telemetry', deviceId: 'pi-1', telemetry: telemetry('pi-1', at, over), lastSeen: at });
      push('2026-11-30T10:00:05Z', { requests: 100, latencyMs: { p50: 2, p95: 10 }, rssBytes: 1000, dropped: 3 });
      push('2026-11-30T10:00:35Z', { requests: 130, latencyMs: { p50: 4, p95: 8 }, rssBytes: 3000, depth: 7, dropped: 3 });
      push('2026-11-30T10:01:05Z', { requests: 20, latencyMs: { p50: null, p95: null }, rssBytes: 500, dropped: 5 }); // daemon restarted (requests reset; the outbox's drop count is its own)
      expect(await writer.flush()).toBe(true);

      const now = new Date('2026-11-30T10:02:00Z');
      const m = await telemetrySeries(reg, 'pi-1', { resolution: '1m', now });
      expect(m).toEqual([
        { at: '2026-11-30T10:00:00.000Z', samples: 2, latencyP50: 3, latencyP95: 10, requests: 30, errors: 0, rssBytes: 3000, outboxDepth: 7, outboxDropped: 0 },
        { at: '2026-11-30T10:01:00.000Z', samples: 1, latencyP50: null, latencyP95: null, requests: 20, errors: 0, rssBytes: 500, outboxDepth: 0, outboxDropped: 2 },
      ]);
      const h = await telemetrySeries(reg, 'pi-1', { resolution: '1h', now });
      expect(h).toEqual([{ at: '2026-11-30T10:00:00.000Z', samples: 3, latencyP50: 3, latencyP95: 10, requests: 50, errors: 0, rssBytes: 3000, outboxDepth: 7, outboxDropped: 2 }]);
      expect(await telemetrySeries(reg, 'pi-2', { resolution: '1m', now })).toEqual([]);
      // The device row says what the console filters on.
      expect(await device('pi-1')).toMatchObject({ health: 'ok', droppedAt: '2026-11-30T10:01:05.000Z' });
      await writer.stop();

      // A restarted cloud (new writer and history) continues from the stored telemetry, not from 0.
      const again = new DeviceStateWriter({ registry: reg, flushMs: 1_000_000 });
      again.addSink(new TelemetryHistory().sink);
      again.push({ kind: 'telemetry', deviceId: 'pi-1', telemetry: telemetry('pi-1', '2026-11-30T10:01:35Z', { requests: 45, dropped: 5 }), lastSeen: '2026-11-30T10:01:35Z' });
      await again.stop();
      const after = await telemetrySeries(reg, 'pi-1', { resolution: '1m', now, since: new Date('2026-11-30T10:01:00Z') });
      expect(after).toEqual([expect.objectContaining({ samples: 2, requests: 45, outboxDropped: 2 })]);
    });

    it('ingest telemetry reaches the history through the writer sink; malformed telemetry writes nothing', async () => {
      const ingest = await Ingest.create({ registry: reg, stateFlushMs: 1_000_000 });
      try {
        ingest.deviceState!.addSink(new TelemetryHistory().sink);
        const at = new Date().toISOString();
        void ingest.handleMessage('telemetry', 'pi-1', Buffer.from(JSON.stringify(telemetry('pi-1', at, { requests: 7, health: 'degraded' }))));
        void ingest.handleMessage('telemetry', 'pi-2', Buffer.from(JSON.stringify({ ...telemetry('pi-2', at), requests: -1 })));
        void ingest.handleMessage('telemetry', 'pi-2', Buffer.from(JSON.stringify(telemetry('pi-1', at)))); // speaks for another device
        expect(await ingest.flush()).toBe(true);
        expect(await telemetrySeries(reg, 'pi-1', { resolution: '1m' })).toEqual([expect.objectContaining({ samples: 1, requests: 0, latencyP50: 1, latencyP95: 2 })]);
        expect(await telemetrySeries(reg, 'pi-2', { resolution: '1h' })).toEqual([]);
        expect((await device('pi-1'))?.health).toBe('degraded');
        expect(ingest.stats().malformed).toBe(2);
      } finally {
        await ingest.stop();
      }
    });

    it('retention keeps 24 h of 1m and 30 days of 1h buckets', async () => {
      const at = (ms: number) => new Date(Date.parse('2026-11-01T00:00:00Z') + ms).toISOString();
      const ops = [0, 29 * 86400_000, 31 * 86400_000 - 3600_000 * 2, 31 * 86400_000 - 60_000].map((ms) => ({ kind: 'telemetry' as const, deviceId: 'pi-1', telemetry: telemetry('pi-1', at(ms)), lastSeen: at(ms) }));
      await reg.tx((tx, t) => TelemetryHistory.steps(tx, t, ops));
      const now = new Date(Date.parse('2026-11-01T00:00:00Z') + 31 * 86400_000);
      const deleted = await pruneTelemetryHistory(reg, now, 1);
      // 1m: the two buckets older than 24 h go; 1h: the bucket of day 0 goes.
      expect(deleted).toBe(3);
      expect((await telemetrySeries(reg, 'pi-1', { resolution: '1m', now })).map((p) => p.at)).toEqual([at(31 * 86400_000 - 3600_000 * 2), at(31 * 86400_000 - 60_000)]);
      expect(await telemetrySeries(reg, 'pi-1', { resolution: '1h', now })).toHaveLength(3);
      const r = startConsoleRetention({ registry: reg, intervalMs: 3_600_000, now: () => now });
      expect(await r.runOnce()).toEqual({ events: 0, telemetry: 0 });
      r.stop();
    });
  });
});
