import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { listAudit, recordAudit, type AuditInput } from '../audit/store.js';
import type { ApiContext } from './context.js';
import { errorBodySchema } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { limitQuery } from './schemas.js';

declare module 'hono' {
  interface ContextVariableMap {
    /** Who acts, for the audit log: set by the console's session middleware (`session:<id>`); default `admin-token`. */
    auditActor: string;
  }
}

/** The actor of a request: what a middleware set (`c.set('auditActor', ...)`), else the bearer token's holder. */
export function auditActor(c: Context): string {
  return (c.get('auditActor') as string | undefined) ?? 'admin-token';
}

/**
 * Records an operator action after it succeeded, before the response goes out. The action already
 * happened, so a failing write does not turn it into an error: it is logged as `cloud/audit-failed` and
 * counted (`apprentice_audit_write_failed_total{source="api"}`).
 *
 * @example
 * await audit(ctx, c, { action: 'rollout.pause', target: id, detail: { reason } });
 */
export async function audit(ctx: ApiContext, c: Context, e: Omit<AuditInput, 'actor'>): Promise<void> {
  try {
    await recordAudit(ctx.registry, { ...e, actor: auditActor(c) }, ctx.clock());
  } catch (err) {
    ctx.auditFailed();
    ctx.log.error({ err, action: e.action, target: e.target }, 'cloud/audit-failed');
  }
}

/** A decimal id cursor (`before=123`). */
export const idCursor = z
  .string()
  .regex(/^\d{1,15}$/, 'expected a positive integer id')
  .transform(Number)
  .optional();

export const auditEntrySchema = z.strictObject({
  id: z.number().int(),
  at: z.string(),
  actor: z.string(),
  action: z.string(),
  target: z.string().nullable(),
  detail: z.record(z.string(), z.unknown()).nullable(),
});

export const auditQuerySchema = z.strictObject({ limit: limitQuery, before: idCursor });

/** `/v1/audit`: the operator actions, newest first. */
export function auditRoutes(ctx: ApiContext): Hono {
  return new Hono().get(
    '/',
    describeRoute({
      summary: 'The audit log: every operator action (who, when, what), newest first; page with before = nextBefore',
      responses: { 200: { description: 'entries', schema: z.object({ entries: z.array(auditEntrySchema), nextBefore: z.number().int().nullable() }) }, 400: { description: 'invalid query', schema: errorBodySchema } },
    }),
    validate('query', auditQuerySchema),
    async (c) => {
      const { limit = 100, before } = c.req.valid('query');
      const entries = await listAudit(ctx.registry, { limit, ...(before !== undefined ? { before } : {}) });
      return c.json({ entries, nextBefore: entries.length === limit ? entries[entries.length - 1]!.id : null });
    },
  );
}
