import { and, eq } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutRow } from '../registry/schema.js';
import { q } from '../registry/tx.js';
import type { RolloutDeviceState } from './policy.js';

/** A device's place in a fleet-stage agent rollout after `joinAgentRollout`: its row's state and the rollout as read. */
export interface AgentJoin {
  rollout: RolloutRow;
  state: RolloutDeviceState;
  /** What the join did: a new row, an `incompatible` row back to `waiting`, or nothing (already a member). */
  joined: 'added' | 'revived' | 'member';
}

/**
 * Makes `deviceId` a member of agent rollout `rolloutId` while it is in its fleet stage (issue 14): a
 * `waiting` row in the current wave, so the engine gives it the release like any member (now, or on
 * resume when paused). A row left `incompatible` (skipped at creation with no platform or no
 * `agent-update` yet) is moved back to `waiting`: the caller has checked that the device now qualifies.
 * Any other row is left as it is (a member keeps its state). Returns undefined when the rollout is no
 * longer in its fleet stage. One transaction on either dialect.
 */
export async function joinAgentRollout(reg: StoreRegistry, j: { rolloutId: string; deviceId: string; at: Date }): Promise<AgentJoin | undefined> {
  return reg.tx(function* (tx, t) {
    const [r] = yield* q(tx.select().from(t.rollouts).where(eq(t.rollouts.id, j.rolloutId)));
    if (!r || r.kind !== 'agent' || r.state !== 'fleet') return undefined;
    const where = and(eq(t.rolloutDevices.rolloutId, r.id), eq(t.rolloutDevices.deviceId, j.deviceId));
    const [row] = yield* q(tx.select({ state: t.rolloutDevices.state, reason: t.rolloutDevices.reason }).from(t.rolloutDevices).where(where));
    const at = j.at.toISOString();
    const log = (from: string | null, reason: string) => q(tx.insert(t.rolloutTransitions).values({ rolloutId: r.id, deviceId: j.deviceId, at, fromState: from, toState: 'waiting', reason }));
    if (!row) {
      yield* q(tx.insert(t.rolloutDevices).values({ rolloutId: r.id, deviceId: j.deviceId, canary: false, wave: r.wave, state: 'waiting', updatedAt: at }));
      yield* log(null, 'joined late (the agent rollout is in its fleet stage)');
      return { rollout: r, state: 'waiting', joined: 'added' };
    }
    if (row.state !== 'incompatible') return { rollout: r, state: row.state as RolloutDeviceState, joined: 'member' };
    yield* q(tx.update(t.rolloutDevices).set({ state: 'waiting', wave: r.wave, canary: false, reason: null, updatedAt: at }).where(and(where, eq(t.rolloutDevices.state, 'incompatible'))));
    yield* log('incompatible', `joined: now reports the platform and agent-update (was: ${row.reason ?? 'incompatible'})`);
    return { rollout: r, state: 'waiting', joined: 'revived' };
  });
}

/** The device's desired agent release (devices.desired_agent_seq), or null. */
export async function desiredAgentSeqOf(reg: StoreRegistry, deviceId: string): Promise<number | null> {
  const [row] = await reg.q.select({ s: reg.t.devices.desiredAgentSeq }).from(reg.t.devices).where(eq(reg.t.devices.id, deviceId));
  return row?.s ?? null;
}
