import { bigint, index, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { bytea } from './bytea.js';
import { now } from './now.js';

/** Content-addressed artifacts in the registry (issue 15 item 3): the twin of ../sqlite/artifacts.ts. */
export const artifactBlobs = pgTable(
  'artifact_blobs',
  {
    sha256: text('sha256').primaryKey(),
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    chunkSize: bigint('chunk_size', { mode: 'number' }).notNull(),
    chunkSet: text('chunk_set').notNull(),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [uniqueIndex('artifact_blobs_chunk_set_idx').on(t.chunkSet)],
);

export const artifactChunks = pgTable(
  'artifact_chunks',
  {
    chunkSet: text('chunk_set').notNull(),
    idx: bigint('idx', { mode: 'number' }).notNull(),
    data: bytea('data').notNull(),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [primaryKey({ columns: [t.chunkSet, t.idx] }), index('artifact_chunks_created_at_idx').on(t.createdAt)],
);

export type ArtifactBlobRow = typeof artifactBlobs.$inferSelect;
