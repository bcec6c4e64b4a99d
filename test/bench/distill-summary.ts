import type { DistillReport } from '../../cloud/distill/pipeline.js';

/** Mean and sample standard deviation over seeds, with the per-seed values. */
export interface Spread {
  mean: number;
  std: number;
  perSeed: number[];
}

export function spread(values: number[]): Spread {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = values.length > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1)) : 0;
  return { mean, std, perSeed: values };
}

export interface StudentRow {
  student: string;
  params: number;
  seeds: number[];
  /** Test errors out of the test count (10,000 on MNIST). */
  labelsOnly: Spread;
  distilled: Spread;
  distilledInt8: Spread;
  testCount: number;
  /** The recipe the search chose, per seed (alpha 0 = label training won on validation). */
  chosen: { seed: number; temperature: number; alpha: number; learningRate: number }[];
  latency: { fp32P50Ms: number; int8P50Ms: number };
  bytes: { fp32: number; int8: number };
  training: { samplesPerSec: number; gflops: number; seconds: number };
}

export function summarize(student: string, reports: DistillReport[]): StudentRow {
  const mean = (f: (r: DistillReport) => number) => reports.reduce((a, r) => a + f(r), 0) / reports.length;
  return {
    student,
    params: reports[0]!.student.params,
    seeds: reports.map((r) => r.settings.seed),
    labelsOnly: spread(reports.map((r) => r.baseline!.test.errors)),
    distilled: spread(reports.map((r) => r.student.test.errors)),
    distilledInt8: spread(reports.map((r) => r.student.int8Test.errors)),
    testCount: reports[0]!.student.test.count,
    chosen: reports.map((r) => ({ seed: r.settings.seed, temperature: r.settings.temperature, alpha: r.settings.alpha, learningRate: r.student.training.learningRate })),
    latency: { fp32P50Ms: mean((r) => r.student.latency.fp32.p50Ms), int8P50Ms: mean((r) => r.student.latency.int8.p50Ms) },
    bytes: reports[0]!.student.bytes,
    training: { samplesPerSec: mean((r) => r.student.training.samplesPerSec), gflops: mean((r) => r.student.training.gflops), seconds: mean((r) => r.student.training.seconds) },
  };
}

/**
 * The issue's targets, evaluated on the rows (mean over seeds). A target whose students were not run
 * (budget) is `null`, "not measured", never false or true.
 */
export function targets(rows: StudentRow[], notMeasured: { student: string; seed: number }[] = []) {
  const conv = rows.filter((r) => /^(cnn|dscnn):/.test(r.student));
  const mlp64 = rows.find((r) => r.student === 'mlp:64');
  const cnnCandidates = conv.filter((r) => r.params <= 50_000).map((r) => ({
    student: r.student,
    params: r.params,
    testErrorPct: (100 * r.distilled.mean) / r.testCount,
    shippedP50Ms: Math.min(r.latency.fp32P50Ms, r.latency.int8P50Ms),
    met: (100 * r.distilled.mean) / r.testCount <= 0.9 && Math.min(r.latency.fp32P50Ms, r.latency.int8P50Ms) <= 0.1,
  }));
  return {
    distilledAtLeastLabelsOnly: Object.fromEntries(rows.map((r) => [r.student, r.distilled.mean <= r.labelsOnly.mean])),
    mlp64StrictlyBetter: mlp64 ? mlp64.distilled.mean < mlp64.labelsOnly.mean : null,
    cnnUnder50kAt0_9PctAnd0_1Ms: { met: cnnCandidates.length ? cnnCandidates.some((c) => c.met) : null, candidates: cnnCandidates },
    seedsPerStudent: Object.fromEntries(rows.map((r) => [r.student, r.seeds.length])),
    notMeasured: [...new Set(notMeasured.map((n) => n.student))].map((student) => ({ student, seeds: notMeasured.filter((n) => n.student === student).map((n) => n.seed) })),
  };
}

/** The one-line summary of a run: each student's errors (mean ± std over its seeds), the targets, what was not run. */
export function oneLine(rows: StudentRow[], t: ReturnType<typeof targets>, teacherErrors: number | undefined, seconds: number): string {
  const f = (s: Spread) => `${s.mean.toFixed(1)} ± ${s.std.toFixed(1)}`;
  const students = rows.map((r) => `${r.student} (${r.params} params, ${r.seeds.length} seeds) labels-only ${f(r.labelsOnly)} vs distilled ${f(r.distilled)} errors/${r.testCount}`).join('; ');
  const skipped = t.notMeasured.map((n) => `${n.student} seeds ${n.seeds.join(',')}`).join('; ');
  const cnn = t.cnnUnder50kAt0_9PctAnd0_1Ms.met;
  return (
    `teacher ${teacherErrors ?? '?'} errors; ${students}; targets: distilled ≥ labels-only ${JSON.stringify(t.distilledAtLeastLabelsOnly)}, mlp:64 strictly better ${t.mlp64StrictlyBetter ?? 'not measured'}, ` +
    `CNN ≤50k at ≤0.9% and ≤0.1 ms ${cnn ?? 'not measured'}${skipped ? `; not measured (budget): ${skipped}` : ''}; ${Math.round(seconds)} s`
  );
}
