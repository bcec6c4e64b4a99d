import { and, desc, eq, inArray, ne } from 'drizzle-orm';
import { z } from 'zod';
import { deviceId as deviceIdSchema, releaseSeq, type DeviceEvent } from '../../shared/protocol/index.js';
import type { RegistryDb } from '../registry/db.js';
import { devices, rolloutDevices, rollouts, type DeviceRow, type RolloutDeviceRow, type RolloutRow } from '../registry/schema.js';

/** The registry database or a transaction on it. */
export type Db = RegistryDb | Parameters<Parameters<RegistryDb['transaction']>[0]>[0];

/**
 * Rollout state as stored in `rollouts.state` / `rollout_devices.state`, and the DB reads and
 * transitions shared by ingest (device events) and the rollout engine. The DB is the only state:
 * a restarted cloud resumes from it.
 */

/**
 * pending → canary → fleet → completed; any active state → aborted (manual, superseded) or
 * rolling_back → rolled_back (failure threshold or manual rollback). `rolling_back` is persisted so a
 * restart in the middle of a re-issue finishes it.
 */
export const ROLLOUT_STATES = ['pending', 'canary', 'fleet', 'rolling_back', 'completed', 'aborted', 'rolled_back'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];
export const ACTIVE_ROLLOUT_STATES = ['pending', 'canary', 'fleet', 'rolling_back'] as const satisfies readonly RolloutState[];

/** waiting (not given the release) → desired (retained desired published) → installed | rejected | rolled_back. */
export const ROLLOUT_DEVICE_STATES = ['waiting', 'desired', 'installed', 'rejected', 'rolled_back'] as const;
export type RolloutDeviceState = (typeof ROLLOUT_DEVICE_STATES)[number];
export const FAILED_DEVICE_STATES: readonly RolloutDeviceState[] = ['rejected', 'rolled_back'];
export const SETTLED_DEVICE_STATES: readonly RolloutDeviceState[] = ['installed', 'rejected', 'rolled_back'];

export class RolloutError extends Error {
  override readonly name = 'RolloutError';
  constructor(
    message: string,
    /** not_found | invalid | conflict: lets the API map it to 404 / 400 / 409. */
    readonly code: 'not_found' | 'invalid' | 'conflict',
  ) {
    super(message);
  }
}

export const rolloutTargetSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('all') }),
  z.strictObject({ kind: z.literal('group'), group: z.string().min(1).max(128) }),
  z.strictObject({ kind: z.literal('devices'), ids: z.array(deviceIdSchema).min(1).max(100_000) }),
]);
export type RolloutTarget = z.infer<typeof rolloutTargetSchema>;

/** Body of a rollout request (the API validates with it too). */
export const rolloutRequestSchema = z.strictObject({
  model: z.string().min(1).max(128),
  releaseSeq,
  target: rolloutTargetSchema.default({ kind: 'all' }),
  /** Share of targeted devices that get the release first; at least one device. */
  canaryShare: z.number().min(0).max(1).default(0.1),
  /** How long every canary must stay healthy after the last one installed. */
  soakSeconds: z.number().int().min(0).max(30 * 24 * 3600).default(300),
  /** Abort (and roll back) when the share of failed devices (canaries, then all targeted) exceeds this. */
  failureThreshold: z.number().min(0).max(1).default(0),
});
export type RolloutRequest = z.input<typeof rolloutRequestSchema>;
export type RolloutRequestParsed = z.output<typeof rolloutRequestSchema>;

export function inTarget(target: RolloutTarget, device: { id: string; groups: unknown }): boolean {
  switch (target.kind) {
    case 'all':
      return true;
    case 'group':
      return Array.isArray(device.groups) && device.groups.includes(target.group);
    case 'devices':
      return target.ids.includes(device.id);
  }
}

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
