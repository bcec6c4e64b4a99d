import { and, asc, eq, gte, inArray, lt, sql, type SQL } from 'drizzle-orm';
import type { Telemetry } from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { TelemetryHistoryRow } from '../registry/schema.js';
import { q, type Tables, type TxDb } from '../registry/tx.js';
import type { DeviceStateOp, DeviceStateSink } from './device-state-writer.js';

export const RESOLUTIONS = ['1m', '1h'] as const;
export type Resolution = (typeof RESOLUTIONS)[number];

/** Bucket width and how long buckets are kept: 1,440 one-minute + 720 one-hour rows = 2,160 per device at most. */
export const RESOLUTION_SPEC: Record<Resolution, { seconds: number; keepSeconds: number }> = {
  '1m': { seconds: 60, keepSeconds: 24 * 3600 },
  '1h': { seconds: 3600, keepSeconds: 30 * 24 * 3600 },
};

/** One bucket of a device's telemetry. */
export interface Point {
  /** Bucket start, ISO-8601 UTC. */
  at: string;
  /** Telemetry messages in the bucket. */
  samples: number;
  /** Mean of the reported p50s (ms), null when none carried one. */
  latencyP50: number | null;
  /** Largest reported p95 (ms). */
  latencyP95: number | null;
  /** Requests served within the bucket (increase of the device's counter). */
  requests: number;
  errors: number;
  /** Largest resident set size reported. */
  rssBytes: number | null;
  /** Largest outbox depth reported (rows). */
  outboxDepth: number | null;
  /** Examples the outbox dropped within the bucket. */
  outboxDropped: number;
}

export interface TelemetrySeriesOptions {
  resolution: Resolution;
  /** Only buckets starting at or after this time; default: the resolution's whole retention. */
  since?: Date;
  now?: Date;
}

/** Increase of a cumulative counter; a smaller value means the daemon restarted (its counters began at 0). */
function increase(now: number, before: number | undefined): number {
  if (before === undefined) return 0;
  return now >= before ? now - before : now;
}

/** The larger of two values, a null one ignored (SQLite's max() and PostgreSQL's greatest() differ on nulls; CASE does not). */
function largerOf(a: SQL, b: SQL): SQL {
  return sql`CASE WHEN ${a} IS NULL THEN ${b} WHEN ${b} IS NULL OR ${a} >= ${b} THEN ${a} ELSE ${b} END`;
}

/** The columns a new sample sets on a bucket that exists (the upsert's DO UPDATE), the same SQL on both dialects. */
function bucketUpdate(h: Tables['telemetryHistory']) {
  // `excluded.` names the row the INSERT proposed, on both dialects; unqualified columns are the stored row's.
  const ex = (c: string) => sql.raw(`excluded.${c}`);
  const col = (c: string) => sql.raw(`"telemetry_history"."${c}"`);
  return {
    samples: sql`${col('samples')} + 1`,
    latencyP50: sql`CASE WHEN ${ex('latency_p50')} IS NULL THEN ${col('latency_p50')}
      ELSE (coalesce(${col('latency_p50')}, 0) * ${col('latency_samples')} + ${ex('latency_p50')}) / (${col('latency_samples')} + 1) END`,
    latencySamples: sql`${col('latency_samples')} + ${ex('latency_samples')}`,
    latencyP95: largerOf(col('latency_p95'), ex('latency_p95')),
    requests: sql`${col('requests')} + ${ex('requests')}`,
    errors: sql`${col('errors')} + ${ex('errors')}`,
    rssBytes: largerOf(col('rss_bytes'), ex('rss_bytes')),
    outboxDepth: largerOf(col('outbox_depth'), ex('outbox_depth')),
    outboxDropped: sql`${col('outbox_dropped')} + ${ex('outbox_dropped')}`,
  } satisfies Partial<Record<keyof typeof h.$inferInsert, SQL>>;
}

/**
 * The console's telemetry history (issue 12), a sink of the batched DeviceStateWriter: each telemetry
 * op adds to its device's 1-minute and 1-hour bucket in the same transaction as the device row. Gauges
 * keep the bucket's mean p50 and maximum p95 / RSS / outbox depth; the device's cumulative counters
 * (requests, errors, outbox drops) become increases per bucket, from the device's previous telemetry as
 * stored in the registry (so replicas and restarts agree; a device's first telemetry counts 0). The device row gets `health` and, when drops grew,
 * `dropped_at` (the console's "needing attention").
 *
 * @example
 * const history = new TelemetryHistory(registry);
 * ingest.deviceState?.addSink(history.sink);
 */
export class TelemetryHistory {
  /** Bucket start (Unix seconds) of a time at a resolution. */
  static bucketOf(at: Date | string, resolution: Resolution): number {
    const s = Math.floor(new Date(at).getTime() / 1000);
    const w = RESOLUTION_SPEC[resolution].seconds;
    return s - (s % w);
  }

  /** Pass to `DeviceStateWriter.addSink`. */
  readonly sink: DeviceStateSink = (tx, t, ops, previous) => TelemetryHistory.steps(tx, t, ops, previous);

  /**
   * Applies telemetry ops as steps of the writer's transaction body (cloud/registry/tx.ts). `previous[i]`
   * is the device's telemetry before `ops[i]` (the writer reads it); without it, counters count 0.
   */
  static *steps(tx: TxDb, t: Tables, ops: readonly DeviceStateOp[], previous: readonly (Telemetry | null | undefined)[] = []) {
    for (const [i, op] of ops.entries()) {
      if (op.kind === 'telemetry') yield* TelemetryHistory.add(tx, t, op.deviceId, op.telemetry, op.lastSeen, previous[i] ?? undefined);
    }
  }

  private static *add(tx: TxDb, t: Tables, deviceId: string, tm: Telemetry, at: string, before: Telemetry | undefined) {
    const h = t.telemetryHistory;
    const p50 = tm.latencyMs.p50;
    const dropped = increase(tm.outbox.dropped, before?.outbox?.dropped);
    const row = {
      deviceId,
      samples: 1,
      latencyP50: p50,
      latencySamples: p50 === null ? 0 : 1,
      latencyP95: tm.latencyMs.p95,
      requests: increase(tm.requests, before?.requests),
      errors: increase(tm.errors, before?.errors),
      rssBytes: tm.rssBytes,
      outboxDepth: tm.outbox.depth,
      outboxDropped: dropped,
    };
    const values = RESOLUTIONS.map((resolution) => ({ ...row, resolution, bucket: TelemetryHistory.bucketOf(at, resolution) }));
    yield* q(tx.insert(h).values(values).onConflictDoUpdate({ target: [h.deviceId, h.resolution, h.bucket], set: bucketUpdate(h) }));
    const { devices } = t;
    yield* q(
      tx
        .update(devices)
        .set({ health: tm.health, ...(dropped > 0 ? { droppedAt: new Date(at).toISOString() } : {}) })
        .where(eq(devices.id, deviceId)),
    );
  }
}

function toPoint(r: TelemetryHistoryRow): Point {
  return {
    at: new Date(r.bucket * 1000).toISOString(),
    samples: r.samples,
    latencyP50: r.latencyP50 === null ? null : Math.round(r.latencyP50 * 1000) / 1000,
    latencyP95: r.latencyP95,
    requests: r.requests,
    errors: r.errors,
    rssBytes: r.rssBytes,
    outboxDepth: r.outboxDepth,
    outboxDropped: r.outboxDropped,
  };
}

/**
 * A device's history at one resolution, oldest first (at most 1,440 points at `1m`, 720 at `1h`).
 *
 * @example
 * const day = await telemetrySeries(registry, 'pi-1', { resolution: '1m' });
 */
export async function telemetrySeries(reg: StoreRegistry, deviceId: string, o: TelemetrySeriesOptions): Promise<Point[]> {
  const spec = RESOLUTION_SPEC[o.resolution];
  const floor = Math.floor((o.now ?? new Date()).getTime() / 1000) - spec.keepSeconds;
  const since = Math.max(floor, o.since ? Math.floor(o.since.getTime() / 1000) : floor);
  const { telemetryHistory } = reg.t;
  const rows = await reg.q
    .select()
    .from(telemetryHistory)
    .where(and(eq(telemetryHistory.deviceId, deviceId), eq(telemetryHistory.resolution, o.resolution), gte(telemetryHistory.bucket, since)))
    .orderBy(asc(telemetryHistory.bucket));
  return rows.map(toPoint);
}

/**
 * Deletes buckets past their resolution's retention, `batch` rows per statement, yielding to the event
 * loop between statements (console-data.json: 70,000 rows took 5.1 s in 20,000-row statements on the
 * loaded bench machine, so a statement of 2,000 holds the loop for a fraction of that). Returns how many.
 */
export async function pruneTelemetryHistory(reg: StoreRegistry, now: Date = new Date(), batch = 2_000): Promise<number> {
  const h = reg.t.telemetryHistory;
  let total = 0;
  for (const resolution of RESOLUTIONS) {
    const cutoff = Math.floor(now.getTime() / 1000) - RESOLUTION_SPEC[resolution].keepSeconds;
    const expired = and(eq(h.resolution, resolution), lt(h.bucket, cutoff));
    for (;;) {
      // The unique key (device, resolution, bucket) names a row on both dialects (no rowid on PostgreSQL).
      const keys = await reg.q.select({ deviceId: h.deviceId, bucket: h.bucket }).from(h).where(expired).limit(batch);
      if (keys.length === 0) break;
      // Devices share buckets, so a batch spans few of them: one DELETE per bucket.
      const byBucket = new Map<number, string[]>();
      for (const k of keys) byBucket.set(k.bucket, [...(byBucket.get(k.bucket) ?? []), k.deviceId]);
      await reg.tx(function* (tx) {
        for (const [bucket, ids] of byBucket) yield* q(tx.delete(h).where(and(eq(h.resolution, resolution), eq(h.bucket, bucket), inArray(h.deviceId, ids))));
      });
      total += keys.length;
      if (keys.length < batch) break;
      await new Promise((r) => setImmediate(r));
    }
  }
  return total;
}

/** Deletes a device's whole history (a device removed for good). */
export async function deleteTelemetryHistory(reg: StoreRegistry, deviceId: string): Promise<number> {
  const h = reg.t.telemetryHistory;
  return (await reg.q.delete(h).where(eq(h.deviceId, deviceId)).returning({ bucket: h.bucket })).length;
}
