import { desc, eq } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import type { RoundRow } from '../registry/schema.js';
import { audit } from './audit.js';
import type { ApiContext } from './context.js';
import { errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { limitQuery, modelName } from './schemas.js';
import { shadowEvalOfRound } from '../shadow/store.js';

export const roundSchema = z.strictObject({
  id: z.string(),
  model: z.string(),
  /** queued → running → released | rejected | failed */
  state: z.string(),
  trigger: z.string(),
  /** { phase, epoch, epochs, loss, samplesPerSec } while running. */
  progress: z.record(z.string(), z.unknown()).nullable(),
  metrics: z.record(z.string(), z.unknown()).nullable(),
  error: z.string().nullable(),
  releaseSeq: z.number().int().nullable(),
  exampleCount: z.number().int().nullable(),
  attempts: z.number().int(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  createdAt: z.string(),
});

const nnum = z.number().nullable();
/** One row of a round's shadow evaluation (issue 13): a device's figures, or a cohort's pooled ones. */
export const shadowRowSchema = z.strictObject({
  /** The release line whose candidate was evaluated (issue 13): null for the base line, else the cohort's. */
  line: z.string().nullable(),
  scope: z.enum(['device', 'cohort']),
  deviceId: z.string().nullable(),
  /** null: the model's base line. */
  cohort: z.string().nullable(),
  samples: z.number().int(),
  /** Device rows: `device` (enough samples), `cohort` (its cohort's figures decide), `none` (no evidence). */
  judgedBy: z.enum(['device', 'cohort', 'none']).nullable(),
  runningSeq: z.number().int().nullable(),
  candidateAccuracy: nnum,
  runningAccuracy: nnum,
  agreement: nnum,
  delta: nnum,
  deltaLow: nnum,
  deltaHigh: nnum,
});

function view(r: RoundRow): z.infer<typeof roundSchema> {
  return {
    id: r.id,
    model: r.model,
    state: r.state,
    trigger: r.trigger,
    progress: (r.progress as Record<string, unknown> | null) ?? null,
    metrics: (r.metrics as Record<string, unknown> | null) ?? null,
    error: r.error,
    releaseSeq: r.releaseSeq,
    exampleCount: r.exampleCount,
    attempts: r.attempts,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    createdAt: r.createdAt,
  };
}

const nameParam = z.strictObject({ name: modelName });

/**
 * Distillation rounds: `POST /v1/models/:name/rounds` asks cloud/rounds to start one (202: it runs in the
 * background), `GET /v1/rounds/:id` and `GET /v1/models/:name/rounds` read progress from the registry.
 * Mounted at `/v1`.
 */
export function roundRoutes(ctx: ApiContext): Hono {
  const { models, rounds } = ctx.registry.t;
  const modelExists = async (name: string): Promise<void> => {
    const [row] = await ctx.registry.q.select({ name: models.name }).from(models).where(eq(models.name, name)).limit(1);
    if (!row) throw notFound(`model ${name}`, 'name');
  };
  return new Hono()
    .post(
      '/models/:name/rounds',
      describeRoute({
        summary: 'Start a distillation round for a model',
        responses: {
          202: { description: 'accepted; poll /v1/rounds/{id}', schema: z.object({ id: z.string() }) },
          404: { description: 'no such model', schema: errorBodySchema },
          409: { description: 'a round is already queued or running for the model (round_in_progress)', schema: errorBodySchema },
        },
      }),
      validate('param', nameParam),
      validate('json', z.strictObject({}), { optional: true }),
      async (c) => {
        const { name } = c.req.valid('param');
        await modelExists(name);
        const { id } = await ctx.rounds.start(name, 'manual');
        ctx.log.info({ model: name, round: id }, 'round started');
        await audit(ctx, c, { action: 'round.start', target: id, detail: { model: name } });
        c.header('Location', `/v1/rounds/${id}`);
        return c.json({ id }, 202);
      },
    )
    .get(
      '/models/:name/rounds',
      describeRoute({ summary: "A model's rounds, newest first", responses: { 200: { description: 'rounds', schema: z.object({ rounds: z.array(roundSchema) }) }, 404: { description: 'no such model', schema: errorBodySchema } } }),
      validate('param', nameParam),
      validate('query', z.strictObject({ limit: limitQuery })),
      async (c) => {
        const { name } = c.req.valid('param');
        const { limit = 50 } = c.req.valid('query');
        await modelExists(name);
        const rows = await ctx.registry.q.select().from(rounds).where(eq(rounds.model, name)).orderBy(desc(rounds.createdAt), desc(rounds.id)).limit(limit);
        return c.json({ rounds: rows.map(view) });
      },
    )
    .get(
      '/rounds/:id',
      describeRoute({ summary: 'One round: state, progress, metrics, error', responses: { 200: { description: 'the round', schema: roundSchema }, 404: { description: 'no such round', schema: errorBodySchema } } }),
      validate('param', z.strictObject({ id: z.string().min(1).max(128) })),
      async (c) => {
        const { id } = c.req.valid('param');
        const [row] = await ctx.registry.q.select().from(rounds).where(eq(rounds.id, id)).limit(1);
        if (!row) throw notFound(`round ${id}`, 'id');
        return c.json(view(row));
      },
    )
    .get(
      '/rounds/:id/shadow',
      describeRoute({
        summary: "A round's shadow evaluation: each line's candidate vs each device's running release on its audit samples, per device and per cohort",
        responses: { 200: { description: 'by line (base first), cohort rows first, then devices by id', schema: z.object({ round: z.string(), rows: z.array(shadowRowSchema) }) }, 404: { description: 'no such round', schema: errorBodySchema } },
      }),
      validate('param', z.strictObject({ id: z.string().min(1).max(128) })),
      async (c) => {
        const { id } = c.req.valid('param');
        const [round] = await ctx.registry.q.select({ id: rounds.id }).from(rounds).where(eq(rounds.id, id)).limit(1);
        if (!round) throw notFound(`round ${id}`, 'id');
        const rows = await shadowEvalOfRound(ctx.registry, id);
        return c.json({
          round: id,
          rows: rows.map((r) => ({ line: r.line, scope: r.scope, deviceId: r.deviceId, cohort: r.cohort, samples: r.samples, judgedBy: r.judgedBy, runningSeq: r.runningSeq, candidateAccuracy: r.candidateAccuracy, runningAccuracy: r.runningAccuracy, agreement: r.agreement, delta: r.delta, deltaLow: r.deltaLow, deltaHigh: r.deltaHigh })),
        });
      },
    );
}
