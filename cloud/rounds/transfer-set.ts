import { desc, eq } from 'drizzle-orm';
import { type Dataset, type Scaling, exampleSize, loadDataset, splitHoldout, subset } from '../../shared/data/index.js';
import type { ImageSpec } from '../../shared/protocol/schemas.js';
import type { Registry } from '../registry/db.js';
import { examples } from '../registry/schema.js';
import { cachedTeacherLogits } from '../teacher/logit-cache.js';
import type { Teacher } from '../teacher/ort-teacher.js';
import { writeTransaction } from './releases.js';
import { RoundConfigError, type DistillSettings } from './settings.js';

/** Step 1 of a round: the base data with its fixed holdout, and the model's ingested hard examples. */

export interface BaseData {
  train: Dataset;
  holdout: Dataset & { labels: Int32Array };
}

/** Loads the base transfer data and the fixed gate holdout (a separate spec, or a seeded split of the base). */
/** `image`: the model's input.image, so `images:DIR` data is preprocessed exactly as its devices do it. */
export async function loadBaseData(s: DistillSettings, inputSize: number, scaling?: Scaling, image?: ImageSpec): Promise<BaseData> {
  const base = await loadDataset(s.baseData, { limit: s.baseLimit, shuffleSeed: s.seed, image });
  let train = base;
  let holdout: Dataset;
  if (s.holdout.startsWith('split:')) {
    const amount = Number(s.holdout.slice('split:'.length));
    if (!Number.isFinite(amount)) throw new RoundConfigError(`distillSettings.holdout: "${s.holdout}" is not split:FRACTION or split:COUNT`);
    ({ train, holdout } = splitHoldout(base, amount, s.holdoutSeed));
    if (s.holdoutLimit !== undefined && holdout.count > s.holdoutLimit) holdout = subset(holdout, Array.from({ length: s.holdoutLimit }, (_, i) => i));
  } else {
    holdout = await loadDataset(s.holdout, { limit: s.holdoutLimit, shuffleSeed: s.holdoutSeed, image });
  }
  if (!holdout.labels) throw new RoundConfigError(`distillSettings.holdout: ${s.holdout} has no labels; the gate needs a labelled holdout`);
  if (holdout.count === 0) throw new RoundConfigError(`distillSettings.holdout: ${s.holdout} is empty`);
  for (const [what, ds] of [['baseData', train], ['holdout', holdout]] as const) {
    if (exampleSize(ds) !== inputSize) throw new RoundConfigError(`distillSettings.${what}: examples have ${exampleSize(ds)} values, the model's input spec has ${inputSize}`);
    // Devices scale raw inputs with the manifest's input spec; training on differently scaled data would silently mismatch.
    if (scaling && (Math.abs(ds.scaling.scale - scaling.scale) > 1e-9 || Math.abs(ds.scaling.offset - scaling.offset) > 1e-9)) {
      throw new RoundConfigError(`distillSettings.${what}: data scaling ${JSON.stringify(ds.scaling)} differs from the model's input spec ${JSON.stringify(scaling)}`);
    }
  }
  return { train, holdout: holdout as BaseData['holdout'] };
}

/** Teacher logits of a dataset, cached on disk per (teacher, content). */
export async function baseTeacherLogits(teacher: Teacher, ds: Dataset, cacheDir: string): Promise<{ logits: Float32Array; classes: number; cached: boolean }> {
  return cachedTeacherLogits(teacher, ds.features, exampleSize(ds), { dir: cacheDir });
}

export interface HardExamples {
  /** Newest first. */
  ids: string[];
  count: number;
  features: Float32Array;
  /** −1 where the example has no label. */
  labels: Int32Array;
  teacherLogits: Float32Array;
  /** Rows skipped because their input does not fit the model (wrong length, non-finite values). */
  skipped: number;
  /** Rows whose teacher logits were computed in this round (missing, or from another teacher). */
  computed: number;
}

function blobToFloat32(buf: Buffer): Float32Array {
  // Copy: blobs from SQLite are not guaranteed to be 4-byte aligned.
  const out = new Float32Array(buf.byteLength >>> 2);
  new Uint8Array(out.buffer).set(buf.subarray(0, out.byteLength));
  return out;
}

const toBlob = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/**
 * The newest `window` ingested examples of `model`, with teacher logits. Logits are stored on the
 * example row (teacher_logits + teacher_id) and reused by every later round; only rows without them,
 * or labelled by a different teacher (teacher id changed), are sent through the teacher.
 */
export async function loadHardExamples(
  registry: Registry,
  model: string,
  teacher: Teacher,
  { inputSize, classes, window }: { inputSize: number; classes: number; window: number },
): Promise<HardExamples> {
  const rows = registry.db
    .select({ id: examples.id, input: examples.input, label: examples.label, teacherLogits: examples.teacherLogits, teacherId: examples.teacherId })
    .from(examples)
    .where(eq(examples.model, model))
    .orderBy(desc(examples.ingestedAt), desc(examples.id))
    .limit(window)
    .all();
  const kept: typeof rows = [];
  const inputs: Float32Array[] = [];
  let skipped = 0;
  for (const r of rows) {
    const x = r.input.byteLength === inputSize * 4 ? blobToFloat32(r.input) : undefined;
    if (!x || !x.every(Number.isFinite)) {
      skipped++;
      continue;
    }
    kept.push(r);
    inputs.push(x);
  }
  const count = kept.length;
  const features = new Float32Array(count * inputSize);
  const labels = new Int32Array(count).fill(-1);
  const teacherLogits = new Float32Array(count * classes);
  const missing: number[] = [];
  kept.forEach((r, i) => {
    features.set(inputs[i]!, i * inputSize);
    if (r.label != null && r.label >= 0 && r.label < classes) labels[i] = r.label;
    const cached = r.teacherId === teacher.id && r.teacherLogits?.byteLength === classes * 4 ? blobToFloat32(r.teacherLogits) : undefined;
    if (cached) teacherLogits.set(cached, i * classes);
    else missing.push(i);
  });
  if (missing.length) {
    const x = new Float32Array(missing.length * inputSize);
    missing.forEach((i, k) => x.set(features.subarray(i * inputSize, (i + 1) * inputSize), k * inputSize));
    const out = await teacher.logits(x, inputSize);
    if (out.classes !== classes) throw new RoundConfigError(`teacher outputs ${out.classes} classes, the model has ${classes} labels`);
    writeTransaction(registry, () => {
      missing.forEach((i, k) => {
        const z = out.logits.slice(k * classes, (k + 1) * classes);
        teacherLogits.set(z, i * classes);
        registry.db.update(examples).set({ teacherLogits: toBlob(z), teacherId: teacher.id }).where(eq(examples.id, kept[i]!.id)).run();
      });
    });
  }
  return { ids: kept.map((r) => r.id), count, features, labels, teacherLogits, skipped, computed: missing.length };
}

/** The first (newest) `n` hard examples. */
export function newestHard(h: HardExamples, n: number, inputSize: number, classes: number): { features: Float32Array; teacherLogits: Float32Array; count: number } {
  const k = Math.min(n, h.count);
  return { features: h.features.subarray(0, k * inputSize), teacherLogits: h.teacherLogits.subarray(0, k * classes), count: k };
}
