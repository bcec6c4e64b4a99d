import { and, count, desc, eq, gte, inArray, lte } from 'drizzle-orm';
import type { DeviceEvent } from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { DeviceRow, RolloutDeviceRow, RolloutRow, RolloutTransitionRow } from '../registry/schema.js';
import { q, runAsync, type Tables, type TxBody, type TxDb } from '../registry/tx.js';
import { registryKeySetSteps } from './keyset.js';
import { NOTED_DEVICE_STATES, noteDeviceSteps } from './notes.js';
import { ACTIVE_ROLLOUT_STATES, ROLLOUT_DEVICE_STATES, eventEffect, inTarget, type EventEffect, type RolloutDeviceState, type RolloutTarget } from './policy.js';

/**
 * The DB reads and transitions of rollouts, shared by ingest (device events) and the rollout engine.
 * The DB is the only state: a restarted cloud resumes from it.
 *
 * Every function here is a transaction body step (cloud/registry/tx.ts): `(tx, t, ...)`, yielding its
 * statements. A write of several statements runs in `reg.tx((tx, t) => setRollout(tx, t, ...))`; reads
 * (and writes that are one statement) may run outside a transaction with `run(reg, ...)`.
 */

/**
 * Runs store steps statement by statement outside a transaction (each awaited, on either dialect): for reads,
 * and for writes of one statement. Anything that must be atomic goes through `reg.tx` instead.
 *
 * @example
 * const r = await run(reg, (tx, t) => getRollout(tx, t, id));
 */
export function run<R>(reg: StoreRegistry, body: TxBody<R>): Promise<R> {
  return runAsync(reg.q as unknown as TxDb, reg.t, body);
}

/** Non-revoked devices the target names. */
export function* targetedDevices(tx: TxDb, t: Tables, target: RolloutTarget) {
  const where = target.kind === 'devices' ? and(eq(t.devices.revoked, false), inArray(t.devices.id, target.ids)) : eq(t.devices.revoked, false);
  const rows: DeviceRow[] = yield* q(tx.select().from(t.devices).where(where));
  return rows.filter((d) => inTarget(target, d));
}

let rolloutsVersion = 0;

/**
 * Grows on every write to the `rollouts` table in this process (setRollout, a new rollout): the engine's
 * cache of active rollouts is valid while it stays the same (engine.ts `snapshot`). Bumped inside a body
 * (a retried body bumps twice: harmless) and again after the engine's transactions commit, so a cache
 * filled meanwhile from the not yet committed state is dropped too.
 */
export function rolloutsChanged(): void {
  rolloutsVersion++;
}

export function rolloutsVersionNow(): number {
  return rolloutsVersion;
}

/** Rollouts a returning device may converge to (converge picks the latest whose target includes it). */
export function* convergeCandidates(tx: TxDb, t: Tables, limit = 500) {
  const rows: RolloutRow[] = yield* q(
    tx
      .select()
      .from(t.rollouts)
      // Model rollouts only: finished agent rollouts (issue 14) have their own (agent-converge.ts).
      .where(and(eq(t.rollouts.kind, 'model'), inArray(t.rollouts.state, ['fleet', 'completed', 'rolled_back'])))
      .orderBy(desc(t.rollouts.createdAt), desc(t.rollouts.id))
      .limit(limit), // history grows; the current release of a target is among the recent ones
  );
  return rows;
}

/** The device's rows still waiting for its first status (`awaitingCapabilities`) in active rollouts; by the device index. */
export function* awaitingRows(tx: TxDb, t: Tables, deviceId: string) {
  const rows = yield* q(
    tx
      .select({ rolloutId: t.rolloutDevices.rolloutId, state: t.rolloutDevices.state })
      .from(t.rolloutDevices)
      .innerJoin(t.rollouts, eq(t.rollouts.id, t.rolloutDevices.rolloutId))
      .where(and(eq(t.rolloutDevices.deviceId, deviceId), eq(t.rolloutDevices.awaitingCapabilities, true), inArray(t.rollouts.state, ['canary', 'fleet']))),
  );
  return rows.map((r) => ({ rolloutId: r.rolloutId, state: r.state as RolloutDeviceState }));
}

export function* getRollout(tx: TxDb, t: Tables, id: string) {
  const [r]: RolloutRow[] = yield* q(tx.select().from(t.rollouts).where(eq(t.rollouts.id, id)).limit(1));
  return r;
}

export function* activeRollouts(tx: TxDb, t: Tables) {
  const rows: RolloutRow[] = yield* q(
    tx
      .select()
      .from(t.rollouts)
      .where(inArray(t.rollouts.state, [...ACTIVE_ROLLOUT_STATES]))
      .orderBy(t.rollouts.createdAt, t.rollouts.id),
  );
  return rows;
}

export function* latestRolloutOfModel(tx: TxDb, t: Tables, model: string) {
  const [r]: RolloutRow[] = yield* q(tx.select().from(t.rollouts).where(eq(t.rollouts.model, model)).orderBy(desc(t.rollouts.createdAt), desc(t.rollouts.id)).limit(1));
  return r;
}

export interface RolloutMember extends RolloutDeviceRow {
  device: Pick<DeviceRow, 'online' | 'lastSeen' | 'runningSeq' | 'desiredSeq' | 'lastTelemetry' | 'revoked'>;
}

/** A rollout's device rows joined with the device state (revoked devices left out), optionally by wave and state. */
export function* members(tx: TxDb, t: Tables, rolloutId: string, f: { wave?: number; maxWave?: number; minWave?: number; states?: readonly RolloutDeviceState[] } = {}) {
  const { rolloutDevices, devices } = t;
  const rows = yield* q(
    tx
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
      ),
  );
  return rows.map((r): RolloutMember => ({ ...r.row, device: { online: r.online, lastSeen: r.lastSeen, runningSeq: r.runningSeq, desiredSeq: r.desiredSeq, lastTelemetry: r.lastTelemetry, revoked: r.revoked } }));
}

/** Appends to the transition log (every rollout and device state change, with why). */
export function* logTransition(tx: TxDb, t: Tables, x: { rolloutId: string; deviceId?: string | null; at: Date; from: string | null; to: string; reason?: string | null }) {
  yield* q(tx.insert(t.rolloutTransitions).values({ rolloutId: x.rolloutId, deviceId: x.deviceId ?? null, at: x.at.toISOString(), fromState: x.from, toState: x.to, reason: x.reason ?? null }));
  // Quarantined, timed out, superseded: also on the device's page (device_events).
  if (x.deviceId && x.from !== x.to && NOTED_DEVICE_STATES.includes(x.to)) yield* noteDeviceSteps(tx, t, { rolloutId: x.rolloutId, deviceIds: [x.deviceId], to: x.to, at: x.at, reason: x.reason ?? null });
}

/** Updates a rollout row; a change of `state` (or a pause/resume) is logged as a transition with `patch.reason`. */
export function* setRollout(tx: TxDb, t: Tables, id: string, now: Date, patch: Partial<Omit<RolloutRow, 'id' | 'createdAt' | 'updatedAt'>>, logAs?: { from: string; to: string; reason?: string | null }) {
  const [before] = patch.state !== undefined && !logAs ? yield* q(tx.select({ state: t.rollouts.state }).from(t.rollouts).where(eq(t.rollouts.id, id)).limit(1)) : [];
  yield* q(
    tx
      .update(t.rollouts)
      .set({ ...patch, updatedAt: now.toISOString() })
      .where(eq(t.rollouts.id, id)),
  );
  rolloutsChanged();
  if (logAs) yield* logTransition(tx, t, { rolloutId: id, at: now, ...logAs });
  else if (before && patch.state !== before.state) yield* logTransition(tx, t, { rolloutId: id, at: now, from: before.state, to: patch.state!, reason: patch.reason ?? null });
}

export type MemberPatch = Partial<Pick<RolloutDeviceRow, 'wave' | 'desiredAt' | 'deadlineAt' | 'installedAt' | 'supersededBy' | 'canary' | 'awaitingCapabilities' | 'reason' | 'updatedAt'>>;

/** Updates one device row of a rollout (no transition logged: the caller logs what it means). */
export function* patchMember(tx: TxDb, t: Tables, rolloutId: string, deviceId: string, patch: MemberPatch) {
  yield* q(tx.update(t.rolloutDevices).set(patch).where(and(eq(t.rolloutDevices.rolloutId, rolloutId), eq(t.rolloutDevices.deviceId, deviceId))));
}

/**
 * Moves a device's row `from` → `to` (compare-and-set: nothing happens if the row moved meanwhile) and logs
 * it. Returns whether it moved.
 */
export function* moveMember(
  tx: TxDb,
  t: Tables,
  m: { rolloutId: string; deviceId: string; from: RolloutDeviceState; to: RolloutDeviceState; now: Date; reason?: string | null; patch?: Partial<Pick<RolloutDeviceRow, 'wave' | 'desiredAt' | 'deadlineAt' | 'installedAt' | 'supersededBy' | 'canary' | 'awaitingCapabilities'>> },
) {
  const moved = yield* q(
    tx
      .update(t.rolloutDevices)
      .set({ state: m.to, reason: m.reason ?? null, updatedAt: m.now.toISOString(), ...m.patch })
      .where(and(eq(t.rolloutDevices.rolloutId, m.rolloutId), eq(t.rolloutDevices.deviceId, m.deviceId), eq(t.rolloutDevices.state, m.from)))
      .returning({ deviceId: t.rolloutDevices.deviceId }),
  );
  if (moved.length === 0) return false;
  if (m.from !== m.to) yield* logTransition(tx, t, { rolloutId: m.rolloutId, deviceId: m.deviceId, at: m.now, from: m.from, to: m.to, reason: m.reason ?? null });
  return true;
}

/** Device rows per state, over waves ≤ `maxWave` when given. */
export function* countsByState(tx: TxDb, t: Tables, rolloutId: string, maxWave?: number) {
  const counts = Object.fromEntries(ROLLOUT_DEVICE_STATES.map((s) => [s, 0])) as Record<RolloutDeviceState, number>;
  const rows = yield* q(
    tx
      .select({ state: t.rolloutDevices.state, n: count() })
      .from(t.rolloutDevices)
      .where(and(eq(t.rolloutDevices.rolloutId, rolloutId), maxWave === undefined ? undefined : lte(t.rolloutDevices.wave, maxWave)))
      .groupBy(t.rolloutDevices.state),
  );
  // PostgreSQL's count() is a bigint, handed over as a string.
  for (const r of rows) counts[r.state as RolloutDeviceState] = Number(r.n);
  return counts;
}

export function* transitionsOf(tx: TxDb, t: Tables, rolloutId: string, limit = 200) {
  const rows: RolloutTransitionRow[] = yield* q(tx.select().from(t.rolloutTransitions).where(eq(t.rolloutTransitions.rolloutId, rolloutId)).orderBy(desc(t.rolloutTransitions.id)).limit(limit));
  return rows;
}

export interface AppliedEvent {
  rolloutId: string;
  from: RolloutDeviceState;
  to: RolloutDeviceState;
  effect: EventEffect;
}

/** A device's trusted key-set version against the current one (the trust issue); undefined when unknown. */
export type KeySet = { device: number | null; current: number } | undefined;

/**
 * Applies a device event to the device's row of the rollout about that release (a rejection of a
 * manifest that could not be trusted carries no release and counts against the release the device was
 * told to install), per `eventEffect`:
 * - installed: `desired`/`failed` → `installed`; after any other terminal state (and after
 *   the rollout ended) only `installed_at` is recorded and logged: a late install is still shown.
 * - failure: `desired`/`installed` → `failed`; the engine quarantines or rolls back.
 * - retry: stays `desired`, with the reason.
 * - security: the rollout is paused with a security alert.
 * An `unknown_key` rejection is judged on the device's reported key-set version against the current one,
 * read in the same transaction (cloud/rollouts/keyset.ts). Returns what changed, or null.
 */
export function* applyDeviceEventSteps(tx: TxDb, t: Tables, ev: DeviceEvent, now: Date) {
  const keySet: KeySet = ev.type === 'rejected' && ev.reason === 'unknown_key' ? yield* registryKeySetSteps(tx, t, ev.deviceId) : undefined;
  const effect = eventEffect(ev, keySet);
  if (effect === 'ignored') return null;
  const { rolloutDevices, rollouts } = t;
  const rows = yield* q(
    tx
      .select({ rolloutId: rolloutDevices.rolloutId, state: rolloutDevices.state, installedAt: rolloutDevices.installedAt, releaseSeq: rollouts.releaseSeq, model: rollouts.model, kind: rollouts.kind, rolloutState: rollouts.state, pausedAt: rollouts.pausedAt })
      .from(rolloutDevices)
      .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
      .where(and(eq(rolloutDevices.deviceId, ev.deviceId), effect === 'installed' ? undefined : inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES])))
      .orderBy(desc(rollouts.createdAt))
      .limit(50),
  );
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
  const applied = (to: RolloutDeviceState): AppliedEvent => ({ rolloutId: row.rolloutId, from, to, effect });
  switch (effect) {
    case 'installed': {
      const installedAt = row.installedAt ?? now.toISOString();
      // A device never given the release (`waiting`) cannot report on it.
      if (from === 'waiting') return null;
      if (from === 'desired' || from === 'failed') {
        if (!(yield* moveMember(tx, t, { ...base, from, to: 'installed', patch: { installedAt } }))) return null;
        return applied('installed');
      }
      if (row.installedAt !== null) return null;
      yield* patchMember(tx, t, row.rolloutId, ev.deviceId, { installedAt });
      yield* logTransition(tx, t, { rolloutId: row.rolloutId, deviceId: ev.deviceId, at: now, from, to: from, reason: `installed after ${from}` });
      return applied(from);
    }
    case 'failure':
      if (from !== 'desired' && from !== 'installed') return null;
      if (!(yield* moveMember(tx, t, { ...base, from, to: 'failed', reason: why }))) return null;
      return applied('failed');
    case 'retry':
      if (from !== 'desired') return null;
      yield* moveMember(tx, t, { ...base, from, to: from, reason: `retrying: ${why}` });
      return applied(from);
    case 'security': {
      if (from !== 'desired') return null;
      const alert = `device ${ev.deviceId} refused release ${row.releaseSeq}: ${why}`;
      yield* moveMember(tx, t, { ...base, from, to: from, reason: why });
      const paused = row.pausedAt === null ? { pausedAt: now.toISOString(), pauseReason: `security alert: ${alert}` } : {};
      yield* setRollout(tx, t, row.rolloutId, now, { securityAlert: alert, ...paused }, { from: row.rolloutState, to: row.rolloutState, reason: `security alert, paused: ${alert}` });
      return applied(from);
    }
  }
}

/** Active rollouts the device takes part in (to decide whether its signals matter). */
export function* activeMemberships(tx: TxDb, t: Tables, deviceId: string) {
  const { rolloutDevices, rollouts } = t;
  const rows = yield* q(
    tx
      .select({ rolloutId: rolloutDevices.rolloutId, canary: rolloutDevices.canary, rolloutState: rollouts.state, wave: rolloutDevices.wave, currentWave: rollouts.wave })
      .from(rolloutDevices)
      .innerJoin(rollouts, eq(rollouts.id, rolloutDevices.rolloutId))
      .where(and(eq(rolloutDevices.deviceId, deviceId), inArray(rollouts.state, [...ACTIVE_ROLLOUT_STATES]))),
  );
  return rows.map((m) => ({ rolloutId: m.rolloutId, canary: m.canary, rolloutState: m.rolloutState, inCurrentWave: m.wave === m.currentWave }));
}
