import { bigint, boolean, index, json, pgTable, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { now } from './now.js';

/** Models, their signed releases and signed agent releases (issue 14). */

export const models = pgTable('models', {
  name: text('name').primaryKey(),
  /** JSON InputSpec (shared/protocol inputSpecSchema). */
  inputSpec: json('input_spec').notNull(),
  /** JSON string[]. */
  labels: json('labels').notNull(),
  /** JSON: { files: string[], outputKind: 'logits' | 'probs' }. */
  teacher: json('teacher').notNull(),
  studentSpec: text('student_spec').notNull(),
  /** JSON: temperature, alpha, epochs, batchSize, lr, baseData, holdout, tolerance, ... */
  distillSettings: json('distill_settings').notNull(),
  /** JSON: { intervalSeconds, minNewExamples, autoRollout, rollout: {...} } or null for manual only. */
  schedule: json('schedule'),
  createdAt: text('created_at').notNull().default(now),
  updatedAt: text('updated_at').notNull().default(now),
});

export const releases = pgTable(
  'releases',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
    model: text('model').notNull().references(() => models.name),
    /** Monotonic release sequence; unique across the registry so devices can compare any two. */
    seq: bigint('seq', { mode: 'number' }).notNull(),
    sha256: text('sha256').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    quantization: text('quantization').notNull(),
    metrics: json('metrics').notNull(),
    /** The manifest as signed (JSON). */
    manifest: json('manifest').notNull(),
    /** Detached signature object {alg, keyId, sig}. */
    signature: json('signature').notNull(),
    parentSeq: bigint('parent_seq', { mode: 'number' }),
    /** The release line (issue 13): the cohort this student is for, or null for the model's base line. */
    cohort: text('cohort'),
    roundId: text('round_id'),
    /** Path of the content-addressed artifact under the data dir. */
    artifactPath: text('artifact_path').notNull(),
    /** Whether the retained chunks are currently published on the broker. */
    chunksPublished: boolean('chunks_published').notNull().default(false),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [uniqueIndex('releases_seq_unique').on(t.seq), index('releases_model_idx').on(t.model), index('releases_sha_idx').on(t.sha256)],
);

/**
 * Signed agent releases (issue 14): the daemon's own code as a tar.gz, one row per (version, platform)
 * and per re-issue (a rollback re-signs an earlier version at a higher agentSeq; `reissueOf` set).
 */
export const agentReleases = pgTable(
  'agent_releases',
  {
    /** The release's own sequence (shared/protocol/agent.ts), unique across platforms. */
    agentSeq: bigint('agent_seq', { mode: 'number' }).primaryKey(),
    version: text('version').notNull(),
    platform: text('platform').notNull(),
    sha256: text('sha256').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    /** The agent manifest as signed (JSON). */
    manifest: json('manifest').notNull(),
    /** Detached signature object {alg, keyId, sig}. */
    signature: json('signature').notNull(),
    /** The agentSeq this row re-issues (a rollback), or null for an upload. */
    reissueOf: bigint('reissue_of', { mode: 'number' }),
    /** Path of the content-addressed tarball under the data dir. */
    artifactPath: text('artifact_path').notNull(),
    /** Whether the retained chunks are currently published on the broker. */
    chunksPublished: boolean('chunks_published').notNull().default(false),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [index('agent_releases_version_idx').on(t.version, t.platform), index('agent_releases_sha_idx').on(t.sha256)],
);

export type ModelRow = typeof models.$inferSelect;
export type ReleaseRow = typeof releases.$inferSelect;
export type AgentReleaseRow = typeof agentReleases.$inferSelect;
