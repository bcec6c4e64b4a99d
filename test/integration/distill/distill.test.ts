import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runDistill } from '../../../cloud/distill/pipeline.js';
import { evaluateOnnx } from '../../../cloud/distill/evaluate.js';
import { inspectOnnx } from '../../../cloud/export/index.js';
import { trainTeacher } from '../../../cloud/teacher/train-teacher.js';
import { loadDataset } from '../../../shared/data/index.js';

const dir = mkdtempSync(join(tmpdir(), 'apprentice-distill-'));
const teacherFile = join(dir, 'teacher.onnx');

describe('distillation end to end on MNIST (small budget)', () => {
  beforeAll(async () => {
    // A small real teacher: 4,000 MNIST images, one hidden layer, 3 epochs.
    const r = await trainTeacher({ data: 'mnist:train', test: 'mnist:test', limit: 4000, arch: 'mlp:128', dropout: 0.2, inputDropout: 0, epochs: 3, batchSize: 64, learningRate: 2e-3, jitter: 0, seed: 7, out: teacherFile });
    expect(r.test!.accuracy).toBeGreaterThan(0.85);
  }, 120_000);

  it('distils a student that is far above chance and agrees with the teacher', async () => {
    const out = join(dir, 'out');
    const { report, files } = await runDistill({
      teacher: [teacherFile], data: 'mnist:train', limit: 4000, test: 'mnist:test', student: 'mlp:32', recipe: 'fixed', temperature: 4, alpha: 0.9, epochs: 4, batchSize: 64, learningRate: 3e-3, baseline: true, seed: 3, outDir: out,
    });
    // Chance is 10%; a 32-unit student on 4k images reaches ~90%.
    expect(report.student.test.accuracy).toBeGreaterThan(0.8);
    expect(report.student.agreementWithTeacher).toBeGreaterThan(0.85);
    // Issue requirement: int8 top-1 agrees with fp32 on >= 99% of the MNIST test set.
    expect(report.student.int8AgreementWithFp32).toBeGreaterThanOrEqual(0.99);
    expect(report.baseline!.test.count).toBe(10000);
    expect(report.backend.name).toMatch(/wasm|tensorflow|cpu/);
    expect(report.student.bytes.int8).toBeLessThan(report.student.bytes.fp32 * 0.4);
    expect(report.teacher.latency.p50Ms).toBeGreaterThan(0);
    // The files on disk are what the report describes.
    const saved = JSON.parse(readFileSync(files.report, 'utf8'));
    expect(saved.student.test.errors).toBe(report.student.test.errors);
    const info = inspectOnnx(readFileSync(files.student));
    expect(info.opset).toBeGreaterThanOrEqual(13);
    const test = await loadDataset('mnist:test');
    const again = await evaluateOnnx(readFileSync(files.studentInt8), test.features, 784, test.labels);
    expect(again.errors).toBe(report.student.int8Test.errors);
  }, 120_000);

  it('distils from an unlabeled transfer set using the soft term only', async () => {
    const { report } = await runDistill({
      teacher: [teacherFile], data: 'unlabeled:mnist:train', limit: 3000, test: 'mnist:test', student: 'mlp:32', temperature: 4, alpha: 0.9, epochs: 3, batchSize: 64, learningRate: 3e-3, baseline: false, seed: 5, outDir: join(dir, 'unl'),
    });
    expect(report.student.test.accuracy).toBeGreaterThan(0.75);
    expect(report.student.agreementWithTeacher).toBeGreaterThan(0.8);
  }, 120_000);
});
