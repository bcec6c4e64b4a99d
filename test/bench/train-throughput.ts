import * as tf from '@tensorflow/tfjs';
import { trainModel } from '../../cloud/distill/trainer.js';
import { buildModel } from '../../cloud/models/build.js';
import { modelFlops } from '../../cloud/models/flops.js';
import { parseArch } from '../../cloud/models/spec.js';
import { mulberry32 } from '../../shared/util/random.js';

/** Plain forward matMul rate (GFLOP/s) of an MLP's own layer shapes at one batch size. */
export function forwardMatMulGflops(widths: number[], batch: number, ms = 2000): number {
  const xs = widths.slice(0, -1).map((w) => tf.randomNormal([batch, w]));
  const ws = widths.slice(1).map((w, i) => tf.randomNormal([widths[i]!, w]));
  const run = () => {
    for (let i = 0; i < ws.length; i++) {
      const y = tf.matMul(xs[i]!, ws[i]!);
      y.dataSync();
      y.dispose();
    }
  };
  for (let i = 0; i < 5; i++) run();
  let iters = 0;
  const s = performance.now();
  while (performance.now() - s < ms) {
    run();
    iters++;
  }
  const sec = (performance.now() - s) / 1000;
  let flops = 0;
  for (let i = 0; i + 1 < widths.length; i++) flops += 2 * batch * widths[i]! * widths[i + 1]!;
  tf.dispose([...xs, ...ws]);
  return (flops * iters) / sec / 1e9;
}

export interface ThroughputRound {
  forwardGflops: number;
  distillSamplesPerSec: number;
  distillGflops: number;
  share: number;
}

/**
 * A synthetic MNIST-shaped transfer set (784 inputs in [0, 1), 10 classes, random labels and teacher logits, seed 1):
 * training throughput does not depend on the values, only on the shapes.
 */
export function syntheticTrainingSet(examples: number) {
  const inputSize = 784;
  const classes = 10;
  const r = mulberry32(1);
  const features = Float32Array.from({ length: examples * inputSize }, () => r());
  const teacherLogits = Float32Array.from({ length: examples * classes }, () => 4 * r() - 2);
  const labels = Int32Array.from({ length: examples }, () => Math.floor(r() * classes));
  return { features, inputSize, count: examples, classes, labels, teacherLogits };
}

/**
 * Distillation training FLOP rate as a share of the plain forward matMul rate, measured back to back
 * and repeated (`rounds` times, median reported), so that load from other processes on a shared
 * machine hits both sides of the ratio alike. Training FLOPs are the gradient ops tfjs runs (no input
 * gradient for the first layer; see cloud/models/flops.ts), not 3× forward. The data
 * is synthetic (the rate does not depend on the values); the loss is the real distillation loss.
 */
export async function measureTrainingThroughput({ arch = 'mlp:800,800', batchSize = 128, examples = 8192, rounds = 3 }: { arch?: string; batchSize?: number; examples?: number; rounds?: number } = {}) {
  const spec = parseArch(arch);
  const { features, inputSize, classes, labels, teacherLogits } = syntheticTrainingSet(examples);
  const { training: trainFlops } = modelFlops(spec, [inputSize], classes);
  const out: ThroughputRound[] = [];
  for (let i = 0; i < rounds; i++) {
    const forwardGflops = forwardMatMulGflops([inputSize, ...spec.hidden, classes], batchSize);
    const model = buildModel(spec, { inputSize, classes, seed: i + 1 });
    const t = await trainModel(model, { features, inputSize, count: examples, classes, labels, teacherLogits }, { epochs: 1, batchSize, learningRate: 1e-3, temperature: 20, alpha: 0.9, seed: i + 1 });
    model.dispose();
    const distillGflops = (trainFlops * t.samplesPerSec) / 1e9;
    out.push({ forwardGflops, distillSamplesPerSec: t.samplesPerSec, distillGflops, share: distillGflops / forwardGflops });
  }
  const median = [...out].sort((a, b) => a.share - b.share)[Math.floor(out.length / 2)]!;
  return { arch, batchSize, examples, rounds: out, median };
}
