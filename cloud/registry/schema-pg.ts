/**
 * The cloud registry schema, PostgreSQL dialect: the twin of ./schema.ts with the same table, column and
 * index names, giving the same JS values (test/unit/registry/schema-drift.test.ts holds them together):
 * - times stay ISO-8601 text (defaults formatted like the SQLite ones);
 * - JSON columns are `json`, not `jsonb`: json keeps the text as written, so key order (signed manifests are
 *   re-sent as stored) and the parsed values are the same as SQLite's JSON-as-text;
 * - integers are `bigint` read as JS numbers (SQLite integers are 64-bit; `integer` would cap byte counts
 *   and RSS at 2^31); autoincrement ids are identity columns; booleans are `boolean`;
 * - SQLite `real` (8-byte) is `double precision`; blobs are `bytea` ⇄ Buffer.
 */
export * from './schema/pg/catalog.js';
export * from './schema/pg/fleet.js';
export * from './schema/pg/rollouts.js';
export * from './schema/pg/training.js';
export * from './schema/pg/operations.js';
export * from './schema/pg/artifacts.js';
