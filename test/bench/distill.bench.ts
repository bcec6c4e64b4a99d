/**
 * Distillation bench (issue 11). `npm run build && npm run bench:distill`.
 *
 * 1. One fixed bench teacher: mlp:1200,1200 (dropout, jitter 2), trained once and cached in
 *    .cache/bench; its file hash and test errors are in the results so later runs compare like with like.
 * 2. Quality: for each student (mlp:32, mlp:64, mlp:800,800, cnn:16,32, dscnn:16,32) and each seed,
 *    the distilled student (T, alpha chosen on a 10% validation split of the training data, alpha 0
 *    among the candidates) against the same student trained on labels only with the same budget
 *    (cloud/distill/runs.ts): test errors out of 10,000 as mean ± std over the seeds.
 * 3. Edge speed: ORT batch-1, 1-thread p50 of each shipped student (fp32 and int8).
 * 4. Training throughput: the full-run rate of every final training run, with FLOPs counted from the
 *    gradient ops tfjs runs (cloud/models/flops.ts), plus the interleaved probe of train-throughput.ts.
 * 5. The issue's targets, checked against the figures.
 *
 * Budget: with the defaults (10 epochs, search trials of 3 epochs, 6 recipes, 3 seeds, 5 students)
 * each student-seed costs about 2 × (6 × 3 + 10) = 56 epochs of 54k examples; the whole bench is
 * several hours on 2 shared cores, bounded by BENCH_SEARCH_MINUTES per search. BENCH_QUICK=1 is a
 * smoke run (1,000 examples, 1 epoch, 1 seed) of a few minutes, written to distill-quick.json.
 *
 * Env: BENCH_QUICK=1, BENCH_EPOCHS (10), BENCH_SEARCH_EPOCHS (3), BENCH_SEARCH_MINUTES (10),
 *      BENCH_SEEDS (3), BENCH_STUDENTS (';'-separated specs), BENCH_TEACHER_EPOCHS (14).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { runDistill, type DistillReport } from '../../cloud/distill/pipeline.js';
import { trainTeacher } from '../../cloud/teacher/train-teacher.js';
import { initBackend } from '../../cloud/tf/backend.js';
import { epochBars } from '../../shared/cli/epoch-bars.js';
import { writeBenchResult } from './common.js';
import { summarize, targets, type StudentRow } from './distill-summary.js';
import { measureTrainingThroughput } from './train-throughput.js';

const quick = process.env.BENCH_QUICK === '1';
const num = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const epochs = num('BENCH_EPOCHS', quick ? 1 : 10);
const searchEpochs = num('BENCH_SEARCH_EPOCHS', quick ? 1 : 3);
const searchMinutes = num('BENCH_SEARCH_MINUTES', 10);
const seeds = Array.from({ length: num('BENCH_SEEDS', quick ? 1 : 3) }, (_, i) => i + 1);
const teacherEpochs = num('BENCH_TEACHER_EPOCHS', quick ? 1 : 14);
// Separated by ';' because the specs themselves contain commas.
const students = (process.env.BENCH_STUDENTS ?? 'mlp:32;mlp:64;mlp:800,800;cnn:16,32;dscnn:16,32').split(';').map((s) => s.trim()).filter(Boolean);
const limit = quick ? 1000 : undefined;
const batchSize = 128;
const teacherFile = quick ? '.cache/bench/teacher-quick.onnx' : '.cache/bench/teacher-mlp1200x2.onnx';
const bars = epochBars(true);
const t0 = performance.now();

const backend = await initBackend();
if (!existsSync(teacherFile)) {
  bars.phase('teacher', `training mlp:1200,1200 for ${teacherEpochs} epochs (cached in ${teacherFile} for later runs)`);
  await trainTeacher({
    data: 'mnist:train', test: 'mnist:test', limit, arch: 'mlp:1200,1200', dropout: 0.5, inputDropout: 0.2, epochs: teacherEpochs, batchSize: 128, learningRate: 1e-3, jitter: 2, seed: 1, out: teacherFile,
    events: { phase: bars.phase, epoch: (p) => bars.epoch('teacher', p) },
  });
} else {
  bars.phase('teacher', `using cached ${teacherFile}`);
}
const teacherSha256 = createHash('sha256').update(readFileSync(teacherFile)).digest('hex');

const rows: StudentRow[] = [];
const reports: Record<string, DistillReport[]> = {};
for (const student of students) {
  for (const seed of seeds) {
    const { report } = await runDistill({
      teacher: [teacherFile], data: 'mnist:train', test: 'mnist:test', limit, student, recipe: 'search', searchEpochs, searchMinutes, patience: 3,
      temperature: 20, alpha: 0.9, epochs, batchSize, learningRate: 'auto', tuneEpochs: quick ? 1 : 2, baseline: true, seed, outDir: `.cache/bench/out-${student.replace(/[:,/]/g, '_')}-s${seed}`, cacheDir: '.cache/teacher-logits',
      events: { phase: bars.phase, epoch: (run, p) => bars.epoch(`${student} s${seed} ${run}`, p) },
    });
    (reports[student] ??= []).push(report);
  }
  rows.push(summarize(student, reports[student]!));
}

const probe = await measureTrainingThroughput({ batchSize, rounds: quick ? 1 : 3, examples: quick ? 1024 : 8192 });
const first = Object.values(reports)[0]![0]!;
const result = {
  backend,
  quick,
  budget: { epochs, searchEpochs, searchMinutes, seeds, students, limit: limit ?? 'all 60k (54k fit + 6k validation)', batchSize },
  teacher: { file: teacherFile, sha256: teacherSha256, id: first.teacher.id, testErrors: first.teacher.test.errors, latencyP50Ms: first.teacher.latency.p50Ms },
  students: rows,
  targets: targets(rows),
  throughput: {
    // Full runs: each final training run's own rate over the whole run (validation passes excluded).
    fullRuns: rows.map((r) => ({ student: r.student, samplesPerSec: r.training.samplesPerSec, gflops: r.training.gflops })),
    // The interleaved probe (train-throughput.ts), same FLOP count, for the share of the forward matMul rate.
    probe,
  },
  seconds: (performance.now() - t0) / 1000,
  reports,
};
const file = writeBenchResult(quick ? 'distill-quick' : 'distill', result);
bars.stop();
for (const r of rows) {
  console.log(
    `${r.student.padEnd(14)} ${String(r.params).padStart(8)} params  labels-only ${r.labelsOnly.mean.toFixed(1)} ± ${r.labelsOnly.std.toFixed(1)}  distilled ${r.distilled.mean.toFixed(1)} ± ${r.distilled.std.toFixed(1)} errors` +
      `  (recipes ${r.chosen.map((c) => `T${c.temperature}/a${c.alpha}`).join(' ')})  p50 fp32 ${r.latency.fp32P50Ms.toFixed(4)} int8 ${r.latency.int8P50Ms.toFixed(4)} ms  ${Math.round(r.training.samplesPerSec)} samples/s`,
  );
}
console.log(`teacher ${result.teacher.testErrors} errors (sha256 ${teacherSha256.slice(0, 12)}); targets ${JSON.stringify(result.targets)}; ${result.seconds.toFixed(0)} s → ${file}`);
