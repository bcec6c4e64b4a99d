import { and, desc, eq, inArray, ne } from 'drizzle-orm';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import type { RegistryDb } from '../registry/db.js';
import { devices, rolloutDevices, rollouts, type DeviceRow, type RolloutDeviceRow, type RolloutRow } from '../registry/schema.js';
import { ACTIVE_ROLLOUT_STATES, inTarget, type RolloutDeviceState, type RolloutTarget } from './policy.js';

/** The registry database or a transaction on it. */
export type Db = RegistryDb | Parameters<Parameters<RegistryDb['transaction']>[0]>[0];

/**
 * The DB reads and transitions of rollouts, shared by ingest (device events) and the rollout engine.
 * The DB is the only state: a restarted cloud resumes from it.
 */

/** Non-revoked devices the target names. */
export function targetedDevices(db: Db, target: RolloutTarget): DeviceRow[] {
  const where = target.kind === 'devices' ? and(eq(devices.revoked, false), inArray(devices.id, target.ids)) : eq(devices.revoked, false);
  return db.select().from(devices).where(where).all().filter((d) => inTarget(target, d));
}

export function getRollout(db: Db, id: string): RolloutRow | undefined {
  return db.select().from(rollouts).where(eq(rollouts.id, id)).get();
}

export function activeRollouts(db: Db): RolloutRow[] {
  return db
    .select()
    .from(rollouts)
    .where(inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES]))
    .orderBy(rollouts.createdAt, rollouts.id)
    .all();
}

export function latestRolloutOfModel(db: Db, model: string): RolloutRow | undefined {
  return db.select().from(rollouts).where(eq(rollouts.model, model)).orderBy(desc(rollouts.createdAt), desc(rollouts.id)).limit(1).get();
}

export interface RolloutMember extends RolloutDeviceRow {
  device: Pick<DeviceRow, 'online' | 'runningSeq' | 'lastTelemetry' | 'revoked'>;
}

/** A rollout's device rows joined with the device state (revoked devices left out). */
export function members(db: Db, rolloutId: string): RolloutMember[] {
  return db
    .select({ row: rolloutDevices, online: devices.online, runningSeq: devices.runningSeq, lastTelemetry: devices.lastTelemetry, revoked: devices.revoked })
    .from(rolloutDevices)
    .innerJoin(devices, eq(devices.id, rolloutDevices.deviceId))
    .where(and(eq(rolloutDevices.rolloutId, rolloutId), eq(devices.revoked, false)))
    .all()
    .map((r) => ({ ...r.row, device: { online: r.online, runningSeq: r.runningSeq, lastTelemetry: r.lastTelemetry, revoked: r.revoked } }));
}

export function setRollout(db: Db, id: string, now: Date, patch: Partial<Omit<RolloutRow, 'id' | 'createdAt' | 'updatedAt'>>): void {
  db.update(rollouts)
    .set({ ...patch, updatedAt: now.toISOString() })
    .where(eq(rollouts.id, id))
    .run();
}

export function setMember(db: Db, rolloutId: string, deviceId: string, now: Date, state: RolloutDeviceState, reason: string | null = null): void {
  db.update(rolloutDevices)
    .set({ state, reason, updatedAt: now.toISOString() })
    .where(and(eq(rolloutDevices.rolloutId, rolloutId), eq(rolloutDevices.deviceId, deviceId)))
    .run();
}

/** Which states a device event may move a rollout row from (so a redelivered desired's `stale_release` never undoes `installed`). */
const EVENT_TRANSITIONS: Record<DeviceEvent['type'], { to: RolloutDeviceState; from: readonly RolloutDeviceState[] }> = {
  installed: { to: 'installed', from: ['desired', 'rejected'] },
  committed: { to: 'installed', from: ['desired', 'rejected'] },
  rejected: { to: 'rejected', from: ['desired'] },
  rolled_back: { to: 'rolled_back', from: ['desired', 'installed', 'rejected'] },
};

export interface AppliedEvent {
  rolloutId: string;
  from: RolloutDeviceState;
  to: RolloutDeviceState;
}

/**
 * Applies an installed / rejected / rolled_back event to the device's row in its active rollout
 * (pending, canary or fleet stage; release given to it: a fast canary may report before the
 * rollout leaves `pending`). The event must be about that rollout's release; a
 * rejection of a manifest that could not be trusted carries no release and counts against the
 * release the device was told to install. Returns what changed, or null.
 */
export function applyDeviceEvent(db: Db, ev: DeviceEvent, now: Date): AppliedEvent | null {
  const rows = db
    .select({ rolloutId: rolloutDevices.rolloutId, state: rolloutDevices.state, releaseSeq: rollouts.releaseSeq, model: rollouts.model })
    .from(rolloutDevices)
    .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
    .where(and(eq(rolloutDevices.deviceId, ev.deviceId), inArray(rollouts.state, ['pending', 'canary', 'fleet']), ne(rolloutDevices.state, 'waiting')))
    .orderBy(desc(rollouts.createdAt))
    .all();
  const row =
    ev.release !== null
      ? rows.find((r) => r.releaseSeq === ev.release && (ev.model === null || ev.model === r.model))
      : ev.type === 'rejected'
        ? rows.find((r) => r.state === 'desired')
        : undefined;
  if (!row) return null;
  const t = EVENT_TRANSITIONS[ev.type];
  const from = row.state as RolloutDeviceState;
  if (!t.from.includes(from)) return null;
  setMember(db, row.rolloutId, ev.deviceId, now, t.to, ev.reason ?? (ev.detail ? ev.detail.slice(0, 256) : null));
  return { rolloutId: row.rolloutId, from, to: t.to };
}

/** Active rollouts the device takes part in (to decide whether its signals matter). */
export function activeMemberships(db: Db, deviceId: string): { rolloutId: string; canary: boolean; rolloutState: string }[] {
  return db
    .select({ rolloutId: rolloutDevices.rolloutId, canary: rolloutDevices.canary, rolloutState: rollouts.state })
    .from(rolloutDevices)
    .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
    .where(and(eq(rolloutDevices.deviceId, deviceId), inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES])))
    .all();
}
