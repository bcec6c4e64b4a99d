import { eq } from 'drizzle-orm';
import { deviceEventSteps } from '../fleet/events-store.js';
import type { TxDb } from '../registry/db.js';
import { q, type Tables } from '../registry/tx.js';

/** Device transitions the engine also notes in `device_events` (the console's device page lists them). */
export const NOTED_DEVICE_STATES: readonly string[] = ['quarantined', 'timed_out', 'superseded', 'held_back'];

/** `device_events.source` of the engine's notes; their `type` is `rollout.<state>`. */
export const ROLLOUT_EVENT_SOURCE = 'rollout';

const CHUNK = 500;

/** What the engine notes about some devices of a rollout. */
export interface DeviceNotes {
  rolloutId: string;
  deviceIds: readonly string[];
  to: string;
  at: Date;
  reason?: string | null;
  release?: number | null;
}

/**
 * Records the engine's notes about devices in the one store of device events (cloud/fleet/events-store),
 * as transaction body steps (cloud/registry/tx.ts): `rollout.<to>` with the rollout's model and release
 * (for `rolled_back`, the release put back), why, and the rollout id.
 */
export function* noteDeviceSteps(tx: TxDb, t: Tables, n: DeviceNotes) {
  if (n.deviceIds.length === 0) return;
  const [r] = yield* q(tx.select({ model: t.rollouts.model, releaseSeq: t.rollouts.releaseSeq }).from(t.rollouts).where(eq(t.rollouts.id, n.rolloutId)).limit(1));
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
    yield* deviceEventSteps(tx, t, rows, n.at);
  }
}
