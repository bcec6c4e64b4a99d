import { and, eq, inArray } from 'drizzle-orm';
import type { RolloutRow } from '../registry/schema.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';
import { countsByState, moveMember, setRollout } from './store.js';

/** States a newer rollout takes a device over from (failures stay on record in the older one). */
const TAKEN_OVER = ['waiting', 'desired', 'installed', 'timed_out'] as const;

/**
 * A newer rollout of the same release line (model, cohort: steps.ts picks the rollouts) takes over the devices both target: in the older rollout they become
 * `superseded` (with the newer id). The older rollout keeps going for the rest, and ends `superseded`
 * only when none of its devices is left to it. A transaction body step (cloud/registry/tx.ts), so no
 * logging here: returns how many devices it took over and how many are left to the older rollout.
 */
export function* supersedeOverlap(tx: TxDb, t: Tables, old: RolloutRow, newerId: string, targeted: ReadonlySet<string>, now: Date) {
  const all = yield* q(
    tx
      .select({ deviceId: t.rolloutDevices.deviceId, state: t.rolloutDevices.state })
      .from(t.rolloutDevices)
      .where(and(eq(t.rolloutDevices.rolloutId, old.id), inArray(t.rolloutDevices.state, [...TAKEN_OVER]))),
  );
  const rows = all.filter((r) => targeted.has(r.deviceId));
  for (const r of rows) {
    yield* moveMember(tx, t, { rolloutId: old.id, deviceId: r.deviceId, from: r.state as (typeof TAKEN_OVER)[number], to: 'superseded', now, reason: `superseded by rollout ${newerId}`, patch: { supersededBy: newerId } });
  }
  const left = yield* countsByState(tx, t, old.id);
  const remaining = left.waiting + left.desired + left.installed;
  if (remaining === 0) yield* setRollout(tx, t, old.id, now, { state: 'superseded', reason: `superseded by rollout ${newerId}` });
  return { rollout: old.id, devices: rows.length, remaining };
}
