import { bigint, boolean, doublePrecision, index, json, pgTable, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { now } from './now.js';
import { models } from './catalog.js';

/** Rollouts, their devices and transitions, and on-device shadow runs (issue 13). */

export const rollouts = pgTable(
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
    releaseSeq: bigint('release_seq', { mode: 'number' }).notNull(),
    /** JSON: { kind: 'all' } | { kind: 'group', group } | { kind: 'devices', ids }. */
    target: json('target').notNull(),
    canaryShare: doublePrecision('canary_share').notNull(),
    soakSeconds: bigint('soak_seconds', { mode: 'number' }).notNull(),
    failureThreshold: doublePrecision('failure_threshold').notNull(),
    /** pending → canary (wave 0) → fleet (later waves) → completed | aborted | superseded; rolling_back → rolled_back. */
    state: text('state').notNull(),
    reason: text('reason'),
    /** Release re-issued when this rollout was rolled back. */
    rollbackSeq: bigint('rollback_seq', { mode: 'number' }),
    canaryStartedAt: text('canary_started_at'),
    /** Since when every installed device of the current wave has been healthy (the soak clock). */
    canaryHealthySince: text('canary_healthy_since'),
    /** JSON number[]: cumulative shares of the target per wave; the first wave is the canaries. */
    waves: json('waves').$type<number[]>(),
    /** Index of the wave in progress. */
    wave: bigint('wave', { mode: 'number' }).notNull().default(0),
    waveStartedAt: text('wave_started_at'),
    deviceTimeoutSeconds: bigint('device_timeout_seconds', { mode: 'number' }).notNull().default(3600),
    minFailures: bigint('min_failures', { mode: 'number' }).notNull().default(2),
    canaryGraceSeconds: bigint('canary_grace_seconds', { mode: 'number' }).notNull().default(300),
    /** Offline canaries replaced in the current wave. */
    replacements: bigint('replacements', { mode: 'number' }).notNull().default(0),
    /** Set while paused (operator, security alert, too many replacements); device timeouts stop meanwhile. */
    pausedAt: text('paused_at'),
    pauseReason: text('pause_reason'),
    /** The last security alert (a device refused the release for a trust reason). */
    securityAlert: text('security_alert'),
    /** JSON { [runningSeq]: reissuedSeq }: re-issues made to put quarantined devices back on their release. */
    quarantineSeqs: json('quarantine_seqs').$type<Record<string, number>>(),
    /**
     * Agreement gate (issue 13): a device is `held_back` when the paired 95% upper bound of (candidate −
     * running) accuracy on its audit traffic is below −agreementMargin (cloud/shadow/gate.ts).
     */
    agreementMargin: doublePrecision('agreement_margin').notNull().default(0.01),
    createdAt: text('created_at').notNull().default(now),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [index('rollouts_state_idx').on(t.state)],
);

export const rolloutDevices = pgTable(
  'rollout_devices',
  {
    rolloutId: text('rollout_id').notNull().references(() => rollouts.id),
    deviceId: text('device_id').notNull(),
    canary: boolean('canary').notNull(),
    /** waiting → desired → installed | failed | quarantined | timed_out | superseded | held_back | incompatible (cloud/rollouts/policy). */
    state: text('state').notNull(),
    reason: text('reason'),
    /** The wave the device belongs to (0: canary). */
    wave: bigint('wave', { mode: 'number' }).notNull().default(0),
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
    awaitingCapabilities: boolean('awaiting_capabilities').notNull().default(false),
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
export const shadowRuns = pgTable(
  'shadow_runs',
  {
    id: text('id').primaryKey(),
    model: text('model').notNull().references(() => models.name),
    /** The candidate release; the switch re-issues its bytes at a new sequence. */
    releaseSeq: bigint('release_seq', { mode: 'number' }).notNull(),
    /** The sequence of the signed shadow manifest (allocated from the one global sequence, no releases row). */
    shadowSeq: bigint('shadow_seq', { mode: 'number' }).notNull(),
    /** JSON: the signed shadow manifest `{ manifest, signature }`, re-sent as is. */
    signed: json('signed').notNull(),
    /** JSON RolloutTarget. */
    target: json('target').notNull(),
    /** JSON: the rollout policy (waves, soak, thresholds) the switch starts its rollout with. */
    policy: json('policy').notNull(),
    until: text('until').notNull(),
    /** Switch automatically at the window's end when the gate passes (agreement ≥ minAgreement on devices with ≥ minRequests). */
    autoSwitch: boolean('auto_switch').notNull(),
    minAgreement: doublePrecision('min_agreement').notNull(),
    minRequests: bigint('min_requests', { mode: 'number' }).notNull(),
    /** shadowing → switched | expired (window ended, gate not passed) | aborted. */
    state: text('state').notNull(),
    reason: text('reason'),
    /** The re-issued release and the rollout the switch started. */
    switchedSeq: bigint('switched_seq', { mode: 'number' }),
    rolloutId: text('rollout_id'),
    createdAt: text('created_at').notNull().default(now),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [index('shadow_runs_state_idx').on(t.state), index('shadow_runs_rollout_idx').on(t.rolloutId)],
);

/** A shadow run's devices with their last reported figures (telemetry `shadow`, cumulative on the device). */
export const shadowDevices = pgTable(
  'shadow_devices',
  {
    runId: text('run_id').notNull().references(() => shadowRuns.id),
    deviceId: text('device_id').notNull(),
    /** pending (not sent yet) → sent → running → dropped; incompatible (no `manifest.shadow`). */
    state: text('state').notNull(),
    reason: text('reason'),
    requests: bigint('requests', { mode: 'number' }).notNull().default(0),
    agreements: bigint('agreements', { mode: 'number' }).notNull().default(0),
    skipped: bigint('skipped', { mode: 'number' }).notNull().default(0),
    latencyP50Ms: doublePrecision('latency_p50_ms'),
    latencyP95Ms: doublePrecision('latency_p95_ms'),
    reportedAt: text('reported_at'),
    updatedAt: text('updated_at').notNull().default(now),
  },
  (t) => [uniqueIndex('shadow_devices_pk').on(t.runId, t.deviceId), index('shadow_devices_device_idx').on(t.deviceId)],
);

/** Every rollout and rollout-device state change (device_id null for the rollout's own). */
export const rolloutTransitions = pgTable(
  'rollout_transitions',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
    rolloutId: text('rollout_id').notNull(),
    deviceId: text('device_id'),
    at: text('at').notNull(),
    fromState: text('from_state'),
    toState: text('to_state').notNull(),
    reason: text('reason'),
  },
  (t) => [index('rollout_transitions_rollout_idx').on(t.rolloutId, t.id)],
);

export type RolloutRow = typeof rollouts.$inferSelect;
export type RolloutDeviceRow = typeof rolloutDevices.$inferSelect;
export type RolloutTransitionRow = typeof rolloutTransitions.$inferSelect;
export type ShadowRunRow = typeof shadowRuns.$inferSelect;
export type ShadowDeviceRow = typeof shadowDevices.$inferSelect;
