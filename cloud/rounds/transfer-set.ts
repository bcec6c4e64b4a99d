import { eq } from 'drizzle-orm';
import { type Dataset, type Scaling, exampleSize, loadDataset, splitHoldout, subset } from '../../shared/data/index.js';
import { ImageError, imageSize, preprocessImage } from '../../shared/image/preprocess.js';
import type { ImageSpec } from '../../shared/protocol/schemas.js';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';
import { cachedTeacherLogits } from '../teacher/logit-cache.js';
import type { Teacher } from '../teacher/ort-teacher.js';
import { selectHardRows, shareIndices, type ShareRow } from './device-share.js';
import { contradicts, DEFAULT_QUARANTINE, recordLabelReview, type QuarantineThresholds } from './label-review.js';
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
  /** The device of each example (same order as ids). */
  deviceIds: string[];
  count: number;
  features: Float32Array;
  /** −1 where the example has no label. */
  labels: Int32Array;
  teacherLogits: Float32Array;
  /** Rows skipped because their input does not fit the model (wrong length, non-finite values). */
  skipped: number;
  /** Rows whose teacher logits were computed in this round (missing, or from another teacher). */
  computed: number;
  /** Feedback labels put in quarantine in this round (the teacher contradicts them); left out of the set. */
  quarantined: number;
  /**
   * With a teacher of its own image form: rows left out because the teacher could not see them (no
   * source image, or one that does not decode). Teacher inputs made from source images are `fromSource`.
   */
  noSource: number;
  fromSource: number;
}

/** Whether two image forms preprocess an image identically (then the student's input is the teacher's too). */
export function sameImageSpec(a: ImageSpec | undefined, b: ImageSpec | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** Bound on the pixels of a stored source image decoded for the teacher (the device re-encoded it under its own). */
const MAX_SOURCE_PIXELS = 12_000_000;

function blobToFloat32(buf: Buffer): Float32Array {
  // Copy: blobs from SQLite are not guaranteed to be 4-byte aligned.
  const out = new Float32Array(buf.byteLength >>> 2);
  new Uint8Array(out.buffer).set(buf.subarray(0, out.byteLength));
  return out;
}

const toBlob = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/**
 * The newest `window` ingested examples of `model`, at most `maxDeviceShare` of the window per device
 * (water-filled, device-share.ts), with teacher logits. Logits are stored on the example row
 * (teacher_logits + teacher_id) and reused by every later round; only rows without them, or labelled
 * by a different teacher (teacher id changed), are sent through the teacher. A device label counts only
 * on a `feedback` row; one the teacher contradicts with high confidence goes to quarantine and leaves
 * the set (label-review.ts).
 */
export async function loadHardExamples(
  registry: StoreRegistry,
  model: string,
  teacher: Teacher,
  {
    inputSize,
    classes,
    window,
    maxDeviceShare = 1,
    quarantine = DEFAULT_QUARANTINE,
    studentImage,
    teacherImage,
    devices,
  }: {
    inputSize: number;
    classes: number;
    window: number;
    maxDeviceShare?: number;
    quarantine?: QuarantineThresholds;
    /** The model's input.image (how devices made the stored inputs). */
    studentImage?: ImageSpec;
    /** The teacher's own image form, when it differs: its inputs are made from the source images (issue 11). */
    teacherImage?: ImageSpec;
    /** Only these devices' examples (a cohort's members, issue 13); the window and share apply within them. */
    devices?: readonly string[];
  },
): Promise<HardExamples> {
  const rows = await selectHardRows(registry, model, window, maxDeviceShare, devices);
  const labelled = await teacherLabelRows(registry, rows, teacher, { inputSize, classes, studentImage, teacherImage });
  let { kept, inputs, logits } = labelled;
  const { skipped, noSource, fromSource, computed } = labelled;
  // Review the feedback labels not reviewed yet; the quarantined leave the set.
  const ok: string[] = [];
  const held = new Set<number>();
  kept.forEach((r, i) => {
    if (r.reason !== 'feedback' || r.label == null || r.labelState !== null) return;
    if (r.label >= 0 && r.label < classes && contradicts(logits[i]!, r.label, quarantine)) held.add(i);
    else ok.push(r.id);
  });
  await recordLabelReview(registry, ok, [...held].map((i) => kept[i]!.id));
  if (held.size) {
    const keep = (_: unknown, i: number): boolean => !held.has(i);
    kept = kept.filter(keep);
    inputs = inputs.filter(keep);
    logits = logits.filter(keep);
  }
  const count = kept.length;
  const features = new Float32Array(count * inputSize);
  const labels = new Int32Array(count).fill(-1);
  const teacherLogits = new Float32Array(count * classes);
  kept.forEach((r, i) => {
    features.set(inputs[i]!, i * inputSize);
    teacherLogits.set(logits[i]!, i * classes);
    // Older rows may carry a label on a non-feedback reason (before issue 10): not trusted.
    if (r.reason === 'feedback' && r.label != null && r.label >= 0 && r.label < classes) labels[i] = r.label;
  });
  return { ids: kept.map((r) => r.id), deviceIds: kept.map((r) => r.deviceId), count, features, labels, teacherLogits, skipped, computed, quarantined: held.size, noSource, fromSource };
}

/** Rows with their inputs and teacher logits (teacherLabelRows). */
export interface TeacherLabelled {
  kept: ShareRow[];
  inputs: Float32Array[];
  logits: Float32Array[];
  skipped: number;
  computed: number;
  noSource: number;
  fromSource: number;
}

/**
 * Example rows with the teacher's logits: stored ones are reused; rows without them (or from another
 * teacher) go through the teacher once and the logits are stored on the row. Rows whose input does not
 * fit are skipped; with a teacher of its own image form, rows without a usable source image too.
 */
export async function teacherLabelRows(
  registry: StoreRegistry,
  rows: readonly ShareRow[],
  teacher: Teacher,
  { inputSize, classes, studentImage, teacherImage }: { inputSize: number; classes: number; studentImage?: ImageSpec; teacherImage?: ImageSpec },
): Promise<TeacherLabelled> {
  const ownForm = teacherImage !== undefined && !sameImageSpec(teacherImage, studentImage);
  const teacherSize = ownForm ? imageSize(teacherImage) : inputSize;
  const kept: ShareRow[] = [];
  const inputs: Float32Array[] = [];
  /** The teacher's input of each kept row (the stored input unless the teacher has its own form). */
  const teacherInputs: (Float32Array | undefined)[] = [];
  let skipped = 0;
  let noSource = 0;
  let fromSource = 0;
  for (const r of rows) {
    const x = r.input.byteLength === inputSize * 4 ? blobToFloat32(r.input) : undefined;
    if (!x || !x.every(Number.isFinite)) {
      skipped++;
      continue;
    }
    let tx: Float32Array | undefined = x;
    if (ownForm) {
      const cached = r.teacherId === teacher.id && r.teacherLogits?.byteLength === classes * 4;
      tx = cached ? undefined : await teacherInputOf(r.sourceImage, teacherImage);
      if (!cached && !tx) {
        noSource++;
        continue;
      }
      if (tx) fromSource++;
    }
    kept.push(r);
    inputs.push(x);
    teacherInputs.push(tx);
  }
  const logits: (Float32Array | undefined)[] = kept.map((r) => (r.teacherId === teacher.id && r.teacherLogits?.byteLength === classes * 4 ? blobToFloat32(r.teacherLogits) : undefined));
  const missing = logits.flatMap((z, i) => (z ? [] : [i]));
  if (missing.length) {
    const x = new Float32Array(missing.length * teacherSize);
    missing.forEach((i, k) => x.set(teacherInputs[i]!, k * teacherSize));
    const out = await teacher.logits(x, teacherSize);
    if (out.classes !== classes) throw new RoundConfigError(`teacher outputs ${out.classes} classes, the model has ${classes} labels`);
    missing.forEach((i, k) => (logits[i] = out.logits.slice(k * classes, (k + 1) * classes)));
    await registry.tx(function* (tx, { examples }) {
      for (const i of missing) yield* q(tx.update(examples).set({ teacherLogits: toBlob(logits[i]!), teacherId: teacher.id }).where(eq(examples.id, kept[i]!.id)));
    });
  }
  return { kept, inputs, logits: logits as Float32Array[], skipped, computed: missing.length, noSource, fromSource };
}

/** The teacher's own preprocessing of a stored source image; undefined when there is none or it does not decode. */
async function teacherInputOf(source: Buffer | null, spec: ImageSpec): Promise<Float32Array | undefined> {
  if (!source) return undefined;
  try {
    return await preprocessImage(source, spec, { maxPixels: MAX_SOURCE_PIXELS });
  } catch (err) {
    if (err instanceof ImageError) return undefined;
    throw err;
  }
}

/**
 * The "recent traffic" evaluation set: the newest `n` hard examples, at most `maxDeviceShare` of `n`
 * per device (water-filled), so one device's traffic cannot make up the whole evaluation.
 */
export function newestHard(h: HardExamples, n: number, inputSize: number, classes: number, maxDeviceShare = 1): { features: Float32Array; teacherLogits: Float32Array; count: number } {
  const idx = shareIndices(h.deviceIds, Math.min(n, h.count), maxDeviceShare);
  const features = new Float32Array(idx.length * inputSize);
  const teacherLogits = new Float32Array(idx.length * classes);
  idx.forEach((i, k) => {
    features.set(h.features.subarray(i * inputSize, (i + 1) * inputSize), k * inputSize);
    teacherLogits.set(h.teacherLogits.subarray(i * classes, (i + 1) * classes), k * classes);
  });
  return { features, teacherLogits, count: idx.length };
}
