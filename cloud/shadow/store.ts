import { and, asc, eq, gte, inArray, isNull, lte, or, sql, type AnyColumn, type SQL } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import type { ReleaseRow, ShadowEvalRow } from '../registry/schema.js';
import { q, type Statement, type Tables, type TxDb } from '../registry/tx.js';
import { newestPerDevice, type ShareRow } from '../rounds/device-share.js';

/** Registry access of shadow evaluation (issue 13): the audit samples it reads and the figures it records. */

export type NewShadowEval = Omit<Tables['shadowEvals']['$inferInsert'], 'id' | 'roundId' | 'model' | 'line' | 'releaseSeq' | 'createdAt'>;

/** The newest `perDevice` `audit` examples of `model` per device (only `deviceIds`' when given), grouped by device, newest first. */
export async function selectAuditRows(reg: StoreRegistry, model: string, perDevice: number, deviceIds?: readonly string[]): Promise<ShareRow[]> {
  if (deviceIds?.length === 0) return [];
  const { examples: e } = reg.t;
  const where = and(eq(e.model, model), eq(e.reason, 'audit'), deviceIds ? inArray(e.deviceId, [...deviceIds]) : undefined);
  return (await newestPerDevice(reg, where, Math.max(0, Math.floor(perDevice)), { order: 'device' })).map(({ releaseSeq: _, ...r }) => r);
}

/** Non-revoked devices running a release of `model`, with that release. */
export async function devicesRunning(reg: StoreRegistry, model: string, deviceIds?: readonly string[]): Promise<{ deviceId: string; release: ReleaseRow }[]> {
  const { devices, releases } = reg.t;
  const out: { deviceId: string; release: ReleaseRow }[] = [];
  const chunks = deviceIds === undefined ? [undefined] : Array.from({ length: Math.ceil(deviceIds.length / 500) }, (_, i) => deviceIds.slice(i * 500, (i + 1) * 500));
  for (const ids of chunks) {
    out.push(
      ...(await reg.q
        .select({ deviceId: devices.id, release: releases })
        .from(devices)
        .innerJoin(releases, eq(releases.seq, devices.runningSeq))
        .where(and(eq(devices.revoked, false), eq(releases.model, model), ids ? inArray(devices.id, ids) : undefined))),
    );
  }
  return out;
}

/**
 * Ascending with NULL first on both dialects (SQLite sorts NULL first, PostgreSQL last): the base line
 * (line null) before the cohort lines, the cohort rows (device null) before the devices.
 */
const nullsFirst = (c: AnyColumn): SQL[] => [asc(sql`${c} is not null`), asc(c)];

const lineIs = (t: Tables, line: string | null) => (line === null ? isNull(t.shadowEvals.line) : eq(t.shadowEvals.line, line));

/**
 * Replaces the round's figures of one release line (a retried round evaluates again): `line` null for
 * the base line's candidate, the cohort's name for a cohort line's (issue 13: each line has its own set).
 */
export async function recordShadowEval(reg: StoreRegistry, roundId: string, model: string, rows: readonly NewShadowEval[], line: string | null = null): Promise<void> {
  await reg.tx(function* (tx, t) {
    yield* q(tx.delete(t.shadowEvals).where(and(eq(t.shadowEvals.roundId, roundId), lineIs(t, line))));
    yield* insertChunks(tx, t, rows.map((r) => ({ ...r, roundId, model, line })));
  });
}

/**
 * Figures that belong to release `seq` itself, not to a round: the evidence of an on-device shadow
 * run's switch for the release it re-issued (teacher-gate.ts), read by the rollout's agreement gate.
 */
export async function recordReleaseShadowEval(reg: StoreRegistry, seq: number, source: string, model: string, line: string | null, rows: readonly NewShadowEval[]): Promise<void> {
  await reg.tx(function* (tx, t) {
    yield* q(tx.delete(t.shadowEvals).where(eq(t.shadowEvals.releaseSeq, seq)));
    yield* insertChunks(tx, t, rows.map((r) => ({ ...r, roundId: source, model, line, releaseSeq: seq })));
  });
}

function* insertChunks(tx: TxDb, t: Tables, rows: Tables['shadowEvals']['$inferInsert'][]): Generator<Statement, void, unknown> {
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500);
    if (chunk.length) yield* q(tx.insert(t.shadowEvals).values(chunk));
  }
}

/** A round's figures (one line's with `line`, every line's without): cohort rows first, then devices by id. */
export async function shadowEvalOfRound(reg: StoreRegistry, roundId: string, line?: string | null): Promise<ShadowEvalRow[]> {
  const { shadowEvals } = reg.t;
  return reg.q
    .select()
    .from(shadowEvals)
    .where(and(eq(shadowEvals.roundId, roundId), line === undefined ? undefined : lineIs(reg.t, line)))
    .orderBy(...nullsFirst(shadowEvals.line), asc(shadowEvals.scope), ...nullsFirst(shadowEvals.deviceId), ...nullsFirst(shadowEvals.cohort));
}

/**
 * The figures behind a release: its own (a shadow switch's re-issue), else those its round recorded for
 * its line (a cohort release: its cohort line's). None for an uploaded or re-issued release otherwise
 * (no round id), which the agreement gate reads as "no evidence". With `deviceIds`, only their rows and
 * the cohort rows (a page of the console, not every device of a large fleet).
 */
export async function shadowEvalOfRelease(reg: StoreRegistry, seq: number, deviceIds?: readonly string[]): Promise<ShadowEvalRow[]> {
  const { releases, shadowEvals } = reg.t;
  const [own] = await reg.q.select({ id: shadowEvals.id }).from(shadowEvals).where(eq(shadowEvals.releaseSeq, seq)).limit(1);
  const [rel] = await reg.q.select({ roundId: releases.roundId, cohort: releases.cohort }).from(releases).where(eq(releases.seq, seq)).limit(1);
  if (!own && !rel?.roundId) return [];
  const whose = own ? eq(shadowEvals.releaseSeq, seq) : and(eq(shadowEvals.roundId, rel!.roundId!), lineIs(reg.t, rel!.cohort ?? null), isNull(shadowEvals.releaseSeq));
  if (!deviceIds) return reg.q.select().from(shadowEvals).where(whose).orderBy(asc(shadowEvals.scope), ...nullsFirst(shadowEvals.deviceId), ...nullsFirst(shadowEvals.cohort));
  const out: ShadowEvalRow[] = [];
  for (let i = 0; i === 0 || i < deviceIds.length; i += 500) {
    const ids = deviceIds.slice(i, i + 500);
    const who = i === 0 ? or(isNull(shadowEvals.deviceId), ids.length ? inArray(shadowEvals.deviceId, ids) : undefined) : inArray(shadowEvals.deviceId, ids);
    out.push(...(await reg.q.select().from(shadowEvals).where(and(whose, who))));
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
export async function selectDisagreementRows(reg: StoreRegistry, model: string, deviceIds: readonly string[], from: string, until: string, perDevice: number): Promise<DisagreementRow[]> {
  const { examples: e } = reg.t;
  const out: DisagreementRow[] = [];
  for (let i = 0; i < deviceIds.length; i += 500) {
    const where = and(eq(e.model, model), eq(e.reason, 'shadow_disagreement'), gte(e.ingestedAt, from), lte(e.capturedAt, until), inArray(e.deviceId, deviceIds.slice(i, i + 500)));
    out.push(...(await newestPerDevice(reg, where, Math.max(0, Math.floor(perDevice)), { order: 'device' })));
  }
  return out;
}
