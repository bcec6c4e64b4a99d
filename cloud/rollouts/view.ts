import { and, eq, gte, sql } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import type { RolloutDeviceRow, RolloutRow, RolloutTransitionRow } from '../registry/schema.js';
import { q } from '../registry/tx.js';
import type { Deliverable } from './deliverable.js';
import { ROLLOUT_DEVICE_STATES, wavesOf, type RolloutDeviceState } from './policy.js';
import { getRollout, run, transitionsOf } from './store.js';

export interface RolloutView {
  rollout: RolloutRow;
  devices: RolloutDeviceRow[];
  counts: Record<RolloutDeviceState, number>;
  /** Per wave: its cumulative share and its devices per state. */
  waves: { share: number; counts: Partial<Record<RolloutDeviceState, number>> }[];
  /** Of the target's devices seen since the rollout started, how many run the release (installed, also late). */
  coverage: { connected: number; running: number; share: number | null };
  /** Newest first. */
  transitions: RolloutTransitionRow[];
}

/**
 * One rollout as the API and the console show it (split out of engine.ts): its device rows, counts per
 * state and per wave, how many of the devices seen since it started run the release, and the latest
 * transitions. Reads only; undefined for an unknown id.
 */
export async function rolloutView(reg: StoreRegistry, deliverableOf: (r: RolloutRow) => Deliverable, id: string): Promise<RolloutView | undefined> {
  const rollout = await run(reg, (tx, t) => getRollout(tx, t, id));
  if (!rollout) return undefined;
  const { rolloutDevices } = reg.t;
  const rows: RolloutDeviceRow[] = await reg.q.select().from(rolloutDevices).where(eq(rolloutDevices.rolloutId, id)).orderBy(rolloutDevices.deviceId);
  const counts = Object.fromEntries(ROLLOUT_DEVICE_STATES.map((s) => [s, 0])) as Record<RolloutDeviceState, number>;
  const waves = wavesOf(rollout).map((share) => ({ share, counts: {} as Partial<Record<RolloutDeviceState, number>> }));
  for (const d of rows) {
    const s = d.state as RolloutDeviceState;
    counts[s]++;
    const w = waves[Math.min(d.wave, waves.length - 1)]!.counts;
    w[s] = (w[s] ?? 0) + 1;
  }
  const kind = deliverableOf(rollout);
  const seen = await run(reg, function* (tx, t) {
    const running = yield* kind.running(tx, t, rollout);
    // A condition as a selected value: 1/0 on SQLite, true/false on PostgreSQL (read either way below).
    return yield* q(
      tx
        .select({ installedAt: t.rolloutDevices.installedAt, running: sql<number | boolean>`${running}` })
        .from(t.rolloutDevices)
        .innerJoin(t.devices, eq(t.devices.id, t.rolloutDevices.deviceId))
        .where(and(eq(t.rolloutDevices.rolloutId, id), gte(t.devices.lastSeen, rollout.createdAt))),
    );
  });
  const running = seen.filter((d) => d.installedAt !== null || d.running === true || Number(d.running) === 1).length;
  const coverage = { connected: seen.length, running, share: seen.length ? running / seen.length : null };
  return { rollout, devices: rows, counts, waves, coverage, transitions: await run(reg, (tx, t) => transitionsOf(tx, t, id, 100)) };
}
