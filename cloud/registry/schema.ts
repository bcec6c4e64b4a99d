/**
 * The whole cloud registry schema (SQLite dialect), split by capability under ./schema/sqlite/. camelCase
 * keys map to snake_case columns; times are ISO-8601 text in UTC; JSON is stored as text. Its PostgreSQL
 * twin (./schema-pg.ts) has the same tables, columns and indexes, and gives the same JS values; the drift
 * test (test/unit/registry/schema-drift.test.ts) fails when they part. Add a table to both.
 */
export * from './schema/sqlite/catalog.js';
export * from './schema/sqlite/fleet.js';
export * from './schema/sqlite/rollouts.js';
export * from './schema/sqlite/training.js';
export * from './schema/sqlite/operations.js';
export * from './schema/sqlite/artifacts.js';
