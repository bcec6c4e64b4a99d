import { Hono } from 'hono';
import { z } from 'zod';
import { ATTENTION_REASONS, fleetSummary } from '../fleet/device-query.js';
import type { ApiContext } from './context.js';
import { errorBodySchema } from './errors.js';
import { describeRoute, validate } from './middleware.js';

export const fleetSummarySchema = z.strictObject({
  total: z.number().int(),
  online: z.number().int(),
  offline: z.number().int(),
  neverSeen: z.number().int(),
  revoked: z.number().int(),
  attention: z.number().int(),
  attentionBy: z.record(z.enum(ATTENTION_REASONS), z.number().int()),
  releases: z.array(z.strictObject({ model: z.string(), release: z.number().int(), devices: z.number().int() })),
  /** Devices per agent version (status.agent) and platform (issue 14). */
  agents: z.array(z.strictObject({ agent: z.string(), platform: z.string().nullable(), devices: z.number().int() })),
  at: z.string(),
});

/** `/v1/fleet`: the console overview's numbers. */
export function fleetRoutes(ctx: ApiContext): Hono {
  return new Hono().get(
    '/summary',
    describeRoute({
      summary: 'Fleet overview: devices total / online / offline / needing attention (by reason), and devices per running release of each model',
      responses: { 200: { description: 'the summary', schema: fleetSummarySchema }, 400: { description: 'unknown query parameter', schema: errorBodySchema } },
    }),
    validate('query', z.strictObject({})),
    async (c) => c.json(await fleetSummary(ctx.registry, { now: ctx.clock() })),
  );
}
