import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceStateWriter } from '../../../cloud/fleet/device-state-writer.js';
import { recordDeviceEvents } from '../../../cloud/fleet/events-store.js';
import { TelemetryHistory } from '../../../cloud/fleet/telemetry-history.js';
import { rolloutDevices, rollouts } from '../../../cloud/registry/schema.js';
import type { Telemetry } from '../../../shared/protocol/index.js';
import { ATTENTION_FLEET_NOW, ATTENTION_FLEET_SUMMARY, seedAttentionFleet } from '../../helpers/attention-fleet.js';
import { call, harness, json, type Harness } from './helpers.js';

const NOW = ATTENTION_FLEET_NOW;
const clock = () => NOW;

function telemetry(deviceId: string, at: string, requests: number): Telemetry {
  return {
    v: 1, deviceId, at, model: 'digits', release: 1, uptimeSeconds: 1, requests, errors: 0,
    latencyMs: { p50: 1.5, p95: 4 }, rssBytes: 2048, outbox: { depth: 2, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok',
  };
}

describe('console data routes', () => {
  let h: Harness;
  beforeEach(async () => {
    h = harness({ clock });
    await seedAttentionFleet(h.registry);
  });
  afterEach(() => h.close());

  const ids = async (query: string): Promise<string[]> => {
    const res = await call(h.app, 'GET', `/v1/devices${query}`);
    expect(res.status).toBe(200);
    return (await json(res)).devices.map((d: { id: string }) => d.id);
  };

  it('GET /v1/fleet/summary counts tiles, attention by reason, and devices per running release', async () => {
    const s = await json(await call(h.app, 'GET', '/v1/fleet/summary'));
    expect(s).toEqual(ATTENTION_FLEET_SUMMARY);
    expect((await call(h.app, 'GET', '/v1/fleet/summary?x=1')).status).toBe(400);
  });

  it('GET /v1/devices filters by state, group, release and text, each tile matching the summary', async () => {
    expect(await ids('?state=attention')).toEqual(['back-1', 'drop-1', 'fail-1', 'quar-1', 'sick-1', 'stale-1']);
    expect(await ids('?state=offline')).toEqual(['off-1']);
    expect(await ids('?state=never_seen')).toEqual(['new-1']);
    expect(await ids('?state=revoked')).toEqual(['gone-1']);
    expect(await ids('?state=online')).toHaveLength(10);
    expect(await ids('?group=eu')).toEqual(['off-1', 'ok-2']);
    expect(await ids('?group=eu&state=online')).toEqual(['ok-2']);
    expect(await ids('?release=2')).toEqual(['ok-1', 'ok-2']);
    expect(await ids('?q=DROP')).toEqual(['drop-1', 'drop-old']);
    expect(await ids('?q=kitch')).toEqual(['ok-1', 'ok-2']);
    const page = await json(await call(h.app, 'GET', '/v1/devices?state=attention'));
    const fail = page.devices.find((d: { id: string }) => d.id === 'fail-1');
    expect(fail).toMatchObject({ attention: ['rollout_failed'], status: 'online' });
    expect(page.devices.find((d: { id: string }) => d.id === 'sick-1')).toMatchObject({ attention: ['unhealthy'], health: 'degraded', running: { model: 'digits', release: 1 } });
    expect(page.total).toBe(6);
  });

  it('GET /v1/devices pages with limit and cursor, and total counts every page', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const body: { devices: { id: string }[]; nextCursor: string | null; total: number } = await json(await call(h.app, 'GET', `/v1/devices?limit=5${cursor ? `&cursor=${cursor}` : ''}`));
      expect(body.total).toBe(13);
      expect(body.devices.length).toBeLessThanOrEqual(5);
      seen.push(...body.devices.map((d) => d.id));
      cursor = body.nextCursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(13);
  });

  it('GET /v1/devices refuses bad queries with a 400 naming the parameter', async () => {
    const cases = [
      ['?state=bogus', 'state'],
      ['?limit=0', 'limit'],
      ['?limit=abc', 'limit'],
      ['?limit=1001', 'limit'],
      ['?release=-1', 'release'],
      ['?release=1.5', 'release'],
      ['?cursor=bad%2Fid', 'cursor'],
      ['?group=%20x', 'group'],
      [`?q=${'x'.repeat(65)}`, 'q'],
      ['?q=', 'q'],
      ['?sort=id', 'sort'],
      ['?state=online&state=offline', 'state'],
    ] as const;
    for (const [query, field] of cases) {
      const res = await call(h.app, 'GET', `/v1/devices${query}`);
      expect(res.status, query).toBe(400);
      const { error } = await json(res);
      expect(error.code).toBe('invalid_query');
      expect(error.field, query).toBe(field);
    }
  });

  it('GET /v1/devices/{id}/events lists the device events newest first, paged with before', async () => {
    await recordDeviceEvents(h.registry, [
      { deviceId: 'ok-1', at: '2026-11-30T11:00:00.000Z', type: 'installed', release: 2 },
      { deviceId: 'ok-1', at: '2026-11-30T11:01:00.000Z', type: 'committed', release: 2 },
      { deviceId: 'ok-2', at: '2026-11-30T11:01:00.000Z', type: 'installed', release: 2 },
    ]);
    const first = await json(await call(h.app, 'GET', '/v1/devices/ok-1/events?limit=1'));
    expect(first.events.map((e: { type: string }) => e.type)).toEqual(['committed']);
    expect(first.nextBefore).toBe(first.events[0].id);
    const second = await json(await call(h.app, 'GET', `/v1/devices/ok-1/events?limit=1&before=${first.nextBefore}`));
    expect(second.events).toEqual([expect.objectContaining({ type: 'installed', deviceId: 'ok-1', source: 'device', release: 2 })]);
    expect((await json(await call(h.app, 'GET', '/v1/devices/new-1/events'))).events).toEqual([]);
    expect((await call(h.app, 'GET', '/v1/devices/ghost/events')).status).toBe(404);
    const bad = await call(h.app, 'GET', '/v1/devices/ok-1/events?before=x');
    expect(bad.status).toBe(400);
    expect((await json(bad)).error.field).toBe('before');
  });

  it('GET /v1/devices/{id}/telemetry returns the series at each resolution, since a time', async () => {
    const writer = new DeviceStateWriter({ registry: h.registry, flushMs: 1_000_000 });
    writer.addSink(new TelemetryHistory().sink);
    ['11:58:10', '11:58:40', '11:59:10'].forEach((t, i) => writer.push({ kind: 'telemetry', deviceId: 'ok-1', telemetry: telemetry('ok-1', `2026-11-30T${t}.000Z`, 10 * (i + 1)), lastSeen: `2026-11-30T${t}.000Z` }));
    writer.stop();
    const m = await json(await call(h.app, 'GET', '/v1/devices/ok-1/telemetry?resolution=1m'));
    expect(m.resolution).toBe('1m');
    expect(m.points.map((p: { at: string; requests: number; samples: number }) => [p.at, p.samples, p.requests])).toEqual([
      ['2026-11-30T11:58:00.000Z', 2, 10],
      ['2026-11-30T11:59:00.000Z', 1, 10],
    ]);
    const hr = await json(await call(h.app, 'GET', '/v1/devices/ok-1/telemetry?resolution=1h'));
    expect(hr.points).toEqual([{ at: '2026-11-30T11:00:00.000Z', samples: 3, latencyP50: 1.5, latencyP95: 4, requests: 20, errors: 0, rssBytes: 2048, outboxDepth: 2, outboxDropped: 0 }]);
    const since = await json(await call(h.app, 'GET', '/v1/devices/ok-1/telemetry?since=2026-11-30T11:59:00Z'));
    expect(since.points).toHaveLength(1);
    for (const [q, field] of [['?resolution=5m', 'resolution'], ['?since=yesterday', 'since'], ['?limit=3', 'limit']] as const) {
      const res = await call(h.app, 'GET', `/v1/devices/ok-1/telemetry${q}`);
      expect(res.status).toBe(400);
      expect((await json(res)).error.field).toBe(field);
    }
    expect((await call(h.app, 'GET', '/v1/devices/ghost/telemetry')).status).toBe(404);
  });

  it('GET /v1/audit records every operator action in the API: who, when, what', async () => {
    h.registry.db.delete(rolloutDevices).run();
    h.registry.db.delete(rollouts).run();
    await call(h.app, 'POST', '/v1/devices', { body: { id: 'pi-new', groups: ['lab'] } });
    await call(h.app, 'DELETE', '/v1/devices/pi-new');
    const created = await json(await call(h.app, 'POST', '/v1/rollouts', { body: { model: 'digits', release: 2, target: 'all' } }));
    await call(h.app, 'POST', `/v1/rollouts/${created.id}/pause`, { body: { reason: 'lunch' } });
    await call(h.app, 'POST', `/v1/rollouts/${created.id}/resume`);
    await call(h.app, 'POST', `/v1/rollouts/${created.id}/abort`);
    await call(h.app, 'POST', `/v1/rollouts/${created.id}/rollback`);
    const rotated = await json(await call(h.app, 'POST', '/v1/keys/rotate', { body: { activate: false } }));
    await call(h.app, 'POST', `/v1/keys/${rotated.keyId}/activate`);
    // A refused action is not an action: nothing recorded.
    expect((await call(h.app, 'POST', `/v1/rollouts/${created.id}/resume`)).status).toBe(409);

    const { entries, nextBefore } = await json(await call(h.app, 'GET', '/v1/audit'));
    expect(nextBefore).toBeNull();
    expect(entries.map((e: { action: string; target: string }) => [e.action, e.target]).reverse()).toEqual([
      ['device.create', 'pi-new'],
      ['device.revoke', 'pi-new'],
      ['rollout.create', created.id],
      ['rollout.pause', created.id],
      ['rollout.resume', created.id],
      ['rollout.abort', created.id],
      ['rollout.rollback', created.id],
      ['keys.rotate', rotated.keyId],
      ['keys.activate', rotated.keyId],
    ]);
    expect(entries.every((e: { actor: string; at: string }) => e.actor === 'admin-token' && e.at === NOW.toISOString())).toBe(true);
    expect(entries.find((e: { action: string }) => e.action === 'rollout.pause').detail).toEqual({ reason: 'lunch' });
    expect(entries.find((e: { action: string }) => e.action === 'rollout.create').detail).toMatchObject({ model: 'digits', release: 2, target: { kind: 'all' } });

    const page = await json(await call(h.app, 'GET', '/v1/audit?limit=4'));
    expect(page.entries).toHaveLength(4);
    const rest = await json(await call(h.app, 'GET', `/v1/audit?limit=10&before=${page.nextBefore}`));
    expect(rest.entries).toHaveLength(5);
    for (const q of ['?limit=x', '?before=-3', '?actor=me']) expect((await call(h.app, 'GET', `/v1/audit${q}`)).status).toBe(400);
  });
});
