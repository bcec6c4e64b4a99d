/**
 * Conv-student training rate on the wasm backend, this checkout's gradient kernels against an earlier
 * commit's, in one process: `nice -n 10 node --import tsx test/bench/train-throughput-conv.bench.ts`.
 *
 * Rounds alternate the two kernel sets (order flipped every round) on the same model, data and
 * batching, so load from other processes on a shared machine hits both; the median rate of each set
 * and the median of the per-round ratios are reported, with the load average. Then each set trains a
 * few batches with every kernel timed, for the top kernels per step.
 *
 * Env: BENCH_ARCH (cnn:8,16/32), BENCH_BASELINE_COMMIT (18cf5e3, the kernels before issue 11's speed-up),
 *      BENCH_ROUNDS (5), BENCH_EXAMPLES per round (5120), BENCH_JITTER (2, as the distill bench),
 *      BENCH_RESULT_NAME (train-throughput-conv).
 */
import { cpus, loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { trainModel } from '../../cloud/distill/trainer.js';
import { buildModel } from '../../cloud/models/build.js';
import { modelFlops } from '../../cloud/models/flops.js';
import { parseArch } from '../../cloud/models/spec.js';
import { installWasmConvGradKernels } from '../../cloud/tf/wasm-conv-grad.js';
import { installWasmMatMulOverride } from '../../cloud/tf/wasm-matmul.js';
import { syntheticTrainingSet } from './train-throughput.js';
import { writeBenchResult } from './common.js';
import { baselineModule, convKernelSets, installerFrom, kernelTimer, type KernelTime } from './conv-kernel-sets.js';

const env = process.env;
const arch = env.BENCH_ARCH ?? 'cnn:8,16/32';
const baselineCommit = env.BENCH_BASELINE_COMMIT ?? '18cf5e3';
const rounds = Number(env.BENCH_ROUNDS ?? 5);
const examples = Number(env.BENCH_EXAMPLES ?? 5120);
const jitter = Number(env.BENCH_JITTER ?? 2);
const batchSize = 128;
const profileSteps = 20;
if (!(rounds >= 1 && examples >= batchSize && jitter >= 0)) throw new Error('BENCH_ROUNDS ≥ 1, BENCH_EXAMPLES ≥ 128 and BENCH_JITTER ≥ 0 expected');

if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
await tf.ready();
installWasmMatMulOverride();
const sets = await convKernelSets({ baseline: installerFrom(baselineModule(baselineCommit)), current: async () => installWasmConvGradKernels() });

const spec = parseArch(arch);
const data = syntheticTrainingSet(examples);
const { features, inputSize, classes, labels, teacherLogits } = data;
const trainingFlops = modelFlops(spec, [inputSize], classes).training;

/** One epoch over the synthetic set with the distillation loss (T 4, α 0.5) and jitter, as the distill bench trains. */
async function epoch(count = examples): Promise<{ samplesPerSec: number; steps: number; finalLoss: number; weights: Float32Array[] }> {
  const model = buildModel(spec, { inputSize, classes, seed: 1 });
  const sub = { ...data, count, features: features.subarray(0, count * inputSize), labels: labels.subarray(0, count), teacherLogits: teacherLogits.subarray(0, count * classes) };
  const t = await trainModel(model, sub, { epochs: 1, batchSize, learningRate: 1e-3, temperature: 4, alpha: 0.5, seed: 1, jitter });
  const weights = model.getWeights().map((w) => w.dataSync() as Float32Array);
  model.dispose();
  return { samplesPerSec: t.samplesPerSec, steps: t.steps, finalLoss: t.finalLoss, weights };
}

const loadBefore = loadavg();
const names = Object.keys(sets);
for (const name of names) {
  sets[name]!();
  await epoch(4 * batchSize); // warm-up: kernel setup, heap growth, JIT
}
const perRound: Array<Record<string, number>> = [];
// Same initial weights, data order and jitter on both sides: the trained weights of the first round show
// whether the kernel sets compute the same thing (the largest absolute difference of any weight).
const trained: Record<string, { finalLoss: number; weights: Float32Array[] }> = {};
for (let i = 0; i < rounds; i++) {
  const row: Record<string, number> = {};
  for (const name of i % 2 ? [...names].reverse() : names) {
    sets[name]!();
    const e = await epoch();
    row[name] = e.samplesPerSec;
    trained[name] ??= e;
  }
  perRound.push(row);
  console.log(`round ${i + 1}/${rounds}: ${names.map((n) => `${n} ${row[n]!.toFixed(0)}`).join(', ')} samples/s`);
}
let maxAbsWeightDiff = 0;
trained.current!.weights.forEach((w, i) => w.forEach((v, j) => (maxAbsWeightDiff = Math.max(maxAbsWeightDiff, Math.abs(v - trained.baseline!.weights[i]![j]!)))));
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const samplesPerSec = Object.fromEntries(names.map((n) => [n, median(perRound.map((row) => row[n]!))]));
const speedup = median(perRound.map((row) => row.current! / row.baseline!));

const topKernels: Record<string, KernelTime[]> = {};
for (const name of names) {
  sets[name]!();
  const timer = kernelTimer();
  const { steps } = await epoch(Math.min(examples, profileSteps * batchSize));
  topKernels[name] = timer.top(steps, 8);
  timer.stop();
}
const loadAfter = loadavg();

const summary =
  `${arch} training on wasm (batch ${batchSize}, jitter ${jitter}): ${samplesPerSec.current!.toFixed(0)} samples/s with this checkout's kernels vs ` +
  `${samplesPerSec.baseline!.toFixed(0)} with ${baselineCommit}'s, ×${speedup.toFixed(2)}, trained weights differ by at most ${maxAbsWeightDiff} (median of ${rounds} interleaved rounds; load ${loadBefore[0]!.toFixed(1)}→${loadAfter[0]!.toFixed(1)} on ${cpus().length} cores)`;
const file = writeBenchResult(env.BENCH_RESULT_NAME ?? 'train-throughput-conv', {
  summary,
  arch,
  batchSize,
  jitter,
  examplesPerRound: examples,
  baselineCommit,
  loadavgBefore: loadBefore,
  loadavgAfter: loadAfter,
  samplesPerSec,
  gflops: Object.fromEntries(names.map((n) => [n, +((samplesPerSec[n]! * trainingFlops) / 1e9).toFixed(2)])),
  speedup,
  sameResult: { maxAbsWeightDiff, finalLoss: Object.fromEntries(names.map((n) => [n, trained[n]!.finalLoss])), steps: examples / batchSize },
  rounds: perRound,
  topKernels,
});
console.log(`${summary} → ${file}`);
