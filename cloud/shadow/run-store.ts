import { and, desc, eq, inArray } from 'drizzle-orm';
import type { ShadowTelemetry, SignedManifest } from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ShadowDeviceRow, ShadowRunRow } from '../registry/schema.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';

/**
 * The DB side of on-device shadow runs (issue 13 item 4): runs, their devices and the figures the
 * devices report. Every function takes the registry of either dialect and returns a Promise (issue 15).
 */

/**
 * `switching` / `aborting`: an operator's switch or abort recorded by a cluster replica's API (issue 15): the
 * leader's shadow tick acts on it (the publishes are the leader's), then moves it to `switched` / `aborted`.
 */
export const SHADOW_RUN_STATES = ['shadowing', 'switching', 'aborting', 'switched', 'expired', 'aborted'] as const;
export type ShadowRunState = (typeof SHADOW_RUN_STATES)[number];
/** `refused`: the device sent a `rejected` event for the shadow release (its reason in `reason`). */
export const SHADOW_DEVICE_STATES = ['pending', 'sent', 'running', 'dropped', 'incompatible', 'refused'] as const;
export type ShadowDeviceState = (typeof SHADOW_DEVICE_STATES)[number];

export type NewShadowRun = Omit<Tables['shadowRuns']['$inferInsert'], 'signed' | 'state' | 'createdAt' | 'updatedAt'> & { signed: SignedManifest };

export async function insertRun(reg: StoreRegistry, run: NewShadowRun, deviceIds: readonly string[], now: Date): Promise<ShadowRunRow> {
  const at = now.toISOString();
  return reg.tx(function* (tx, { shadowDevices, shadowRuns }) {
    const [row] = yield* q(
      tx
        .insert(shadowRuns)
        .values({ ...run, state: 'shadowing', createdAt: at, updatedAt: at })
        .returning(),
    );
    for (let i = 0; i < deviceIds.length; i += 500) {
      yield* q(tx.insert(shadowDevices).values(deviceIds.slice(i, i + 500).map((deviceId) => ({ runId: run.id, deviceId, state: 'pending' as const, updatedAt: at }))));
    }
    return row!;
  });
}

export async function getRun(reg: StoreRegistry, id: string): Promise<ShadowRunRow | undefined> {
  const { shadowRuns } = reg.t;
  const [row] = await reg.q.select().from(shadowRuns).where(eq(shadowRuns.id, id)).limit(1);
  return row;
}

/** The run whose switch started rollout `rolloutId`. */
export async function runOfRollout(reg: StoreRegistry, rolloutId: string): Promise<ShadowRunRow | undefined> {
  const { shadowRuns } = reg.t;
  const [row] = await reg.q.select().from(shadowRuns).where(eq(shadowRuns.rolloutId, rolloutId)).limit(1);
  return row;
}

export async function listRuns(reg: StoreRegistry, f: { state?: ShadowRunState | readonly ShadowRunState[]; limit?: number } = {}): Promise<ShadowRunRow[]> {
  const { shadowRuns } = reg.t;
  const states = f.state === undefined ? undefined : typeof f.state === 'string' ? [f.state] : [...f.state];
  return reg.q
    .select()
    .from(shadowRuns)
    .where(states ? inArray(shadowRuns.state, states) : undefined)
    .orderBy(desc(shadowRuns.createdAt), desc(shadowRuns.id))
    .limit(f.limit ?? 100);
}

type RunPatch = Partial<Pick<ShadowRunRow, 'state' | 'reason' | 'switchedSeq' | 'rolloutId'>>;

/** Compare-and-set on the run's state, in a transaction (a leader's fenced writer, cluster/fenced-tx.ts); returns whether it moved. */
export function* setRunIn(tx: TxDb, t: Tables, id: string, from: ShadowRunState, patch: RunPatch, now: Date): Generator<PromiseLike<unknown>, boolean, unknown> {
  const moved = yield* q(
    tx
      .update(t.shadowRuns)
      .set({ ...patch, updatedAt: now.toISOString() })
      .where(and(eq(t.shadowRuns.id, id), eq(t.shadowRuns.state, from)))
      .returning({ id: t.shadowRuns.id }),
  );
  return moved.length > 0;
}

/** Compare-and-set on the run's state; returns whether it moved. */
export async function setRun(reg: StoreRegistry, id: string, from: ShadowRunState, patch: RunPatch, now: Date): Promise<boolean> {
  return reg.tx((tx, t) => setRunIn(tx, t, id, from, patch, now));
}

export async function devicesOf(reg: StoreRegistry, runId: string, states?: readonly ShadowDeviceState[]): Promise<ShadowDeviceRow[]> {
  const { shadowDevices } = reg.t;
  return reg.q
    .select()
    .from(shadowDevices)
    .where(and(eq(shadowDevices.runId, runId), states ? inArray(shadowDevices.state, [...states]) : undefined))
    .orderBy(shadowDevices.deviceId);
}

export function* setDeviceIn(tx: TxDb, t: Tables, runId: string, deviceId: string, patch: { state: ShadowDeviceState; reason?: string | null }, now: Date): Generator<PromiseLike<unknown>, void, unknown> {
  yield* q(
    tx
      .update(t.shadowDevices)
      .set({ state: patch.state, reason: patch.reason ?? null, updatedAt: now.toISOString() })
      .where(and(eq(t.shadowDevices.runId, runId), eq(t.shadowDevices.deviceId, deviceId))),
  );
}

export async function setDevice(reg: StoreRegistry, runId: string, deviceId: string, patch: { state: ShadowDeviceState; reason?: string | null }, now: Date): Promise<void> {
  await reg.tx((tx, t) => setDeviceIn(tx, t, runId, deviceId, patch, now));
}

/** The shadowing run that sent release `shadowSeq` to `deviceId`, if any. */
export async function shadowingRunOf(reg: StoreRegistry, deviceId: string, shadowSeq: number): Promise<ShadowRunRow | undefined> {
  const { shadowDevices, shadowRuns } = reg.t;
  const [row] = await reg.q
    .select({ run: shadowRuns })
    .from(shadowRuns)
    .innerJoin(shadowDevices, and(eq(shadowDevices.runId, shadowRuns.id), eq(shadowDevices.deviceId, deviceId)))
    .where(and(eq(shadowRuns.shadowSeq, shadowSeq), eq(shadowRuns.state, 'shadowing')))
    .limit(1);
  return row?.run;
}

/**
 * A device's shadow figures from its telemetry: stored on its row of the run that sent that shadow
 * release (matched by sequence and sha256, so a stale report of another candidate changes nothing).
 * Figures are cumulative on the device: the last report replaces the previous one. Returns the run id, or
 * undefined when no run of this device matches.
 */
export async function recordShadowTelemetry(reg: StoreRegistry, deviceId: string, s: ShadowTelemetry, at: Date): Promise<string | undefined> {
  const { shadowDevices, shadowRuns } = reg.t;
  const [run] = await reg.q
    .select({ id: shadowRuns.id, signed: shadowRuns.signed })
    .from(shadowRuns)
    .innerJoin(shadowDevices, and(eq(shadowDevices.runId, shadowRuns.id), eq(shadowDevices.deviceId, deviceId)))
    .where(eq(shadowRuns.shadowSeq, s.release))
    .limit(1);
  if (!run || (run.signed as SignedManifest).manifest.artifact.sha256 !== s.sha256) return undefined;
  await reg.q
    .update(shadowDevices)
    .set({
      state: s.state,
      reason: s.reason ?? null,
      requests: s.requests,
      agreements: s.agreements,
      skipped: s.skipped,
      latencyP50Ms: s.latencyMs.p50,
      latencyP95Ms: s.latencyMs.p95,
      reportedAt: at.toISOString(),
      updatedAt: at.toISOString(),
    })
    .where(and(eq(shadowDevices.runId, run.id), eq(shadowDevices.deviceId, deviceId)));
  return run.id;
}
