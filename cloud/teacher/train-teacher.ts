import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { exampleSize, loadDataset } from '../../shared/data/index.js';
import { evaluateOnnx } from '../distill/evaluate.js';
import { trainModel, type TrainProgress } from '../distill/trainer.js';
import { exportToOnnx } from '../export/index.js';
import { buildModel } from '../models/build.js';
import { parseArch } from '../models/spec.js';
import { initBackend, type BackendChoice } from '../tf/backend.js';

export interface TeacherTrainOptions {
  data: string;
  test?: string;
  limit?: number;
  arch: string;
  dropout: number;
  inputDropout: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Random translation of up to this many pixels (Hinton et al.'s teacher used 2). */
  jitter: number;
  seed: number;
  out: string;
  backend?: BackendChoice;
  events?: { phase?(name: string, detail?: string): void; epoch?(p: TrainProgress): void };
}

export interface TeacherTrainReport {
  version: 1;
  createdAt: string;
  backend: string;
  arch: string;
  params: number;
  bytes: number;
  settings: Omit<TeacherTrainOptions, 'events' | 'out' | 'backend'>;
  training: { seconds: number; samplesPerSec: number; finalLoss: number };
  test?: { accuracy: number; errors: number; count: number };
  scaling: { scale: number; offset: number };
}

/** Trains a large reference teacher in tfjs (dropout, optional jitter) and exports it to ONNX (logits). */
export async function trainTeacher(o: TeacherTrainOptions): Promise<TeacherTrainReport> {
  const backend = await initBackend(o.backend);
  o.events?.phase?.('backend', backend.name);
  const arch = parseArch(o.arch);
  const train = await loadDataset(o.data, { limit: o.limit, shuffleSeed: o.seed });
  if (!train.labels) throw new Error(`--data ${o.data}: a teacher is trained on labels; this dataset has none`);
  const size = exampleSize(train);
  const classes = train.numClasses ?? Math.max(...train.labels) + 1;
  const model = buildModel(arch, { inputSize: size, classes, dropout: o.dropout, inputDropout: o.inputDropout, seed: o.seed });
  o.events?.phase?.('train', `${arch.text} on ${train.count} examples`);
  const r = await trainModel(model, { features: train.features, inputSize: size, count: train.count, classes, labels: train.labels }, {
    epochs: o.epochs,
    batchSize: o.batchSize,
    learningRate: o.learningRate,
    jitter: o.jitter,
    seed: o.seed,
    onProgress: (p) => o.events?.epoch?.(p),
  });
  const onnx = exportToOnnx(model, { docString: `Apprentice reference teacher ${arch.text}`, metadata: { role: 'teacher', arch: arch.text } });
  const params = model.countParams();
  model.dispose();
  await mkdir(dirname(o.out), { recursive: true });
  await writeFile(o.out, onnx);
  let test: TeacherTrainReport['test'];
  if (o.test) {
    o.events?.phase?.('evaluate', o.test);
    const t = await loadDataset(o.test);
    const e = await evaluateOnnx(onnx, t.features, exampleSize(t), t.labels);
    if (e.accuracy !== undefined) test = { accuracy: e.accuracy, errors: e.errors!, count: t.count };
  }
  const { events: _e, out: _o, backend: _b, ...settings } = o;
  const report: TeacherTrainReport = {
    version: 1,
    createdAt: new Date().toISOString(),
    backend: backend.name,
    arch: arch.text,
    params,
    bytes: onnx.byteLength,
    settings,
    training: { seconds: r.seconds, samplesPerSec: r.samplesPerSec, finalLoss: r.finalLoss },
    test,
    scaling: train.scaling,
  };
  await writeFile(o.out.replace(/\.onnx$/, '') + '.report.json', JSON.stringify(report, null, 2) + '\n');
  return report;
}
