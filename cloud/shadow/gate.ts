import type { ShadowEvalRow } from '../registry/schema.js';

/**
 * The agreement gate of a rollout (issue 13 item 3): a device is held back, with the figures, when the
 * paired 95% upper bound of (candidate − running) accuracy on its own recent audit traffic is below
 * −margin: the candidate is worse for that device's traffic with 95% confidence, by more than the margin.
 * A device with too few samples is judged by its cohort's pooled figures (the round decided which, see
 * evaluate.ts `judgedBy`); with neither, or no evaluation at all (an uploaded or re-issued release), the
 * gate is skipped and the device has "no evidence".
 */

export type Evidence = 'device' | 'cohort' | 'none';

export interface ShadowVerdict {
  hold: boolean;
  evidence: Evidence;
  /** One line for the rollout view and the held_back reason. */
  reason: string;
  /** The figures that decided (the device's or its cohort's row). */
  figures?: ShadowEvalRow;
}

/** A release's shadow rows, by device and by cohort. */
export interface ShadowIndex {
  devices: Map<string, ShadowEvalRow>;
  cohorts: Map<string | null, ShadowEvalRow>;
  empty: boolean;
}

export function shadowIndex(rows: readonly ShadowEvalRow[]): ShadowIndex {
  const devices = new Map<string, ShadowEvalRow>();
  const cohorts = new Map<string | null, ShadowEvalRow>();
  for (const r of rows) {
    if (r.scope === 'device' && r.deviceId !== null) devices.set(r.deviceId, r);
    else if (r.scope === 'cohort') cohorts.set(r.cohort, r);
  }
  return { devices, cohorts, empty: rows.length === 0 };
}

const pts = (x: number | null): string => (x === null ? '?' : `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)}`);
const pct = (x: number | null): string => (x === null ? '?' : `${(x * 100).toFixed(1)}%`);

/** "−8.0 pts (95% CI −14.6 … −1.4), candidate 88.0% vs running #1 96.0%, agreement 90.0%, 100 audit samples of device d". */
export function describeFigures(f: ShadowEvalRow, whose: string): string {
  const running = f.runningSeq !== null ? `running #${f.runningSeq}` : 'running';
  if (fromShadowRun(f)) return `${pts(f.delta)} pts (95% CI ${pts(f.deltaLow)} … ${pts(f.deltaHigh)}) vs ${running}, agreement ${pct(f.agreement)}, ${f.samples} requests shadowed on ${whose}, disagreements labelled by the teacher (${f.roundId})`;
  return `${pts(f.delta)} pts (95% CI ${pts(f.deltaLow)} … ${pts(f.deltaHigh)}), candidate ${pct(f.candidateAccuracy)} vs ${running} ${pct(f.runningAccuracy)}, agreement ${pct(f.agreement)}, ${f.samples} audit samples of ${whose}`;
}

/** Figures of an on-device shadow run's switch (teacher-gate.ts), not of a round's audit samples. */
export const fromShadowRun = (f: Pick<ShadowEvalRow, 'roundId'>): boolean => f.roundId.startsWith('shadow:');

/**
 * The verdict for one device. `runningSeqNow`: the release the device runs now; figures measured
 * against another release say nothing about this switch (no evidence). Leave it undefined to describe
 * the evaluation as it was (the rollout view of devices that already moved on).
 */
export function shadowVerdict(index: ShadowIndex, deviceId: string, margin: number, runningSeqNow?: number | null): ShadowVerdict {
  if (index.empty) return { hold: false, evidence: 'none', reason: 'no evidence: the release has no shadow evaluation (uploaded, re-issued, or nothing to evaluate)' };
  const d = index.devices.get(deviceId);
  if (!d) return { hold: false, evidence: 'none', reason: 'no evidence: the round did not evaluate this device (no audit samples, no running release)' };
  if (d.judgedBy !== 'device' && d.judgedBy !== 'cohort') {
    if (fromShadowRun(d)) return { hold: false, evidence: 'none', reason: `no evidence: ${d.samples} requests shadowed on the device, too few (or too few of its disagreements labelled by the teacher) (${d.roundId})`, figures: d };
    return { hold: false, evidence: 'none', reason: `no evidence: ${d.samples} audit samples on the device and too few in its cohort${d.runningSeq === null ? ' (or no running release to compare)' : ''}`, figures: d };
  }
  if (runningSeqNow !== undefined && d.runningSeq !== runningSeqNow) {
    return { hold: false, evidence: 'none', reason: `no evidence: evaluated against release #${d.runningSeq ?? '-'}, the device now runs #${runningSeqNow ?? '-'}`, figures: d };
  }
  const f = d.judgedBy === 'device' ? d : index.cohorts.get(d.cohort);
  if (!f || f.deltaHigh === null) return { hold: false, evidence: 'none', reason: 'no evidence: no paired figures', figures: d };
  const whose = d.judgedBy === 'device' ? `device ${deviceId}` : `cohort ${d.cohort ?? 'base'} (device has ${d.samples})`;
  const text = describeFigures(f, whose);
  // The small epsilon keeps a float rounding of the bound exactly at −margin from holding.
  if (f.deltaHigh + 1e-12 < -margin) return { hold: true, evidence: d.judgedBy, reason: `held back: upper bound ${pts(f.deltaHigh)} pts < −${(margin * 100).toFixed(1)}: ${text}`, figures: f };
  return { hold: false, evidence: d.judgedBy, reason: `passed: upper bound ${pts(f.deltaHigh)} pts ≥ −${(margin * 100).toFixed(1)}: ${text}`, figures: f };
}
