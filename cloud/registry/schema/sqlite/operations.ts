import { index, integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

/** The operator audit log and key-value settings. */

/** Every operator action (issue 12): who, when, what. Kept in the registry, shown in the console. */
export const auditLog = sqliteTable(
  'audit_log',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: text('at').notNull(),
    /** Who: `admin-token` for the bearer API, `session:<id>` for a console session, `cli` ... */
    actor: text('actor').notNull(),
    /** e.g. rollout.create, rollout.pause, device.revoke, keys.rotate. */
    action: text('action').notNull(),
    /** What it acted on: a rollout id, device id, key id. */
    target: text('target'),
    /** JSON: the request's parameters that matter. */
    detail: text('detail', { mode: 'json' }).$type<Record<string, unknown>>(),
  },
  (t) => [index('audit_log_at_idx').on(t.at)],
);

/** Key-value settings that must survive restarts (e.g. the highest release sequence ever issued). */
export const meta = sqliteTable('meta', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
});

export type AuditRow = typeof auditLog.$inferSelect;
