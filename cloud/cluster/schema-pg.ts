import { sql } from 'drizzle-orm';
import { bigint, check, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Cluster coordination tables (PostgreSQL only: SQLite is one process, so it has no cluster).
 *
 * `cluster_leader` holds one row (id = 1). Its `epoch` grows by one each time a replica wins the advisory
 * lock (see leader.ts); every leader write and publish is fenced on it (see fence.ts).
 */
export const clusterLeader = pgTable(
  'cluster_leader',
  {
    id: integer('id').primaryKey(),
    epoch: bigint('epoch', { mode: 'number' }).notNull(),
    holder: text('holder').notNull(),
    acquiredAt: timestamp('acquired_at', { withTimezone: true }).notNull().defaultNow(),
    renewedAt: timestamp('renewed_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [check('cluster_leader_singleton', sql`${t.id} = 1`)],
);

/**
 * At most one round per model across the cluster: the leader claims a model's row before it starts a
 * round (primary key = model) and deletes it when the round ends. A claim left by an older epoch belongs
 * to a dead or fenced leader; the new leader takes it over and learns the orphaned round id, to mark that
 * round failed and retry it.
 */
export const clusterRoundClaims = pgTable('cluster_round_claims', {
  modelId: text('model_id').primaryKey(),
  roundId: text('round_id').notNull(),
  epoch: bigint('epoch', { mode: 'number' }).notNull(),
  holder: text('holder').notNull(),
  claimedAt: timestamp('claimed_at', { withTimezone: true }).notNull().defaultNow(),
});
