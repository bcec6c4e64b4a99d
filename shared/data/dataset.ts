import { UsageError } from '../cli/errors.js';
import type { ImageSpec } from '../protocol/schemas.js';
import { mulberry32, permutation as randomPermutation } from '../util/random.js';

/** Model input = raw * scale + offset. Recorded so an edge device can reproduce it from raw sensor values. */
export interface Scaling {
  scale: number;
  offset: number;
}

export interface Dataset {
  /** The spec (or description) the examples came from, e.g. `mnist:train`. */
  source: string;
  count: number;
  /** Per-example shape, e.g. [784] or [28, 28, 1]. */
  shape: number[];
  /** `count * exampleSize` values, row-major, already scaled. */
  features: Float32Array;
  labels?: Int32Array;
  labelNames?: string[];
  numClasses?: number;
  scaling: Scaling;
}

/** Options shared by every loader. */
export interface LoadOptions {
  /** Keep only the first N examples (after shuffling, when a seed is given). */
  limit?: number;
  /** Deterministically shuffle the examples with this seed (an unsigned 32-bit integer). */
  shuffleSeed?: number;
  /** IDX images: `flat` gives [rows*cols] (MLP students), `hwc` gives [rows, cols, 1] (conv students). */
  imageShape?: 'flat' | 'hwc';
  /** Override the loader's default scaling (IDX: 1/255; CSV: identity). */
  scaling?: Scaling;
  /** `images:DIR`: preprocess every image to this input.image (size, channels, layout, mean/std). */
  image?: ImageSpec;
}

/**
 * A malformed or missing dataset. Extends UsageError so the CLI reports it on one line and exits 2:
 * bad input data is the user's to fix, not a crash.
 */
export class DatasetError extends UsageError {
  /** The offending file, when there is one. */
  readonly file: string | undefined;
  constructor(message: string, file?: string) {
    super(file === undefined ? message : `${file}: ${message}`);
    this.file = file;
    // UsageError pins `name` to a literal type; set ours without fighting the type system.
    Object.defineProperty(this, 'name', { value: 'DatasetError' });
  }
}

export const IDENTITY_SCALING: Readonly<Scaling> = Object.freeze({ scale: 1, offset: 0 });

export function exampleSize(ds: Pick<Dataset, 'shape'>): number {
  return ds.shape.reduce((a, b) => a * b, 1);
}

export { mulberry32 };

/** A seeded Fisher–Yates permutation of 0..n-1. */
export function permutation(n: number, seed: number): Uint32Array {
  checkSeed(seed);
  return randomPermutation(n, mulberry32(seed));
}

function checkSeed(seed: number): void {
  if (!Number.isInteger(seed)) throw new DatasetError(`shuffle seed must be an integer, got ${seed}`);
}

/**
 * Which examples `limit`/`shuffleSeed` keep, in order; null means "all, in file order", which lets
 * loaders skip a copy. Loaders call this before converting so a limit avoids converting unused data.
 */
export function selectIndices(count: number, options: Pick<LoadOptions, 'limit' | 'shuffleSeed'>): Uint32Array | null {
  const { limit, shuffleSeed } = options;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
    throw new DatasetError(`limit must be a non-negative integer, got ${limit}`);
  }
  const n = limit === undefined ? count : Math.min(limit, count);
  if (shuffleSeed === undefined) {
    if (n === count) return null;
    const idx = new Uint32Array(n);
    for (let i = 0; i < n; i++) idx[i] = i;
    return idx;
  }
  const perm = permutation(count, shuffleSeed);
  return n === count ? perm : perm.slice(0, n);
}

/** Applies `limit`/`shuffleSeed` to an already loaded dataset. */
export function applyLoadOptions(ds: Dataset, options: LoadOptions): Dataset {
  const idx = selectIndices(ds.count, options);
  return idx === null ? ds : subset(ds, idx);
}

/** The examples at `indices` (in that order, repeats allowed), copied into a new dataset. */
export function subset(ds: Dataset, indices: ArrayLike<number>): Dataset {
  const size = exampleSize(ds);
  const n = indices.length;
  const features = new Float32Array(n * size);
  const labels = ds.labels ? new Int32Array(n) : undefined;
  for (let k = 0; k < n; k++) {
    const i = indices[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= ds.count) {
      throw new RangeError(`subset: index ${i} out of range for ${ds.count} examples`);
    }
    features.set(ds.features.subarray(i * size, (i + 1) * size), k * size);
    if (labels) labels[k] = ds.labels![i]!;
  }
  return withData(ds, n, features, labels);
}

/** A seeded shuffle of the whole dataset. */
export function shuffle(ds: Dataset, seed: number): Dataset {
  return subset(ds, permutation(ds.count, seed));
}

/**
 * Splits off a random holdout set. `amount` in (0, 1) is a fraction of the examples (rounded);
 * an integer >= 0 is an exact count (so 1 means one example, not everything).
 * Both parts keep the original example order, so the split is reproducible from (dataset, amount, seed).
 */
export function splitHoldout(ds: Dataset, amount: number, seed: number): { train: Dataset; holdout: Dataset } {
  let k: number;
  if (Number.isInteger(amount) && amount >= 0) k = amount;
  else if (amount > 0 && amount < 1) k = Math.round(ds.count * amount);
  else throw new DatasetError(`holdout must be a fraction in (0, 1) or a non-negative integer count, got ${amount}`);
  if (k > ds.count) throw new DatasetError(`holdout of ${k} examples exceeds the ${ds.count} available in ${ds.source}`);
  const perm = permutation(ds.count, seed);
  const holdoutIdx = perm.slice(0, k).sort();
  const trainIdx = perm.slice(k).sort();
  return { train: subset(ds, trainIdx), holdout: subset(ds, holdoutIdx) };
}

/** Appends b's examples to a's. Shapes, scaling and labelling must agree: mixing them would silently corrupt training. */
export function concatDatasets(a: Dataset, b: Dataset): Dataset {
  const what = `cannot concatenate ${a.source} and ${b.source}`;
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new DatasetError(`${what}: shapes [${a.shape}] and [${b.shape}] differ`);
  }
  if (a.scaling.scale !== b.scaling.scale || a.scaling.offset !== b.scaling.offset) {
    throw new DatasetError(`${what}: scalings differ`);
  }
  if (!a.labels !== !b.labels) throw new DatasetError(`${what}: only one of them has labels`);
  if (a.labelNames && b.labelNames && a.labelNames.join('\n') !== b.labelNames.join('\n')) {
    throw new DatasetError(`${what}: label names differ`);
  }
  const features = new Float32Array(a.features.length + b.features.length);
  features.set(a.features, 0);
  features.set(b.features, a.features.length);
  let labels: Int32Array | undefined;
  if (a.labels && b.labels) {
    labels = new Int32Array(a.count + b.count);
    labels.set(a.labels, 0);
    labels.set(b.labels, a.count);
  }
  const out: Dataset = {
    source: `${a.source}+${b.source}`,
    count: a.count + b.count,
    shape: [...a.shape],
    features,
    scaling: { ...a.scaling },
  };
  if (labels) out.labels = labels;
  const labelNames = a.labelNames ?? b.labelNames;
  if (labels && labelNames) out.labelNames = [...labelNames];
  if (labels && (a.numClasses !== undefined || b.numClasses !== undefined)) {
    out.numClasses = Math.max(a.numClasses ?? 0, b.numClasses ?? 0);
  }
  return out;
}

/** Drops labels (for transfer sets, where the teacher supplies the targets). Shares the feature buffer. */
export function withoutLabels(ds: Dataset): Dataset {
  return { source: ds.source, count: ds.count, shape: [...ds.shape], features: ds.features, scaling: { ...ds.scaling } };
}

/** Smallest class count covering every label: max + 1 (0 for no examples). */
export function inferNumClasses(labels: Int32Array): number {
  let max = -1;
  for (let i = 0; i < labels.length; i++) if (labels[i]! > max) max = labels[i]!;
  return max + 1;
}

function withData(ds: Dataset, count: number, features: Float32Array, labels: Int32Array | undefined): Dataset {
  const out: Dataset = { source: ds.source, count, shape: [...ds.shape], features, scaling: { ...ds.scaling } };
  if (labels) out.labels = labels;
  if (ds.labelNames) out.labelNames = [...ds.labelNames];
  if (ds.numClasses !== undefined) out.numClasses = ds.numClasses;
  return out;
}
