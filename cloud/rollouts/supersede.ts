import { and, eq, inArray } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import { rolloutDevices, type RolloutRow } from '../registry/schema.js';
import { countsByState, moveMember, setRollout, type Db } from './store.js';

/** States a newer rollout takes a device over from (failures stay on record in the older one). */
const TAKEN_OVER = ['waiting', 'desired', 'installed', 'timed_out'] as const;

/**
 * A newer rollout of the same release line (model, cohort: steps.ts picks the rollouts) takes over the devices both target: in the older rollout they become
 * `superseded` (with the newer id). The older rollout keeps going for the rest, and ends `superseded`
 * only when none of its devices is left to it.
 */
export function supersedeOverlap(tx: Db, old: RolloutRow, newerId: string, targeted: ReadonlySet<string>, now: Date, log: Logger): void {
  const rows = tx
    .select({ deviceId: rolloutDevices.deviceId, state: rolloutDevices.state })
    .from(rolloutDevices)
    .where(and(eq(rolloutDevices.rolloutId, old.id), inArray(rolloutDevices.state, [...TAKEN_OVER])))
    .all()
    .filter((r) => targeted.has(r.deviceId));
  for (const r of rows) {
    moveMember(tx, { rolloutId: old.id, deviceId: r.deviceId, from: r.state as (typeof TAKEN_OVER)[number], to: 'superseded', now, reason: `superseded by rollout ${newerId}`, patch: { supersededBy: newerId } });
  }
  const left = countsByState(tx, old.id);
  const remaining = left.waiting + left.desired + left.installed;
  if (remaining === 0) setRollout(tx, old.id, now, { state: 'superseded', reason: `superseded by rollout ${newerId}` });
  log.info({ rollout: old.id, by: newerId, devices: rows.length, remaining }, 'rollouts/superseded');
}
