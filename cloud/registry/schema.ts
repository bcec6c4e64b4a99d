import { sql } from 'drizzle-orm';
import { blob, index, integer, real, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

/**
 * The whole cloud registry schema. camelCase keys map to snake_case columns. Kept to types that
 * have direct PostgreSQL equivalents (text, integer, real, blob→bytea, JSON stored as text) so the
 * pg dialect port is a mechanical change of imports. Times are ISO-8601 text in UTC.
 */

const now = sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;

export const models = sqliteTable('models', {
  name: text('name').primaryKey(),
  /** JSON InputSpec (shared/protocol inputSpecSchema). */
  inputSpec: text('input_spec', { mode: 'json' }).notNull(),
  /** JSON string[]. */
  labels: text('labels', { mode: 'json' }).notNull(),
  /** JSON: { files: string[], outputKind: 'logits' | 'probs' }. */
  teacher: text('teacher', { mode: 'json' }).notNull(),
  studentSpec: text('student_spec').notNull(),
  /** JSON: temperature, alpha, epochs, batchSize, lr, baseData, holdout, tolerance, ... */
  distillSettings: text('distill_settings', { mode: 'json' }).notNull(),
  /** JSON: { intervalSeconds, minNewExamples, autoRollout, rollout: {...} } or null for manual only. */
  schedule: text('schedule', { mode: 'json' }),
  createdAt: text('created_at').notNull().default(now),
  updatedAt: text('updated_at').notNull().default(now),
});

export const releases = sqliteTable(
  'releases',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    model: text('model').notNull().references(() => models.name),
    /** Monotonic release sequence; unique across the registry so devices can compare any two. */
    seq: integer('seq').notNull(),
    sha256: text('sha256').notNull(),
    bytes: integer('bytes').notNull(),
    quantization: text('quantization').notNull(),
    metrics: text('metrics', { mode: 'json' }).notNull(),
    /** The manifest as signed (JSON). */
    manifest: text('manifest', { mode: 'json' }).notNull(),
    /** Detached signature object {alg, keyId, sig}. */
    signature: text('signature', { mode: 'json' }).notNull(),
    parentSeq: integer('parent_seq'),
    /** The release line (issue 13): the cohort this student is for, or null for the model's base line. */
    cohort: text('cohort'),
    roundId: text('round_id'),
    /** Path of the content-addressed artifact under the data dir. */
    artifactPath: text('artifact_path').notNull(),
    /** Whether the retained chunks are currently published on the broker. */
    chunksPublished: integer('chunks_published', { mode: 'boolean' }).notNull().default(false),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [uniqueIndex('releases_seq_unique').on(t.seq), index('releases_model_idx').on(t.model), index('releases_sha_idx').on(t.sha256)],
);

export const devices = sqliteTable(
  'devices',
  {
    id: text('id').primaryKey(),
    /** JSON string[]. */
    groups: text('groups', { mode: 'json' }).notNull(),
    /** scrypt hash of the MQTT password (for broker-auth); never the password itself. */
    credentialHash: text('credential_hash').notNull(),
    lastSeen: text('last_seen'),
    online: integer('online', { mode: 'boolean' }).notNull().default(false),
    runningSeq: integer('running_seq'),
    runningSha256: text('running_sha256'),
    desiredSeq: integer('desired_seq'),
    lastTelemetry: text('last_telemetry', { mode: 'json' }),
    revoked: integer('revoked', { mode: 'boolean' }).notNull().default(false),
    /** From the device's status (shared/protocol/compat.ts); null = a protocol-1 daemon that never said. */
    protocolVersion: integer('protocol_version'),
    /** JSON string[]: what the device understands from the cloud (status.capabilities). */
    capabilities: text('capabilities', { mode: 'json' }).$type<string[]>(),
    /** JSON { keysetVersion, state } (status.trust). */
    trust: text('trust', { mode: 'json' }).$type<{ keysetVersion: number | null; state: string }>(),
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
    desiredAgentSeq: integer('desired_agent_seq'),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [index('devices_online_idx').on(t.online), index('devices_running_idx').on(t.runningSeq), index('devices_last_seen_idx').on(t.lastSeen)],
);

export const rollouts = sqliteTable(
  'rollouts',
  {
    id: text('id').primaryKey(),
    /**
     * The model (a models row) for `kind: 'model'`; `agent:<platform>` for an agent rollout (issue 14),
     * so supersede and "latest rollout of" work per platform. Hence no foreign key: the engine checks it.
     */
    model: text('model').notNull(),
    /** `model` (releases.seq) or `agent` (agent_releases.agent_seq in release_seq / rollback_seq). */
    kind: text('kind', { enum: ['model', 'agent'] }).notNull().default('model'),
    releaseSeq: integer('release_seq').notNull(),
    /** JSON: { kind: 'all' } | { kind: 'group', group } | { kind: 'devices', ids }. */
    target: text('target', { mode: 'json' }).notNull(),
    canaryShare: real('canary_share').notNull(),
    soakSeconds: integer('soak_seconds').notNull(),
    failureThreshold: real('failure_threshold').notNull(),
    /** pending → canary (wave 0) → fleet (later waves) → completed | aborted | superseded; rolling_back → rolled_back. */
    state: text('state').notNull(),
    reason: text('reason'),
    /** Release re-issued when this rollout was rolled back. */
    rollbackSeq: integer('rollback_seq'),
    canaryStartedAt: text('canary_started_at'),
    /** Since when every installed device of the current wave has been healthy (the soak clock). */
    canaryHealthySince: text('canary_healthy_since'),
    /** JSON number[]: cumulative shares of the target per wave; the first wave is the canaries. */
    waves: text('waves', { mode: 'json' }).$type<number[]>(),
    /** Index of the wave in progress. */
    wave: integer('wave').notNull().default(0),
    waveStartedAt: text('wave_started_at'),
    deviceTimeoutSeconds: integer('device_timeout_seconds').notNull().default(3600),
    minFailures: integer('min_failures').notNull().default(2),
    canaryGraceSeconds: integer('canary_grace_seconds').notNull().default(300),
    /** Offline canaries replaced in the current wave. */
    replacements: integer('replacements').notNull().default(0),
    /** Set while paused (operator, security alert, too many replacements); device timeouts stop meanwhile. */
    pausedAt: text('paused_at'),
    pauseReason: text('pause_reason'),
    /** The last security alert (a device refused the release for a trust reason). */
    securityAlert: text('security_alert'),
    /** JSON { [runningSeq]: reissuedSeq }: re-issues made to put quarantined devices back on their release. */
    quarantineSeqs: text('quarantine_seqs', { mode: 'json' }).$type<Record<string, number>>(),
    /**
     * Agreement gate (issue 13): a device is `held_back` when the paired 95% upper bound of (candidate −
     * running) accuracy on its audit traffic is below −agreementMargin (cloud/shadow/gate.ts).
     */
    agreementMargin: real('agreement_margin').notNull().default(0.01),
    createdAt: text('created_at').notNull().default(now),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [index('rollouts_state_idx').on(t.state)],
);

export const rolloutDevices = sqliteTable(
  'rollout_devices',
  {
    rolloutId: text('rollout_id').notNull().references(() => rollouts.id),
    deviceId: text('device_id').notNull(),
    canary: integer('canary', { mode: 'boolean' }).notNull(),
    /** waiting → desired → installed | failed | quarantined | timed_out | superseded | held_back | incompatible (cloud/rollouts/policy). */
    state: text('state').notNull(),
    reason: text('reason'),
    /** The wave the device belongs to (0: canary). */
    wave: integer('wave').notNull().default(0),
    desiredAt: text('desired_at'),
    /** When a device still `desired` becomes `timed_out` (moved forward by the time the rollout was paused). */
    deadlineAt: text('deadline_at'),
    /** When the device reported the release running: also after a terminal state (a late install). */
    installedAt: text('installed_at'),
    /** The newer rollout that took this device over. */
    supersededBy: text('superseded_by'),
    /**
     * Given the release (`desired`, with its deadline) but nothing sent: the release needs a capability
     * and the device has never reported a status, so its capabilities are unknown. Its first status
     * decides: sent, or `incompatible` (cloud/rollouts/steps.ts `converge`).
     */
    awaitingCapabilities: integer('awaiting_capabilities', { mode: 'boolean' }).notNull().default(false),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [
    uniqueIndex('rollout_devices_pk').on(t.rolloutId, t.deviceId),
    index('rollout_devices_device_idx').on(t.deviceId),
    index('rollout_devices_state_idx').on(t.rolloutId, t.state),
  ],
);

/**
 * On-device shadow runs (issue 13 item 4): a candidate sent as a `manifest.shadow` release to a rollout's
 * targets for a window, with the policy of the rollout its switch starts. Shown under /v1/rollouts.
 */
export const shadowRuns = sqliteTable(
  'shadow_runs',
  {
    id: text('id').primaryKey(),
    model: text('model').notNull().references(() => models.name),
    /** The candidate release; the switch re-issues its bytes at a new sequence. */
    releaseSeq: integer('release_seq').notNull(),
    /** The sequence of the signed shadow manifest (allocated from the one global sequence, no releases row). */
    shadowSeq: integer('shadow_seq').notNull(),
    /** JSON: the signed shadow manifest `{ manifest, signature }`, re-sent as is. */
    signed: text('signed', { mode: 'json' }).notNull(),
    /** JSON RolloutTarget. */
    target: text('target', { mode: 'json' }).notNull(),
    /** JSON: the rollout policy (waves, soak, thresholds) the switch starts its rollout with. */
    policy: text('policy', { mode: 'json' }).notNull(),
    until: text('until').notNull(),
    /** Switch automatically at the window's end when the gate passes (agreement ≥ minAgreement on devices with ≥ minRequests). */
    autoSwitch: integer('auto_switch', { mode: 'boolean' }).notNull(),
    minAgreement: real('min_agreement').notNull(),
    minRequests: integer('min_requests').notNull(),
    /** shadowing → switched | expired (window ended, gate not passed) | aborted. */
    state: text('state').notNull(),
    reason: text('reason'),
    /** The re-issued release and the rollout the switch started. */
    switchedSeq: integer('switched_seq'),
    rolloutId: text('rollout_id'),
    createdAt: text('created_at').notNull().default(now),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [index('shadow_runs_state_idx').on(t.state), index('shadow_runs_rollout_idx').on(t.rolloutId)],
);

/** A shadow run's devices with their last reported figures (telemetry `shadow`, cumulative on the device). */
export const shadowDevices = sqliteTable(
  'shadow_devices',
  {
    runId: text('run_id').notNull().references(() => shadowRuns.id),
    deviceId: text('device_id').notNull(),
    /** pending (not sent yet) → sent → running → dropped; incompatible (no `manifest.shadow`). */
    state: text('state').notNull(),
    reason: text('reason'),
    requests: integer('requests').notNull().default(0),
    agreements: integer('agreements').notNull().default(0),
    skipped: integer('skipped').notNull().default(0),
    latencyP50Ms: real('latency_p50_ms'),
    latencyP95Ms: real('latency_p95_ms'),
    reportedAt: text('reported_at'),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [uniqueIndex('shadow_devices_pk').on(t.runId, t.deviceId), index('shadow_devices_device_idx').on(t.deviceId)],
);

/** Every rollout and rollout-device state change (device_id null for the rollout's own). */
export const rolloutTransitions = sqliteTable(
  'rollout_transitions',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    rolloutId: text('rollout_id').notNull(),
    deviceId: text('device_id'),
    at: text('at').notNull(),
    fromState: text('from_state'),
    toState: text('to_state').notNull(),
    reason: text('reason'),
  },
  (t) => [index('rollout_transitions_rollout_idx').on(t.rolloutId, t.id)],
);

export const examples = sqliteTable(
  'examples',
  {
    /** The device-generated UUID: the idempotency key of ingest. */
    id: text('id').primaryKey(),
    deviceId: text('device_id').notNull(),
    model: text('model'),
    releaseSeq: integer('release_seq'),
    /** float32 little-endian, as the model saw it. */
    input: blob('input', { mode: 'buffer' }).notNull(),
    /** JSON number[]: student probabilities. */
    studentOutput: text('student_output', { mode: 'json' }).notNull(),
    reason: text('reason').notNull(),
    label: integer('label'),
    /** float32 teacher logits, filled once per example and reused by every later round. */
    teacherLogits: blob('teacher_logits', { mode: 'buffer' }),
    teacherId: text('teacher_id'),
    /**
     * A device label's review (issue 10): null = not checked yet, `ok` = the teacher agrees enough,
     * `quarantined` = the teacher contradicts it with high confidence (not trained on), `accepted` = the
     * operator accepted a quarantined label.
     */
    labelState: text('label_state', { enum: ['ok', 'quarantined', 'accepted'] }),
    /** The re-encoded PNG/JPEG an image model's example came from (issue 11), for the teacher's own preprocessing. */
    sourceImage: blob('source_image', { mode: 'buffer' }),
    sourceFormat: text('source_format', { enum: ['png', 'jpeg'] }),
    capturedAt: text('captured_at').notNull(),
    ingestedAt: text('ingested_at').notNull().default(now),
  },
  (t) => [index('examples_device_idx').on(t.deviceId), index('examples_model_idx').on(t.model, t.ingestedAt), index('examples_release_idx').on(t.releaseSeq)],
);

export const rounds = sqliteTable(
  'rounds',
  {
    id: text('id').primaryKey(),
    model: text('model').notNull().references(() => models.name),
    /** queued → running → released | rejected | failed. */
    state: text('state').notNull(),
    trigger: text('trigger').notNull(),
    /** JSON: { phase, epoch, epochs, loss, samplesPerSec }. */
    progress: text('progress', { mode: 'json' }),
    metrics: text('metrics', { mode: 'json' }),
    error: text('error'),
    releaseSeq: integer('release_seq'),
    exampleCount: integer('example_count'),
    attempts: integer('attempts').notNull().default(0),
    startedAt: text('started_at'),
    finishedAt: text('finished_at'),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [index('rounds_model_idx').on(t.model, t.state)],
);

/**
 * Shadow evaluation of a round's candidate (issue 13, cloud/shadow): per device (scope `device`) and per
 * cohort (scope `cohort`, device_id null), on the most recent `audit` examples against the teacher's
 * labels, paired with the release each device was running. cohort null = the model's base line.
 */
export const shadowEvals = sqliteTable(
  'shadow_evals',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    /** The round that evaluated (or `shadow:<run id>` for the evidence of an on-device shadow run's switch). */
    roundId: text('round_id').notNull(),
    model: text('model').notNull(),
    /** The release line evaluated (issue 13): null for the base line's candidate, else the cohort's. */
    line: text('line'),
    /** Rows that belong to one release directly: the shadow switch's re-issued release (teacher-gate.ts); null for a round's. */
    releaseSeq: integer('release_seq'),
    scope: text('scope', { enum: ['device', 'cohort'] }).notNull(),
    deviceId: text('device_id'),
    cohort: text('cohort'),
    /** Audit samples evaluated (paired ones when a running release was evaluated). */
    samples: integer('samples').notNull(),
    /** device rows: `device` (≥ min samples), `cohort` (fewer: its cohort's figures decide) or `none`. */
    judgedBy: text('judged_by', { enum: ['device', 'cohort', 'none'] }),
    /** The release the device ran when the round evaluated it (device rows). */
    runningSeq: integer('running_seq'),
    candidateAccuracy: real('candidate_accuracy'),
    runningAccuracy: real('running_accuracy'),
    /** Top-1 agreement of the candidate with the running release. */
    agreement: real('agreement'),
    /** candidate − running accuracy, and its paired 95% interval. */
    delta: real('delta'),
    deltaLow: real('delta_low'),
    deltaHigh: real('delta_high'),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [index('shadow_evals_round_idx').on(t.roundId, t.scope), index('shadow_evals_release_idx').on(t.releaseSeq)],
);

/** What example retention deleted per model (issue 9, item 9): lifetime counts, shown by `/v1/examples/stats`. */
export const exampleRetention = sqliteTable('example_retention', {
  model: text('model').primaryKey(),
  deletedByAge: integer('deleted_by_age').notNull().default(0),
  deletedByRows: integer('deleted_by_rows').notNull().default(0),
  /** Runs that left the model alone because one of its rounds was queued or running. */
  skippedForRound: integer('skipped_for_round').notNull().default(0),
  lastRunAt: text('last_run_at'),
});
/**
 * What ingest did not store, per device, across restarts (issue 10): examples deferred by the rate cap,
 * refused for good, and labels ignored on non-feedback rows. Shown in /v1/examples/stats.
 */
export const deviceIngestCounts = sqliteTable('device_ingest_counts', {
  deviceId: text('device_id').primaryKey(),
  deferred: integer('deferred').notNull().default(0),
  refused: integer('refused').notNull().default(0),
  labelsIgnored: integer('labels_ignored').notNull().default(0),
  updatedAt: text('updated_at').notNull(),
});

/**
 * The one store of device events (issue 12): every event ingest accepts, and the cloud's own notes about a
 * device (source `cloud`: the rollout engine, scale-out). Kept for `fleet.eventRetentionDays`.
 */
export const deviceEvents = sqliteTable(
  'device_events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    deviceId: text('device_id').notNull(),
    /** The time the device (or cloud component) gave the event. */
    at: text('at').notNull(),
    receivedAt: text('received_at').notNull(),
    /** `device` (devices/{id}/events) or the cloud component that wrote it. */
    source: text('source').notNull().default('device'),
    /** installed | rejected | rolled_back | committed, or a cloud component's own type. */
    type: text('type').notNull(),
    model: text('model'),
    release: integer('release'),
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
export const telemetryHistory = sqliteTable(
  'telemetry_history',
  {
    deviceId: text('device_id').notNull(),
    resolution: text('resolution').notNull(),
    /** Bucket start, Unix seconds (an integer keeps the ~2,200 rows per device small). */
    bucket: integer('bucket').notNull(),
    samples: integer('samples').notNull(),
    latencyP50: real('latency_p50'),
    /** Telemetries that carried a p50 (the mean's weight). */
    latencySamples: integer('latency_samples').notNull().default(0),
    latencyP95: real('latency_p95'),
    requests: integer('requests').notNull().default(0),
    errors: integer('errors').notNull().default(0),
    rssBytes: integer('rss_bytes'),
    outboxDepth: integer('outbox_depth'),
    outboxDropped: integer('outbox_dropped').notNull().default(0),
  },
  (t) => [uniqueIndex('telemetry_history_pk').on(t.deviceId, t.resolution, t.bucket), index('telemetry_history_bucket_idx').on(t.resolution, t.bucket)],
);

/** Every operator action (issue 12): who, when, what. Kept in the registry, shown in the console. */
export const auditLog = sqliteTable(
  'audit_log',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: text('at').notNull(),
    /** Who: `admin-token` for the bearer API, `session:<id>` for a console session, `cli` ... */
    actor: text('actor').notNull(),
    /** e.g. rollout.create, rollout.pause, device.revoke, keys.rotate. */
    action: text('action').notNull(),
    /** What it acted on: a rollout id, device id, key id. */
    target: text('target'),
    /** JSON: the request's parameters that matter. */
    detail: text('detail', { mode: 'json' }).$type<Record<string, unknown>>(),
  },
  (t) => [index('audit_log_at_idx').on(t.at)],
);

/**
 * Signed agent releases (issue 14): the daemon's own code as a tar.gz, one row per (version, platform)
 * and per re-issue (a rollback re-signs an earlier version at a higher agentSeq; `reissueOf` set).
 */
export const agentReleases = sqliteTable(
  'agent_releases',
  {
    /** The release's own sequence (shared/protocol/agent.ts), unique across platforms. */
    agentSeq: integer('agent_seq').primaryKey(),
    version: text('version').notNull(),
    platform: text('platform').notNull(),
    sha256: text('sha256').notNull(),
    bytes: integer('bytes').notNull(),
    /** The agent manifest as signed (JSON). */
    manifest: text('manifest', { mode: 'json' }).notNull(),
    /** Detached signature object {alg, keyId, sig}. */
    signature: text('signature', { mode: 'json' }).notNull(),
    /** The agentSeq this row re-issues (a rollback), or null for an upload. */
    reissueOf: integer('reissue_of'),
    /** Path of the content-addressed tarball under the data dir. */
    artifactPath: text('artifact_path').notNull(),
    /** Whether the retained chunks are currently published on the broker. */
    chunksPublished: integer('chunks_published', { mode: 'boolean' }).notNull().default(false),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [index('agent_releases_version_idx').on(t.version, t.platform), index('agent_releases_sha_idx').on(t.sha256)],
);

/** Key-value settings that must survive restarts (e.g. the highest release sequence ever issued). */
export const meta = sqliteTable('meta', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
});

export type ModelRow = typeof models.$inferSelect;
export type ReleaseRow = typeof releases.$inferSelect;
export type DeviceRow = typeof devices.$inferSelect;
export type RolloutRow = typeof rollouts.$inferSelect;
export type RolloutDeviceRow = typeof rolloutDevices.$inferSelect;
export type RolloutTransitionRow = typeof rolloutTransitions.$inferSelect;
export type ShadowRunRow = typeof shadowRuns.$inferSelect;
export type ShadowDeviceRow = typeof shadowDevices.$inferSelect;
export type ExampleRow = typeof examples.$inferSelect;
export type RoundRow = typeof rounds.$inferSelect;
export type DeviceEventRow = typeof deviceEvents.$inferSelect;
export type TelemetryHistoryRow = typeof telemetryHistory.$inferSelect;
export type AuditRow = typeof auditLog.$inferSelect;
export type ShadowEvalRow = typeof shadowEvals.$inferSelect;
export type AgentReleaseRow = typeof agentReleases.$inferSelect;
