import { bigint, boolean, doublePrecision, index, json, pgTable, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { now } from './now.js';

/** Devices and what they report: events, downsampled telemetry, per-device ingest counts. */

export const devices = pgTable(
  'devices',
  {
    id: text('id').primaryKey(),
    /** JSON string[]. */
    groups: json('groups').notNull(),
    /** scrypt hash of the MQTT password (for broker-auth); never the password itself. */
    credentialHash: text('credential_hash').notNull(),
    lastSeen: text('last_seen'),
    online: boolean('online').notNull().default(false),
    runningSeq: bigint('running_seq', { mode: 'number' }),
    runningSha256: text('running_sha256'),
    desiredSeq: bigint('desired_seq', { mode: 'number' }),
    lastTelemetry: json('last_telemetry'),
    revoked: boolean('revoked').notNull().default(false),
    /** From the device's status (shared/protocol/compat.ts); null = a protocol-1 daemon that never said. */
    protocolVersion: bigint('protocol_version', { mode: 'number' }),
    /** JSON string[]: what the device understands from the cloud (status.capabilities). */
    capabilities: json('capabilities').$type<string[]>(),
    /** JSON { keysetVersion, state } (status.trust). */
    trust: json('trust').$type<{ keysetVersion: number | null; state: string }>(),
    /** Reason the device reports serving degraded (status.degraded), or null. */
    degraded: text('degraded'),
    /** status.agent of the last online status, e.g. `apprentice-edge/0.1.0` (issue 14). */
    agent: text('agent'),
    /** status.platform of the last online status, e.g. `linux-x64`; null from a cloud-older daemon. */
    platform: text('platform'),
    /** The last telemetry's `health` (ok | degraded | no_model), kept as a column so the console filters on it. */
    health: text('health'),
    /** When the device's outbox drop count last grew (telemetry `outbox.dropped`), or null. */
    droppedAt: text('dropped_at'),
    /** When the device last reported `rolled_back`; cleared by its next `installed` / `committed` event. */
    rolledBackAt: text('rolled_back_at'),
    /** agentSeq of the agent release retained on its `agent` topic (issue 14), or null. */
    desiredAgentSeq: bigint('desired_agent_seq', { mode: 'number' }),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [index('devices_online_idx').on(t.online), index('devices_running_idx').on(t.runningSeq), index('devices_last_seen_idx').on(t.lastSeen)],
);

/**
 * What ingest did not store, per device, across restarts (issue 10): examples deferred by the rate cap,
 * refused for good, and labels ignored on non-feedback rows. Shown in /v1/examples/stats.
 */
export const deviceIngestCounts = pgTable('device_ingest_counts', {
  deviceId: text('device_id').primaryKey(),
  deferred: bigint('deferred', { mode: 'number' }).notNull().default(0),
  refused: bigint('refused', { mode: 'number' }).notNull().default(0),
  labelsIgnored: bigint('labels_ignored', { mode: 'number' }).notNull().default(0),
  updatedAt: text('updated_at').notNull(),
});

/**
 * The one store of device events (issue 12): every event ingest accepts, and the cloud's own notes about a
 * device (source `cloud`: the rollout engine, scale-out). Kept for `fleet.eventRetentionDays`.
 */
export const deviceEvents = pgTable(
  'device_events',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
    deviceId: text('device_id').notNull(),
    /** The time the device (or cloud component) gave the event. */
    at: text('at').notNull(),
    receivedAt: text('received_at').notNull(),
    /** `device` (devices/{id}/events) or the cloud component that wrote it. */
    source: text('source').notNull().default('device'),
    /** installed | rejected | rolled_back | committed, or a cloud component's own type. */
    type: text('type').notNull(),
    model: text('model'),
    release: bigint('release', { mode: 'number' }),
    sha256: text('sha256'),
    reason: text('reason'),
    detail: text('detail'),
  },
  (t) => [index('device_events_device_idx').on(t.deviceId, t.id), index('device_events_received_idx').on(t.receivedAt)],
);

/**
 * Downsampled telemetry (issue 12): one row per device, resolution (`1m` | `1h`) and bucket start.
 * Gauges keep the bucket's mean (latency p50) or maximum (latency p95, RSS, outbox depth); counters
 * (requests, errors, outbox drops) the increase within the bucket.
 */
export const telemetryHistory = pgTable(
  'telemetry_history',
  {
    deviceId: text('device_id').notNull(),
    resolution: text('resolution').notNull(),
    /** Bucket start, Unix seconds (an integer keeps the ~2,200 rows per device small). */
    bucket: bigint('bucket', { mode: 'number' }).notNull(),
    samples: bigint('samples', { mode: 'number' }).notNull(),
    latencyP50: doublePrecision('latency_p50'),
    /** Telemetries that carried a p50 (the mean's weight). */
    latencySamples: bigint('latency_samples', { mode: 'number' }).notNull().default(0),
    latencyP95: doublePrecision('latency_p95'),
    requests: bigint('requests', { mode: 'number' }).notNull().default(0),
    errors: bigint('errors', { mode: 'number' }).notNull().default(0),
    rssBytes: bigint('rss_bytes', { mode: 'number' }),
    outboxDepth: bigint('outbox_depth', { mode: 'number' }),
    outboxDropped: bigint('outbox_dropped', { mode: 'number' }).notNull().default(0),
  },
  (t) => [uniqueIndex('telemetry_history_pk').on(t.deviceId, t.resolution, t.bucket), index('telemetry_history_bucket_idx').on(t.resolution, t.bucket)],
);

export type DeviceRow = typeof devices.$inferSelect;
export type DeviceEventRow = typeof deviceEvents.$inferSelect;
export type TelemetryHistoryRow = typeof telemetryHistory.$inferSelect;
