import { and, asc, eq, inArray, isNull, or, sql } from 'drizzle-orm';
import type { Registry } from '../registry/db.js';
import { devices, releases, shadowEvals, type ReleaseRow, type ShadowEvalRow } from '../registry/schema.js';
import type { ShareRow } from '../rounds/device-share.js';
import { writeTransaction } from '../rounds/releases.js';

/** Registry access of shadow evaluation (issue 13): the audit samples it reads and the figures it records. */

export type NewShadowEval = Omit<typeof shadowEvals.$inferInsert, 'id' | 'roundId' | 'model' | 'line' | 'releaseSeq' | 'createdAt'>;

/** Only these devices (a cohort line's members), or every device when undefined. */
function onlyDevices(column: string, ids: readonly string[] | undefined) {
  if (ids === undefined) return sql``;
  if (!ids.length) return sql` AND 0`;
  return sql` AND ${sql.raw(column)} IN (${sql.join(ids.map((d) => sql`${d}`), sql`, `)})`;
}

/** The newest `perDevice` `audit` examples of `model` per device, newest first. */
export async function selectAuditRows(registry: Pick<Registry, 'db'>, model: string, perDevice: number, deviceIds?: readonly string[]): Promise<ShareRow[]> {
  return registry.db.all<ShareRow>(sql`
    SELECT id, deviceId, input, label, reason, labelState, sourceImage, teacherLogits, teacherId FROM (
      SELECT id, device_id AS deviceId, input, label, reason, label_state AS labelState, source_image AS sourceImage, teacher_logits AS teacherLogits, teacher_id AS teacherId,
             ingested_at AS at, row_number() OVER (PARTITION BY device_id ORDER BY ingested_at DESC, id DESC) AS rank
      FROM examples WHERE model = ${model} AND reason = 'audit'${onlyDevices('device_id', deviceIds)}
    ) WHERE rank <= ${Math.max(0, Math.floor(perDevice))}
    ORDER BY deviceId, at DESC, id DESC`);
}

/** Non-revoked devices running a release of `model`, with that release. */
export async function devicesRunning(registry: Pick<Registry, 'db'>, model: string, deviceIds?: readonly string[]): Promise<{ deviceId: string; release: ReleaseRow }[]> {
  const out: { deviceId: string; release: ReleaseRow }[] = [];
  const chunks = deviceIds === undefined ? [undefined] : Array.from({ length: Math.ceil(deviceIds.length / 500) }, (_, i) => deviceIds.slice(i * 500, (i + 1) * 500));
  for (const ids of chunks) {
    out.push(
      ...registry.db
        .select({ deviceId: devices.id, release: releases })
        .from(devices)
        .innerJoin(releases, eq(releases.seq, devices.runningSeq))
        .where(and(eq(devices.revoked, false), eq(releases.model, model), ids ? inArray(devices.id, ids) : undefined))
        .all(),
    );
  }
  return out;
}

const lineIs = (line: string | null) => (line === null ? isNull(shadowEvals.line) : eq(shadowEvals.line, line));

/**
 * Replaces the round's figures of one release line (a retried round evaluates again): `line` null for
 * the base line's candidate, the cohort's name for a cohort line's (issue 13: each line has its own set).
 */
export async function recordShadowEval(registry: Registry, roundId: string, model: string, rows: readonly NewShadowEval[], line: string | null = null): Promise<void> {
  writeTransaction(registry, () => {
    registry.db.delete(shadowEvals).where(and(eq(shadowEvals.roundId, roundId), lineIs(line))).run();
    insertChunks(registry, rows.map((r) => ({ ...r, roundId, model, line })));
  });
}

/**
 * Figures that belong to release `seq` itself, not to a round: the evidence of an on-device shadow
 * run's switch for the release it re-issued (teacher-gate.ts), read by the rollout's agreement gate.
 */
export async function recordReleaseShadowEval(registry: Registry, seq: number, source: string, model: string, line: string | null, rows: readonly NewShadowEval[]): Promise<void> {
  writeTransaction(registry, () => {
    registry.db.delete(shadowEvals).where(eq(shadowEvals.releaseSeq, seq)).run();
    insertChunks(registry, rows.map((r) => ({ ...r, roundId: source, model, line, releaseSeq: seq })));
  });
}

function insertChunks(registry: Registry, rows: (typeof shadowEvals.$inferInsert)[]): void {
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500);
    if (chunk.length) registry.db.insert(shadowEvals).values(chunk).run();
  }
}

/** A round's figures (one line's with `line`, every line's without): cohort rows first, then devices by id. */
export async function shadowEvalOfRound(registry: Pick<Registry, 'db'>, roundId: string, line?: string | null): Promise<ShadowEvalRow[]> {
  return registry.db
    .select()
    .from(shadowEvals)
    .where(and(eq(shadowEvals.roundId, roundId), line === undefined ? undefined : lineIs(line)))
    .orderBy(asc(shadowEvals.line), asc(shadowEvals.scope), asc(shadowEvals.deviceId), asc(shadowEvals.cohort))
    .all();
}

/**
 * The figures behind a release: its own (a shadow switch's re-issue), else those its round recorded for
 * its line (a cohort release: its cohort line's). None for an uploaded or re-issued release otherwise
 * (no round id), which the agreement gate reads as "no evidence". With `deviceIds`, only their rows and
 * the cohort rows (a page of the console, not every device of a large fleet).
 */
export async function shadowEvalOfRelease(registry: Pick<Registry, 'db'>, seq: number, deviceIds?: readonly string[]): Promise<ShadowEvalRow[]> {
  const own = registry.db.select({ id: shadowEvals.id }).from(shadowEvals).where(eq(shadowEvals.releaseSeq, seq)).limit(1).get();
  const rel = registry.db.select({ roundId: releases.roundId, cohort: releases.cohort }).from(releases).where(eq(releases.seq, seq)).get();
  if (!own && !rel?.roundId) return [];
  const whose = own ? eq(shadowEvals.releaseSeq, seq) : and(eq(shadowEvals.roundId, rel!.roundId!), lineIs(rel!.cohort ?? null), isNull(shadowEvals.releaseSeq));
  if (!deviceIds) return registry.db.select().from(shadowEvals).where(whose).orderBy(asc(shadowEvals.scope), asc(shadowEvals.deviceId), asc(shadowEvals.cohort)).all();
  const out: ShadowEvalRow[] = [];
  for (let i = 0; i === 0 || i < deviceIds.length; i += 500) {
    const ids = deviceIds.slice(i, i + 500);
    const who = i === 0 ? or(isNull(shadowEvals.deviceId), ids.length ? inArray(shadowEvals.deviceId, ids) : undefined) : inArray(shadowEvals.deviceId, ids);
    out.push(...registry.db.select().from(shadowEvals).where(and(whose, who)).all());
  }
  return out;
}

/** A `shadow_disagreement` example with the release the device was running (the one that answered). */
export type DisagreementRow = ShareRow & { releaseSeq: number | null };

/**
 * The newest `perDevice` `shadow_disagreement` examples of `model` per device of `deviceIds`, sent during
 * an on-device shadow run: ingested after it started (`from`) and captured before its window closed
 * (`until`). Grouped by device, newest first.
 */
export async function selectDisagreementRows(registry: Pick<Registry, 'db'>, model: string, deviceIds: readonly string[], from: string, until: string, perDevice: number): Promise<DisagreementRow[]> {
  const out: DisagreementRow[] = [];
  for (let i = 0; i < deviceIds.length; i += 500) out.push(...disagreementChunk(registry, model, deviceIds.slice(i, i + 500), from, until, perDevice));
  return out;
}

function disagreementChunk(registry: Pick<Registry, 'db'>, model: string, deviceIds: readonly string[], from: string, until: string, perDevice: number): DisagreementRow[] {
  return registry.db.all<DisagreementRow>(sql`
    SELECT id, deviceId, input, label, reason, labelState, sourceImage, teacherLogits, teacherId, releaseSeq FROM (
      SELECT id, device_id AS deviceId, input, label, reason, label_state AS labelState, source_image AS sourceImage, teacher_logits AS teacherLogits, teacher_id AS teacherId,
             release_seq AS releaseSeq, ingested_at AS at, row_number() OVER (PARTITION BY device_id ORDER BY ingested_at DESC, id DESC) AS rank
      FROM examples WHERE model = ${model} AND reason = 'shadow_disagreement' AND ingested_at >= ${from} AND captured_at <= ${until}${onlyDevices('device_id', deviceIds)}
    ) WHERE rank <= ${Math.max(0, Math.floor(perDevice))}
    ORDER BY deviceId, at DESC, id DESC`);
}
