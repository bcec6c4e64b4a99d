import { existsSync } from 'node:fs';
import { DEFAULT_RECIPES, parseRecipes, type Recipe } from '../../cloud/distill/recipe.js';
import { trainModel } from '../../cloud/distill/trainer.js';
import { buildModel } from '../../cloud/models/build.js';
import { isConv, parseArch } from '../../cloud/models/spec.js';
import { mulberry32 } from '../../shared/util/random.js';

/**
 * The distill bench's budget (issue 11): what each student's search and training cost, measured
 * before the run, and which student-seeds fit in the wall-clock budget. A student-seed that would not
 * fit is not run; the results list it as not measured, with the cost it would have needed.
 */

/** How one student is searched and trained; conv students can get a smaller search than MLPs. */
export interface StudentPlan {
  student: string;
  epochs: number;
  searchEpochs: number;
  recipes: Recipe[];
  /** 'auto': tuned on the validation split (lrCandidates × tuneEpochs), else fixed. */
  learningRate: number | 'auto';
  lrCandidates: number[];
  tuneEpochs: number;
}

type Env = Record<string, string | undefined>;

function num(env: Env, name: string, dflt: number): number {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v}: expected a non-negative number`);
  return n;
}

/**
 * The plan of each student from the environment: BENCH_EPOCHS, BENCH_SEARCH_EPOCHS, BENCH_TUNE_EPOCHS,
 * BENCH_RECIPES (T:α,...), BENCH_LR ('auto' or a rate); conv students read BENCH_CONV_* first.
 */
export function studentPlan(student: string, env: Env, quick: boolean): StudentPlan {
  const conv = isConv(parseArch(student, 'BENCH_STUDENTS'));
  const pick = (name: string, dflt: number) => (conv ? num(env, `BENCH_CONV_${name}`, num(env, `BENCH_${name}`, dflt)) : num(env, `BENCH_${name}`, dflt));
  const text = (name: string) => (conv ? (env[`BENCH_CONV_${name}`] ?? env[`BENCH_${name}`]) : env[`BENCH_${name}`]);
  const lrText = text('LR') ?? 'auto';
  const learningRate = lrText === 'auto' ? 'auto' : Number(lrText);
  if (learningRate !== 'auto' && !(learningRate > 0 && learningRate < 1)) throw new Error(`BENCH_LR=${lrText}: expected auto or a rate in (0, 1)`);
  const recipesText = text('RECIPES');
  return {
    student,
    epochs: pick('EPOCHS', quick ? 1 : 10),
    searchEpochs: pick('SEARCH_EPOCHS', quick ? 1 : 3),
    recipes: recipesText ? parseRecipes(recipesText) : [...DEFAULT_RECIPES],
    learningRate,
    lrCandidates: [3e-4, 1e-3, 3e-3],
    tuneEpochs: pick('TUNE_EPOCHS', quick ? 1 : 2),
  };
}

/**
 * The seeds to run: BENCH_SEED_LIST (e.g. "2,3", so seeds can run in separate processes and be merged
 * with distill-merge.ts), else 1..BENCH_SEEDS (default 3, 1 for a quick run).
 */
export function seedList(env: Env, quick: boolean): number[] {
  const list = env.BENCH_SEED_LIST?.trim();
  if (list) {
    const seeds = list.split(',').map((t) => Number(t.trim()));
    if (seeds.some((n) => !Number.isInteger(n) || n < 1) || new Set(seeds).size !== seeds.length) throw new Error(`BENCH_SEED_LIST=${list}: expected distinct positive integers, e.g. 2,3`);
    return seeds;
  }
  const n = num(env, 'BENCH_SEEDS', quick ? 1 : 3);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_SEEDS=${env.BENCH_SEEDS}: expected a positive integer`);
  return Array.from({ length: n }, (_, i) => i + 1);
}

/**
 * The committed bench teacher for an architecture, if there is one (test/bench/fixtures/teacher-<slug>.onnx
 * with its .report.json). Training is not bit-reproducible across runs of the wasm backend (two 8-epoch runs of
 * cnn:16,32/128 made 75 and 74 test errors, with different hashes), so the teacher every later run compares
 * against is kept in the repository rather than in each checkout's .cache.
 */
export function committedTeacher(slug: string): string | undefined {
  const file = `test/bench/fixtures/teacher-${slug}.onnx`;
  return existsSync(file) ? file : undefined;
}

/** The fixed bench teacher: trained once with these settings, then cached in `file` (keyed by architecture). */
export interface TeacherPlan {
  arch: string;
  file: string;
  epochs: number;
  dropout: number;
  inputDropout: number;
  learningRate: number;
  jitter: number;
}

/**
 * The bench teacher from BENCH_TEACHER_ARCH (default cnn:16,32/128: a conv teacher well ahead of the
 * students, which is what lets distillation pay), BENCH_TEACHER_FILE and BENCH_TEACHER_EPOCHS.
 * Conv teachers: dropout 0.5 on the dense layer, no input dropout, lr 2e-3, 8 epochs; MLP teachers:
 * Hinton et al.'s dropout 0.5 / input 0.2, lr 1e-3, 14 epochs. Both with ±2 px jitter.
 */
export function teacherPlan(env: Env, quick: boolean): TeacherPlan {
  const archText = env.BENCH_TEACHER_ARCH?.trim() || 'cnn:16,32/128';
  const arch = parseArch(archText, 'BENCH_TEACHER_ARCH');
  const conv = isConv(arch);
  const slug = archText.replace(/^(\w+):/, '$1').replace(/[,/]/g, 'x');
  return {
    arch: archText,
    file: env.BENCH_TEACHER_FILE || (quick ? '.cache/bench/teacher-quick.onnx' : committedTeacher(slug) ?? `.cache/bench/teacher-${slug}.onnx`),
    epochs: num(env, 'BENCH_TEACHER_EPOCHS', quick ? 1 : conv ? 8 : 14),
    dropout: 0.5,
    inputDropout: conv ? 0 : 0.2,
    learningRate: conv ? 2e-3 : 1e-3,
    jitter: 2,
  };
}

/**
 * Augmentation shared by the student and its labels-only baseline (the same for both sides):
 * BENCH_JITTER random shifts of up to N pixels (default 2), BENCH_FUNCTION_MATCHING=1 for teacher
 * logits computed on the shifted batch itself rather than cached for the unshifted examples.
 */
export function augmentation(env: Env): { jitter: number; functionMatching: boolean } {
  const jitter = num(env, 'BENCH_JITTER', 2);
  if (!Number.isInteger(jitter) || jitter > 8) throw new Error(`BENCH_JITTER=${env.BENCH_JITTER}: expected an integer 0..8 (pixels)`);
  const fm = env.BENCH_FUNCTION_MATCHING ?? '0';
  if (fm !== '0' && fm !== '1') throw new Error(`BENCH_FUNCTION_MATCHING=${fm}: expected 0 or 1`);
  return { jitter, functionMatching: fm === '1' };
}

/**
 * Epochs one seed trains at most (early stopping can only shorten it): the learning-rate tuning,
 * the labels-only trials (one per recipe, cloud/distill/runs.ts), the distillation trials (one per
 * recipe with α > 0), then the final student and the final baseline.
 */
export function epochsPerSeed(p: StudentPlan): number {
  const tune = p.learningRate === 'auto' ? p.lrCandidates.length * p.tuneEpochs : 0;
  const labelTrials = Math.max(1, p.recipes.length);
  const distillTrials = p.recipes.filter((r) => r.alpha > 0).length;
  return tune + (labelTrials + distillTrials) * p.searchEpochs + 2 * p.epochs;
}

export interface StudentCost {
  /** Training rate of a short synthetic run (the rate does not depend on the values), after warm-up. */
  probeSamplesPerSec: number;
  /** One epoch over the fit split, plus its validation pass (forward only, ~1/3 of a training step each). */
  secondsPerEpoch: number;
  epochsPerSeed: number;
  projectedSecondsPerSeed: number;
}

/** Measures a student's training rate on `steps` batches of synthetic 28×28 data, after 2 warm-up batches. */
export async function measureCost(p: StudentPlan, o: { batchSize: number; fitCount: number; validationCount: number; steps: number }): Promise<StudentCost> {
  const arch = parseArch(p.student);
  const size = 784;
  const classes = 10;
  const r = mulberry32(7);
  const count = o.batchSize * (o.steps + 2);
  const features = Float32Array.from({ length: count * size }, () => r());
  const labels = Int32Array.from({ length: count }, () => Math.floor(r() * classes));
  const teacherLogits = Float32Array.from({ length: count * classes }, () => 4 * r() - 2);
  const model = buildModel(arch, { inputSize: size, classes, imageShape: isConv(arch) ? [28, 28, 1] : undefined, seed: 1 });
  const warm = 2 * o.batchSize;
  const set = { features, inputSize: size, count, classes, labels, teacherLogits };
  const warmSet = { ...set, count: warm, features: features.subarray(0, warm * size), labels: labels.subarray(0, warm), teacherLogits: teacherLogits.subarray(0, warm * classes) };
  await trainModel(model, warmSet, { epochs: 1, batchSize: o.batchSize, learningRate: 1e-3, temperature: 4, alpha: 0.5, seed: 1 });
  const t = await trainModel(model, set, { epochs: 1, batchSize: o.batchSize, learningRate: 1e-3, temperature: 4, alpha: 0.5, seed: 1 });
  model.dispose();
  const secondsPerEpoch = (o.fitCount + o.validationCount / 3) / t.samplesPerSec;
  const epochs = epochsPerSeed(p);
  return { probeSamplesPerSec: t.samplesPerSec, secondsPerEpoch, epochsPerSeed: epochs, projectedSecondsPerSeed: epochs * secondsPerEpoch };
}

/** A student-seed the budget left out, with what it would have cost. */
export interface NotMeasured {
  student: string;
  seed: number;
  reason: string;
  projectedSeconds: number;
}

/**
 * Whether a student-seed fits: the elapsed time plus its projected cost (the measured seconds of an
 * earlier seed of the same student when there is one, else the probe's projection) within the budget.
 */
export function fits(elapsedSeconds: number, projectedSeconds: number, budgetSeconds: number): boolean {
  return elapsedSeconds + projectedSeconds <= budgetSeconds;
}
