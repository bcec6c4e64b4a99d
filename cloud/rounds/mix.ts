import type { TrainSet } from '../distill/trainer.js';

/**
 * How device hard examples are mixed into the transfer set.
 *
 * Hard examples are few (tens to thousands) next to the base set (tens of thousands), and they are
 * the only signal about how device traffic has shifted. Appended once, they would be a rounding error
 * in the loss. So each one is repeated `r` times, with
 *
 *     r = clamp(ceil(share · B / ((1 − share) · H)), 1, maxRepeat)
 *
 * (B base examples, H hard examples), which makes them at least `share` of every epoch unless the cap
 * bites; the cap keeps a handful of examples from being memorised hundreds of times. Every hard
 * example appears at least once, even with share 0. The trainer shuffles each epoch, so the repeats
 * are spread over it. Unlabelled hard examples carry label −1: only the soft (teacher) term of the
 * loss sees them.
 */
export interface MixPart {
  features: Float32Array;
  count: number;
  /** −1 = unlabelled. Absent = all unlabelled. */
  labels?: Int32Array;
  teacherLogits: Float32Array;
}

export interface MixOptions {
  inputSize: number;
  classes: number;
  /** Target minimum share of hard examples per epoch, in [0, 0.9]. */
  share: number;
  maxRepeat: number;
}

export interface MixStats {
  baseCount: number;
  hardCount: number;
  /** Times each hard example appears per epoch. */
  hardRepeat: number;
  /** Share of hard examples in an epoch actually achieved. */
  hardShare: number;
  transferCount: number;
}

export function hardRepeatFactor(baseCount: number, hardCount: number, share: number, maxRepeat: number): number {
  if (hardCount === 0) return 0;
  if (share <= 0 || baseCount === 0) return 1;
  const want = Math.ceil((share * baseCount) / ((1 - share) * hardCount));
  return Math.max(1, Math.min(maxRepeat, want));
}

export function mixTransferSet(base: MixPart, hard: MixPart, o: MixOptions): { set: TrainSet; stats: MixStats } {
  const { inputSize, classes } = o;
  for (const [what, p] of [['base', base], ['hard', hard]] as const) {
    if (p.features.length !== p.count * inputSize) throw new Error(`${what} features: ${p.features.length} values for ${p.count} examples of ${inputSize}`);
    if (p.teacherLogits.length !== p.count * classes) throw new Error(`${what} teacher logits: ${p.teacherLogits.length} values for ${p.count} examples of ${classes} classes`);
    if (p.labels && p.labels.length !== p.count) throw new Error(`${what} labels: ${p.labels.length} for ${p.count} examples`);
  }
  const r = hardRepeatFactor(base.count, hard.count, o.share, o.maxRepeat);
  const count = base.count + r * hard.count;
  const features = new Float32Array(count * inputSize);
  const teacherLogits = new Float32Array(count * classes);
  const anyLabels = !!base.labels || (!!hard.labels && hard.labels.some((y) => y >= 0));
  const labels = anyLabels ? new Int32Array(count).fill(-1) : undefined;

  features.set(base.features, 0);
  teacherLogits.set(base.teacherLogits, 0);
  if (labels && base.labels) labels.set(base.labels, 0);
  for (let k = 0; k < r; k++) {
    const at = base.count + k * hard.count;
    features.set(hard.features, at * inputSize);
    teacherLogits.set(hard.teacherLogits, at * classes);
    if (labels && hard.labels) labels.set(hard.labels, at);
  }
  const set: TrainSet = { features, inputSize, count, classes, teacherLogits, ...(labels ? { labels } : {}) };
  return {
    set,
    stats: { baseCount: base.count, hardCount: hard.count, hardRepeat: r, hardShare: count ? (r * hard.count) / count : 0, transferCount: count },
  };
}
