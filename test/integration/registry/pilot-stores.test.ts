import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listAudit, recordAudit } from '../../../cloud/audit/store.js';
import { listDeviceEvents, pruneDeviceEvents, recordDeviceEvents } from '../../../cloud/fleet/events-store.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { noteDeviceSteps } from '../../../cloud/rollouts/notes.js';
import { q } from '../../../cloud/registry/tx.js';
import { registrySessionStore } from '../../../cloud/ui/secret-store.js';
import { registryDialects } from '../../helpers/dialects.js';

/** The stores converted to the dialect-agnostic pattern (issue 15), the same cases on SQLite and PostgreSQL. */
const dialects = registryDialects();

async function addDevice(reg: StoreRegistry, id: string): Promise<void> {
  await reg.q.insert(reg.t.devices).values({ id, groups: ['lab'], credentialHash: 'x' });
}

async function device(reg: StoreRegistry, id: string) {
  const [row] = await reg.q.select().from(reg.t.devices).where(eq(reg.t.devices.id, id));
  return row;
}

describe.each(dialects)('pilot stores on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    await addDevice(reg, 'pi-1');
    await addDevice(reg, 'pi-2');
  });
  afterEach(() => d.close());

  it('device rows read back with the same JS values (JSON, booleans, defaults as ISO text)', async () => {
    const row = await device(reg, 'pi-1');
    expect(row).toMatchObject({ id: 'pi-1', groups: ['lab'], online: false, revoked: false, lastSeen: null, capabilities: null });
    expect(row!.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('audit: records actions and lists them newest first with paging', async () => {
    const a = await recordAudit(reg, { actor: 'admin-token', action: 'rollout.create', target: 'r-1', detail: { release: 3, nested: { z: 1, a: [true, null] } } });
    await recordAudit(reg, { actor: 'session:abc', action: 'rollout.pause', target: 'x'.repeat(1000) });
    const list = await listAudit(reg, { limit: 10 });
    expect(list.map((e) => [e.actor, e.action, e.target?.length])).toEqual([['session:abc', 'rollout.pause', 256], ['admin-token', 'rollout.create', 3]]);
    expect(list[1]).toEqual(a);
    expect(Object.keys(list[1]!.detail!.nested as object)).toEqual(['z', 'a']); // key order kept (json, not jsonb)
    expect(await listAudit(reg, { limit: 10, before: list[0]!.id })).toEqual([a]);
  });

  it('device events: record, list per device, page, prune by age; rolled_back marks the device until its next install', async () => {
    const t0 = new Date('2026-11-30T10:00:00Z');
    expect(await recordDeviceEvents(reg, [{ deviceId: 'pi-1', at: t0.toISOString(), type: 'rolled_back', release: 1, reason: 'nan_output' }], t0)).toBe(1);
    await recordDeviceEvents(reg, [{ deviceId: 'pi-2', at: t0.toISOString(), type: 'rejected', reason: 'bad_signature', detail: 'x'.repeat(5000) }], t0);
    expect((await device(reg, 'pi-1'))!.rolledBackAt).toBe(t0.toISOString());
    const later = new Date(t0.getTime() + 3600_000);
    await recordDeviceEvents(reg, [{ deviceId: 'pi-1', at: later.toISOString(), type: 'installed', release: 2 }, { deviceId: 'pi-1', at: later.toISOString(), type: 'wave', source: 'rollout', detail: 'wave 1' }], later);
    expect((await device(reg, 'pi-1'))!.rolledBackAt).toBeNull();

    const pi1 = await listDeviceEvents(reg, { deviceId: 'pi-1', limit: 10 });
    expect(pi1.map((e) => [e.type, e.source, e.release])).toEqual([['wave', 'rollout', null], ['installed', 'device', 2], ['rolled_back', 'device', 1]]);
    const page = await listDeviceEvents(reg, { limit: 2 });
    expect(page.map((e) => e.type)).toEqual(['wave', 'installed']);
    const rest = await listDeviceEvents(reg, { limit: 10, before: page[1]!.id });
    expect(rest.map((e) => e.type)).toEqual(['rejected', 'rolled_back']);
    expect(rest[0]!.detail).toHaveLength(1024);

    expect(await pruneDeviceEvents(reg, new Date(t0.getTime() + 60_000), 1)).toBe(2);
    expect((await listDeviceEvents(reg, { limit: 10 })).map((e) => e.type)).toEqual(['wave', 'installed']);
  });

  it('device events: an event of a device the registry does not know is still kept; an empty batch records nothing', async () => {
    expect(await recordDeviceEvents(reg, [])).toBe(0);
    expect(await recordDeviceEvents(reg, [{ deviceId: 'gone', at: '2026-11-30T10:00:00.000Z', type: 'installed' }])).toBe(1);
    expect(await listDeviceEvents(reg, { deviceId: 'gone', limit: 5 })).toHaveLength(1);
  });

  it('console sessions: two replicas agree on one secret; logouts are shared and expired ones pruned', async () => {
    let clock = 1_000;
    const a = registrySessionStore(reg, () => clock);
    const b = registrySessionStore(await d.openAnother(), () => clock);
    const [sa, sb] = await Promise.all([a.secret(), b.secret()]);
    expect(sa).toBe(sb);
    expect(sa).toMatch(/^[A-Za-z0-9_-]{43}$/);

    await a.revoke('s-1', 2_000);
    expect(await b.isRevoked('s-1')).toBe(true);
    expect(await b.isRevoked('s-2')).toBe(false);
    clock = 3_000; // s-1's cookie has expired: the next logout prunes it
    await b.revoke('s-2', 9_000);
    expect(await a.isRevoked('s-1')).toBe(false);
    expect(await a.isRevoked('s-2')).toBe(true);
  });

  it('rollout notes compose into a transaction body: the notes and the rollout change commit together, or neither', async () => {
    await reg.q.insert(reg.t.rollouts).values({ id: 'r-1', model: 'tiny', releaseSeq: 7, target: { kind: 'all' }, canaryShare: 0.1, soakSeconds: 60, failureThreshold: 0.2, state: 'canary' });
    const at = new Date('2026-11-30T12:00:00Z');
    await reg.tx(function* (tx, t) {
      yield* noteDeviceSteps(tx, t, { rolloutId: 'r-1', deviceIds: ['pi-1', 'pi-2'], to: 'quarantined', at, reason: 'bad_signature' });
      yield* q(tx.update(t.rollouts).set({ pausedAt: at.toISOString() }).where(eq(t.rollouts.id, 'r-1')));
    });
    const notes = await listDeviceEvents(reg, { limit: 10 });
    expect(notes.map((e) => [e.deviceId, e.type, e.source, e.model, e.release, e.detail])).toEqual([
      ['pi-2', 'rollout.quarantined', 'rollout', 'tiny', 7, 'rollout r-1'],
      ['pi-1', 'rollout.quarantined', 'rollout', 'tiny', 7, 'rollout r-1'],
    ]);
    await expect(
      reg.tx(function* (tx, t) {
        yield* noteDeviceSteps(tx, t, { rolloutId: 'r-1', deviceIds: ['pi-1'], to: 'timed_out', at });
        throw new Error('engine step failed');
      }),
    ).rejects.toThrow('engine step failed');
    expect(await listDeviceEvents(reg, { limit: 10 })).toHaveLength(2);
  });
});
