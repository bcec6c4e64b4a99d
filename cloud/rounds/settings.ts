import { z } from 'zod';
import { imageSpecSchema, inputSpecSchema, type InputSpec } from '../../shared/protocol/schemas.js';
import type { ModelRow } from '../registry/schema.js';
import { augmentSchema } from '../distill/augment.js';
import { imageShapeOf, isConv, parseArch } from '../models/spec.js';

/**
 * What a round reads from a `models` row, validated once when a round starts (STYLE.md §3: one
 * validation, `path: message` errors, defaults in one place). The JSON columns stay free-form in the
 * registry so the API can store them as given; this is the only reader.
 */

export class RoundConfigError extends Error {
  override readonly name = 'RoundConfigError';
}

const positiveInt = z.number().int().min(1);
const fraction = z.number().min(0).max(1);
/** At most one entry per file a model names (16 teacher files, a few dataset files). */
const inputSources = z.record(z.string().regex(/^[0-9a-f]{64}$/), z.string().max(4096)).refine((r) => Object.keys(r).length <= 32, 'at most 32 entries');

/**
 * `models.distill_settings`. Every field but `baseData` has a default. Unknown keys are ignored, and
 * the admin API's names are accepted as aliases: `limit` for `baseLimit`, `quantization` for `artifact`.
 */
export const distillSettingsFields = z.object({
  /** Softening temperature T of the distillation loss. */
  temperature: z.number().min(0.01).max(1000).default(20),
  /** Weight of the soft (teacher) term; 1 − alpha weighs the hard-label term where labels exist. */
  alpha: fraction.default(0.9),
  epochs: positiveInt.max(1000).default(10),
  batchSize: positiveInt.max(65536).default(128),
  /** A fixed rate, or 'auto': tuned per round on a 10% split of the (labelled) base data, never on the gate holdout. */
  lr: z.union([z.number().min(1e-7).max(10), z.literal('auto')]).default(1e-3),
  /** Candidates and epochs per candidate for lr 'auto' (default min(epochs, 2)). */
  lrCandidates: z.array(z.number().min(1e-7).max(10)).min(1).max(8).default([3e-4, 1e-3, 3e-3]),
  tuneEpochs: positiveInt.max(100).optional(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).default(1),
  /** Random translation (pixels) during training; square inputs only. */
  jitter: z.number().int().min(0).max(8).default(0),
  /**
   * `search`: choose T and alpha per round on a 10% validation split of the labelled base data
   * (cloud/distill/recipe.ts), within the round's wall-clock budget; `fixed`: use temperature/alpha.
   */
  recipe: z.enum(['fixed', 'search']).default('fixed'),
  /** The round's wall-clock limit; the search gets half of what is left after `reserveMinutes`. */
  roundMinutes: z.number().min(1).max(1440).default(60),
  /** Kept free for export, evaluation, gate and signing. */
  reserveMinutes: z.number().min(0).max(1440).default(5),
  /** Epochs per search trial (default min(epochs, 2)). */
  searchEpochs: positiveInt.max(100).optional(),

  /** Base transfer set, a shared/data spec such as `mnist:train` or `unlabeled:idx:...`. */
  baseData: z.string().min(3),
  /**
   * `sha256 → path` of the dataset files registration imported into the artifact store (PostgreSQL, issue 15),
   * whose specs now name `artifact:SHA256`: for logs and errors only (cloud/artifacts/model-inputs.ts).
   */
  sources: inputSources.optional(),
  /** Keep only this many base examples (after a shuffle with `seed`). */
  baseLimit: positiveInt.optional(),
  /**
   * Fixed holdout used by the gate: a dataset spec (`mnist:test`) or `split:AMOUNT` to carve it out
   * of the base data (AMOUNT a fraction in (0,1) or a count) with `holdoutSeed`. Must be labelled.
   */
  holdout: z.string().min(3).default('split:0.1'),
  holdoutLimit: positiveInt.optional(),
  holdoutSeed: z.number().int().min(0).max(2 ** 32 - 1).default(1234),
  /**
   * Gate: release only if holdoutAccuracy ≥ parentHoldoutAccuracy − tolerance. A negative value
   * demands an improvement of at least |tolerance|.
   */
  tolerance: z.number().min(-1).max(1).default(0.01),
  /** Gate: absolute floor on holdout accuracy, applied even without a parent. */
  minHoldoutAccuracy: fraction.default(0),

  /**
   * Hard-example mixing. Device examples are few next to the base set, so they are repeated until
   * they make up at least `hardExampleShare` of every epoch, but each one at most
   * `hardExampleMaxRepeat` times (so a handful of examples is not memorised). See mix.ts.
   */
  hardExampleShare: z.number().min(0).max(0.9).default(0.2),
  hardExampleMaxRepeat: positiveInt.max(1000).default(20),
  /** Only the newest N ingested examples of the model enter the transfer set. */
  hardExampleWindow: positiveInt.default(20_000),
  /** The newest N of them are also the "recent traffic" evaluation set (agreement with the teacher). */
  hardEvalCount: positiveInt.default(1000),
  /**
   * At most this share of the hard-example window (and of the recent-traffic evaluation) per device;
   * room the other devices cannot fill goes to the devices that have more (issue 10).
   */
  maxDeviceShare: z.number().gt(0).max(1).default(0.25),
  /** A feedback label is quarantined when the teacher gives another class ≥ otherMin and the label < givenMax. */
  labelQuarantine: z.strictObject({ otherMin: fraction.default(0.9), givenMax: fraction.default(0.05) }).prefault({}),

  /**
   * Shadow evaluation (issue 13, cloud/shadow): the newest N `audit` examples per device score the
   * candidate and each device's running release; a device with fewer than `shadowMinSamples` is judged
   * by its cohort, a cohort with fewer not at all.
   */
  shadowAuditPerDevice: positiveInt.max(100_000).default(500),
  shadowMinSamples: positiveInt.max(100_000).default(50),
  /**
   * Cohorts (issue 13): besides the base student, one student per cohort, trained for the devices of one
   * device group. `cohorts` names them; `perGroup: true` makes every device group a cohort named after
   * it. At most one of the two. A device in several cohorts' groups belongs to the first (cohorts.ts).
   */
  cohorts: z
    .array(
      z.strictObject({
        name: z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, . _ -'),
        group: z.string().min(1).max(128),
        /** This line's own `cohortEpochs`, `cohortHardExampleShare`, `cohortBaseLimit`, `cohortJitter`, `cohortAugment` (cohort-training.ts). */
        epochs: positiveInt.max(1000).optional(),
        hardExampleShare: z.number().min(0).max(0.9).optional(),
        baseLimit: positiveInt.optional(),
        jitter: z.number().int().min(0).max(8).optional(),
        augment: augmentSchema.optional(),
      }),
    )
    .max(64)
    .optional(),
  perGroup: z.boolean().default(false),
  /** Epochs of each cohort student (it starts from the base student); default `epochs`. */
  cohortEpochs: positiveInt.max(1000).optional(),
  /**
   * Cohort students only: the share of each epoch the cohort's own hard examples make up (mix.ts;
   * still at most `hardExampleMaxRepeat` repeats each); default `hardExampleShare`.
   */
  cohortHardExampleShare: z.number().min(0).max(0.9).optional(),
  /**
   * Cohort students only: train on the first N examples of the (shuffled) base transfer set instead of
   * all of it, so the cohort's own examples weigh more without more repeats; default all.
   */
  cohortBaseLimit: positiveInt.optional(),
  /** Cohort students only: random translation (pixels) during training, as `jitter`; default `jitter`. */
  cohortJitter: z.number().int().min(0).max(8).optional(),
  /**
   * Cohort students only: augment with the teacher (cloud/distill/augment.ts). Every training example
   * is seen through a random affine transform (`{ rotate: degrees, shift: px, scale: fraction,
   * probability }`) and its target is the teacher's logits on that view, computed on the fly (function
   * matching), so a cohort with few examples of its shift still sees many labelled shifted images.
   * Replaces the line's `jitter`; the teacher must take the student's input form. Default none.
   */
  cohortAugment: augmentSchema.optional(),
  /** Initialise from the current release's weights when the architecture matches. */
  warmStart: z.boolean().default(true),
  /** What the release ships: the int8 (dynamic quantisation) model or the fp32 one. */
  artifact: z.enum(['int8', 'fp32']).default('int8'),
  chunkSize: z.number().int().min(1024).max(16 * 1024 * 1024).default(128 * 1024),
  /** Manifest validity: expiresAt = createdAt + validityDays. */
  validityDays: z.number().min(1 / 24).max(3650).default(30),
  /** Self-test tolerance (max abs logit difference); default 1e-3 for fp32, 0.05 for int8. */
  selfTestTolerance: z.number().min(0).max(10).optional(),
  /** Time budget of the ORT batch-1 latency measurement. */
  latencyBudgetMs: z.number().int().min(10).max(60_000).default(500),
});
export const distillSettingsSchema = z.preprocess((v) => {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return v;
  const o = { ...(v as Record<string, unknown>) };
  if (o.baseLimit === undefined && o.limit !== undefined) o.baseLimit = o.limit;
  if (o.artifact === undefined && o.quantization !== undefined) o.artifact = o.quantization;
  return o;
}, distillSettingsFields);
export type DistillSettings = z.infer<typeof distillSettingsFields>;

const rolloutTargetSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('all') }),
  z.object({ kind: z.literal('group'), group: z.string().min(1) }),
  z.object({ kind: z.literal('devices'), ids: z.array(z.string().min(1)).min(1) }),
]);

/** `models.schedule`; null means manual rounds only and no automatic rollout. */
export const scheduleSchema = z.object({
  /** How often the scheduler looks at the model. */
  intervalSeconds: z.number().int().min(1).default(3600),
  /** A scheduled round starts only when this many examples arrived since the last round started. */
  minNewExamples: z.number().int().min(0).default(100),
  /** Start a rollout of every release a round produces. */
  autoRollout: z.boolean().default(false),
  /** Passed to the rollout engine with the new release. */
  rollout: z
    .object({
      target: rolloutTargetSchema.default({ kind: 'all' }),
      canaryShare: fraction.default(0.1),
      soakSeconds: z.number().int().min(0).default(300),
      failureThreshold: fraction.default(0.2),
    })
    .default({ target: { kind: 'all' }, canaryShare: 0.1, soakSeconds: 300, failureThreshold: 0.2 }),
});
export type Schedule = z.infer<typeof scheduleSchema>;

const teacherSchema = z.object({
  files: z.array(z.string().min(1)).min(1),
  /** `sha256 → path` of the files imported at registration (see distillSettings.sources). */
  sources: inputSources.optional(),
  outputKind: z.enum(['logits', 'probs']).default('logits'),
  /**
   * The teacher's own image form (issue 11), when it differs from the student's (e.g. a 224×224 NCHW
   * teacher for a 64×64 NHWC student): it then sees the base images and the hard examples' source
   * images through its own preprocessing. Absent: it reads the student's inputs.
   */
  image: imageSpecSchema.optional(),
});

/** Everything a round needs from one model, parsed. */
export interface RoundModel {
  name: string;
  inputSpec: InputSpec;
  labels: string[];
  teacher: z.infer<typeof teacherSchema>;
  studentSpec: string;
  settings: DistillSettings;
  schedule: Schedule | null;
}

function parsePart<S extends z.ZodType>(schema: S, value: unknown, model: string, column: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => `${[column, ...i.path.map(String)].join('.')}: ${i.message}`);
  throw new RoundConfigError(`model ${model}: ${lines.join('; ')}`);
}

/** Validates a `models` row for a round. Throws RoundConfigError with `column.path: message`. */
export function parseRoundModel(row: ModelRow): RoundModel {
  const model: RoundModel = {
    name: row.name,
    inputSpec: parsePart(inputSpecSchema, row.inputSpec, row.name, 'inputSpec'),
    labels: parsePart(z.array(z.string()).min(2), row.labels, row.name, 'labels'),
    teacher: parsePart(teacherSchema, row.teacher, row.name, 'teacher'),
    studentSpec: row.studentSpec,
    settings: parsePart(distillSettingsSchema, row.distillSettings, row.name, 'distillSettings'),
    schedule: row.schedule == null ? null : parsePart(scheduleSchema, row.schedule, row.name, 'schedule'),
  };
  const problem = cohortSettingsProblem(model.settings);
  if (problem) throw new RoundConfigError(`model ${row.name}: distillSettings.${problem}`);
  try {
    const arch = parseArch(row.studentSpec, 'studentSpec');
    if (isConv(arch)) imageShapeOf(model.inputSpec.shape, 'studentSpec', model.inputSpec.image);
  } catch (err) {
    throw new RoundConfigError(`model ${row.name}: ${(err as Error).message}`);
  }
  return model;
}

export function selfTestTolerance(s: DistillSettings): number {
  return s.selfTestTolerance ?? (s.artifact === 'int8' ? 0.05 : 1e-3);
}

/** What is wrong with the cohort settings as a whole (the field schema checks each one), or undefined. */
export function cohortSettingsProblem(s: Pick<DistillSettings, 'cohorts' | 'perGroup'>): string | undefined {
  if (s.perGroup && s.cohorts?.length) return 'cohorts: give either cohorts or perGroup, not both';
  const names = new Set<string>();
  for (const c of s.cohorts ?? []) {
    if (names.has(c.name)) return `cohorts: cohort name "${c.name}" is used twice`;
    names.add(c.name);
  }
  return undefined;
}
