/**
 * Paired comparison of two models on the same samples against the teacher's labels (issue 13 item 2).
 *
 * For sample i, c_i = 1 when the candidate's top-1 class is the teacher's, r_i the same for the running
 * release, and d_i = c_i − r_i ∈ {−1, 0, 1}. With b = #(c=1, r=0) and w = #(c=0, r=1) out of n pairs:
 *
 *   Δ = (b − w) / n                               (candidate − running accuracy)
 *   SE = √(b + w − (b − w)² / n) / n              (standard error of the paired mean, the Wald form
 *                                                  for paired proportions: Var(d) = (b+w)/n − Δ²)
 *   95% interval = Δ ± 1.96 · SE, clipped to [−1, 1]
 *
 * Paired on the same samples, the interval is much narrower than that of two independent accuracies: the
 * samples both models get right (or both wrong) add no variance. With b = w = 0 the two models agree
 * on correctness everywhere and the interval is [0, 0].
 */

/** z for a two-sided 95% interval. */
export const Z95 = 1.959963984540054;

export interface PairedInterval {
  delta: number;
  low: number;
  high: number;
}

/** The paired 95% interval of Δ from the discordant counts (see the file comment). n = 0 gives NaNs. */
export function pairedInterval(better: number, worse: number, n: number, z = Z95): PairedInterval {
  if (!(n > 0)) return { delta: NaN, low: NaN, high: NaN };
  const delta = (better - worse) / n;
  const se = Math.sqrt(Math.max(0, better + worse - (better - worse) ** 2 / n)) / n;
  return { delta, low: Math.max(-1, delta - z * se), high: Math.min(1, delta + z * se) };
}

export interface ShadowFigures {
  samples: number;
  /** Share of samples where the candidate's top-1 class is the teacher's. */
  candidateAccuracy: number;
  /** The same for the running release; absent without one. */
  runningAccuracy?: number;
  /** Share of samples where the candidate and the running release give the same class. */
  agreement?: number;
  /** Discordant pairs: candidate right and running wrong (better), the reverse (worse). */
  better?: number;
  worse?: number;
  delta?: number;
  deltaLow?: number;
  deltaHigh?: number;
}

/**
 * Figures of a candidate (and, when given, the running release) on n samples labelled by the teacher.
 * `running` null: only the candidate's accuracy (the device runs nothing comparable).
 */
export function shadowFigures(candidate: ArrayLike<number>, running: ArrayLike<number> | null, teacher: ArrayLike<number>): ShadowFigures {
  const n = teacher.length;
  if (candidate.length !== n || (running && running.length !== n)) throw new RangeError(`shadowFigures: ${candidate.length} candidate / ${running?.length ?? '-'} running predictions for ${n} teacher labels`);
  let cRight = 0;
  let rRight = 0;
  let same = 0;
  let better = 0;
  let worse = 0;
  for (let i = 0; i < n; i++) {
    const c = candidate[i] === teacher[i];
    if (c) cRight++;
    if (!running) continue;
    const r = running[i] === teacher[i];
    if (r) rRight++;
    if (candidate[i] === running[i]) same++;
    if (c && !r) better++;
    else if (r && !c) worse++;
  }
  const out: ShadowFigures = { samples: n, candidateAccuracy: n ? cRight / n : NaN };
  if (!running || n === 0) return out;
  const ci = pairedInterval(better, worse, n);
  return { ...out, runningAccuracy: rRight / n, agreement: same / n, better, worse, delta: ci.delta, deltaLow: ci.low, deltaHigh: ci.high };
}

/**
 * The paired interval of an on-device shadow run, from the disagreements the teacher labelled
 * (teacher-gate.ts). On a disagreement the two models give different classes, so at most one is the
 * teacher's: d_i ∈ {−1, 0, 1} as above; on an agreement d_i = 0 (both right or both wrong, a tie). A
 * paired interval over the disagreements alone would have b + w ≈ n and say nothing about how often the
 * models disagree at all, so Δ is over every shadowed request, `requests` N from the device's telemetry,
 * of which `disagreements` D:
 *
 * - every disagreement labelled (m ≥ D): exactly {@link pairedInterval}(b, w, N), the agreements as ties;
 * - a sample of m < D labelled (the device sends disagreements within its example caps): the disagreement
 *   rate D/N is known exactly, the mean of d over disagreements is estimated from the m, so
 *   Δ = (D/N) · (b − w)/m with interval (D/N) · pairedInterval(b, w, m).
 *
 * No disagreement: Δ = 0 with interval [0, 0]. N = 0: NaNs.
 */
export function shadowRunInterval(requests: number, disagreements: number, better: number, worse: number, labelled: number, z = Z95): PairedInterval {
  const n = Math.max(requests, labelled);
  if (!(n > 0)) return { delta: NaN, low: NaN, high: NaN };
  if (disagreements <= 0 && labelled === 0) return { delta: 0, low: 0, high: 0 };
  if (labelled >= disagreements) return pairedInterval(better, worse, n, z);
  const rate = disagreements / n;
  const i = pairedInterval(better, worse, labelled, z);
  return { delta: rate * i.delta, low: rate * i.low, high: rate * i.high };
}
