import { blob, index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { now } from './now.js';

/**
 * Content-addressed artifacts kept in the registry itself (issue 15 item 3), so every replica serves the same
 * bytes: cloud/artifacts/registry-store.ts. A blob's bytes are split into chunks (1 MiB by default) written
 * under a fresh `chunk_set` first; the blob row that names the set is inserted last, in one transaction, so a
 * reader that finds the row finds every chunk. A set no blob row names is an unfinished or refused put.
 */
export const artifactBlobs = sqliteTable(
  'artifact_blobs',
  {
    /** 64 lowercase hex digits: the sha256 of the whole content. */
    sha256: text('sha256').primaryKey(),
    bytes: integer('bytes').notNull(),
    /** Bytes per chunk (the last chunk may be shorter). */
    chunkSize: integer('chunk_size').notNull(),
    /** The artifact_chunks.chunk_set holding the bytes. */
    chunkSet: text('chunk_set').notNull(),
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [uniqueIndex('artifact_blobs_chunk_set_idx').on(t.chunkSet)],
);

export const artifactChunks = sqliteTable(
  'artifact_chunks',
  {
    chunkSet: text('chunk_set').notNull(),
    /** 0-based; chunk i holds bytes [i * chunk_size, (i + 1) * chunk_size). */
    idx: integer('idx').notNull(),
    data: blob('data', { mode: 'buffer' }).notNull(),
    /** When the chunk was written: orphaned sets older than a day are swept. */
    createdAt: text('created_at').notNull().default(now),
  },
  (t) => [primaryKey({ columns: [t.chunkSet, t.idx] }), index('artifact_chunks_created_at_idx').on(t.createdAt)],
);

export type ArtifactBlobRow = typeof artifactBlobs.$inferSelect;
