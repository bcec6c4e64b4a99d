import { blob, index, integer, real, sqliteTable, text } from 'drizzle-orm/sqlite-core';
import { now } from './now.js';
import { models } from './catalog.js';

/** Ingested examples, distillation rounds, their shadow evaluations and example retention. */

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

export type ExampleRow = typeof examples.$inferSelect;
export type RoundRow = typeof rounds.$inferSelect;
export type ShadowEvalRow = typeof shadowEvals.$inferSelect;
