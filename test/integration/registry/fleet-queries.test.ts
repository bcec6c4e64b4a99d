/**
 * The console's device list and fleet summary (cloud/fleet/device-query.ts) on both registry dialects
 * (issue 15): the same fleet, the same answers, through the SQL each dialect spells its own way (JSON group
 * membership, the trust state, substring search, booleans, the summary's bit mask).
 */
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fleetSummary, queryDevices, type DeviceQuery } from '../../../cloud/fleet/device-query.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { registryDialects } from '../../helpers/dialects.js';

const NOW = new Date('2026-11-30T12:00:00.000Z');
const dialects = registryDialects();

/** One device per attention reason, plus healthy, offline, never-seen and revoked ones; releases 1 and 2. */
async function seedFleet(reg: StoreRegistry): Promise<void> {
  const { models, releases, devices, rollouts, rolloutDevices } = reg.t;
  await reg.q.insert(models).values({ name: 'digits', inputSpec: {} as never, labels: [], teacher: {} as never, studentSpec: 'mlp', distillSettings: {} });
  for (const seq of [1, 2]) await reg.q.insert(releases).values({ model: 'digits', seq, sha256: String(seq).repeat(64), bytes: 1, quantization: 'int8', metrics: {}, manifest: {} as never, signature: {} as never, artifactPath: 'x' });
  const seen = '2026-11-30T11:59:00.000Z';
  const dev = (id: string, over: Partial<typeof devices.$inferInsert> = {}) => ({ id, groups: [] as string[], credentialHash: 'x', ...over });
  await reg.q.insert(devices).values([
    dev('ok-1', { groups: ['kitchen'], online: true, lastSeen: seen, runningSeq: 2, health: 'ok', agent: 'apprentice-edge/0.2.0', platform: 'linux-x64' }),
    dev('ok-2', { groups: ['kitchen', 'eu'], online: true, lastSeen: seen, runningSeq: 2, agent: 'apprentice-edge/0.2.0', platform: 'linux-x64' }),
    dev('off-1', { groups: ['eu'], online: false, lastSeen: '2026-11-29T00:00:00.000Z', runningSeq: 1, agent: 'apprentice-edge/0.1.0', platform: 'linux-x64' }),
    dev('new-1'),
    dev('gone-1', { revoked: true, runningSeq: 1, lastSeen: seen, agent: 'apprentice-edge/0.1.0', platform: 'linux-x64' }),
    dev('sick-1', { online: true, lastSeen: seen, runningSeq: 1, health: 'degraded' }),
    dev('drop-1', { online: true, lastSeen: seen, runningSeq: 1, droppedAt: '2026-11-30T11:30:00.000Z' }),
    dev('drop-old', { online: true, lastSeen: seen, runningSeq: 1, droppedAt: '2026-11-30T10:00:00.000Z' }),
    dev('stale-1', { online: true, lastSeen: seen, trust: { keysetVersion: 3, state: 'trust_stale' } }),
    dev('back-1', { online: true, lastSeen: seen, rolledBackAt: '2026-11-30T11:00:00.000Z' }),
    dev('fail-1', { online: true, lastSeen: seen }),
    dev('quar-1', { online: true, lastSeen: seen }),
    dev('fail-old', { online: true, lastSeen: seen }),
  ]);
  const ro = { model: 'digits', releaseSeq: 2, target: { kind: 'all' as const }, canaryShare: 0.1, soakSeconds: 60, failureThreshold: 0.2 };
  await reg.q.insert(rollouts).values([
    { id: 'ro-live', ...ro, state: 'fleet' },
    { id: 'ro-aborted', ...ro, state: 'aborted' },
  ]);
  await reg.q.insert(rolloutDevices).values([
    { rolloutId: 'ro-live', deviceId: 'fail-1', canary: true, state: 'failed', reason: 'self_test_failed' },
    { rolloutId: 'ro-live', deviceId: 'quar-1', canary: true, state: 'quarantined' },
    { rolloutId: 'ro-live', deviceId: 'ok-1', canary: false, state: 'installed' },
    { rolloutId: 'ro-aborted', deviceId: 'fail-old', canary: true, state: 'failed' },
  ]);
}

describe.each(dialects)('device list and fleet summary on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    await seedFleet(reg);
  });
  afterEach(() => d.close());

  const ids = async (q: Omit<DeviceQuery, 'limit'>) => (await queryDevices(reg, { limit: 50, now: NOW, ...q })).devices.map((x) => x.id);

  it('summary: tiles, attention by reason, devices per running release and per agent version', async () => {
    expect(await fleetSummary(reg, { now: NOW })).toEqual({
      total: 12,
      online: 10,
      offline: 1,
      neverSeen: 1,
      revoked: 1,
      attention: 6,
      attentionBy: { rollout_failed: 1, quarantined: 1, rolled_back: 1, unhealthy: 1, outbox_dropping: 1, trust_stale: 1 },
      releases: [
        { model: 'digits', release: 1, devices: 4 },
        { model: 'digits', release: 2, devices: 2 },
      ],
      agents: [
        { agent: 'apprentice-edge/0.2.0', platform: 'linux-x64', devices: 2 },
        { agent: 'apprentice-edge/0.1.0', platform: 'linux-x64', devices: 1 },
      ],
      at: NOW.toISOString(),
    });
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
