import type { ImageSpec } from '../../shared/protocol/schemas.js';
import { argmaxRows, evaluateOnnx } from '../distill/evaluate.js';
import type { StoreRegistry } from '../registry/open.js';
import { readArtifact } from '../rounds/store.js';
import type { ArtifactBlobs } from '../artifacts/types.js';
import { teacherLabelRows } from '../rounds/transfer-set.js';
import type { Teacher } from '../teacher/ort-teacher.js';
import { baseLineOnly, cohortKey, type CohortOf } from './cohort.js';
import { shadowFigures, type ShadowFigures } from './stats.js';
import { devicesRunning, selectAuditRows, type NewShadowEval } from './store.js';

/**
 * Shadow evaluation in the cloud (issue 13 item 2): before anything ships, the candidate and the release
 * each device runs are scored on that device's most recent `audit` examples (unbiased, where hard examples
 * lean toward low confidence) against the teacher's labels, paired sample by sample (stats.ts). A device
 * with fewer than `minSamples` is judged by its cohort's pooled figures; a cohort with fewer too, not at all.
 */

export type JudgedBy = 'device' | 'cohort' | 'none';

export interface DeviceShadow extends ShadowFigures {
  deviceId: string;
  cohort: string | null;
  runningSeq: number | null;
  judgedBy: JudgedBy;
}

export interface CohortShadow extends ShadowFigures {
  cohort: string | null;
  devices: number;
}

export interface ShadowEvaluation {
  perDevice: number;
  minSamples: number;
  devices: DeviceShadow[];
  cohorts: CohortShadow[];
  /** Audit rows left out: input of the wrong size, or no source image for a teacher of its own form. */
  skipped: number;
  /** Running releases whose artifact could not be read (their devices have no paired figures). */
  missingRunning: number[];
}

export interface ShadowEvalInput {
  registry: StoreRegistry;
  dataDir: string;
  /** The artifact store when it is the registry (PostgreSQL); undefined = files under dataDir. */
  blobs?: ArtifactBlobs;
  model: string;
  teacher: Teacher;
  /** The artifact that would ship. */
  candidate: Uint8Array;
  inputSize: number;
  classes: number;
  studentImage?: ImageSpec;
  teacherImage?: ImageSpec;
  /** Most recent audit examples per device. */
  perDevice: number;
  minSamples: number;
  cohortOf?: CohortOf;
  /**
   * Only these devices (a cohort line: its members, each against the release it runs; the cohort's
   * pooled figures are the fallback below `minSamples`). Undefined: every device of the model.
   */
  devices?: readonly string[];
}

export async function shadowEvaluate(i: ShadowEvalInput): Promise<ShadowEvaluation> {
  const cohortOf = i.cohortOf ?? baseLineOnly;
  const rows = await selectAuditRows(i.registry, i.model, i.perDevice, i.devices);
  const l = await teacherLabelRows(i.registry, rows, i.teacher, { inputSize: i.inputSize, classes: i.classes, studentImage: i.studentImage, teacherImage: i.teacherImage });
  const n = l.kept.length;
  const features = new Float32Array(n * i.inputSize);
  l.inputs.forEach((x, k) => features.set(x, k * i.inputSize));
  const teacherLogits = new Float32Array(n * i.classes);
  l.logits.forEach((z, k) => teacherLogits.set(z, k * i.classes));
  const teacherPred = argmaxRows(teacherLogits, i.classes);
  const candPred = n ? (await evaluateOnnx(i.candidate, features, i.inputSize)).predictions : new Int32Array(0);

  // Sample indices per device (rows come grouped by device).
  const byDevice = new Map<string, number[]>();
  l.kept.forEach((r, k) => {
    const idx = byDevice.get(r.deviceId);
    if (idx) idx.push(k);
    else byDevice.set(r.deviceId, [k]);
  });
  const running = new Map((await devicesRunning(i.registry, i.model, i.devices)).map((d) => [d.deviceId, d.release]));
  for (const d of running.keys()) if (!byDevice.has(d)) byDevice.set(d, []);

  // Each running release scores the samples of the devices running it, once.
  const runPred = new Int32Array(n).fill(-1);
  const missingRunning: number[] = [];
  const bySeq = new Map<number, number[]>();
  for (const [d, idx] of byDevice) {
    const rel = running.get(d);
    if (!rel || !idx.length) continue;
    const all = bySeq.get(rel.seq) ?? [];
    all.push(...idx);
    bySeq.set(rel.seq, all);
  }
  for (const [seq, idx] of bySeq) {
    const rel = running.get(l.kept[idx[0]!]!.deviceId)!;
    let bytes: Uint8Array;
    try {
      bytes = await readArtifact(i.dataDir, rel.artifactPath, rel.sha256, i.blobs);
    } catch {
      missingRunning.push(seq);
      continue;
    }
    const x = new Float32Array(idx.length * i.inputSize);
    idx.forEach((k, j) => x.set(features.subarray(k * i.inputSize, (k + 1) * i.inputSize), j * i.inputSize));
    const p = (await evaluateOnnx(bytes, x, i.inputSize)).predictions;
    idx.forEach((k, j) => (runPred[k] = p[j]!));
  }

  const pick = (a: Int32Array, idx: readonly number[]): Int32Array => Int32Array.from(idx, (k) => a[k]!);
  const devicesOut: DeviceShadow[] = [];
  const cohortIdx = new Map<string | null, { paired: number[]; all: number[]; devices: number }>();
  for (const [deviceId, idx] of [...byDevice].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const cohort = cohortOf(deviceId);
    const paired = idx.length > 0 && idx.every((k) => runPred[k]! >= 0);
    const figures = shadowFigures(pick(candPred, idx), paired ? pick(runPred, idx) : null, pick(teacherPred, idx));
    devicesOut.push({ ...figures, deviceId, cohort, runningSeq: running.get(deviceId)?.seq ?? null, judgedBy: 'none' });
    const c = cohortIdx.get(cohort) ?? { paired: [], all: [], devices: 0 };
    c.devices++;
    c.all.push(...idx);
    if (paired) c.paired.push(...idx);
    cohortIdx.set(cohort, c);
  }
  const cohorts: CohortShadow[] = [...cohortIdx].map(([cohort, c]) => {
    // Pooled: each sample stays paired with its own device's running release.
    const idx = c.paired.length ? c.paired : c.all;
    return { ...shadowFigures(pick(candPred, idx), c.paired.length ? pick(runPred, idx) : null, pick(teacherPred, idx)), cohort, devices: c.devices };
  });
  const cohortJudges = new Set(cohorts.filter((c) => c.delta !== undefined && c.samples >= i.minSamples).map((c) => c.cohort));
  for (const d of devicesOut) {
    // A device running nothing of this model has no release to compare with: nothing to hold it on.
    if (d.runningSeq === null) continue;
    d.judgedBy = d.delta !== undefined && d.samples >= i.minSamples ? 'device' : cohortJudges.has(d.cohort) ? 'cohort' : 'none';
  }
  return { perDevice: i.perDevice, minSamples: i.minSamples, devices: devicesOut, cohorts, skipped: l.skipped + l.noSource, missingRunning };
}

/** The evaluation as registry rows (shadow_evals). */
export function shadowRows(e: ShadowEvaluation): NewShadowEval[] {
  const num = (x: number | undefined): number | null => (x === undefined || !Number.isFinite(x) ? null : x);
  const figures = (f: ShadowFigures) => ({
    samples: f.samples,
    candidateAccuracy: num(f.candidateAccuracy),
    runningAccuracy: num(f.runningAccuracy),
    agreement: num(f.agreement),
    delta: num(f.delta),
    deltaLow: num(f.deltaLow),
    deltaHigh: num(f.deltaHigh),
  });
  return [
    ...e.cohorts.map((c) => ({ scope: 'cohort' as const, deviceId: null, cohort: c.cohort, judgedBy: null, runningSeq: null, ...figures(c) })),
    ...e.devices.map((d) => ({ scope: 'device' as const, deviceId: d.deviceId, cohort: d.cohort, judgedBy: d.judgedBy, runningSeq: d.runningSeq, ...figures(d) })),
  ];
}

/** At most this many cohorts go into the signed manifest (5 numbers each); the rest are counted. */
export const MAX_MANIFEST_COHORTS = 32;

/**
 * Per-cohort aggregates for the release's signed metrics (manifest.metrics is a record of numbers, kept
 * small): `shadow.<cohort>.samples|accuracy|delta|deltaLow|deltaHigh`, cohort `base` for the base line.
 */
export function shadowManifestMetrics(e: ShadowEvaluation): Record<string, number> {
  const out: Record<string, number> = {};
  const shown = [...e.cohorts].sort((a, b) => b.samples - a.samples).slice(0, MAX_MANIFEST_COHORTS);
  for (const c of shown) {
    const k = `shadow.${cohortKey(c.cohort)}`;
    out[`${k}.samples`] = c.samples;
    for (const [name, v] of [['accuracy', c.candidateAccuracy], ['delta', c.delta], ['deltaLow', c.deltaLow], ['deltaHigh', c.deltaHigh]] as const) if (v !== undefined && Number.isFinite(v)) out[`${k}.${name}`] = v;
  }
  if (e.cohorts.length > shown.length) out['shadow.cohortsOmitted'] = e.cohorts.length - shown.length;
  return out;
}

/** The round record's summary (the per-device figures are in shadow_evals, keyed by the round). */
export function shadowSummary(e: ShadowEvaluation): Record<string, unknown> {
  const count = (j: JudgedBy) => e.devices.filter((d) => d.judgedBy === j).length;
  return {
    perDevice: e.perDevice,
    minSamples: e.minSamples,
    devices: e.devices.length,
    samples: e.devices.reduce((a, d) => a + d.samples, 0),
    judgedByDevice: count('device'),
    judgedByCohort: count('cohort'),
    noEvidence: count('none'),
    skipped: e.skipped,
    missingRunning: e.missingRunning,
  };
}
