import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exampleSize, loadDataset } from '../../shared/data/index.js';
import { exportToOnnx, quantizeInt8, DEFAULT_QUANT_FORM } from '../export/index.js';
import { modelFlops } from '../models/flops.js';
import { imageShapeOf, isConv, parseArch, type ArchSpec } from '../models/spec.js';
import { cachedTeacherLogits } from '../teacher/logit-cache.js';
import { Teacher, type TeacherOutputKind } from '../teacher/ort-teacher.js';
import { initBackend, type BackendChoice } from '../tf/backend.js';
import { agreement, argmaxRows, evaluateOnnx, measureLatency, scorePredictions, type LatencyStats } from './evaluate.js';
import type { Recipe } from './recipe.js';
import { trainRuns, type TrainingStats } from './runs.js';
import type { TrainProgress } from './trainer.js';

export interface DistillOptions {
  teacher: string[];
  teacherOutput?: TeacherOutputKind;
  data: string;
  test: string;
  limit?: number;
  student: string;
  temperature: number;
  alpha: number;
  epochs: number;
  batchSize: number;
  /** A fixed rate, or 'auto' to tune it on a holdout of the training data. */
  learningRate: number | 'auto';
  lrCandidates?: number[];
  /** Epochs per candidate when tuning (default min(epochs, 2)). */
  tuneEpochs?: number;
  baseline: boolean;
  /** `search` (default with labels): T and alpha chosen on a validation split; `fixed`: the given ones. */
  recipe?: 'search' | 'fixed';
  recipes?: Recipe[];
  searchEpochs?: number;
  searchMinutes?: number;
  patience?: number;
  functionMatching?: boolean;
  seed: number;
  jitter?: number;
  outDir: string;
  cacheDir?: string;
  backend?: BackendChoice;
  latencyBudgetMs?: number;
  events?: DistillEvents;
}

/** Progress hooks; the CLI draws bars from them, rounds forward them to their parent process. */
export interface DistillEvents {
  phase?(name: string, detail?: string): void;
  epoch?(run: 'student' | 'baseline' | string, p: TrainProgress): void;
}

export interface ModelScore {
  accuracy: number;
  errors: number;
  count: number;
}

export interface DistillReport {
  version: 1;
  createdAt: string;
  backend: { name: string; requested: string; fallbacks: string[]; wasmMatMulOverride: boolean; wasmConvGradKernels: string[] };
  data: { train: string; trainCount: number; test: string; testCount: number; inputShape: number[]; scaling: { scale: number; offset: number } };
  teacher: { files: string[]; id: string; outputKind: TeacherOutputKind; test: ModelScore; latency: LatencyStats; bytes: number };
  student: {
    arch: string;
    params: number;
    bytes: { fp32: number; int8: number };
    test: ModelScore;
    int8Test: ModelScore;
    int8Form: string;
    agreementWithTeacher: number;
    int8AgreementWithFp32: number;
    latency: { fp32: LatencyStats; int8: LatencyStats };
    training: TrainingStats;
  };
  baseline?: { arch: string; test: ModelScore; agreementWithTeacher: number; training: TrainingStats };
  /** (err_alone − err_distilled) / (err_alone − err_teacher), when a baseline ran. */
  gapClosed?: number;
  speedupVsTeacher: number;
  settings: { recipe: 'search' | 'fixed'; temperature: number; alpha: number; epochs: number; batchSize: number; seed: number; jitter: number; functionMatching: boolean };
}

export type { TrainingStats };

export interface DistillResult {
  report: DistillReport;
  studentOnnx: Uint8Array;
  studentInt8: Uint8Array;
  /** Teacher logits of the test set (reused by callers that evaluate further). */
  files: { student: string; studentInt8: string; report: string; baseline?: string };
}


/** One complete distillation: teacher soft labels → student (→ baseline) → ONNX fp32 + int8 → report. */
export async function runDistill(o: DistillOptions): Promise<DistillResult> {
  const ev = o.events ?? {};
  const backend = await initBackend(o.backend);
  ev.phase?.('backend', backend.name);
  const arch: ArchSpec = parseArch(o.student, '--student');
  const [train, test] = await Promise.all([loadDataset(o.data, { limit: o.limit, shuffleSeed: o.seed }), loadDataset(o.test)]);
  if (!test.labels) throw new Error(`--test ${o.test}: the test set needs labels to be scored`);
  const size = exampleSize(train);
  if (exampleSize(test) !== size) throw new Error(`--test ${o.test}: examples have ${exampleSize(test)} values, the training set has ${size}`);

  const teacher = await Teacher.create(o.teacher, { outputKind: o.teacherOutput });
  try {
    ev.phase?.('teacher', `soft labels for ${train.count} training examples`);
    const tTrain = await cachedTeacherLogits(teacher, train.features, size, { dir: o.cacheDir });
    const tTest = await cachedTeacherLogits(teacher, test.features, size, { dir: o.cacheDir });
    const classes = tTrain.classes;
    const teacherPred = argmaxRows(tTest.logits, classes);
    const teacherScore = { ...scorePredictions(teacherPred, test.labels), count: test.count };

    const imageShape = isConv(arch) ? imageShapeOf(train.shape) : undefined;
    const flops = modelFlops(arch, imageShape ?? [size], classes);
    const recipe = o.recipe ?? (train.labels ? 'search' : 'fixed');
    const runs = await trainRuns(
      { ...o, recipe, jitter: o.jitter ?? 0 },
      { arch, imageShape, train, teacher, teacherLogits: tTrain.logits, classes, flops, baseline: o.baseline, events: ev },
    );

    await mkdir(o.outDir, { recursive: true });
    const student = runs.student;
    ev.phase?.('export', 'ONNX fp32 + int8');
    const studentOnnx = exportToOnnx(student.model, { docString: `Apprentice student ${arch.text} distilled from teacher ${teacher.id}` });
    const studentInt8 = quantizeInt8(studentOnnx);
    const params = student.model.countParams();
    student.model.dispose();
    const files: DistillResult['files'] = { student: join(o.outDir, 'student.onnx'), studentInt8: join(o.outDir, 'student.int8.onnx'), report: join(o.outDir, 'report.json') };
    await writeFile(files.student, studentOnnx);
    await writeFile(files.studentInt8, studentInt8);

    ev.phase?.('evaluate', 'onnxruntime on the test set');
    const sEval = await evaluateOnnx(studentOnnx, test.features, size, test.labels);
    const qEval = await evaluateOnnx(studentInt8, test.features, size, test.labels);
    const sample = test.features.slice(0, size);
    const teacherBytes = await readFile(o.teacher[0]!);
    ev.phase?.('latency', 'ORT batch 1, 1 thread');
    const teacherLatency = await measureLatency(teacherBytes, sample);
    const fp32Latency = await measureLatency(studentOnnx, sample);
    const int8Latency = await measureLatency(studentInt8, sample);

    let baselineReport: DistillReport['baseline'];
    if (o.baseline) {
      const base = runs.baseline!;
      // The student's own run when the search chose labels only (runs.ts); that model is already exported and disposed.
      const sameRun = base.model === student.model;
      const baseOnnx = sameRun ? studentOnnx : exportToOnnx(base.model, { docString: `Apprentice baseline ${arch.text} trained on labels only` });
      if (!sameRun) base.model.dispose();
      files.baseline = join(o.outDir, 'baseline.onnx');
      await writeFile(files.baseline, baseOnnx);
      const bEval = await evaluateOnnx(baseOnnx, test.features, size, test.labels);
      baselineReport = {
        arch: arch.text,
        test: { accuracy: bEval.accuracy!, errors: bEval.errors!, count: test.count },
        agreementWithTeacher: agreement(bEval.predictions, teacherPred),
        training: base.stats,
      };
    }
    const bestStudentLatency = Math.min(fp32Latency.p50Ms, int8Latency.p50Ms);
    const report: DistillReport = {
      version: 1,
      createdAt: new Date().toISOString(),
      backend,
      data: { train: o.data, trainCount: train.count, test: o.test, testCount: test.count, inputShape: train.shape, scaling: train.scaling },
      teacher: { files: teacher.files, id: teacher.id, outputKind: teacher.outputKind, test: teacherScore, latency: teacherLatency, bytes: teacherBytes.byteLength },
      student: {
        arch: arch.text,
        params,
        bytes: { fp32: studentOnnx.byteLength, int8: studentInt8.byteLength },
        test: { accuracy: sEval.accuracy!, errors: sEval.errors!, count: test.count },
        int8Test: { accuracy: qEval.accuracy!, errors: qEval.errors!, count: test.count },
        int8Form: DEFAULT_QUANT_FORM,
        agreementWithTeacher: agreement(sEval.predictions, teacherPred),
        int8AgreementWithFp32: agreement(qEval.predictions, sEval.predictions),
        latency: { fp32: fp32Latency, int8: int8Latency },
        training: student.stats,
      },
      baseline: baselineReport,
      // Only meaningful when the teacher beats the student trained alone.
      gapClosed: baselineReport && baselineReport.test.errors > teacherScore.errors ? (baselineReport.test.errors - sEval.errors!) / (baselineReport.test.errors - teacherScore.errors) : undefined,
      speedupVsTeacher: teacherLatency.p50Ms / bestStudentLatency,
      // What the student was trained with (the search's choice in search mode, not the --temperature/--alpha defaults).
      settings: { recipe, temperature: student.stats.temperature, alpha: student.stats.alpha, epochs: o.epochs, batchSize: o.batchSize, seed: o.seed, jitter: o.jitter ?? 0, functionMatching: student.stats.functionMatching },
    };
    await writeFile(files.report, JSON.stringify(report, null, 2) + '\n');
    return { report, studentOnnx, studentInt8, files };
  } finally {
    await teacher.dispose();
  }
}
