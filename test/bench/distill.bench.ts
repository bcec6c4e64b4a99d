/**
 * Distillation bench (issue 11). `npm run build && npm run bench:distill`.
 *
 * 1. One fixed bench teacher (default cnn:16,32/128, dropout, jitter 2; distill-plan.ts teacherPlan), trained
 *    once and committed in test/bench/fixtures (else cached in .cache/bench); its file hash and test errors are in the results so later runs compare
 *    like with like. Students and their labels-only baselines get the same ±BENCH_JITTER px shifts.
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
 * several hours on 2 shared cores. So before training, each student's rate is measured on a few
 * batches (distill-plan.ts) and its cost per seed projected; with BENCH_BUDGET_MINUTES a student-seed
 * that would not fit in the remaining time is not run and is listed under `notMeasured` with the cost
 * it would have needed. BENCH_QUICK=1 is a smoke run (1,000 examples, 1 epoch, 1 seed) of a few
 * minutes, written to distill-quick.json.
 *
 * Env: BENCH_QUICK=1, BENCH_PLAN_ONLY=1 (print the plan and projected costs, then exit), BENCH_EPOCHS (10), BENCH_SEARCH_EPOCHS (3), BENCH_TUNE_EPOCHS (2), BENCH_LR (auto),
 *      BENCH_RECIPES (T:α,... default the six of recipe.ts), the same as BENCH_CONV_* for conv students,
 *      BENCH_SEARCH_MINUTES (10), BENCH_PATIENCE (3, epochs without a validation gain before stopping), BENCH_SEEDS (3), BENCH_SEED_LIST (e.g. 2,3: seeds split over processes, see distill-merge.ts), BENCH_STUDENTS (';'-separated specs),
 *      BENCH_TEACHER_ARCH (cnn:16,32/128), BENCH_TEACHER_FILE, BENCH_TEACHER_EPOCHS (8 conv / 14 MLP),
 *      BENCH_JITTER (2), BENCH_FUNCTION_MATCHING (0), BENCH_BUDGET_MINUTES (none), BENCH_PROBE_ROUNDS (3),
 *      BENCH_RESULT_NAME (the results file, default distill / distill-quick).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { runDistill, type DistillReport } from '../../cloud/distill/pipeline.js';
import { trainTeacher } from '../../cloud/teacher/train-teacher.js';
import { initBackend } from '../../cloud/tf/backend.js';
import { epochBars } from '../../shared/cli/epoch-bars.js';
import { writeBenchResult } from './common.js';
import { augmentation, fits, seedList, measureCost, studentPlan, teacherPlan, type NotMeasured, type StudentCost } from './distill-plan.js';
import { oneLine, summarize, targets, type StudentRow } from './distill-summary.js';
import { measureTrainingThroughput } from './train-throughput.js';

const quick = process.env.BENCH_QUICK === '1';
const num = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const searchMinutes = num('BENCH_SEARCH_MINUTES', 10);
// Early-stopping patience on the validation split; the best epoch's weights are kept either way.
const patience = num('BENCH_PATIENCE', 3);
const seeds = seedList(process.env, quick);
const teacher = teacherPlan(process.env, quick);
const aug = augmentation(process.env);
const budgetMinutes = process.env.BENCH_BUDGET_MINUTES ? num('BENCH_BUDGET_MINUTES', 0) : undefined;
// Separated by ';' because the specs themselves contain commas.
const students = (process.env.BENCH_STUDENTS ?? 'mlp:32;mlp:64;mlp:800,800;cnn:16,32;dscnn:16,32').split(';').map((s) => s.trim()).filter(Boolean);
const plans = students.map((s) => studentPlan(s, process.env, quick));
const limit = quick ? 1000 : undefined;
const batchSize = 128;
const resultName = process.env.BENCH_RESULT_NAME ?? (quick ? 'distill-quick' : 'distill');
const teacherFile = teacher.file;
const bars = epochBars(true);
const t0 = performance.now();
const elapsed = () => (performance.now() - t0) / 1000;
const loadBefore = loadavg();

const backend = await initBackend();
if (!existsSync(teacherFile)) {
  bars.phase('teacher', `training ${teacher.arch} for ${teacher.epochs} epochs (cached in ${teacherFile} for later runs)`);
  await trainTeacher({
    data: 'mnist:train', test: 'mnist:test', limit, arch: teacher.arch, dropout: teacher.dropout, inputDropout: teacher.inputDropout, epochs: teacher.epochs, batchSize: 128, learningRate: teacher.learningRate, jitter: teacher.jitter, seed: 1, out: teacherFile,
    events: { phase: bars.phase, epoch: (p) => bars.epoch('teacher', p) },
  });
} else {
  bars.phase('teacher', `using cached ${teacherFile}`);
}
const teacherSha256 = createHash('sha256').update(readFileSync(teacherFile)).digest('hex');
const teacherReportFile = teacherFile.replace(/\.onnx$/, '') + '.report.json';
const teacherReport = existsSync(teacherReportFile) ? (JSON.parse(readFileSync(teacherReportFile, 'utf8')) as { arch: string; settings: unknown; training: unknown; test?: { errors: number }; params: number }) : undefined;
const teacherSeconds = elapsed();

// Cost of each student per seed, measured now (54k fit + 6k validation examples without a limit).
const fitCount = quick ? 900 : 54_000;
const costs: Record<string, StudentCost> = {};
for (const p of plans) {
  bars.phase('cost', `${p.student}: measuring the training rate`);
  costs[p.student] = await measureCost(p, { batchSize, fitCount, validationCount: fitCount / 9, steps: /^(cnn|dscnn):/.test(p.student) ? 6 : 40 });
  bars.phase('cost', `${p.student}: ${Math.round(costs[p.student]!.probeSamplesPerSec)} samples/s, ${costs[p.student]!.epochsPerSeed} epochs/seed ≈ ${Math.round(costs[p.student]!.projectedSecondsPerSeed)} s/seed`);
}

if (process.env.BENCH_PLAN_ONLY === '1') {
  // Prints the plan and the projected cost per seed, trains nothing else, writes no results.
  bars.stop();
  console.log(JSON.stringify(plans.map((p) => ({ ...p, ...costs[p.student] })), null, 1));
  process.exit(0);
}

const rows: StudentRow[] = [];
const reports: Record<string, DistillReport[]> = {};
const seedSeconds: Record<string, number[]> = {};
const notMeasured: NotMeasured[] = [];
for (const p of plans) {
  const { student } = p;
  for (const seed of seeds) {
    const done = seedSeconds[student] ?? [];
    const projected = done.length ? Math.max(...done) : costs[student]!.projectedSecondsPerSeed;
    if (budgetMinutes !== undefined && !fits(elapsed(), projected, budgetMinutes * 60)) {
      const reason = `budget: ${Math.round(elapsed())} s spent of ${budgetMinutes * 60} s, this seed needs ~${Math.round(projected)} s`;
      bars.phase('skip', `${student} seed ${seed}: ${reason}`);
      notMeasured.push({ student, seed, reason, projectedSeconds: projected });
      continue;
    }
    const s0 = performance.now();
    const { report } = await runDistill({
      teacher: [teacherFile], data: 'mnist:train', test: 'mnist:test', limit, student, recipe: 'search', recipes: p.recipes, searchEpochs: p.searchEpochs, searchMinutes, patience,
      temperature: 20, alpha: 0.9, epochs: p.epochs, batchSize, learningRate: p.learningRate, lrCandidates: p.lrCandidates, tuneEpochs: p.tuneEpochs, baseline: true, seed,
      jitter: aug.jitter, functionMatching: aug.functionMatching,
      outDir: `.cache/bench/${resultName}-out-${student.replace(/[:,/]/g, '_')}-s${seed}`, cacheDir: '.cache/teacher-logits',
      events: { phase: bars.phase, epoch: (run, pr) => bars.epoch(`${student} s${seed} ${run}`, pr) },
    });
    (seedSeconds[student] ??= []).push((performance.now() - s0) / 1000);
    (reports[student] ??= []).push(report);
    // A checkpoint of what has finished, so an interrupted run still leaves its figures (not a result file).
    writeFileSync(`.cache/bench/${resultName}-partial.json`, JSON.stringify({ at: new Date().toISOString(), seconds: elapsed(), seedSeconds, notMeasured, students: Object.entries(reports).map(([k, v]) => summarize(k, v)) }, null, 1));
  }
  if (reports[student]?.length) rows.push(summarize(student, reports[student]));
}

const probeRounds = num('BENCH_PROBE_ROUNDS', quick ? 1 : 3);
const probe = probeRounds > 0 ? await measureTrainingThroughput({ batchSize, rounds: probeRounds, examples: quick ? 1024 : 8192 }) : undefined;
const first = Object.values(reports)[0]?.[0];
const loadAfter = loadavg();
const checked = targets(rows, notMeasured);
const result = {
  summary: oneLine(rows, checked, first?.teacher.test.errors ?? teacherReport?.test?.errors, elapsed()),
  backend,
  quick,
  complete: notMeasured.length === 0,
  loadedMachine: Math.max(loadBefore[0] ?? 0, loadAfter[0] ?? 0) > 1,
  loadavgBefore: loadBefore,
  loadavgAfter: loadAfter,
  budget: {
    minutes: budgetMinutes ?? null,
    seeds,
    searchMinutes,
    patience,
    limit: limit ?? 'all 60k (54k fit + 6k validation)',
    batchSize,
    // Augmentation of both the distilled student and its labels-only baseline.
    augmentation: aug,
    plans: plans.map((p) => ({ ...p, ...costs[p.student], secondsPerSeed: seedSeconds[p.student] ?? [] })),
    teacherSeconds,
  },
  notMeasured,
  teacher: {
    file: teacherFile, sha256: teacherSha256, arch: teacherReport?.arch ?? teacher.arch, params: teacherReport?.params, trainedWith: teacherReport?.settings, training: teacherReport?.training,
    testErrors: first?.teacher.test.errors ?? teacherReport?.test?.errors, latencyP50Ms: first?.teacher.latency.p50Ms,
  },
  students: rows,
  targets: checked,
  throughput: {
    // Full runs: each final training run's own rate over the whole run (validation passes excluded).
    fullRuns: rows.map((r) => ({ student: r.student, samplesPerSec: r.training.samplesPerSec, gflops: r.training.gflops })),
    // The interleaved probe (train-throughput.ts), same FLOP count, for the share of the forward matMul rate.
    probe,
  },
  seconds: elapsed(),
  reports,
};
const file = writeBenchResult(resultName, result);
bars.stop();
for (const r of rows) {
  console.log(
    `${r.student.padEnd(14)} ${String(r.params).padStart(8)} params  labels-only ${r.labelsOnly.mean.toFixed(1)} ± ${r.labelsOnly.std.toFixed(1)}  distilled ${r.distilled.mean.toFixed(1)} ± ${r.distilled.std.toFixed(1)} errors (${r.seeds.length} seeds)` +
      `  (recipes ${r.chosen.map((c) => `T${c.temperature}/a${c.alpha}`).join(' ')})  p50 fp32 ${r.latency.fp32P50Ms.toFixed(4)} int8 ${r.latency.int8P50Ms.toFixed(4)} ms  ${Math.round(r.training.samplesPerSec)} samples/s`,
  );
}
for (const n of notMeasured) console.log(`not measured: ${n.student} seed ${n.seed} (${n.reason})`);
console.log(`teacher ${result.teacher.testErrors} errors (sha256 ${teacherSha256.slice(0, 12)}); targets ${JSON.stringify(result.targets)}; ${result.seconds.toFixed(0)} s, loadavg ${loadBefore[0]?.toFixed(1)}→${loadAfter[0]?.toFixed(1)} → ${file}`);
