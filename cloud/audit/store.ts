import { desc, lt } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import type { AuditRow } from '../registry/schema.js';

/**
 * Operator actions the API records. `ui.*` and `label.*` are for the console (sessions, feedback labels).
 */
export const AUDIT_ACTIONS = [
  'rollout.create',
  'rollout.pause',
  'rollout.resume',
  'rollout.abort',
  'rollout.rollback',
  'device.create',
  'device.revoke',
  'keys.rotate',
  'keys.activate',
  'keys.retire',
  'model.create',
  'model.update',
  'model.upload',
  'round.start',
  'label.accept',
  'label.drop',
  'session.login',
  'session.logout',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditInput {
  /** Who: `admin-token` (bearer API), `session:<id>` (a console session). */
  actor: string;
  action: AuditAction | (string & {});
  /** What it acted on (rollout id, device id, key id), or null. */
  target?: string | null;
  /** The parameters that matter (JSON); never secrets. */
  detail?: Record<string, unknown> | null;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown> | null;
}

export interface ListAuditOptions {
  /** At most this many, newest first. */
  limit: number;
  /** Only entries with an id below this one (the previous page's last id). */
  before?: number;
}

/** Longest actor / target kept, so a hostile value cannot bloat the log. */
const MAX_FIELD = 256;

function toEntry(r: AuditRow): AuditEntry {
  return { id: r.id, at: r.at, actor: r.actor, action: r.action, target: r.target, detail: r.detail ?? null };
}

/**
 * Records one operator action (issue 12 "Audit log"); the entry is committed when the promise resolves.
 *
 * @example
 * await recordAudit(registry, { actor: 'admin-token', action: 'rollout.pause', target: id, detail: { reason } });
 */
export async function recordAudit(reg: StoreRegistry, e: AuditInput, now: Date = new Date()): Promise<AuditEntry> {
  const [row] = await reg.q
    .insert(reg.t.auditLog)
    .values({ at: now.toISOString(), actor: e.actor.slice(0, MAX_FIELD), action: e.action.slice(0, 64), target: e.target == null ? null : e.target.slice(0, MAX_FIELD), detail: e.detail ?? null })
    .returning();
  return toEntry(row!);
}

/** Entries newest first; page with `before` = the last id of the previous page. */
export async function listAudit(reg: StoreRegistry, o: ListAuditOptions): Promise<AuditEntry[]> {
  const { auditLog } = reg.t;
  const rows = await reg.q
    .select()
    .from(auditLog)
    .where(o.before === undefined ? undefined : lt(auditLog.id, o.before))
    .orderBy(desc(auditLog.id))
    .limit(o.limit);
  return rows.map(toEntry);
}
