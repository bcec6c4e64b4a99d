import { eq } from 'drizzle-orm';
import { insertDeviceEvents, type Db } from '../fleet/events-store.js';
import { rollouts } from '../registry/schema.js';

/** Device transitions the engine also notes in `device_events` (the console's device page lists them). */
export const NOTED_DEVICE_STATES: readonly string[] = ['quarantined', 'timed_out', 'superseded', 'held_back'];

/** `device_events.source` of the engine's notes; their `type` is `rollout.<state>`. */
export const ROLLOUT_EVENT_SOURCE = 'rollout';

const CHUNK = 500;

/**
 * Records the engine's notes about devices in the one store of device events (cloud/fleet/events-store),
 * in the caller's transaction: `rollout.<to>` with the rollout's model and release (for `rolled_back`,
 * the release put back), why, and the rollout id.
 */
export function noteDevices(db: Db, n: { rolloutId: string; deviceIds: readonly string[]; to: string; at: Date; reason?: string | null; release?: number | null }): void {
  if (n.deviceIds.length === 0) return;
  const r = db.select({ model: rollouts.model, releaseSeq: rollouts.releaseSeq }).from(rollouts).where(eq(rollouts.id, n.rolloutId)).get();
  const at = n.at.toISOString();
  for (let i = 0; i < n.deviceIds.length; i += CHUNK) {
    const rows = n.deviceIds.slice(i, i + CHUNK).map((deviceId) => ({
      deviceId,
      at,
      type: `rollout.${n.to}`,
      source: ROLLOUT_EVENT_SOURCE,
      model: r?.model ?? null,
      release: n.release ?? r?.releaseSeq ?? null,
      reason: n.reason ?? null,
      detail: `rollout ${n.rolloutId}`,
    }));
    insertDeviceEvents(db, rows, n.at);
  }
}
