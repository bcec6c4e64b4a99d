import { index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { now } from './now.js';

/** Models, their signed releases and signed agent releases (issue 14). */

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

export type ModelRow = typeof models.$inferSelect;
export type ReleaseRow = typeof releases.$inferSelect;
export type AgentReleaseRow = typeof agentReleases.$inferSelect;
