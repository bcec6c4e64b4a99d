import { and, asc, eq, gte } from 'drizzle-orm';
import type { Statement } from 'better-sqlite3';
import type { Telemetry } from '../../shared/protocol/index.js';
import type { Registry } from '../registry/db.js';
import { telemetryHistory } from '../registry/schema.js';
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

const UPSERT = `INSERT INTO telemetry_history
  (device_id, resolution, bucket, samples, latency_p50, latency_samples, latency_p95, requests, errors, rss_bytes, outbox_depth, outbox_dropped)
  VALUES (@deviceId, @resolution, @bucket, 1, @p50, @p50n, @p95, @requests, @errors, @rss, @depth, @dropped)
  ON CONFLICT (device_id, resolution, bucket) DO UPDATE SET
    samples = samples + 1,
    latency_p50 = CASE WHEN excluded.latency_p50 IS NULL THEN latency_p50
      ELSE (coalesce(latency_p50, 0) * latency_samples + excluded.latency_p50) / (latency_samples + 1) END,
    latency_samples = latency_samples + excluded.latency_samples,
    latency_p95 = max(coalesce(latency_p95, excluded.latency_p95), coalesce(excluded.latency_p95, latency_p95)),
    requests = requests + excluded.requests,
    errors = errors + excluded.errors,
    rss_bytes = max(coalesce(rss_bytes, excluded.rss_bytes), excluded.rss_bytes),
    outbox_depth = max(coalesce(outbox_depth, excluded.outbox_depth), excluded.outbox_depth),
    outbox_dropped = outbox_dropped + excluded.outbox_dropped`;

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
  private upsert: Statement | undefined;
  private deviceUpdate: Statement | undefined;

  constructor(private readonly registry: Registry) {}

  /** Bucket start (Unix seconds) of a time at a resolution. */
  static bucketOf(at: Date | string, resolution: Resolution): number {
    const s = Math.floor(new Date(at).getTime() / 1000);
    const w = RESOLUTION_SPEC[resolution].seconds;
    return s - (s % w);
  }

  /** Pass to `DeviceStateWriter.addSink`. */
  readonly sink: DeviceStateSink = (_tx, ops, previous) => this.apply(ops, previous);

  /**
   * Applies telemetry ops (run inside the writer's transaction: the statements join it). `previous[i]` is
   * the device's telemetry before `ops[i]` (the writer reads it); without it, counters count 0.
   */
  apply(ops: readonly DeviceStateOp[], previous: readonly (Telemetry | null | undefined)[] = []): void {
    this.upsert ??= this.registry.sqlite.prepare(UPSERT);
    this.deviceUpdate ??= this.registry.sqlite.prepare('UPDATE devices SET health = @health, dropped_at = CASE WHEN @dropped > 0 THEN @at ELSE dropped_at END WHERE id = @deviceId');
    ops.forEach((op, i) => {
      if (op.kind === 'telemetry') this.add(op.deviceId, op.telemetry, op.lastSeen, previous[i] ?? undefined);
    });
  }

  private add(deviceId: string, t: Telemetry, at: string, before: Telemetry | undefined): void {
    const row = {
      deviceId,
      p50: t.latencyMs.p50,
      p50n: t.latencyMs.p50 === null ? 0 : 1,
      p95: t.latencyMs.p95,
      requests: increase(t.requests, before?.requests),
      errors: increase(t.errors, before?.errors),
      rss: t.rssBytes,
      depth: t.outbox.depth,
      dropped: increase(t.outbox.dropped, before?.outbox?.dropped),
    };
    for (const resolution of RESOLUTIONS) this.upsert!.run({ ...row, resolution, bucket: TelemetryHistory.bucketOf(at, resolution) });
    this.deviceUpdate!.run({ deviceId, health: t.health, dropped: row.dropped, at: new Date(at).toISOString() });
  }
}

function toPoint(r: typeof telemetryHistory.$inferSelect): Point {
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
export async function telemetrySeries(reg: Registry, deviceId: string, o: TelemetrySeriesOptions): Promise<Point[]> {
  const spec = RESOLUTION_SPEC[o.resolution];
  const floor = Math.floor((o.now ?? new Date()).getTime() / 1000) - spec.keepSeconds;
  const since = Math.max(floor, o.since ? Math.floor(o.since.getTime() / 1000) : floor);
  const rows = reg.db
    .select()
    .from(telemetryHistory)
    .where(and(eq(telemetryHistory.deviceId, deviceId), eq(telemetryHistory.resolution, o.resolution), gte(telemetryHistory.bucket, since)))
    .orderBy(asc(telemetryHistory.bucket))
    .all();
  return rows.map(toPoint);
}

/**
 * Deletes buckets past their resolution's retention, `batch` rows per statement, yielding to the event
 * loop between statements (console-data.json: 70,000 rows took 5.1 s in 20,000-row statements on the
 * loaded bench machine, so a statement of 2,000 holds the loop for a fraction of that). Returns how many.
 */
export async function pruneTelemetryHistory(reg: Registry, now: Date = new Date(), batch = 2_000): Promise<number> {
  let total = 0;
  const del = reg.sqlite.prepare('DELETE FROM telemetry_history WHERE rowid IN (SELECT rowid FROM telemetry_history WHERE resolution = ? AND bucket < ? LIMIT ?)');
  for (const resolution of RESOLUTIONS) {
    const cutoff = Math.floor(now.getTime() / 1000) - RESOLUTION_SPEC[resolution].keepSeconds;
    for (;;) {
      const n = del.run(resolution, cutoff, batch).changes;
      total += n;
      if (n < batch) break;
      await new Promise((r) => setImmediate(r));
    }
  }
  return total;
}

/** Deletes a device's whole history (a device removed for good). */
export async function deleteTelemetryHistory(reg: Registry, deviceId: string): Promise<number> {
  return reg.db.delete(telemetryHistory).where(eq(telemetryHistory.deviceId, deviceId)).run().changes;
}
