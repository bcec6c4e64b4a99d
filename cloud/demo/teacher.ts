import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { exampleSize, loadDataset } from '../../shared/data/index.js';
import { mulberry32 } from '../../shared/util/random.js';
import { evaluateOnnx } from '../distill/evaluate.js';
import { trainModel, type TrainProgress } from '../distill/trainer.js';
import { exportToOnnx } from '../export/index.js';
import { buildModel } from '../models/build.js';
import { parseArch } from '../models/spec.js';
import { initBackend } from '../tf/backend.js';
import { mapImages, teacherAugment } from './shifts.js';

export interface DemoTeacherOptions {
  out: string;
  arch?: string;
  /** Training images (of mnist:train). */
  limit?: number;
  epochs?: number;
  seed?: number;
  /** Clean test images to report the teacher's accuracy on (0 = skip). */
  testLimit?: number;
  onProgress?: (p: { epoch: number; epochs: number; fraction: number; loss: number; samplesPerSec: number; phase: string }) => void;
}

export interface DemoTeacherReport {
  arch: string;
  backend: string;
  trainCount: number;
  epochs: number;
  seconds: number;
  bytes: number;
  cleanTestAccuracy?: number;
}

/**
 * Trains the demo's reference teacher: an MLP on MNIST with heavy augmentation (shifts.ts
 * `teacherAugment`, freshly drawn every epoch), so it is robust to the rotations, stroke widths,
 * noise and translations the devices meet. Exports ONNX (logits) to `out` atomically.
 */
export async function trainDemoTeacher(o: DemoTeacherOptions): Promise<DemoTeacherReport> {
  const started = Date.now();
  const backend = await initBackend();
  const arch = parseArch(o.arch ?? 'mlp:512,512');
  const epochs = o.epochs ?? 6;
  const seed = o.seed ?? 7;
  const train = await loadDataset('mnist:train', { limit: o.limit, shuffleSeed: seed });
  const size = exampleSize(train);
  const classes = 10;
  const model = buildModel(arch, { inputSize: size, classes, dropout: 0.2, seed });
  const rand = mulberry32(seed);
  const baseLr = 2e-3;
  for (let e = 0; e < epochs; e++) {
    o.onProgress?.({ epoch: e, epochs, fraction: e / epochs, loss: NaN, samplesPerSec: 0, phase: 'augment' });
    // A quarter of every epoch stays clean; the rest gets a fresh random augmentation.
    const features = mapImages(train.features, size, (img) => (rand() < 0.25 ? Float32Array.from(img) : teacherAugment(img, rand)));
    const lr = baseLr * 0.5 * (1 + Math.cos((Math.PI * e) / epochs));
    await trainModel(model, { features, inputSize: size, count: train.count, classes, labels: train.labels! }, {
      epochs: 1,
      batchSize: 128,
      learningRate: lr,
      schedule: 'constant',
      seed: seed + e,
      progressEvery: 20,
      onProgress: (p: TrainProgress) => o.onProgress?.({ epoch: e, epochs, fraction: (e + p.batch / p.batches) / epochs, loss: p.loss, samplesPerSec: p.samplesPerSec, phase: 'train' }),
    });
  }
  const onnx = exportToOnnx(model, { docString: `Apprentice demo teacher ${arch.text} (augmented MNIST)`, metadata: { role: 'teacher', arch: arch.text } });
  model.dispose();
  await mkdir(dirname(o.out), { recursive: true });
  await writeFile(o.out + '.tmp', onnx);
  await rename(o.out + '.tmp', o.out);
  let cleanTestAccuracy: number | undefined;
  if (o.testLimit !== 0) {
    const t = await loadDataset('mnist:test', { limit: o.testLimit ?? 2000 });
    cleanTestAccuracy = (await evaluateOnnx(onnx, t.features, size, t.labels)).accuracy;
  }
  return { arch: arch.text, backend: backend.name, trainCount: train.count, epochs, seconds: (Date.now() - started) / 1000, bytes: onnx.byteLength, cleanTestAccuracy };
}
