import type Database from 'better-sqlite3';

/**
 * The outbox's on-disk format (edge/outbox/store.ts): its tables, versioned with `PRAGMA user_version`, and
 * the statements the store prepares once per connection.
 */

export const SCHEMA_VERSION = 2;

export class OutboxError extends Error {
  override readonly name = 'OutboxError';
}

/** Every statement, prepared once per connection. */
export function prepare(db: Database.Database) {
  return {
    exists: db.prepare('SELECT 1 FROM outbox WHERE id = ?'),
    bytesOf: db.prepare('SELECT bytes FROM outbox WHERE id = ?'),
    // A feedback row (priority 2) may evict audit samples and older feedback, never hard examples (issue 10).
    victims: db.prepare('SELECT id, bytes FROM outbox WHERE priority <= ? AND NOT (? = 2 AND priority = 1) ORDER BY priority, seq'),
    oldest: db.prepare('SELECT id, kind, bytes, created_at, payload FROM outbox WHERE not_before <= ? ORDER BY seq'),
    defer: db.prepare('UPDATE outbox SET not_before = ? WHERE id = ?'),
    insert: db.prepare('INSERT INTO outbox (id, seq, reason, kind, priority, bytes, created_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    delete: db.prepare('DELETE FROM outbox WHERE id = ?'),
    bump: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value RETURNING value'),
    meta: db.prepare('SELECT key, value FROM meta'),
  };
}

/** Versioned with `PRAGMA user_version`; a file from a newer release is refused rather than misread. */
export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) throw new OutboxError(`outbox schema version ${version} is newer than this build (${SCHEMA_VERSION})`);
  if (version === SCHEMA_VERSION) return;
  db.transaction(() => {
    if (version < 1) {
      db.exec(`
        CREATE TABLE outbox (
          id         TEXT    PRIMARY KEY,          -- example UUID: the idempotency key end to end
          seq        INTEGER NOT NULL UNIQUE,      -- insertion order (explicit: VACUUM may renumber rowids)
          reason     TEXT    NOT NULL,
          kind       TEXT    NOT NULL CHECK (kind IN ('audit', 'hard', 'feedback')),
          priority   INTEGER NOT NULL,             -- 0 audit, 1 hard, 2 feedback: eviction class
          bytes      INTEGER NOT NULL,             -- UTF-8 length of payload
          created_at INTEGER NOT NULL,             -- wall-clock ms when stored
          payload    TEXT    NOT NULL              -- the example as JSON (exampleSchema)
        );
        CREATE INDEX outbox_evict ON outbox (priority, seq);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
      `);
    }
    // v2 (issue 9 receipts): a row the cloud deferred is not sent again before this wall-clock ms.
    if (version < 2) db.exec('ALTER TABLE outbox ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0');
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}
