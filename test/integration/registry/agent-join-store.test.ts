import { and, eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { desiredAgentSeqOf, joinAgentRollout } from '../../../cloud/rollouts/agent-join.js';
import { registryDialects } from '../../helpers/dialects.js';

/**
 * cloud/rollouts/agent-join.ts (issue 14): a device joining a fleet-stage agent rollout, the same cases on
 * SQLite and PostgreSQL. The engine's use of it over a real broker is in test/integration/fleet/agent-rollout.test.ts.
 */
const dialects = registryDialects();
const AT = new Date('2026-12-01T02:00:00.000Z');

describe.each(dialects)('agent rollout join store on $name', (d) => {
  let reg: StoreRegistry;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    for (const id of ['pi-1', 'pi-2', 'pi-3']) await reg.q.insert(reg.t.devices).values({ id, groups: ['lab'], credentialHash: 'x' });
    await reg.q.update(reg.t.devices).set({ desiredAgentSeq: 4 }).where(eq(reg.t.devices.id, 'pi-3'));
  });
  afterEach(() => d.close());

  async function rollout(id: string, o: { state: string; kind?: 'model' | 'agent'; wave?: number }): Promise<void> {
    await reg.q.insert(reg.t.rollouts).values({ id, model: o.kind === 'model' ? 'mnist' : 'agent:linux-x64', kind: o.kind ?? 'agent', releaseSeq: 2, target: { kind: 'all' }, canaryShare: 0.1, waves: [0.1, 0.5, 1], soakSeconds: 0, failureThreshold: 0.2, state: o.state, wave: o.wave ?? 0 });
  }
  const rowOf = async (rolloutId: string, deviceId: string) => (await reg.q.select().from(reg.t.rolloutDevices).where(and(eq(reg.t.rolloutDevices.rolloutId, rolloutId), eq(reg.t.rolloutDevices.deviceId, deviceId))))[0];
  const transitionsOf = async (rolloutId: string) => (await reg.q.select().from(reg.t.rolloutTransitions).where(eq(reg.t.rolloutTransitions.rolloutId, rolloutId)).orderBy(reg.t.rolloutTransitions.id)).map((t) => [t.deviceId, t.fromState, t.toState, t.reason]);

  it('a device with no row joins the current wave as waiting; a second join leaves it a member', async () => {
    await rollout('r-1', { state: 'fleet', wave: 2 });
    const j = await joinAgentRollout(reg, { rolloutId: 'r-1', deviceId: 'pi-1', at: AT });
    expect(j).toMatchObject({ state: 'waiting', joined: 'added', rollout: { id: 'r-1', wave: 2, state: 'fleet' } });
    expect(await rowOf('r-1', 'pi-1')).toMatchObject({ state: 'waiting', wave: 2, canary: false, updatedAt: AT.toISOString() });
    expect(await transitionsOf('r-1')).toEqual([['pi-1', null, 'waiting', 'joined late (the agent rollout is in its fleet stage)']]);
    expect(await joinAgentRollout(reg, { rolloutId: 'r-1', deviceId: 'pi-1', at: AT })).toMatchObject({ state: 'waiting', joined: 'member' });
    expect(await transitionsOf('r-1')).toHaveLength(1);
  });

  it('an incompatible row from creation is revived into the current wave with the old reason logged; other states stay', async () => {
    await rollout('r-1', { state: 'fleet', wave: 1 });
    await reg.q.insert(reg.t.rolloutDevices).values([
      { rolloutId: 'r-1', deviceId: 'pi-1', canary: false, wave: 2, state: 'incompatible', reason: 'platform unknown', updatedAt: AT.toISOString() },
      { rolloutId: 'r-1', deviceId: 'pi-2', canary: true, wave: 0, state: 'installed', updatedAt: AT.toISOString() },
    ]);
    expect(await joinAgentRollout(reg, { rolloutId: 'r-1', deviceId: 'pi-1', at: AT })).toMatchObject({ state: 'waiting', joined: 'revived' });
    expect(await rowOf('r-1', 'pi-1')).toMatchObject({ state: 'waiting', wave: 1, canary: false, reason: null });
    expect(await joinAgentRollout(reg, { rolloutId: 'r-1', deviceId: 'pi-2', at: AT })).toMatchObject({ state: 'installed', joined: 'member' });
    expect(await rowOf('r-1', 'pi-2')).toMatchObject({ state: 'installed', wave: 0 });
    expect(await transitionsOf('r-1')).toEqual([['pi-1', 'incompatible', 'waiting', 'joined: now reports the platform and agent-update (was: platform unknown)']]);
  });

  it('nothing outside a fleet-stage agent rollout: canary, completed, a model rollout, an unknown id', async () => {
    await rollout('r-canary', { state: 'canary' });
    await rollout('r-done', { state: 'completed' });
    await rollout('r-model', { state: 'fleet', kind: 'model' });
    for (const id of ['r-canary', 'r-done', 'r-model', 'r-none']) expect(await joinAgentRollout(reg, { rolloutId: id, deviceId: 'pi-1', at: AT }), id).toBeUndefined();
    expect(await reg.q.select().from(reg.t.rolloutDevices)).toEqual([]);
    expect(await reg.q.select().from(reg.t.rolloutTransitions)).toEqual([]);
  });

  it("desiredAgentSeqOf reads the device's desired agent release", async () => {
    expect(await desiredAgentSeqOf(reg, 'pi-3')).toBe(4);
    expect(await desiredAgentSeqOf(reg, 'pi-1')).toBeNull();
    expect(await desiredAgentSeqOf(reg, 'nobody')).toBeNull();
  });
});
