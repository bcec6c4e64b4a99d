import { and, count, desc, eq, gte, inArray, lte } from 'drizzle-orm';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import type { RegistryDb } from '../registry/db.js';
import { devices, rolloutDevices, rolloutTransitions, rollouts, type DeviceRow, type RolloutDeviceRow, type RolloutRow, type RolloutTransitionRow } from '../registry/schema.js';
import { registryKeySet } from './keyset.js';
import { NOTED_DEVICE_STATES, noteDevices } from './notes.js';
import { ACTIVE_ROLLOUT_STATES, ROLLOUT_DEVICE_STATES, eventEffect, inTarget, type EventEffect, type RolloutDeviceState, type RolloutTarget } from './policy.js';

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

let rolloutsVersion = 0;

/**
 * Grows on every write to the `rollouts` table in this process (setRollout, a new rollout): the engine's
 * cache of active rollouts is valid while it stays the same (engine.ts `snapshot`).
 */
export function rolloutsChanged(): void {
  rolloutsVersion++;
}

export function rolloutsVersionNow(): number {
  return rolloutsVersion;
}

/** Rollouts a returning device may converge to (converge picks the latest whose target includes it). */
export function convergeCandidates(db: Db, limit = 500): RolloutRow[] {
  return db
    .select()
    .from(rollouts)
    // Model rollouts only: finished agent rollouts (issue 14) have their own (agent-converge.ts).
    .where(and(eq(rollouts.kind, 'model'), inArray(rollouts.state, ['fleet', 'completed', 'rolled_back'])))
    .orderBy(desc(rollouts.createdAt), desc(rollouts.id))
    .limit(limit) // history grows; the current release of a target is among the recent ones
    .all();
}

/** The device's rows still waiting for its first status (`awaitingCapabilities`) in active rollouts; by the device index. */
export function awaitingRows(db: Db, deviceId: string): { rolloutId: string; state: RolloutDeviceState }[] {
  return db
    .select({ rolloutId: rolloutDevices.rolloutId, state: rolloutDevices.state })
    .from(rolloutDevices)
    .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
    .where(and(eq(rolloutDevices.deviceId, deviceId), eq(rolloutDevices.awaitingCapabilities, true), inArray(rollouts.state, ['canary', 'fleet'])))
    .all()
    .map((r) => ({ rolloutId: r.rolloutId, state: r.state as RolloutDeviceState }));
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
  device: Pick<DeviceRow, 'online' | 'lastSeen' | 'runningSeq' | 'desiredSeq' | 'lastTelemetry' | 'revoked'>;
}

/** A rollout's device rows joined with the device state (revoked devices left out), optionally by wave and state. */
export function members(db: Db, rolloutId: string, f: { wave?: number; maxWave?: number; minWave?: number; states?: readonly RolloutDeviceState[] } = {}): RolloutMember[] {
  return db
    .select({ row: rolloutDevices, online: devices.online, lastSeen: devices.lastSeen, runningSeq: devices.runningSeq, desiredSeq: devices.desiredSeq, lastTelemetry: devices.lastTelemetry, revoked: devices.revoked })
    .from(rolloutDevices)
    .innerJoin(devices, eq(devices.id, rolloutDevices.deviceId))
    .where(
      and(
        eq(rolloutDevices.rolloutId, rolloutId),
        eq(devices.revoked, false),
        f.wave === undefined ? undefined : eq(rolloutDevices.wave, f.wave),
        f.maxWave === undefined ? undefined : lte(rolloutDevices.wave, f.maxWave),
        f.minWave === undefined ? undefined : gte(rolloutDevices.wave, f.minWave),
        f.states === undefined ? undefined : inArray(rolloutDevices.state, [...f.states]),
      ),
    )
    .all()
    .map((r) => ({ ...r.row, device: { online: r.online, lastSeen: r.lastSeen, runningSeq: r.runningSeq, desiredSeq: r.desiredSeq, lastTelemetry: r.lastTelemetry, revoked: r.revoked } }));
}

/** Appends to the transition log (every rollout and device state change, with why). */
export function logTransition(db: Db, t: { rolloutId: string; deviceId?: string | null; at: Date; from: string | null; to: string; reason?: string | null }): void {
  db.insert(rolloutTransitions)
    .values({ rolloutId: t.rolloutId, deviceId: t.deviceId ?? null, at: t.at.toISOString(), fromState: t.from, toState: t.to, reason: t.reason ?? null })
    .run();
  // Quarantined, timed out, superseded: also on the device's page (device_events).
  if (t.deviceId && t.from !== t.to && NOTED_DEVICE_STATES.includes(t.to)) noteDevices(db, { rolloutId: t.rolloutId, deviceIds: [t.deviceId], to: t.to, at: t.at, reason: t.reason ?? null });
}

/** Updates a rollout row; a change of `state` (or a pause/resume) is logged as a transition with `patch.reason`. */
export function setRollout(db: Db, id: string, now: Date, patch: Partial<Omit<RolloutRow, 'id' | 'createdAt' | 'updatedAt'>>, logAs?: { from: string; to: string; reason?: string | null }): void {
  const before = patch.state !== undefined && !logAs ? db.select({ state: rollouts.state }).from(rollouts).where(eq(rollouts.id, id)).get() : undefined;
  db.update(rollouts)
    .set({ ...patch, updatedAt: now.toISOString() })
    .where(eq(rollouts.id, id))
    .run();
  rolloutsChanged();
  if (logAs) logTransition(db, { rolloutId: id, at: now, ...logAs });
  else if (before && patch.state !== before.state) logTransition(db, { rolloutId: id, at: now, from: before.state, to: patch.state!, reason: patch.reason ?? null });
}

/**
 * Moves a device's row `from` → `to` (compare-and-set: nothing happens if the row moved meanwhile) and logs
 * it. Returns whether it moved.
 */
export function moveMember(
  db: Db,
  m: { rolloutId: string; deviceId: string; from: RolloutDeviceState; to: RolloutDeviceState; now: Date; reason?: string | null; patch?: Partial<Pick<RolloutDeviceRow, 'wave' | 'desiredAt' | 'deadlineAt' | 'installedAt' | 'supersededBy' | 'canary' | 'awaitingCapabilities'>> },
): boolean {
  const res = db
    .update(rolloutDevices)
    .set({ state: m.to, reason: m.reason ?? null, updatedAt: m.now.toISOString(), ...m.patch })
    .where(and(eq(rolloutDevices.rolloutId, m.rolloutId), eq(rolloutDevices.deviceId, m.deviceId), eq(rolloutDevices.state, m.from)))
    .run();
  if (res.changes === 0) return false;
  if (m.from !== m.to) logTransition(db, { rolloutId: m.rolloutId, deviceId: m.deviceId, at: m.now, from: m.from, to: m.to, reason: m.reason ?? null });
  return true;
}

/** Device rows per state, over waves ≤ `maxWave` when given. */
export function countsByState(db: Db, rolloutId: string, maxWave?: number): Record<RolloutDeviceState, number> {
  const counts = Object.fromEntries(ROLLOUT_DEVICE_STATES.map((s) => [s, 0])) as Record<RolloutDeviceState, number>;
  const rows = db
    .select({ state: rolloutDevices.state, n: count() })
    .from(rolloutDevices)
    .where(and(eq(rolloutDevices.rolloutId, rolloutId), maxWave === undefined ? undefined : lte(rolloutDevices.wave, maxWave)))
    .groupBy(rolloutDevices.state)
    .all();
  for (const r of rows) counts[r.state as RolloutDeviceState] = r.n;
  return counts;
}

export function transitionsOf(db: Db, rolloutId: string, limit = 200): RolloutTransitionRow[] {
  return db.select().from(rolloutTransitions).where(eq(rolloutTransitions.rolloutId, rolloutId)).orderBy(desc(rolloutTransitions.id)).limit(limit).all();
}

export interface AppliedEvent {
  rolloutId: string;
  from: RolloutDeviceState;
  to: RolloutDeviceState;
  effect: EventEffect;
}

/**
 * Resolves a device's trusted key-set version against the current one (the trust issue); undefined when
 * unknown. The default reads the device's reported `trust.keysetVersion` and the current version from
 * the registry (cloud/rollouts/keyset.ts).
 */
export type KeySetLookup = (deviceId: string) => { device: number | null; current: number } | undefined;

/**
 * Applies a device event to the device's row of the rollout about that release (a rejection of a
 * manifest that could not be trusted carries no release and counts against the release the device was
 * told to install), per `eventEffect`:
 * - installed: `desired`/`failed` → `installed`; after any other terminal state (and after
 *   the rollout ended) only `installed_at` is recorded and logged: a late install is still shown.
 * - failure: `desired`/`installed` → `failed`; the engine quarantines or rolls back.
 * - retry: stays `desired`, with the reason.
 * - security: the rollout is paused with a security alert.
 * Returns what changed, or null.
 */
export function applyDeviceEvent(db: Db, ev: DeviceEvent, now: Date, keySet: KeySetLookup = (id) => registryKeySet(db, id)): AppliedEvent | null {
  const effect = eventEffect(ev, ev.type === 'rejected' && ev.reason === 'unknown_key' ? keySet(ev.deviceId) : undefined);
  if (effect === 'ignored') return null;
  const rows = db
    .select({ rolloutId: rolloutDevices.rolloutId, state: rolloutDevices.state, installedAt: rolloutDevices.installedAt, releaseSeq: rollouts.releaseSeq, model: rollouts.model, kind: rollouts.kind, rolloutState: rollouts.state, pausedAt: rollouts.pausedAt })
    .from(rolloutDevices)
    .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
    .where(and(eq(rolloutDevices.deviceId, ev.deviceId), effect === 'installed' ? undefined : inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES])))
    .orderBy(desc(rollouts.createdAt))
    .limit(50)
    .all();
  // Agent events (issue 14) are about agent rollouts, by agentSeq; model events about model rollouts.
  const agentSeq = ev.agent ? ev.agent.agentSeq : undefined;
  const row =
    agentSeq !== undefined
      ? agentSeq !== null
        ? rows.find((r) => r.kind === 'agent' && r.releaseSeq === agentSeq)
        : ev.type === 'agent_rejected'
          ? rows.find((r) => r.kind === 'agent' && r.state === 'desired')
          : undefined
      : ev.release !== null
        ? rows.find((r) => r.kind === 'model' && r.releaseSeq === ev.release && (ev.model === null || ev.model === r.model))
        : ev.type === 'rejected'
          ? rows.find((r) => r.kind === 'model' && r.state === 'desired')
          : undefined;
  if (!row) return null;
  const from = row.state as RolloutDeviceState;
  const why = ev.agent?.reason ?? ev.reason ?? (ev.detail ? ev.detail.slice(0, 256) : null);
  const base = { rolloutId: row.rolloutId, deviceId: ev.deviceId, now };
  switch (effect) {
    case 'installed': {
      const installedAt = row.installedAt ?? now.toISOString();
      // A device never given the release (`waiting`) cannot report on it.
      if (from === 'waiting') return null;
      if (from === 'desired' || from === 'failed') {
        if (!moveMember(db, { ...base, from, to: 'installed', patch: { installedAt } })) return null;
        return { rolloutId: row.rolloutId, from, to: 'installed', effect };
      }
      if (row.installedAt !== null) return null;
      db.update(rolloutDevices).set({ installedAt }).where(and(eq(rolloutDevices.rolloutId, row.rolloutId), eq(rolloutDevices.deviceId, ev.deviceId))).run();
      logTransition(db, { rolloutId: row.rolloutId, deviceId: ev.deviceId, at: now, from, to: from, reason: `installed after ${from}` });
      return { rolloutId: row.rolloutId, from, to: from, effect };
    }
    case 'failure':
      if (from !== 'desired' && from !== 'installed') return null;
      if (!moveMember(db, { ...base, from, to: 'failed', reason: why })) return null;
      return { rolloutId: row.rolloutId, from, to: 'failed', effect };
    case 'retry':
      if (from !== 'desired') return null;
      moveMember(db, { ...base, from, to: from, reason: `retrying: ${why}` });
      return { rolloutId: row.rolloutId, from, to: from, effect };
    case 'security': {
      if (from !== 'desired') return null;
      const alert = `device ${ev.deviceId} refused release ${row.releaseSeq}: ${why}`;
      moveMember(db, { ...base, from, to: from, reason: why });
      const paused = row.pausedAt === null ? { pausedAt: now.toISOString(), pauseReason: `security alert: ${alert}` } : {};
      setRollout(db, row.rolloutId, now, { securityAlert: alert, ...paused }, { from: row.rolloutState, to: row.rolloutState, reason: `security alert, paused: ${alert}` });
      return { rolloutId: row.rolloutId, from, to: from, effect };
    }
  }
}
/** Active rollouts the device takes part in (to decide whether its signals matter). */
export function activeMemberships(db: Db, deviceId: string): { rolloutId: string; canary: boolean; rolloutState: string; inCurrentWave: boolean }[] {
  return db
    .select({ rolloutId: rolloutDevices.rolloutId, canary: rolloutDevices.canary, rolloutState: rollouts.state, wave: rolloutDevices.wave, currentWave: rollouts.wave })
    .from(rolloutDevices)
    .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
    .where(and(eq(rolloutDevices.deviceId, deviceId), inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES])))
    .all()
    .map((m) => ({ rolloutId: m.rolloutId, canary: m.canary, rolloutState: m.rolloutState, inCurrentWave: m.wave === m.currentWave }));
}
