import { and, asc, eq, inArray, isNull, or, sql } from 'drizzle-orm';
import type { Registry } from '../registry/db.js';
import { devices, releases, shadowEvals, type ReleaseRow, type ShadowEvalRow } from '../registry/schema.js';
import type { ShareRow } from '../rounds/device-share.js';
import { writeTransaction } from '../rounds/releases.js';

/** Registry access of shadow evaluation (issue 13): the audit samples it reads and the figures it records. */

export type NewShadowEval = Omit<typeof shadowEvals.$inferInsert, 'id' | 'roundId' | 'model' | 'createdAt'>;

/** The newest `perDevice` `audit` examples of `model` per device, newest first. */
export async function selectAuditRows(registry: Pick<Registry, 'db'>, model: string, perDevice: number): Promise<ShareRow[]> {
  return registry.db.all<ShareRow>(sql`
    SELECT id, deviceId, input, label, reason, labelState, sourceImage, teacherLogits, teacherId FROM (
      SELECT id, device_id AS deviceId, input, label, reason, label_state AS labelState, source_image AS sourceImage, teacher_logits AS teacherLogits, teacher_id AS teacherId,
             ingested_at AS at, row_number() OVER (PARTITION BY device_id ORDER BY ingested_at DESC, id DESC) AS rank
      FROM examples WHERE model = ${model} AND reason = 'audit'
    ) WHERE rank <= ${Math.max(0, Math.floor(perDevice))}
    ORDER BY deviceId, at DESC, id DESC`);
}

/** Non-revoked devices running a release of `model`, with that release. */
export async function devicesRunning(registry: Pick<Registry, 'db'>, model: string): Promise<{ deviceId: string; release: ReleaseRow }[]> {
  return registry.db
    .select({ deviceId: devices.id, release: releases })
    .from(devices)
    .innerJoin(releases, eq(releases.seq, devices.runningSeq))
    .where(and(eq(devices.revoked, false), eq(releases.model, model)))
    .all();
}

/** Replaces the round's figures (a retried round evaluates again). */
export async function recordShadowEval(registry: Registry, roundId: string, model: string, rows: readonly NewShadowEval[]): Promise<void> {
  writeTransaction(registry, () => {
    registry.db.delete(shadowEvals).where(eq(shadowEvals.roundId, roundId)).run();
    for (let i = 0; i < rows.length; i += 500) {
      const chunk = rows.slice(i, i + 500).map((r) => ({ ...r, roundId, model }));
      if (chunk.length) registry.db.insert(shadowEvals).values(chunk).run();
    }
  });
}

/** A round's figures: cohort rows first, then devices by id. */
export async function shadowEvalOfRound(registry: Pick<Registry, 'db'>, roundId: string): Promise<ShadowEvalRow[]> {
  return registry.db.select().from(shadowEvals).where(eq(shadowEvals.roundId, roundId)).orderBy(asc(shadowEvals.scope), asc(shadowEvals.deviceId), asc(shadowEvals.cohort)).all();
}

/**
 * The figures behind a release: those of the round that made it. None for an uploaded or re-issued
 * release (no round id), which the agreement gate reads as "no evidence". With `deviceIds`, only their
 * rows and the cohort rows (a page of the console, not every device of a large fleet).
 */
export async function shadowEvalOfRelease(registry: Pick<Registry, 'db'>, seq: number, deviceIds?: readonly string[]): Promise<ShadowEvalRow[]> {
  const rel = registry.db.select({ roundId: releases.roundId }).from(releases).where(eq(releases.seq, seq)).get();
  if (!rel?.roundId) return [];
  if (!deviceIds) return shadowEvalOfRound(registry, rel.roundId);
  const out: ShadowEvalRow[] = [];
  for (let i = 0; i === 0 || i < deviceIds.length; i += 500) {
    const ids = deviceIds.slice(i, i + 500);
    const who = i === 0 ? or(isNull(shadowEvals.deviceId), ids.length ? inArray(shadowEvals.deviceId, ids) : undefined) : inArray(shadowEvals.deviceId, ids);
    out.push(...registry.db.select().from(shadowEvals).where(and(eq(shadowEvals.roundId, rel.roundId), who)).all());
  }
  return out;
}
