import { Hono } from 'hono';
import { z } from 'zod';
import type { ApiContext } from './context.js';
import { ApiError, badRequest, invalidBody, methodNotAllowed } from './errors.js';
import { jsonOnly, limitBody, readJson } from './middleware.js';

export const feedbackBodySchema = z.strictObject({
  /** The prediction id returned by /v1/predict. */
  id: z.uuid(),
  /** Class index or label name. */
  label: z.union([z.number().int().min(0), z.string().min(1).max(128)]),
});

/**
 * `POST /v1/feedback`: attaches a user's label to a remembered prediction and hands input + label to the
 * outbox. 404 once the prediction is unknown or has been evicted/expired; 429 past its own per-minute cap
 * (`api.feedbackPerMinute`), so a label flood cannot crowd the outbox (where a label never evicts a hard example).
 */
export function feedbackRoutes(ctx: ApiContext): Hono {
  return new Hono()
    .post('/', jsonOnly(), limitBody({ maxBytes: 64 * 1024 }), async (c) => {
      const parsed = feedbackBodySchema.safeParse(await readJson(c));
      if (!parsed.success) throw invalidBody(parsed.error);
      const { id, label } = parsed.data;
      const now = ctx.clock();
      if (!ctx.feedbackCap.allows(now)) {
        ctx.metrics.refused('feedback_rate');
        ctx.log.warn({ limit: ctx.feedbackCap.limit }, 'edge/api feedback over its per-minute cap: refused');
        throw new ApiError(429, 'feedback_rate_limited', `more than ${ctx.feedbackCap.limit} feedback labels in the last minute; retry later`, undefined, { 'Retry-After': '60' });
      }
      const p = ctx.recent.get(id);
      if (!p) throw new ApiError(404, 'unknown_prediction', `no recent prediction with id ${id} (unknown or expired)`, 'id');
      const labels = p.manifest.labels;
      const index = typeof label === 'number' ? label : labels.indexOf(label);
      if (index < 0 || index >= labels.length) {
        throw badRequest(typeof label === 'number' ? `label index must be below ${labels.length}` : `unknown label "${label}"`, 'label', 'invalid_label');
      }
      ctx.feedbackCap.record(now);
      const { stored } = await ctx.feedback({ id, label: index, labelName: labels[index]!, input: p.input, probs: p.probs, manifest: p.manifest, predictedAt: p.at });
      ctx.metrics.feedback(stored);
      return c.json({ id, index, label: labels[index]!, stored });
    })
    .all('/', methodNotAllowed(['POST']));
}
