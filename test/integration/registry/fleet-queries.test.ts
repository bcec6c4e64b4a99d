/**
 * The console's device list and fleet summary (cloud/fleet/device-query.ts) on both registry dialects
 * (issue 15): the same fleet, the same answers, through the SQL each dialect spells its own way (JSON group
 * membership, the trust state, substring search, booleans, the summary's bit mask).
 */
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fleetSummary, queryDevices, type DeviceQuery } from '../../../cloud/fleet/device-query.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { ATTENTION_FLEET_NOW, ATTENTION_FLEET_SUMMARY, seedAttentionFleet } from '../../helpers/attention-fleet.js';
import { registryDialects } from '../../helpers/dialects.js';

const NOW = ATTENTION_FLEET_NOW;
const dialects = registryDialects();

describe.each(dialects)('device list and fleet summary on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    await seedAttentionFleet(reg);
  });
  afterEach(() => d.close());

  const ids = async (q: Omit<DeviceQuery, 'limit'>) => (await queryDevices(reg, { limit: 50, now: NOW, ...q })).devices.map((x) => x.id);

  it('summary: tiles, attention by reason, devices per running release and per agent version', async () => {
    expect(await fleetSummary(reg, { now: NOW })).toEqual(ATTENTION_FLEET_SUMMARY);
  });

  it('list: filters by state, group, release and text; rows carry their attention reasons and typed fields', async () => {
    expect(await ids({ state: 'attention' })).toEqual(['back-1', 'drop-1', 'fail-1', 'quar-1', 'sick-1', 'stale-1']);
    expect(await ids({ state: 'offline' })).toEqual(['off-1']);
    expect(await ids({ state: 'never_seen' })).toEqual(['new-1']);
    expect(await ids({ state: 'revoked' })).toEqual(['gone-1']);
    expect(await ids({ state: 'online' })).toHaveLength(10);
    expect(await ids({ group: 'eu' })).toEqual(['off-1', 'ok-2']);
    expect(await ids({ group: 'eu', state: 'online' })).toEqual(['ok-2']);
    expect(await ids({ release: 2 })).toEqual(['ok-1', 'ok-2']);
    expect(await ids({ q: 'DROP' })).toEqual(['drop-1', 'drop-old']);
    expect(await ids({ q: 'kitch' })).toEqual(['ok-1', 'ok-2']);
    const page = await queryDevices(reg, { state: 'attention', limit: 50, now: NOW });
    expect(page.total).toBe(6);
    expect(page.devices.find((x) => x.id === 'fail-1')).toMatchObject({ attention: ['rollout_failed'], status: 'online', online: true, revoked: false });
    expect(page.devices.find((x) => x.id === 'sick-1')).toMatchObject({ attention: ['unhealthy'], health: 'degraded', running: { model: 'digits', release: 1 } });
    expect(page.devices.find((x) => x.id === 'stale-1')).toMatchObject({ attention: ['trust_stale'], trust: { keysetVersion: 3, state: 'trust_stale' }, groups: [] });
    const [ok2] = (await queryDevices(reg, { q: 'ok-2', limit: 5, now: NOW })).devices;
    expect(ok2).toMatchObject({ groups: ['kitchen', 'eu'], protocol: { version: 1, capabilities: [] }, running: { release: 2 }, attention: [] });
  });

  it('list: pages by id with a cursor; total counts every page; a revoked device needs no attention', async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const p = await queryDevices(reg, { limit: 5, now: NOW, ...(cursor ? { cursor } : {}) });
      expect(p.total).toBe(13);
      seen.push(...p.devices.map((x) => x.id));
      cursor = p.nextCursor ?? undefined;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(13);
    await reg.q.update(reg.t.devices).set({ revoked: true }).where(eq(reg.t.devices.id, 'sick-1'));
    expect(await ids({ state: 'attention' })).not.toContain('sick-1');
    expect((await fleetSummary(reg, { now: NOW })).attentionBy.unhealthy).toBe(0);
  });
});
