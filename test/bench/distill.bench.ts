/**
 * Distillation bench (issue: engine). `npm run bench:distill`.
 *
 * 1. Quality, Hinton-style: teacher mlp:1200,1200 (dropout, jitter 2; trained once and cached in
 *    .cache/bench), student mlp:800,800 at T=20 distilled vs the same student trained alone (same
 *    epochs, same lr-tuning procedure), as test errors out of 10,000 and the gap closed; the same for a
 *    tiny edge student mlp:64.
 * 2. Speed at the edge: ORT batch-1 latency of the tiny student vs the teacher, measured in this run.
 * 3. Training throughput: distillation FLOP/s as a share of the plain forward matMul rate of the same
 *    layer shapes on the same backend, measured in this run.
 *
 * Env: BENCH_EPOCHS (default 10), BENCH_TEACHER_EPOCHS (14), BENCH_QUICK=1 (tiny budgets, smoke run).
 */
import { existsSync } from 'node:fs';
import { runDistill, type DistillReport } from '../../cloud/distill/pipeline.js';
import { trainTeacher } from '../../cloud/teacher/train-teacher.js';
import { initBackend } from '../../cloud/tf/backend.js';
import { epochBars } from '../../shared/cli/epoch-bars.js';
import { writeBenchResult } from './common.js';
import { measureTrainingThroughput } from './train-throughput.js';

const quick = process.env.BENCH_QUICK === '1';
const epochs = Number(process.env.BENCH_EPOCHS ?? (quick ? 1 : 10));
const teacherEpochs = Number(process.env.BENCH_TEACHER_EPOCHS ?? (quick ? 1 : 14));
const limit = quick ? 5000 : undefined;
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

async function distil(student: string, outDir: string): Promise<DistillReport> {
  const { report } = await runDistill({
    teacher: [teacherFile], data: 'mnist:train', test: 'mnist:test', limit, student, temperature: 20, alpha: 0.9, epochs, batchSize, learningRate: 'auto', tuneEpochs: quick ? 1 : 2, baseline: true, seed: 1, outDir, cacheDir: '.cache/teacher-logits',
    events: { phase: bars.phase, epoch: (run, p) => bars.epoch(`${student} ${run}`, p) },
  });
  return report;
}

const big = await distil('mlp:800,800', '.cache/bench/out-mlp800x2');
const tiny = await distil('mlp:64', '.cache/bench/out-mlp64');

const probe = await measureTrainingThroughput({ batchSize });
const trainShare = probe.median.share;

const errs = (r: DistillReport) => ({ teacher: r.teacher.test.errors, alone: r.baseline?.test.errors, distilled: r.student.test.errors, int8: r.student.int8Test.errors });
const result = {
  backend,
  epochs,
  quick,
  quality: {
    student800: { errors: errs(big), gapClosed: big.gapClosed, agreementWithTeacher: big.student.agreementWithTeacher, lr: { distilled: big.student.training.learningRate, alone: big.baseline?.training.learningRate }, tuning: { distilled: big.student.training.tuning, alone: big.baseline?.training.tuning } },
    student64: { errors: errs(tiny), gapClosed: tiny.gapClosed, agreementWithTeacher: tiny.student.agreementWithTeacher, params: tiny.student.params, bytes: tiny.student.bytes, accuracy: tiny.student.test.accuracy },
    hinton2015: { teacher: 67, alone: 146, distilled: 74, gapClosed: (146 - 74) / (146 - 67) },
  },
  edgeSpeed: {
    teacherP50Ms: tiny.teacher.latency.p50Ms,
    tinyFp32P50Ms: tiny.student.latency.fp32.p50Ms,
    tinyInt8P50Ms: tiny.student.latency.int8.p50Ms,
    speedup: tiny.speedupVsTeacher,
    accuracyPointsBelowTeacher: 100 * (tiny.teacher.test.accuracy - tiny.student.test.accuracy),
    student800Speedup: big.speedupVsTeacher,
  },
  throughput: {
    // Interleaved probe (train-throughput.ts): forward matMul rate and distillation rate back to back.
    distillSamplesPerSec: probe.median.distillSamplesPerSec,
    distillGflops: probe.median.distillGflops,
    forwardMatMulGflops: probe.median.forwardGflops,
    shareOfForwardMatMul: trainShare,
    probe,
    // The full 60k-example run of the quality section, for reference (measured at a different moment).
    fullRunSamplesPerSec: big.student.training.samplesPerSec,
    batchSize,
  },
  seconds: (performance.now() - t0) / 1000,
  reports: { student800: big, student64: tiny },
};
const file = writeBenchResult('distill', result);
const pct = (x: number | undefined) => (x === undefined ? 'n/a' : `${(100 * x).toFixed(0)}%`);
bars.stop();
console.log(
  `distill: teacher/alone/distilled errors ${big.teacher.test.errors}/${big.baseline?.test.errors}/${big.student.test.errors} (gap closed ${pct(big.gapClosed)}, ${epochs} epochs); ` +
    `mlp:64 ${tiny.baseline?.test.errors}→${tiny.student.test.errors} errors (gap ${pct(tiny.gapClosed)}), ${result.edgeSpeed.speedup.toFixed(1)}× faster than teacher, ${result.edgeSpeed.accuracyPointsBelowTeacher.toFixed(2)} pts below; ` +
    `training ${Math.round(probe.median.distillSamplesPerSec)} samples/s = ${pct(trainShare)} of forward matMul rate [${backend.name}] → ${file}`,
);
