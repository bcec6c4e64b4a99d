import { asc, count, eq, max } from 'drizzle-orm';
import { Hono } from 'hono';
import { z } from 'zod';
import { inputSpecSchema } from '../../shared/protocol/schemas.js';
import type { ModelRow } from '../registry/schema.js';
import type { ApiContext } from './context.js';
import { audit } from './audit.js';
import { badRequest, conflict, errorBodySchema, notFound } from './errors.js';
import { importModelInputs, ModelInputError } from '../artifacts/model-inputs.js';
import { describeRoute, validate } from './middleware.js';
import { imageShapeOf, isConv, parseArch } from '../models/spec.js';
import { cohortSettingsProblem, distillSettingsFields } from '../rounds/settings.js';
import { modelName, rolloutPolicyFields, rolloutTargetSchema } from './schemas.js';

/** The one architecture grammar, cloud/models/spec.ts (linear, mlp:, cnn:, dscnn:); it loads no tfjs. */
const studentSpec = z
  .string()
  .max(256)
  .superRefine((s, ctx) => {
    try {
      parseArch(s, 'studentSpec');
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^studentSpec: /, '') });
    }
  });

const DATASET_SPEC = 'a dataset spec: mnist:train, idx:IMAGES[,LABELS], csv:FILE, images:DIR or unlabeled:SPEC';
const datasetSpec = z.string().max(1024).regex(/^(mnist|idx|csv|images|unlabeled):\S/, `expected ${DATASET_SPEC}`);
const positiveInt = z.number().int().min(1);

/**
 * `models.distill_settings`: the very fields, bounds and defaults of cloud/rounds/settings.ts (its only reader),
 * but strict, so a typo is a 400 here instead of a silently ignored key. test/unit/cloud-api/contract.test.ts
 * checks that every key the rounds parser fills in is accepted here, and that what is stored here parses there.
 */
export const distillSettingsSchema = distillSettingsFields
  .extend({
    baseData: datasetSpec,
    holdout: z
      .string()
      .max(1024)
      .regex(/^((mnist|idx|csv|unlabeled):\S|split:\S)/, `expected ${DATASET_SPEC}, or split:AMOUNT`)
      .default('split:0.1'),
  })
  .strict();

export const scheduleSchema = z.strictObject({
  intervalSeconds: positiveInt.max(365 * 24 * 3600).default(3600),
  /** A scheduled round starts only when this many examples arrived since the last one started. */
  minNewExamples: z.number().int().min(0).default(100),
  /** Roll out every release a scheduled round produces, with `rollout`. */
  autoRollout: z.boolean().default(false),
  rollout: z
    .strictObject({ ...rolloutPolicyFields, target: rolloutTargetSchema.default({ kind: 'all' }) })
    .prefault({}),
});

export const modelBodySchema = z
  .strictObject({
    inputSpec: inputSpecSchema,
    labels: z.array(z.string().min(1).max(128)).min(2).max(4096),
    teacher: z.strictObject({
      files: z.array(z.string().min(1).max(4096)).min(1).max(16),
      outputKind: z.enum(['logits', 'probs']).default('logits'),
      /** `sha256 → path` of imported files (what a GET shows; given back, it keeps the names). */
      sources: z.record(z.string().regex(/^[0-9a-f]{64}$/), z.string().max(4096)).optional(),
    }),
    studentSpec,
    distill: distillSettingsSchema,
    /** Omitted or null: rounds only start by hand. */
    schedule: scheduleSchema.nullable().default(null),
  })
  .refine((m) => new Set(m.labels).size === m.labels.length, { message: 'labels must be unique', path: ['labels'] })
  .superRefine((m, ctx) => {
    const problem = cohortSettingsProblem(m.distill);
    if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['distill', 'cohorts'] });
  })
  .superRefine((m, ctx) => {
    // A conv student needs an image input; say so at registration, not when the first round fails.
    try {
      if (isConv(parseArch(m.studentSpec, 'studentSpec'))) imageShapeOf(m.inputSpec.shape, 'studentSpec', m.inputSpec.image);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['studentSpec'], message: (err as Error).message.replace(/^studentSpec: /, '') });
    }
  });
export type ModelBody = z.infer<typeof modelBodySchema>;

export const modelSchema = z.strictObject({
  name: z.string(),
  inputSpec: inputSpecSchema,
  labels: z.array(z.string()),
  teacher: z.strictObject({ files: z.array(z.string()), outputKind: z.enum(['logits', 'probs']), sources: z.record(z.string(), z.string()).optional() }),
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

async function latest(ctx: ApiContext, name: string): Promise<number | null> {
  const { releases } = ctx.registry.t;
  const [row] = await ctx.registry.q.select({ seq: max(releases.seq) }).from(releases).where(eq(releases.model, name));
  return row?.seq ?? null;
}

/**
 * With the registry artifact store (PostgreSQL, issue 15 item 2) the teacher files and dataset files a model
 * names are imported into it, and the row keeps `artifact:SHA256` references, so a round runs on any replica.
 * A path this replica cannot read, a directory, or an unknown reference is a 400 naming the field. On the file
 * store (SQLite, one process) the body is stored as given.
 */
async function storedInputs(ctx: ApiContext, body: ModelBody): Promise<ModelBody> {
  if (ctx.blobs?.backend !== 'registry') return body;
  try {
    // Each imported file is logged there (field, path, sha256, bytes).
    return (await importModelInputs(ctx.blobs, body, ctx.log)).model;
  } catch (err) {
    if (err instanceof ModelInputError) throw badRequest(err.message, err.field, 'invalid_model_input');
    throw err;
  }
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
      async (c) => {
        const { name } = c.req.valid('param');
        const body = await storedInputs(ctx, c.req.valid('json'));
        const values = { inputSpec: body.inputSpec, labels: body.labels, teacher: body.teacher, studentSpec: body.studentSpec, distillSettings: body.distill, schedule: body.schedule };
        const { q: db, t } = ctx.registry;
        const { examples, models, releases } = t;
        const [existing] = await db.select().from(models).where(eq(models.name, name)).limit(1);
        if (existing) {
          if (JSON.stringify(existing.inputSpec) !== JSON.stringify(body.inputSpec)) {
            const [ofReleases] = await db.select({ n: count() }).from(releases).where(eq(releases.model, name));
            const [ofExamples] = await db.select({ n: count() }).from(examples).where(eq(examples.model, name));
            const used = (ofReleases?.n ?? 0) + (ofExamples?.n ?? 0);
            // Stored examples and deployed releases were made for the old input: mixing them would corrupt rounds.
            if (used > 0) throw conflict('input_spec_locked', `model ${name} has releases or examples; its inputSpec cannot change (create a new model)`, 'inputSpec');
          }
          const [row] = await db.update(models).set({ ...values, updatedAt: ctx.clock().toISOString() }).where(eq(models.name, name)).returning();
          await audit(ctx, c, { action: 'model.update', target: name });
          return c.json(view(row!, await latest(ctx, name)), 200);
        }
        const now = ctx.clock().toISOString();
        // A lost insert race returns no row (both dialects), rather than a dialect-specific constraint error.
        const [row] = await db.insert(models).values({ name, ...values, createdAt: now, updatedAt: now }).onConflictDoNothing({ target: models.name }).returning();
        if (!row) throw conflict('model_exists', `model ${name} was created concurrently; retry`, 'name');
        await audit(ctx, c, { action: 'model.create', target: name });
        c.header('Location', `/v1/models/${name}`);
        return c.json(view(row, null), 201);
      },
    )
    .get('/', describeRoute({ summary: 'List models', responses: { 200: { description: 'models', schema: z.object({ models: z.array(modelSchema) }) } } }), async (c) => {
      const { models, releases } = ctx.registry.t;
      const rows = await ctx.registry.q.select().from(models).orderBy(asc(models.name));
      const latestBy = new Map((await ctx.registry.q.select({ model: releases.model, seq: max(releases.seq) }).from(releases).groupBy(releases.model)).map((r) => [r.model, r.seq]));
      return c.json({ models: rows.map((r) => view(r, latestBy.get(r.name) ?? null)) });
    })
    .get(
      '/:name',
      describeRoute({ summary: 'One model', responses: { 200: { description: 'the model', schema: modelSchema }, 404: { description: 'no such model', schema: errorBodySchema } } }),
      validate('param', nameParam),
      async (c) => {
        const { name } = c.req.valid('param');
        const { models } = ctx.registry.t;
        const [row] = await ctx.registry.q.select().from(models).where(eq(models.name, name)).limit(1);
        if (!row) throw notFound(`model ${name}`, 'name');
        return c.json(view(row, await latest(ctx, name)));
      },
    );
}
