import { asc, count, eq, max } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { inputSpecSchema } from '../../shared/protocol/schemas.js';
import { examples, models, releases, type ModelRow } from '../registry/schema.js';
import { isUniqueViolation, type ApiContext } from './context.js';
import { conflict, errorBodySchema, notFound } from './errors.js';
import { describeRoute, validate } from './middleware.js';
import { modelName, rolloutPolicyFields, rolloutTargetSchema } from './schemas.js';

/** The architecture grammar of cloud/models/spec.ts (`linear` | `mlp:H1,H2,...`, widths 1..16384), checked without loading tfjs. */
const studentSpec = z
  .string()
  .regex(/^(linear|mlp:\d{1,5}(,\d{1,5})*)$/, 'expected linear or mlp:H1,H2,...')
  .refine((s) => s === 'linear' || s.slice(4).split(',').every((w) => Number(w) >= 1 && Number(w) <= 16384), 'layer widths must be 1..16384');

const datasetSpec = z.string().max(1024).regex(/^(mnist|idx|csv|unlabeled):\S/, 'expected a dataset spec: mnist:train, idx:IMAGES[,LABELS], csv:FILE or unlabeled:SPEC');

/** What a round needs to distil this model (cloud/rounds reads it from `models.distill_settings`). */
export const distillSettingsSchema = z.strictObject({
  temperature: z.number().min(0.01).max(1000).default(20),
  alpha: z.number().min(0).max(1).default(0.9),
  epochs: z.number().int().min(1).max(1000).default(10),
  batchSize: z.number().int().min(1).max(65_536).default(128),
  lr: z.union([z.number().gt(0).max(10), z.literal('auto')]).default('auto'),
  /** Transfer set the ingested hard examples are added to. */
  baseData: datasetSpec,
  /** Labelled holdout the gate evaluates on. */
  holdout: datasetSpec,
  /** Largest holdout accuracy drop vs the previous release the gate accepts (0.005 = half a point). */
  tolerance: z.number().min(0).max(1).default(0.005),
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(1),
  /** Use only the first N base examples. */
  limit: z.number().int().min(1).optional(),
  /** Start from the previous release's weights. */
  warmStart: z.boolean().default(true),
  /** Which export is released. */
  quantization: z.enum(['fp32', 'int8']).default('int8'),
});

export const scheduleSchema = z.strictObject({
  intervalSeconds: z.number().int().min(60).max(365 * 24 * 3600),
  minNewExamples: z.number().int().min(0).default(0),
  autoRollout: z.boolean().default(false),
  rollout: z
    .strictObject({ ...rolloutPolicyFields, target: rolloutTargetSchema.default({ kind: 'all' }) })
    .default({ canaryShare: 0.1, soakSeconds: 600, failureThreshold: 0.2, target: { kind: 'all' } }),
});

export const modelBodySchema = z
  .strictObject({
    inputSpec: inputSpecSchema,
    labels: z.array(z.string().min(1).max(128)).min(2).max(4096),
    teacher: z.strictObject({ files: z.array(z.string().min(1).max(4096)).min(1).max(16), outputKind: z.enum(['logits', 'probs']).default('logits') }),
    studentSpec,
    distill: distillSettingsSchema,
    /** Omitted or null: rounds only start by hand. */
    schedule: scheduleSchema.nullable().default(null),
  })
  .refine((m) => new Set(m.labels).size === m.labels.length, { message: 'labels must be unique', path: ['labels'] });
export type ModelBody = z.infer<typeof modelBodySchema>;

export const modelSchema = z.strictObject({
  name: z.string(),
  inputSpec: inputSpecSchema,
  labels: z.array(z.string()),
  teacher: z.strictObject({ files: z.array(z.string()), outputKind: z.enum(['logits', 'probs']) }),
  studentSpec: z.string(),
  distill: z.record(z.string(), z.unknown()),
  schedule: z.record(z.string(), z.unknown()).nullable(),
  latestRelease: z.number().int().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});

const nameParam = z.strictObject({ name: modelName });

function view(row: ModelRow, latestRelease: number | null): z.infer<typeof modelSchema> {
  return {
    name: row.name,
    inputSpec: row.inputSpec as z.infer<typeof inputSpecSchema>,
    labels: row.labels as string[],
    teacher: row.teacher as z.infer<typeof modelSchema>['teacher'],
    studentSpec: row.studentSpec,
    distill: row.distillSettings as Record<string, unknown>,
    schedule: row.schedule as Record<string, unknown> | null,
    latestRelease,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

function latest(ctx: ApiContext, name: string): number | null {
  return ctx.db.select({ seq: max(releases.seq) }).from(releases).where(eq(releases.model, name)).get()?.seq ?? null;
}

/** `/v1/models`: what to distil and how (input spec, labels, teacher, student, distillation settings, schedule). */
export function modelRoutes(ctx: ApiContext): Hono {
  return new Hono()
    .put(
      '/:name',
      describeRoute({
        summary: 'Create or update a model',
        responses: {
          200: { description: 'updated', schema: modelSchema },
          201: { description: 'created', schema: modelSchema },
          400: { description: 'invalid body', schema: errorBodySchema },
          409: { description: 'inputSpec cannot change once releases or examples exist', schema: errorBodySchema },
        },
      }),
      validate('param', nameParam),
      validate('json', modelBodySchema),
      (c) => {
        const { name } = c.req.valid('param');
        const body = c.req.valid('json');
        const values = { inputSpec: body.inputSpec, labels: body.labels, teacher: body.teacher, studentSpec: body.studentSpec, distillSettings: body.distill, schedule: body.schedule };
        const existing = ctx.db.select().from(models).where(eq(models.name, name)).get();
        if (existing) {
          if (JSON.stringify(existing.inputSpec) !== JSON.stringify(body.inputSpec)) {
            const used =
              (ctx.db.select({ n: count() }).from(releases).where(eq(releases.model, name)).get()?.n ?? 0) +
              (ctx.db.select({ n: count() }).from(examples).where(eq(examples.model, name)).get()?.n ?? 0);
            // Stored examples and deployed releases were made for the old input: mixing them would corrupt rounds.
            if (used > 0) throw conflict('input_spec_locked', `model ${name} has releases or examples; its inputSpec cannot change (create a new model)`, 'inputSpec');
          }
          const row = ctx.db.update(models).set({ ...values, updatedAt: ctx.clock().toISOString() }).where(eq(models.name, name)).returning().get()!;
          return c.json(view(row, latest(ctx, name)), 200);
        }
        try {
          const now = ctx.clock().toISOString();
          const row = ctx.db.insert(models).values({ name, ...values, createdAt: now, updatedAt: now }).returning().get();
          c.header('Location', `/v1/models/${name}`);
          return c.json(view(row, null), 201);
        } catch (err) {
          if (isUniqueViolation(err)) throw conflict('model_exists', `model ${name} was created concurrently; retry`, 'name');
          throw err;
        }
      },
    )
    .get('/', describeRoute({ summary: 'List models', responses: { 200: { description: 'models', schema: z.object({ models: z.array(modelSchema) }) } } }), (c) => {
      const rows = ctx.db.select().from(models).orderBy(asc(models.name)).all();
      const latestBy = new Map(ctx.db.select({ model: releases.model, seq: max(releases.seq) }).from(releases).groupBy(releases.model).all().map((r) => [r.model, r.seq]));
      return c.json({ models: rows.map((r) => view(r, latestBy.get(r.name) ?? null)) });
    })
    .get(
      '/:name',
      describeRoute({ summary: 'One model', responses: { 200: { description: 'the model', schema: modelSchema }, 404: { description: 'no such model', schema: errorBodySchema } } }),
      validate('param', nameParam),
      (c) => {
        const { name } = c.req.valid('param');
        const row = ctx.db.select().from(models).where(eq(models.name, name)).get();
        if (!row) throw notFound(`model ${name}`, 'name');
        return c.json(view(row, latest(ctx, name)));
      },
    );
}
