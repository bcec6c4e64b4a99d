import { and, desc, eq, inArray } from 'drizzle-orm';
import type { ShadowTelemetry, SignedManifest } from '../../shared/protocol/index.js';
import type { RegistryDb } from '../registry/db.js';
import { shadowDevices, shadowRuns, type ShadowDeviceRow, type ShadowRunRow } from '../registry/schema.js';

/**
 * The DB side of on-device shadow runs (issue 13 item 4): runs, their devices and the figures the
 * devices report. Every function returns a Promise (the store contract of the project), though
 * better-sqlite3 answers synchronously.
 */

export const SHADOW_RUN_STATES = ['shadowing', 'switched', 'expired', 'aborted'] as const;
export type ShadowRunState = (typeof SHADOW_RUN_STATES)[number];
/** `refused`: the device sent a `rejected` event for the shadow release (its reason in `reason`). */
export const SHADOW_DEVICE_STATES = ['pending', 'sent', 'running', 'dropped', 'incompatible', 'refused'] as const;
export type ShadowDeviceState = (typeof SHADOW_DEVICE_STATES)[number];

export type NewShadowRun = Omit<typeof shadowRuns.$inferInsert, 'signed' | 'state' | 'createdAt' | 'updatedAt'> & { signed: SignedManifest };

export async function insertRun(db: RegistryDb, run: NewShadowRun, deviceIds: readonly string[], now: Date): Promise<ShadowRunRow> {
  const at = now.toISOString();
  return db.transaction((tx) => {
    const row = tx
      .insert(shadowRuns)
      .values({ ...run, state: 'shadowing', createdAt: at, updatedAt: at })
      .returning()
      .get();
    for (const deviceId of deviceIds) tx.insert(shadowDevices).values({ runId: run.id, deviceId, state: 'pending', updatedAt: at }).run();
    return row;
  });
}

export async function getRun(db: RegistryDb, id: string): Promise<ShadowRunRow | undefined> {
  return db.select().from(shadowRuns).where(eq(shadowRuns.id, id)).get();
}

/** The run whose switch started rollout `rolloutId`. */
export async function runOfRollout(db: RegistryDb, rolloutId: string): Promise<ShadowRunRow | undefined> {
  return db.select().from(shadowRuns).where(eq(shadowRuns.rolloutId, rolloutId)).get();
}

export async function listRuns(db: RegistryDb, f: { state?: ShadowRunState; limit?: number } = {}): Promise<ShadowRunRow[]> {
  return db
    .select()
    .from(shadowRuns)
    .where(f.state ? eq(shadowRuns.state, f.state) : undefined)
    .orderBy(desc(shadowRuns.createdAt), desc(shadowRuns.id))
    .limit(f.limit ?? 100)
    .all();
}

/** Compare-and-set on the run's state; returns whether it moved. */
export async function setRun(db: RegistryDb, id: string, from: ShadowRunState, patch: Partial<Pick<ShadowRunRow, 'state' | 'reason' | 'switchedSeq' | 'rolloutId'>>, now: Date): Promise<boolean> {
  const r = db
    .update(shadowRuns)
    .set({ ...patch, updatedAt: now.toISOString() })
    .where(and(eq(shadowRuns.id, id), eq(shadowRuns.state, from)))
    .run();
  return r.changes > 0;
}

export async function devicesOf(db: RegistryDb, runId: string, states?: readonly ShadowDeviceState[]): Promise<ShadowDeviceRow[]> {
  return db
    .select()
    .from(shadowDevices)
    .where(and(eq(shadowDevices.runId, runId), states ? inArray(shadowDevices.state, [...states]) : undefined))
    .orderBy(shadowDevices.deviceId)
    .all();
}

export async function setDevice(db: RegistryDb, runId: string, deviceId: string, patch: { state: ShadowDeviceState; reason?: string | null }, now: Date): Promise<void> {
  db.update(shadowDevices)
    .set({ state: patch.state, reason: patch.reason ?? null, updatedAt: now.toISOString() })
    .where(and(eq(shadowDevices.runId, runId), eq(shadowDevices.deviceId, deviceId)))
    .run();
}

/** The shadowing run that sent release `shadowSeq` to `deviceId`, if any. */
export async function shadowingRunOf(db: RegistryDb, deviceId: string, shadowSeq: number): Promise<ShadowRunRow | undefined> {
  return db
    .select({ run: shadowRuns })
    .from(shadowRuns)
    .innerJoin(shadowDevices, and(eq(shadowDevices.runId, shadowRuns.id), eq(shadowDevices.deviceId, deviceId)))
    .where(and(eq(shadowRuns.shadowSeq, shadowSeq), eq(shadowRuns.state, 'shadowing')))
    .get()?.run;
}

/**
 * A device's shadow figures from its telemetry: stored on its row of the run that sent that shadow
 * release (matched by sequence and sha256, so a stale report of another candidate changes nothing).
 * Figures are cumulative on the device: the last report replaces the previous one. Returns the run id, or
 * undefined when no run of this device matches.
 */
export async function recordShadowTelemetry(db: RegistryDb, deviceId: string, s: ShadowTelemetry, at: Date): Promise<string | undefined> {
  const run = db
    .select({ id: shadowRuns.id, signed: shadowRuns.signed })
    .from(shadowRuns)
    .innerJoin(shadowDevices, and(eq(shadowDevices.runId, shadowRuns.id), eq(shadowDevices.deviceId, deviceId)))
    .where(eq(shadowRuns.shadowSeq, s.release))
    .get();
  if (!run || (run.signed as SignedManifest).manifest.artifact.sha256 !== s.sha256) return undefined;
  db.update(shadowDevices)
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
    .where(and(eq(shadowDevices.runId, run.id), eq(shadowDevices.deviceId, deviceId)))
    .run();
  return run.id;
}
