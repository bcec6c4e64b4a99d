import { Hono } from 'hono';
import { z } from 'zod';
import { acceptQuarantined, dropQuarantined, listQuarantined } from '../rounds/label-review.js';
import { audit } from './audit.js';
import type { ApiContext } from './context.js';
import { errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { modelName } from './schemas.js';

export const quarantinedExampleSchema = z.strictObject({
  id: z.string(),
  deviceId: z.string(),
  model: z.string().nullable(),
  label: z.number().int(),
  teacherClass: z.number().int().nullable(),
  teacherProb: z.number().nullable(),
  labelProb: z.number().nullable(),
  capturedAt: z.string(),
  ingestedAt: z.string(),
});

const idParam = z.strictObject({ id: z.uuid() });

/**
 * `/v1/examples/quarantine` (issue 10): feedback labels the teacher contradicts with high confidence.
 * They are not trained on until accepted; dropping one deletes the example. Both are audited (audit_log).
 */
export function quarantineRoutes(ctx: ApiContext): Hono {
  return new Hono()
    .get(
      '/',
      describeRoute({ summary: 'Quarantined feedback labels, newest first', responses: { 200: { description: 'the list', schema: z.strictObject({ examples: z.array(quarantinedExampleSchema) }) } } }),
      validate('query', z.strictObject({ model: modelName.optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) })),
      async (c) => {
        const q = c.req.valid('query');
        return c.json({ examples: await listQuarantined(ctx.registry, q) });
      },
    )
    .post(
      '/:id/accept',
      describeRoute({ summary: 'Accept a quarantined label: trained on from the next round', responses: { 200: { description: 'accepted' }, 404: { description: 'not in quarantine', schema: errorBodySchema } } }),
      validate('param', idParam),
      async (c) => {
        const { id } = c.req.valid('param');
        if (!(await acceptQuarantined(ctx.registry, id))) throw notFound(`quarantined example ${id}`, 'id');
        ctx.log.info({ example: id }, 'quarantine: label accepted');
        await audit(ctx, c, { action: 'label.accept', target: id });
        return c.json({ id, labelState: 'accepted' as const });
      },
    )
    .post(
      '/:id/drop',
      describeRoute({ summary: 'Drop a quarantined example (deleted, never trained on)', responses: { 200: { description: 'dropped' }, 404: { description: 'not in quarantine', schema: errorBodySchema } } }),
      validate('param', idParam),
      async (c) => {
        const { id } = c.req.valid('param');
        if (!(await dropQuarantined(ctx.registry, id))) throw notFound(`quarantined example ${id}`, 'id');
        ctx.log.info({ example: id }, 'quarantine: example dropped');
        await audit(ctx, c, { action: 'label.drop', target: id });
        return c.json({ id, dropped: true as const });
      },
    );
}
